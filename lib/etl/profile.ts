import type { SchemaContract } from '../core/schema.ts';
import { type Duck, ident, lit } from './duck.ts';

/** Per-column statistics stored in a dataset version's manifest (the drift baseline). */
export interface ColumnProfile {
  name: string;
  type: string;
  /** Non-null values. */
  count: number;
  nulls: number;
  /**
   * Distinct non-null values of a string column: exact for a categorical column (its contract closes the
   * set, so counting its groups is cheap), else a HyperLogLog estimate.
   */
  distinctApprox?: number;
  min?: number | string;
  max?: number | string;
  mean?: number;
  std?: number;
  /** Quantiles at 0, 0.1, …, 1 of a 65,536-value reservoir sample (exact below that many rows). */
  deciles?: number[];
  /** Most frequent values, most frequent first (at most TOP_CATEGORIES); exact counts below EXACT_TOP_DISTINCT. */
  top?: { value: string; count: number }[];
  trueCount?: number;
}

/** How many top values a string column's profile keeps. */
export const TOP_CATEGORIES = 20;
/** Above this many distinct values, top values come from a bounded-memory sketch, not an exact GROUP BY. */
export const EXACT_TOP_DISTINCT = 100_000;
const DECILES = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
/** Reservoir size behind the deciles: a uniform sample, so a quantile sketch with constant memory. */
const QUANTILE_SAMPLE = 65_536;
const ISO = `'%Y-%m-%dT%H:%M:%S.%gZ'`;

/**
 * Profiles every contract column of curated Parquet `files` in constant memory. Row and null counts and the
 * min/max of numbers and timestamps come from the files' own statistics (written by the COPY that produced
 * them, read from the footers); one scan adds mean and standard deviation (exact, from shifted sums),
 * deciles, string cardinality and true counts; one small GROUP BY per string column gives its top values.
 */
