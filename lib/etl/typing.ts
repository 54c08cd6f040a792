import type { ColumnContract, ColumnType } from '../core/schema.ts';
import { lit } from './duck.ts';
import type { SourceColumn } from './source.ts';

/** Text values read as null in non-string columns (CSV and JSON exports spell "missing" in many ways). */
export const NULL_TOKENS = ['', 'NA', 'N/A', 'NaN', 'nan', 'null', 'NULL', 'None'];

/** The DuckDB type a logical contract type is stored as in curated Parquet. */
export function duckTypeOf(type: ColumnType): string {
  switch (type) {
    case 'integer':
      return 'BIGINT';
    case 'number':
      return 'DOUBLE';
    case 'boolean':
      return 'BOOLEAN';
    case 'timestamp':
      return 'TIMESTAMP';
    default:
      return 'VARCHAR';
  }
}

/** The logical type of a native (Parquet) DuckDB type. */
export function logicalTypeOf(duckType: string): ColumnType {
  const t = duckType.toUpperCase();
  if (/^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT)$/.test(t))
    return 'integer';
  if (/^(FLOAT|DOUBLE|REAL)$/.test(t) || t.startsWith('DECIMAL')) return 'number';
  if (t === 'BOOLEAN') return 'boolean';
  if (t === 'DATE' || t.startsWith('TIMESTAMP')) return 'timestamp';
  return 'string';
}

/** SQL that types one source column for one contract column. */
export interface TypedExprs {
  /** The typed value: NULL when missing or when the source value does not parse as the contract's type. */
  value: string;
  /** TRUE when the source value itself counts as missing (NULL or a null token); evaluate only where `value` is NULL. */
  nullish: string;
  /** The source value as text (for quarantine details). */
  text: string;
}

/**
 * Builds the typing expressions. Text (CSV, JSON, Parquet strings) is parsed; native Parquet types are cast.
 * Written for the hot path: a value that parses costs one cast, the null-token test only runs where the
 * cast failed. An integer must be integral ("3", "3.0", "3e2"; not "3.5"); a number must be finite.
 */
export function typedExprs(column: ColumnContract, source: SourceColumn, textual: boolean): TypedExprs {
  const s = source.expr;
  const text = `CAST(${s} AS VARCHAR)`;
  const native = !textual && source.duckType !== 'VARCHAR';
  const nativeType = native ? logicalTypeOf(source.duckType) : undefined;
  let nullish = `(${s} IS NULL)`;
  if (!native && column.type !== 'string') {
    nullish = `(${s} IS NULL OR list_contains([${NULL_TOKENS.map(lit).join(', ')}], trim(${s})))`;
  }
  if (nativeType === 'number') nullish = `(${s} IS NULL OR isnan(CAST(${s} AS DOUBLE)))`;
  const d = `TRY_CAST(${s} AS DOUBLE)`;
  const integralDouble = `CASE WHEN ${d} = trunc(${d}) THEN TRY_CAST(${d} AS BIGINT) END`;
  let value: string;
  switch (column.type) {
    case 'integer':
      if (nativeType === 'integer') value = `TRY_CAST(${s} AS BIGINT)`;
      else if (native) value = integralDouble;
      else {
        // A plain cast would round "3.5" to 4: decimal-looking text takes the integral check. The first
        // branch is a shortcut with the same result, cheaper than looking for '.', 'e' and 'E' in every value:
        // when the integer cast agrees exactly with the number the text spells (below 2^53, where a double
        // holds every integer), the text is that integer, whichever way it was written.
        const b = `TRY_CAST(${s} AS BIGINT)`;
        const precise = `CASE WHEN contains(${s}, '.') OR contains(${s}, 'e') OR contains(${s}, 'E') THEN ${integralDouble} ELSE ${b} END`;
        value = `CASE WHEN ${b} = ${d} AND abs(${d}) < 9007199254740992 THEN ${b} ELSE ${precise} END`;
      }
      break;
    case 'number':
      value = `CASE WHEN isfinite(${d}) THEN ${d} END`;
      break;
    case 'boolean':
      value = `TRY_CAST(${s} AS BOOLEAN)`;
      break;
    case 'timestamp':
      value = `TRY_CAST(${s} AS TIMESTAMP)`;
      break;
    default:
      value = text;
  }
  return { value, nullish, text };
}
