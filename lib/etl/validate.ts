import type { ColumnContract, SchemaContract } from '../core/schema.ts';
import { ident, lit } from './duck.ts';
import type { Source, SourceColumn } from './source.ts';
import { duckTypeOf, logicalTypeOf, typedExprs } from './typing.ts';

/** The validating SELECT over a source, and the drift found by comparing the file's columns to the contract. */
export interface ValidationQuery {
  /** One row per source row: the contract's columns, typed, and `__ok` (BOOLEAN, never NULL). */
  rowsSql: string;
  /**
   * The rows that are not ok, re-read through `Source.plainRelation`: `reasons` (codes such as `type:price`,
   * first one first), `details` (human-readable) and `raw` (the row's source text as JSON, or the line).
   */
  quarantineSql: string;
  drift: string[];
}

interface Check {
  when: string;
  code: string;
  detail: string;
}

/**
 * Builds the SQL that enforces `contract` on `source`. Checks per column, in this order: missing column
 * (non-nullable), null in a non-nullable column, value not of the column's type, outside hardMin/hardMax,
 * not an allowed category. A reader-level error (malformed JSON line) comes first. Without a contract every
 * row is refused with `schema:none`.
 */
export function validationQuery(source: Source, contract: SchemaContract | undefined): ValidationQuery {
  const drift = [...source.notes];
  const byName = new Map(source.columns.map((column) => [column.name, column]));
  const computed: string[] = [];
  const outputs: string[] = [];
  const checks: Check[] = [
    {
      when: '__src_error IS NOT NULL',
      code: '__src_error',
      detail: `CASE __src_error WHEN 'json:malformed' THEN 'line is not valid UTF-8 JSON' ELSE 'line is JSON but not an object' END`,
    },
  ];
  if (!contract) {
    checks.push({
      when: 'true',
      code: lit('schema:none'),
      detail: lit('no schema contract could be inferred'),
    });
  }
  for (const [i, column] of (contract?.columns ?? []).entries()) {
    const name = column.name;
    const sourceColumn = byName.get(name);
    const label = (text: string) => lit(`${name}: ${text}`);
    if (!sourceColumn) {
      drift.push(
        `missing column ${JSON.stringify(name)}${column.nullable ? ' (nullable: filled with nulls)' : ''}`,
      );
      outputs.push(`NULL::${duckTypeOf(column.type)} AS ${ident(name)}`);
      if (!column.nullable) {
        checks.push({
          when: 'true',
          code: lit(`missing:${name}`),
          detail: label('column is missing from the file'),
        });
      }
      continue;
    }
    const typeDrift = nativeTypeDrift(column, sourceColumn, source.textual);
    if (typeDrift) drift.push(typeDrift);
    const typed = typedExprs(column, sourceColumn, source.textual);
    const v = `__v${i}`;
    computed.push(`${typed.value} AS ${v}`);
    outputs.push(`${v} AS ${ident(name)}`);
    // NULL value: a null (allowed or not) when the source was missing, else a value of the wrong type.
    checks.push({
      // CASE, not AND: DuckDB evaluates both sides of AND in a projection, CASE only where the value is NULL.
      when: column.nullable
        ? `CASE WHEN ${v} IS NULL THEN NOT ${typed.nullish} ELSE false END`
        : `(${v} IS NULL)`,
      code: `CASE WHEN ${typed.nullish} THEN ${lit(`null:${name}`)} ELSE ${lit(`type:${name}`)} END`,
      detail: `CASE WHEN ${typed.nullish} THEN ${label('missing value in a non-nullable column')} ELSE ${lit(`${name}: `)} || to_json(left(${typed.text}, 200)) || ${lit(` is not a valid ${column.type}`)} END`,
    });
    const limits: string[] = [];
    if (column.hardMin !== undefined) limits.push(`${v} < ${sqlNumber(column.hardMin)}`);
    if (column.hardMax !== undefined) limits.push(`${v} > ${sqlNumber(column.hardMax)}`);
    if (limits.length > 0) {
      checks.push({
        when: `coalesce(${limits.join(' OR ')}, false)`,
        code: lit(`range:${name}`),
        detail: `${lit(`${name}: `)} || CAST(${v} AS VARCHAR) || ${lit(
          ` is outside the allowed range [${column.hardMin ?? '-inf'}, ${column.hardMax ?? 'inf'}]`,
        )}`,
      });
    }
    if (column.categories !== undefined) {
      // list_contains, not IN: DuckDB plans an IN list as a join, which costs far more per row.
      const allowed = `[${column.categories.map(lit).join(', ')}]::VARCHAR[]`;
      checks.push({
        when: `CASE WHEN ${v} IS NULL THEN false ELSE NOT list_contains(${allowed}, ${v}) END`,
        code: lit(`category:${name}`),
        detail: `${lit(`${name}: `)} || to_json(left(${v}, 200)) || ${lit(' is not an allowed category')}`,
      });
    }
  }
  for (const column of source.columns) {
    if (contract && !contract.columns.some((c) => c.name === column.name)) {
      drift.push(
        `new column ${JSON.stringify(column.name)} (not in the contract: dropped until the schema is edited)`,
      );
    }
  }
  const rawStruct =
    source.columns.length > 0
      ? `CAST(to_json({${source.columns.map((c) => `${lit(c.name)}: ${c.expr}`).join(', ')}}) AS VARCHAR)`
      : 'NULL::VARCHAR';
  const anyFailure = checks.map((check) => check.when).join(' OR ');
  const checked = (relation: string) =>
    `SELECT *, NOT (${anyFailure}) AS __ok FROM (SELECT *${computed.length > 0 ? `, ${computed.join(', ')}` : ''} FROM ${relation})`;
  const list = (pick: (check: Check) => string) =>
    `list_filter([${checks.map((check) => `CASE WHEN ${check.when} THEN ${pick(check)} END`).join(', ')}], x -> x IS NOT NULL)`;
  return {
    rowsSql: `SELECT ${outputs.length > 0 ? `${outputs.join(', ')}, ` : ''}__ok FROM (${checked(source.relation)})`,
    quarantineSql: `SELECT ${list((check) => check.code)} AS reasons, ${list((check) => check.detail)} AS details,
        coalesce(__src_raw, ${rawStruct}) AS raw
      FROM (${checked(source.plainRelation)}) WHERE NOT __ok`,
    drift,
  };
}

/** A native (Parquet) column whose type cannot be read into the contract's type without loss. */
function nativeTypeDrift(column: ColumnContract, source: SourceColumn, textual: boolean): string | undefined {
  if (textual) return undefined;
  const fileType = logicalTypeOf(source.duckType);
  if (fileType === column.type || (fileType === 'integer' && column.type === 'number')) return undefined;
  return `type of column ${JSON.stringify(column.name)} changed: contract says ${column.type}, file has ${source.duckType} (values that do not convert are quarantined)`;
}

function sqlNumber(value: number): string {
  return Number.isFinite(value) ? String(value) : value > 0 ? "'inf'::DOUBLE" : "'-inf'::DOUBLE";
}