export async function profileColumns(
  duck: Duck,
  files: string[],
  contract: SchemaContract,
): Promise<ColumnProfile[]> {
  const list = `[${files.map(lit).join(', ')}]`;
  const rows = Number(
    (await duck.all(`SELECT coalesce(sum(num_rows), 0) AS n FROM parquet_file_metadata(${list})`))[0]?.n ?? 0,
  );
  // Footer statistics per column: exact for the fixed-width types DuckDB writes (min_is_exact).
  const footer = await duck.all(
    `SELECT path_in_schema AS name, sum(stats_null_count) AS nulls, count(*) - count(stats_null_count) AS unknown,
       min(TRY_CAST(stats_min_value AS DOUBLE)) AS dmin, max(TRY_CAST(stats_max_value AS DOUBLE)) AS dmax,
       strftime(min(TRY_CAST(stats_min_value AS TIMESTAMP)), ${ISO}) AS tmin,
       strftime(max(TRY_CAST(stats_max_value AS TIMESTAMP)), ${ISO}) AS tmax,
       bool_and(coalesce(min_is_exact, false) AND coalesce(max_is_exact, false)) AS exact
     FROM parquet_metadata(${list}) GROUP BY path_in_schema`,
  );
  const stats = new Map(footer.map((row) => [String(row.name), row]));

  const selects: string[] = ['count(*) AS __rows'];
  const numericShift = new Map<number, number>();
  contract.columns.forEach((column, i) => {
    const c = ident(column.name);
    const known = stats.get(column.name);
    if (!known || Number(known.unknown) > 0) selects.push(`count(${c}) AS count_${i}`);
    if (column.type === 'integer' || column.type === 'number') {
      // Sums of (x - K), K the column's minimum, keep the variance well conditioned whatever the offset.
      const shift = typeof known?.dmin === 'number' && Number.isFinite(known.dmin) ? known.dmin : 0;
      numericShift.set(i, shift);
      const d = `(${c}::DOUBLE - ${shift})`;
      selects.push(
        `sum(${d}) AS s1_${i}`,
        `sum(${d} * ${d}) AS s2_${i}`,
        `reservoir_quantile(${c}::DOUBLE, [${DECILES.join(', ')}], ${QUANTILE_SAMPLE}) AS deciles_${i}`,
      );
      if (!known?.exact || known.dmin === null)
        selects.push(`min(${c})::DOUBLE AS min_${i}`, `max(${c})::DOUBLE AS max_${i}`);
    } else if (column.type === 'timestamp') {
      if (!known?.exact || known.tmin === null) {
        selects.push(`strftime(min(${c}), ${ISO}) AS min_${i}`, `strftime(max(${c}), ${ISO}) AS max_${i}`);
      }
    } else if (column.type === 'boolean') {
      selects.push(`count(*) FILTER (WHERE ${c}) AS true_${i}`);
    } else if (column.categories === undefined) {
      selects.push(`approx_count_distinct(${c}) AS distinct_${i}`);
    }
  });
  const relation = `read_parquet(${list})`;
  const [scan] = await duck.all(`SELECT ${selects.join(', ')} FROM ${relation}`);
  const profiles: ColumnProfile[] = [];
  for (const [i, column] of contract.columns.entries()) {
    const get = (key: string) => scan?.[`${key}_${i}`];
    const known = stats.get(column.name);
    const nulls =
      known && Number(known.unknown) === 0 ? Number(known.nulls) : rows - Number(get('count') ?? 0);
    const count = rows - nulls;
    const profile: ColumnProfile = { name: column.name, type: column.type, count, nulls };
    const set = <K extends keyof ColumnProfile>(key: K, value: unknown) => {
      if (value !== null && value !== undefined) profile[key] = value as ColumnProfile[K];
    };
    if (column.type === 'integer' || column.type === 'number') {
      set('min', get('min') ?? (known?.exact ? known.dmin : undefined));
      set('max', get('max') ?? (known?.exact ? known.dmax : undefined));
      const shift = numericShift.get(i) ?? 0;
      const s1 = Number(get('s1') ?? 0);
      const s2 = Number(get('s2') ?? 0);
      if (count > 0) set('mean', shift + s1 / count);
      if (count > 1) set('std', Math.sqrt(Math.max(0, (s2 - (s1 * s1) / count) / (count - 1))));
      set('deciles', get('deciles'));
    } else if (column.type === 'timestamp') {
      set('min', get('min') ?? (known?.exact ? known.tmin : undefined));
      set('max', get('max') ?? (known?.exact ? known.tmax : undefined));
    } else if (column.type === 'boolean') {
      set('trueCount', get('true'));
    } else if (column.categories !== undefined) {
      // At most as many groups as allowed categories: exact counts in bounded memory.
      const groups = await groupCounts(duck, relation, column.name);
      profile.distinctApprox = groups.length;
      profile.top = groups.slice(0, TOP_CATEGORIES);
    } else {
      const distinct = Number(get('distinct') ?? 0);
      profile.distinctApprox = distinct;
      profile.top =
        distinct <= EXACT_TOP_DISTINCT
          ? await groupCounts(duck, relation, column.name, TOP_CATEGORIES)
          : await sketchedTop(duck, relation, column.name);
    }
    profiles.push(profile);
  }
  return profiles;
}

/** The values of a column of modest cardinality with their exact counts, most frequent first. */
async function groupCounts(
  duck: Duck,
  relation: string,
  name: string,
  limit?: number,
): Promise<{ value: string; count: number }[]> {
  const c = ident(name);
  const rows = await duck.all(
    `SELECT ${c} AS value, count(*) AS n FROM ${relation} WHERE ${c} IS NOT NULL GROUP BY ${c} ORDER BY n DESC, value${limit ? ` LIMIT ${limit}` : ''}`,
  );
  return rows.map((row) => ({ value: String(row.value), count: Number(row.n) }));
}

/** Top values of a high-cardinality column: a Space-Saving sketch (bounded memory) picks them, a scan counts them. */
async function sketchedTop(
  duck: Duck,
  relation: string,
  name: string,
): Promise<{ value: string; count: number }[]> {
  const c = ident(name);
  const [sketch] = await duck.all(`SELECT approx_top_k(${c}, ${TOP_CATEGORIES}) AS k FROM ${relation}`);
  const values = Array.isArray(sketch?.k) ? (sketch.k as unknown[]).map(String) : [];
  if (values.length === 0) return [];
  const counted = await duck.all(
    `SELECT ${c} AS value, count(*) AS n FROM ${relation} WHERE list_contains([${values.map(lit).join(', ')}], ${c})
     GROUP BY ${c} ORDER BY n DESC, value`,
  );
  return counted.map((row) => ({ value: String(row.value), count: Number(row.n) }));
}
