import type { SchemaContract } from '../core/schema.ts';
import { type Duck, ident } from './duck.ts';

/** Per-column statistics stored in a dataset version's manifest (the drift baseline). */
export interface ColumnProfile {
  name: string;
  type: string;
  count: number;
  nulls: number;
  distinctApprox: number;
  min?: number | string;
  max?: number | string;
  mean?: number;
  std?: number;
  /** Quantiles at 0, 0.1, …, 1 of a 65,536-value reservoir sample (exact below that many rows). */
  deciles?: number[];
  /** Most frequent values, most frequent first (at most TOP_CATEGORIES). */
  top?: { value: string; count: number }[];
  trueCount?: number;
}

/** How many top values a string column's profile keeps. */
export const TOP_CATEGORIES = 20;
const DECILES = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
/** Reservoir size behind the deciles: a uniform sample, so a quantile sketch with constant memory. */
const QUANTILE_SAMPLE = 65_536;

/** Profiles every contract column of `relation` with DuckDB aggregates (one pass, plus one per string column). */
export async function profileColumns(
  duck: Duck,
  relation: string,
  contract: SchemaContract,
): Promise<ColumnProfile[]> {
  const selects: string[] = ['count(*) AS __rows'];
  contract.columns.forEach((column, i) => {
    const c = ident(column.name);
    selects.push(`count(${c}) AS count_${i}`, `approx_count_distinct(${c}) AS distinct_${i}`);
    if (column.type === 'integer' || column.type === 'number') {
      selects.push(
        `min(${c})::DOUBLE AS min_${i}`,
        `max(${c})::DOUBLE AS max_${i}`,
        `avg(${c})::DOUBLE AS mean_${i}`,
        `stddev_samp(${c})::DOUBLE AS std_${i}`,
        `reservoir_quantile(${c}::DOUBLE, [${DECILES.join(', ')}], ${QUANTILE_SAMPLE}) AS deciles_${i}`,
      );
    } else if (column.type === 'timestamp') {
      selects.push(
        `strftime(min(${c}), '%Y-%m-%dT%H:%M:%S.%gZ') AS min_${i}`,
        `strftime(max(${c}), '%Y-%m-%dT%H:%M:%S.%gZ') AS max_${i}`,
      );
    } else if (column.type === 'boolean') {
      selects.push(`count(*) FILTER (WHERE ${c}) AS true_${i}`);
    }
  });
  const [stats] = await duck.all(`SELECT ${selects.join(', ')} FROM ${relation}`);
  const rows = Number(stats?.__rows ?? 0);
  const profiles: ColumnProfile[] = [];
  for (const [i, column] of contract.columns.entries()) {
    const get = (key: string) => stats?.[`${key}_${i}`];
    const count = Number(get('count') ?? 0);
    const profile: ColumnProfile = {
      name: column.name,
      type: column.type,
      count,
      nulls: rows - count,
      distinctApprox: Number(get('distinct') ?? 0),
    };
    const set = <K extends keyof ColumnProfile>(key: K, value: unknown) => {
      if (value !== null && value !== undefined) profile[key] = value as ColumnProfile[K];
    };
    set('min', get('min'));
    set('max', get('max'));
    set('mean', get('mean'));
    set('std', get('std'));
    set('deciles', get('deciles'));
    set('trueCount', get('true'));
    if (column.type === 'string') {
      const c = ident(column.name);
      const top = await duck.all(
        `SELECT ${c} AS value, count(*) AS n FROM ${relation} WHERE ${c} IS NOT NULL
         GROUP BY ${c} ORDER BY n DESC, value LIMIT ${TOP_CATEGORIES}`,
      );
      profile.top = top.map((row) => ({ value: String(row.value), count: Number(row.n) }));
    }
    profiles.push(profile);
  }
  return profiles;
}
