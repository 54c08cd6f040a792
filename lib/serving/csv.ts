import { ValidationError } from '../core/errors.ts';
import { PayloadTooLargeError } from './errors.ts';

/** A parsed CSV field: its text, and whether it was quoted (a quoted empty string is "", not missing). */
export type CsvField = string | null;

/**
 * Parses RFC 4180 CSV (comma separator, `"` quoting with `""` escapes, LF or CRLF line ends). Blank lines
 * are skipped; an unquoted empty field is `null` (missing), a quoted one is `""`. Throws ValidationError on
 * an unterminated quote or text after a closing quote, naming the line.
 */
export function parseCsv(text: string, maxRows: number): CsvField[][] {
  const rows: CsvField[][] = [];
  const n = text.length;
  let i = 0;
  let line = 1;
  // A UTF-8 byte-order mark is common from spreadsheet exports.
  if (text.charCodeAt(0) === 0xfeff) i = 1;
  while (i < n) {
    // Skip blank lines.
    const c0 = text.charCodeAt(i);
    if (c0 === 10) {
      i++;
      line++;
      continue;
    }
    if (c0 === 13 && text.charCodeAt(i + 1) === 10) {
      i += 2;
      line++;
      continue;
    }
    const row: CsvField[] = [];
    for (;;) {
      let field: CsvField;
      if (text.charCodeAt(i) === 34) {
        // Quoted field.
        const startLine = line;
        let value = '';
        let j = i + 1;
        for (;;) {
          const q = text.indexOf('"', j);
          if (q === -1) throw new ValidationError(`CSV line ${startLine}: unterminated quoted field`);
          value += text.slice(j, q);
          if (text.charCodeAt(q + 1) === 34) {
            value += '"';
            j = q + 2;
            continue;
          }
          i = q + 1;
          break;
        }
        for (let k = 0; k < value.length; k++) if (value.charCodeAt(k) === 10) line++;
        field = value;
        const next = text.charCodeAt(i);
        if (i < n && next !== 44 && next !== 10 && !(next === 13 && text.charCodeAt(i + 1) === 10)) {
          throw new ValidationError(`CSV line ${line}: unexpected character after a closing quote`);
        }
      } else {
        let j = i;
        while (j < n) {
          const c = text.charCodeAt(j);
          if (c === 44 || c === 10 || (c === 13 && text.charCodeAt(j + 1) === 10)) break;
          if (c === 34) throw new ValidationError(`CSV line ${line}: a quote inside an unquoted field`);
          j++;
        }
        field = j === i ? null : text.slice(i, j);
        i = j;
      }
      row.push(field);
      if (i >= n) break;
      const c = text.charCodeAt(i);
      if (c === 44) {
        i++;
        // A trailing comma at the end of the text or line means one more (missing) field.
        if (i >= n) {
          row.push(null);
          break;
        }
        continue;
      }
      // End of line.
      i += c === 13 ? 2 : 1;
      line++;
      break;
    }
    rows.push(row);
    if (rows.length > maxRows) {
      throw new PayloadTooLargeError(`CSV body has more than ${maxRows} rows (the per-request limit)`);
    }
  }
  return rows;
}
