import { NotFoundError, ValidationError } from '../core/errors.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { sniffFormat } from './detect.ts';
import { lit, withDuckDB } from './duck.ts';
import { localPathOf } from './raw.ts';
import { firstLine } from './source.ts';

/** A table row as plain JS: numbers (BIGINT too), strings, booleans, ISO-8601 timestamps, null. */
export type Row = Record<string, unknown>;

/**
 * Reads a local CSV / JSON Lines / Parquet file (optionally gzip) into rows with DuckDB, types auto-detected.
 * Meant for modest files (training sets, scoring batches): the rows are returned in memory. `textColumns`
 * keeps CSV cells as text, for callers that type them against a known schema (batch scoring).
 */
export async function readTableFile(path: string, options: { textColumns?: boolean } = {}): Promise<Row[]> {
  const { format, compression } = await sniffFormat(path);
  // read_csv spells "no compression" 'none', read_json 'uncompressed'.
  const gzip = compression === 'gzip';
  const from =
    format === 'parquet'
      ? `read_parquet(${lit(path)})`
      : format === 'jsonl'
        ? `read_json(${lit(path)}, format='newline_delimited', compression=${lit(gzip ? 'gzip' : 'uncompressed')})`
        : `read_csv(${lit(path)}, compression=${lit(gzip ? 'gzip' : 'none')}${options.textColumns ? ', all_varchar=true' : ''})`;
  return withDuckDB(async (duck) => {
    try {
      return await duck.all(`SELECT * FROM ${from}`);
    } catch (error) {
      throw new ValidationError(`file ${path} cannot be read as ${format}: ${firstLine(error)}`, {
        cause: error,
      });
    }
  });
}

/** The rows of one split of a curated dataset version. */
export async function readCuratedRows(
  store: ObjectStore,
  dataset: string,
  version: string,
  split: 'train' | 'test',
): Promise<Row[]> {
  assertName('dataset', dataset);
  const key = lake.curatedFile(dataset, version, `${split}.parquet`);
  if (!(await store.head(lake.curatedFile(dataset, version, 'manifest.json')))) {
    throw new NotFoundError(`dataset ${dataset} has no version ${version}`);
  }
  return withDuckDB(async (duck) => {
    const path = await localPathOf(store, key, duck.dir);
    return duck.all(`SELECT * FROM read_parquet(${lit(path)})`);
  });
}
