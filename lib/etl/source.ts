import { z } from 'zod';
import { ValidationError } from '../core/errors.ts';
import type { SchemaContract } from '../core/schema.ts';
import type { Compression, RawFormat } from './detect.ts';
import { type Duck, ident, lit } from './duck.ts';

/** One column as the file presents it: its name and a SQL expression over `Source.relation`. */
export interface SourceColumn {
  name: string;
  expr: string;
  /** DuckDB type of `expr`: VARCHAR for CSV and JSON Lines (typed later by the contract), native for Parquet. */
  duckType: string;
}

/**
 * A raw file opened for reading through DuckDB. `relation` yields one row per data row of the file with the
 * columns' expressions, plus `__src_error` (a reader-level reason, e.g. a malformed JSON line, or NULL) and
 * `__src_raw` (the row's raw text when the reader has it). CSV lines the reader cannot split are not in
 * `relation`: they land in `rejectsTable` once `relation` has been scanned.
 */
export interface Source {
  format: RawFormat;
  textual: boolean;
  columns: SourceColumn[];
  relation: string;
  /** `relation` without capturing reader rejects (a re-scan: its rejects were already captured). */
  plainRelation: string;
  rejectsTable?: string;
  /** Observations about the file's shape worth reporting as drift (e.g. no header row). */
  notes: string[];
}

/**
 * A CSV file's dialect as DuckDB's sniffer found it on the whole file, recorded in the raw index at ingest so
 * that every later reader (and every byte-range part of a split file) parses the file the same way.
 */
export const CsvDialectSchema = z.strictObject({
  delimiter: z.string().min(1),
  /** '' when the file is not quoted. */
  quote: z.string(),
  /** '' when there is no escape character other than a doubled quote. */
  escape: z.string(),
  /** As DuckDB spells it: `\n`, `\r\n` or `\r` (backslash escapes, not the characters). */
  newline: z.string(),
  comment: z.string(),
  /** Lines skipped before the header (or the first row). */
  skip: z.number().int().nonnegative(),
  header: z.boolean(),
  /** Column names: the header's, or DuckDB's positional names without a header. */
  names: z.array(z.string()),
});
export type CsvDialect = z.infer<typeof CsvDialectSchema>;

let counter = 0;

/**
 * Opens a raw file with DuckDB; throws ValidationError (naming `label`) when it cannot be read as a table.
 * A recorded CSV `dialect` is used as is (no sniffing): a byte-range part of a file must be read with the
 * dialect of the whole file.
 */
export async function openSource(
  duck: Duck,
  path: string,
  file: { format: RawFormat; compression: Compression },
  label: string,
  contract?: SchemaContract,
  dialect?: CsvDialect,
): Promise<Source> {
  try {
    if (file.format === 'csv') {
      const known = dialect ?? (await sniffCsv(duck, path, file.compression, label));
      return openCsv(path, file.compression, known, contract);
    }
    if (file.format === 'jsonl') return await openJsonLines(duck, path, file.compression);
    return await openParquet(duck, path);
  } catch (error) {
    if (error instanceof ValidationError) throw error;
    throw new ValidationError(`file ${label} cannot be read as ${file.format}: ${firstLine(error)}`, {
      cause: error,
    });
  }
}

interface Sniff {
  Delimiter: string;
  Quote: string;
  Escape: string;
  NewLineDelimiter: string;
  Comment: string;
  SkipRows: number;
  HasHeader: boolean;
  Columns: { name: string; type: string }[];
}

/**
 * Detects a CSV file's dialect with DuckDB's sniffer and refuses duplicate header names (DuckDB would rename
 * them `a`, `a_1`, silently changing the data's meaning). Throws ValidationError naming `label`.
 */
export async function sniffCsv(
  duck: Duck,
  path: string,
  compression: Compression,
  label: string,
): Promise<CsvDialect> {
  try {
    const [sniff] = (await duck.all(
      `SELECT Delimiter, Quote, Escape, NewLineDelimiter, Comment, SkipRows, HasHeader, Columns
       FROM sniff_csv(${lit(path)}, ignore_errors=true, ${compressionOption(compression)})`,
    )) as unknown as Sniff[];
    if (!sniff) throw new ValidationError(`file ${label}: DuckDB could not detect a CSV dialect`);
    const unset = (value: string) => (value === '(empty)' ? '' : value);
    const dialect: CsvDialect = {
      delimiter: sniff.Delimiter,
      quote: unset(sniff.Quote),
      escape: unset(sniff.Escape),
      newline: sniff.NewLineDelimiter,
      comment: unset(sniff.Comment),
      skip: Number(sniff.SkipRows),
      header: Boolean(sniff.HasHeader),
      names: sniff.Columns.map((column) => column.name),
    };
    if (dialect.header) {
      // DuckDB renames duplicate headers (a, a_1); read the header row itself to catch them.
      const positional = dialect.names.map((_, i) => `${lit(`c${i}`)}: 'VARCHAR'`).join(', ');
      const [header] = await duck.all(
        `SELECT * FROM read_csv(${lit(path)}, auto_detect=false, header=false, ${dialectOptions(dialect, compression)},
           columns={${positional}}, null_padding=true, ignore_errors=true, parallel=false) LIMIT 1`,
      );
      const raw = dialect.names.map((_, i) => String(header?.[`c${i}`] ?? '').replace(/^\uFEFF/, ''));
      const duplicates = [...new Set(raw.filter((name, i) => raw.indexOf(name) !== i))];
      if (duplicates.length > 0) {
        throw new ValidationError(
          `file ${label} has duplicate column names ${duplicates.map((d) => JSON.stringify(d)).join(', ')}: rename them, columns must be unique`,
        );
      }
    }
    return dialect;
  } catch (error) {
    if (error instanceof ValidationError) throw error;
    throw new ValidationError(`file ${label} cannot be read as csv: ${firstLine(error)}`, { cause: error });
  }
}

