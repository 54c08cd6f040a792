import { CsvError, parse } from 'csv-parse/sync';
import { ValidationError } from '../core/errors.ts';
import { PayloadTooLargeError } from './errors.ts';

/** A parsed CSV field: its text, or null when the field was empty and unquoted (missing). */
export type CsvField = string | null;

/**
 * Parses RFC 4180 CSV request bodies (comma separator, `"` quoting with `""` escapes, LF or CRLF line ends,
 * an optional UTF-8 BOM) with csv-parse. Blank lines are skipped; an unquoted empty field is `null`
 * (missing), a quoted one is `""`. Rows may differ in length: the caller checks them against the model's
 * inputs and names the row. Throws ValidationError naming the line on malformed quoting, and
 * PayloadTooLargeError past `maxRows` rows.
 */
export function parseCsv(text: string, maxRows: number): CsvField[][] {
  let rows: CsvField[][];
  try {
    rows = parse(text, {
      bom: true,
      // Either line end, even mixed in one body (csv-parse would otherwise settle on the first one it sees).
      record_delimiter: ['\r\n', '\n'],
      skip_empty_lines: true,
      relax_column_count: true,
      // One row past the limit is enough to know the body is over it.
      to: maxRows + 1,
      cast: (value, context) => (value === '' && !context.quoting ? null : value),
    }) as CsvField[][];
  } catch (error) {
    if (error instanceof CsvError) {
      const line = (error as CsvError & { lines?: number }).lines;
      throw new ValidationError(`CSV${line === undefined ? '' : ` line ${line}`}: ${csvProblem(error)}`, {
        cause: error,
      });
    }
    throw error;
  }
  if (rows.length > maxRows) {
    throw new PayloadTooLargeError(`CSV body has more than ${maxRows} rows (the per-request limit)`);
  }
  return rows;
}

/** csv-parse's message without its option dump, in the words the API uses elsewhere. */
function csvProblem(error: CsvError): string {
  switch (error.code) {
    case 'CSV_QUOTE_NOT_CLOSED':
      return 'unterminated quoted field';
    case 'CSV_INVALID_CLOSING_QUOTE':
      return 'unexpected character after a closing quote';
    case 'INVALID_OPENING_QUOTE':
      return 'a quote inside an unquoted field';
    default:
      return error.message;
  }
}
