import { version as duckdbVersion } from '@duckdb/node-api';
import type { SchemaContract } from '../core/schema.ts';
import { ident, lit } from './duck.ts';

/** Seed and test share of a train/test split. */
export interface SplitSpec {
  seed: number;
  testFraction: number;
}

/** Default seed and test share of the train/test split. */
export const DEFAULT_SPLIT: SplitSpec = { seed: 42, testFraction: 0.2 };

/**
 * The hash function's identity: DuckDB's `hash()` is stable for one DuckDB release, so the engine version
 * is part of every dataset version — a DuckDB upgrade yields new versions instead of silently different splits.
 */
export const SPLIT_HASH_ID = `duckdb-hash@${duckdbVersion()}`;

/**
 * SQL that is TRUE for a row of the test split, from its typed content and the seed alone (not its position,
 * not its shard): the same rows always get the same split, and identical rows share a split, so exact
 * duplicates never leak from train into test. ETL does not know the model's target, so the split is not
 * stratified.
 */
export function testCondition(contract: SchemaContract, split: SplitSpec): string {
  const columns = contract.columns.map((c) => ident(c.name)).join(', ');
  const threshold = Math.round(split.testFraction * 1_000_000);
  return `hash(${lit(String(split.seed))}, ${columns}) % 1000000 < ${threshold}`;
}

/** SQL yielding 'test' or 'train' for a row (see `testCondition`). */
export function splitExpr(contract: SchemaContract, split: SplitSpec): string {
  return `CASE WHEN ${testCondition(contract, split)} THEN 'test' ELSE 'train' END`;
}