function compressionOption(compression: Compression): string {
  return `compression=${lit(compression === 'gzip' ? 'gzip' : 'none')}`;
}

function dialectOptions(dialect: CsvDialect, compression: Compression): string {
  return [
    `delim=${lit(dialect.delimiter)}`,
    `quote=${lit(dialect.quote)}`,
    `escape=${lit(dialect.escape)}`,
    `new_line=${lit(dialect.newline)}`,
    `comment=${lit(dialect.comment)}`,
    `skip=${dialect.skip}`,
    compressionOption(compression),
  ].join(', ');
}

function openCsv(
  path: string,
  compression: Compression,
  dialect: CsvDialect,
  contract?: SchemaContract,
): Source {
  const notes: string[] = [];
  let names = dialect.names;
  if (!dialect.header) {
    if (contract && contract.columns.length === names.length) {
      names = contract.columns.map((column) => column.name);
      notes.push('file has no header row: columns were mapped to the contract by position');
    } else {
      notes.push('file has no header row');
    }
  }
  const id = ++counter;
  const rejectsTable = `kiln_rejects_${id}`;
  const columns = names.map((name) => `${lit(name)}: 'VARCHAR'`).join(', ');
  const scan = (
    errors: string,
  ) => `(SELECT *, NULL::VARCHAR AS __src_error, NULL::VARCHAR AS __src_raw FROM read_csv(${lit(path)},
    auto_detect=false, header=${dialect.header}, ${dialectOptions(dialect, compression)}, columns={${columns}}, ${errors}))`;
  const relation = scan(
    `store_rejects=true, rejects_table=${lit(rejectsTable)}, rejects_scan=${lit(`kiln_scans_${id}`)}`,
  );
  return {
    format: 'csv',
    textual: true,
    columns: names.map((name) => ({ name, expr: ident(name), duckType: 'VARCHAR' })),
    relation,
    plainRelation: scan('ignore_errors=true'),
    rejectsTable,
    notes,
  };
}

async function openJsonLines(duck: Duck, path: string, compression: Compression): Promise<Source> {
  // read_json_objects keeps a malformed line as a NULL row instead of dropping it, so every line is counted.
  const objects = `read_json_objects(${lit(path)}, format='newline_delimited', ignore_errors=true, compression=${lit(
    compression === 'gzip' ? 'gzip' : 'uncompressed',
  )})`;
  const keys = await duck.all(
    `SELECT key, min(pos) AS pos FROM (
       SELECT unnest(json_keys(json)) AS key, unnest(range(len(json_keys(json)))) AS pos
       FROM ${objects} WHERE json_type(json) = 'OBJECT')
     GROUP BY key ORDER BY pos, key`,
  );
  const names = keys.map((row) => String(row.key));
  const paths = names.map((name) => lit(`$."${name.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`));
  const values = names.length > 0 ? `json_extract_string(json, [${paths.join(', ')}])` : '[]::VARCHAR[]';
  const relation = `(SELECT ${values} AS __vals,
      CASE WHEN json IS NULL THEN 'json:malformed' WHEN json_type(json) <> 'OBJECT' THEN 'json:not-an-object' END AS __src_error,
      CAST(json AS VARCHAR) AS __src_raw
    FROM ${objects})`;
  return {
    format: 'jsonl',
    textual: true,
    columns: names.map((name, i) => ({ name, expr: `__vals[${i + 1}]`, duckType: 'VARCHAR' })),
    relation,
    plainRelation: relation,
    notes: [],
  };
}

async function openParquet(duck: Duck, path: string): Promise<Source> {
  const described = await duck.all(`DESCRIBE SELECT * FROM read_parquet(${lit(path)})`);
  const columns = described.map((row) => ({
    name: String(row.column_name),
    expr: ident(String(row.column_name)),
    duckType: String(row.column_type),
  }));
  const relation = `(SELECT *, NULL::VARCHAR AS __src_error, NULL::VARCHAR AS __src_raw FROM read_parquet(${lit(path)}))`;
  return { format: 'parquet', textual: false, columns, relation, plainRelation: relation, notes: [] };
}

/** The first line of an error's message (DuckDB appends long hints). */
export function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0] ?? message;
}
