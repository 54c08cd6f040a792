import type { ColumnContract, ColumnType, SchemaContract } from '../core/schema.ts';
import { type Duck, lit } from './duck.ts';
import type { Source } from './source.ts';
import { logicalTypeOf, NULL_TOKENS } from './typing.ts';

/** Rows of the first batch looked at to infer a contract (bounds the cost of a huge first landing). */
export const INFERENCE_ROW_LIMIT = 100_000;
/** Share of non-null values that must parse as a type for the column to get that type. */
export const TYPE_AGREEMENT = 0.98;
/** A string column becomes categorical with at most this many distinct values… */
export const MAX_CATEGORIES = 100;
/** …each seen on average at least this often (so that IDs in a small batch are not taken for categories). */
export const MIN_ROWS_PER_CATEGORY = 5;

/**
 * Infers a contract from the first batch (at most INFERENCE_ROW_LIMIT rows, reader-level bad rows excluded).
 * Rules: a text column is integer/number/boolean/timestamp when ≥ 98 % of its non-null values parse as
 * that type (the rest are then quarantined as type errors), else string; nullable when any value is
 * missing; numeric min/max are recorded (not enforced); low-cardinality strings get a closed category set.
 * Returns undefined when the batch has no rows to learn from.
 */
export async function inferContract(
  duck: Duck,
  source: Source,
  dataset: string,
  inferredFrom: string,
): Promise<SchemaContract | undefined> {
  if (source.columns.length === 0) return undefined;
  // The first rows (reader-level bad rows excluded), held by DuckDB as a materialized CTE: each statement
  // reads them from the file once, and its projections then run on every core (over a 100,000-row table
  // they would run on one). Taking the same first rows again is a small read, cheaper than a temp table.
  const firstRows = (columns: string[]) =>
    `WITH kiln_sample AS MATERIALIZED (SELECT ${columns.join(', ')} FROM ${source.plainRelation} WHERE __src_error IS NULL LIMIT ${INFERENCE_ROW_LIMIT})`;
  const nullTokens = NULL_TOKENS.map(lit).join(', ');
  const raw = source.columns.map((column, i) => `${column.expr} AS s${i}`);
  // Each value is trimmed and parsed once, in layered projections; the aggregates then only count flags.
  const trimmed: string[] = [];
  const parsed: string[] = [];
  const flags: string[] = [];
  const selects: string[] = ['count(*) AS n'];
  const flag = (name: string, condition: string) => `coalesce(${condition}, false)::INTEGER AS ${name}`;
  source.columns.forEach((column, i) => {
    const s = `s${i}`;
    trimmed.push(s);
    parsed.push(s);
    flags.push(s, flag(`isnull${i}`, `${s} IS NULL`));
    selects.push(`sum(isnull${i}) AS null_${i}`, `approx_count_distinct(${s}) AS distinct_${i}`);
    if (source.textual) {
      const t = `t${i}`;
      const r = `r${i}`;
      const d = `CASE WHEN isfinite(${r}) THEN ${r} END`;
      trimmed.push(`trim(${s}) AS ${t}`);
      parsed.push(t, `TRY_CAST(${t} AS DOUBLE) AS ${r}`);
      // DuckDB evaluates every operand of AND/OR in a projection; CASE is lazy, so it guards the costlier
      // tests. A finite number is present (no null token parses as one) and is neither boolean nor timestamp.
      const present = `CASE WHEN ${r} IS NOT NULL AND isfinite(${r}) THEN true WHEN ${s} IS NULL THEN false
        WHEN length(${t}) <= 4 THEN NOT list_contains([${nullTokens}], ${t}) ELSE true END`;
      flags.push(
        `${d} AS d${i}`,
        flag(`present${i}`, present),
        flag(
          `bool${i}`,
          `CASE WHEN ${r} IS NULL AND length(${t}) BETWEEN 4 AND 5 THEN lower(${t}) IN ('true', 'false') ELSE false END`,
        ),
        flag(
          `ts${i}`,
          `CASE WHEN ${d} IS NULL AND length(${t}) >= 10 AND substr(${t}, 5, 1) = '-' AND substr(${t}, 8, 1) = '-'
             THEN TRY_CAST(${t} AS TIMESTAMP) IS NOT NULL ELSE false END`,
        ),
      );
      selects.push(
        `sum(present${i}) AS present_${i}`,
        `count(d${i}) AS num_${i}`,
        `count(*) FILTER (WHERE d${i} = trunc(d${i}) AND abs(d${i}) < 9e18) AS int_${i}`,
        `sum(bool${i}) AS bool_${i}`,
        `sum(ts${i}) AS ts_${i}`,
        `min(d${i}) AS min_${i}`,
        `max(d${i}) AS max_${i}`,
      );
    } else {
      selects.push(`count(${s}) AS present_${i}`);
      if (['integer', 'number'].includes(logicalTypeOf(column.duckType))) {
        const d = `TRY_CAST(${s} AS DOUBLE)`;
        selects.push(
          `min(${d}) FILTER (WHERE isfinite(${d})) AS min_${i}`,
          `max(${d}) FILTER (WHERE isfinite(${d})) AS max_${i}`,
        );
      }
    }
  });
  const stats = (
    await duck.all(
      `${firstRows(raw)} SELECT ${selects.join(', ')} FROM (SELECT ${flags.join(', ')} FROM (SELECT ${parsed.join(', ')} FROM (SELECT ${trimmed.join(', ')} FROM kiln_sample)))`,
    )
  )[0];
  if (!stats || Number(stats.n) === 0) return undefined;
  const num = (key: string) => Number(stats[key] ?? 0);
  const optional = (key: string) => (typeof stats[key] === 'number' ? (stats[key] as number) : undefined);

  const columns: ColumnContract[] = [];
  const candidates: number[] = [];
  for (const [i, column] of source.columns.entries()) {
    const present = num(`present_${i}`);
    let type: ColumnType;
    if (source.textual) {
      const agrees = (key: string) => present > 0 && num(key) >= TYPE_AGREEMENT * present;
      if (agrees(`num_${i}`)) type = num(`int_${i}`) === num(`num_${i}`) ? 'integer' : 'number';
      else if (agrees(`bool_${i}`)) type = 'boolean';
      else if (agrees(`ts_${i}`)) type = 'timestamp';
      else type = 'string';
    } else {
      type = logicalTypeOf(column.duckType);
    }
    const nulls = type === 'string' || !source.textual ? num(`null_${i}`) : num('n') - present;
    const contract: ColumnContract = { name: column.name, type, nullable: nulls > 0 };
    if (type === 'integer' || type === 'number') {
      const min = optional(`min_${i}`);
      const max = optional(`max_${i}`);
      if (min !== undefined) contract.min = min;
      if (max !== undefined) contract.max = max;
    }
    // A string column of few distinct values (HyperLogLog's estimate, with room for its error) may be
    // categorical: its exact values are counted below.
    if (type === 'string' && num(`distinct_${i}`) <= MAX_CATEGORIES * 1.5) candidates.push(i);
    columns.push(contract);
  }
  if (candidates.length > 0) {
    // Every candidate's distinct values (at most one more than allowed) in one statement over the same rows.
    const distinct = candidates.map(
      (i) =>
        `(SELECT ${i} AS i, v FROM (SELECT DISTINCT CAST(s${i} AS VARCHAR) AS v FROM kiln_sample WHERE s${i} IS NOT NULL LIMIT ${MAX_CATEGORIES + 1}))`,
    );
    const found = await duck.all(
      `${firstRows(candidates.map((i) => raw[i] ?? 'NULL'))} ${distinct.join(' UNION ALL ')}`,
    );
    for (const i of candidates) {
      const values = found.filter((row) => row.i === i).map((row) => String(row.v));
      const nonNull = Number(stats.n) - num(`null_${i}`);
      const contract = columns[i];
      if (
        contract &&
        values.length > 0 &&
        values.length <= MAX_CATEGORIES &&
        nonNull >= MIN_ROWS_PER_CATEGORY * values.length
      ) {
        contract.categories = values.sort();
      }
    }
  }
  return {
    kind: 'kiln.schema',
    version: 1,
    dataset,
    columns,
    inferredFrom,
    createdAt: new Date().toISOString(),
  };
}
