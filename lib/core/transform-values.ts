import { ValidationError } from './errors.ts';
import type { ColumnType } from './schema.ts';

/**
 * Value-level helpers of the transform spec: canonical JSON, FNV-1a, timestamp parsing, and the two readers
 * (typed batch values for `applyTransform`, loose request values for `coerceRowValues`). Both paths funnel into
 * the same typed JS values, which is what makes batch and online features bit-identical.
 */

/** JSON with object keys sorted by UTF-16 code unit at every level; the input of every transform hash. */
export function canonicalJson(value: unknown): string {
  return canonical(value, '$');
}

function canonical(value: unknown, where: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      // JSON would silently turn these into null and the hash would no longer describe the document.
      if (!Number.isFinite(value)) {
        throw new ValidationError(
          `canonicalJson: ${where} is ${value}; only finite numbers have a JSON form`,
        );
      }
      return JSON.stringify(value);
    case 'object': {
      const withToJson = value as { toJSON?: unknown };
      if (typeof withToJson.toJSON === 'function') return canonical(withToJson.toJSON(), where);
      if (Array.isArray(value)) {
        return `[${value.map((item, i) => (item === undefined ? 'null' : canonical(item, `${where}[${i}]`))).join(',')}]`;
      }
      const record = value as Record<string, unknown>;
      const parts: string[] = [];
      for (const key of Object.keys(record).sort()) {
        const item = record[key];
        if (item === undefined) continue;
        parts.push(`${JSON.stringify(key)}:${canonical(item, `${where}.${key}`)}`);
      }
      return `{${parts.join(',')}}`;
    }
    default:
      throw new ValidationError(`canonicalJson: ${where} is a ${typeof value}, which has no JSON form`);
  }
}

/** FNV-1a 32-bit over the UTF-8 bytes of `text` (lone surrogates count as U+FFFD, like TextEncoder); unsigned. */
export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  const byte = (b: number) => {
    hash = Math.imul(hash ^ b, 0x01000193);
  };
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdfff) {
      const next = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (cp <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (next - 0xdc00);
        i++;
      } else {
        cp = 0xfffd;
      }
    }
    if (cp < 0x80) {
      byte(cp);
    } else if (cp < 0x800) {
      byte(0xc0 | (cp >> 6));
      byte(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      byte(0xe0 | (cp >> 12));
      byte(0x80 | ((cp >> 6) & 0x3f));
      byte(0x80 | (cp & 0x3f));
    } else {
      byte(0xf0 | (cp >> 18));
      byte(0x80 | ((cp >> 12) & 0x3f));
      byte(0x80 | ((cp >> 6) & 0x3f));
      byte(0x80 | (cp & 0x3f));
    }
  }
  return hash >>> 0;
}

// `Date.parse` reads "2024-03-05 10:20:30" as local time in V8, so a server's TZ would change the features.
const TIMESTAMP_PATTERN =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(?:(Z|z|UTC)|([+-])(\d{2})(?::?(\d{2}))?)?$/;

/**
 * Epoch milliseconds of an ISO-8601 / DuckDB timestamp string, or undefined if it is not one. Accepts
 * `YYYY-MM-DD`, `YYYY-MM-DD[T ]hh:mm[:ss[.fff…]]` with optional `Z` or `±hh[:mm]`; no zone means UTC.
 * Fractions beyond milliseconds are truncated so a timestamp never rolls over into the next second.
 */
export function parseTimestamp(text: string): number | undefined {
  const m = TIMESTAMP_PATTERN.exec(text.trim());
  if (!m) return undefined;
  const [, ys, mos, ds, hs, mis, ss, frac, , sign, ohs, oms] = m;
  const year = Number(ys);
  const month = Number(mos);
  const day = Number(ds);
  const hour = Number(hs ?? 0);
  const minute = Number(mis ?? 0);
  const second = Number(ss ?? 0);
  const ms = frac ? Number(frac.slice(0, 3).padEnd(3, '0')) : 0;
  const offsetMinutes = sign ? (sign === '-' ? -1 : 1) * (Number(ohs) * 60 + Number(oms ?? 0)) : 0;
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59 || Number(ohs ?? 0) > 23 || Number(oms ?? 0) > 59)
    return undefined;
  return (
    daysFromCivil(year, month, day) * DAY_MS +
    ((hour * 60 + minute - offsetMinutes) * 60 + second) * 1000 +
    ms
  );
}

const DAY_MS = 86_400_000;

// Integer calendar arithmetic (H. Hinnant's civil-from-days algorithms) instead of Date: exact, proleptic
// Gregorian, independent of the host's time zone, and several times faster per row.
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

/** UTC calendar fields of an epoch-millisecond instant; `dayofweek` is 0 = Sunday, as in DuckDB. */
export function utcParts(epochMs: number): {
  year: number;
  month: number;
  day: number;
  dayofweek: number;
  hour: number;
} {
  const days = Math.floor(epochMs / DAY_MS);
  const hour = Math.floor((epochMs - days * DAY_MS) / 3_600_000);
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  // 1970-01-01 was a Thursday (4).
  const dayofweek = (((days + 4) % 7) + 7) % 7;
  return { year, month, day, dayofweek, hour };
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** Short rendering of an offending value for error messages. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value instanceof Date)
    return `Date(${Number.isNaN(value.getTime()) ? 'invalid' : value.toISOString()})`;
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object' && value !== null) return 'an object';
  return String(value);
}

function typeError(column: string, type: ColumnType, value: unknown, hint = ''): ValidationError {
  return new ValidationError(`column "${column}": expected ${type}, got ${describeValue(value)}${hint}`);
}

// ---------------------------------------------------------------------------------------------------------
// Batch reader: values as DuckDB hands them over (numbers, bigints, strings, booleans, null, ISO timestamps).
// ---------------------------------------------------------------------------------------------------------

/** A typed number (NaN = missing) from a batch value of a number / integer / boolean column. */
export function readNumeric(column: string, type: ColumnType, raw: unknown): number {
  if (raw === null || raw === undefined) return Number.NaN;
  if (type === 'boolean') {
    if (typeof raw === 'boolean') return raw ? 1 : 0;
    throw typeError(column, type, raw, ONLINE_HINT);
  }
  if (typeof raw === 'number') {
    if (Number.isNaN(raw)) return Number.NaN;
    if (!Number.isFinite(raw)) {
      throw new ValidationError(`column "${column}": ${raw} is not a finite number`);
    }
    return raw;
  }
  if (typeof raw === 'bigint') return Number(raw);
  throw typeError(column, type, raw, ONLINE_HINT);
}

/** The category key (null = missing) of a batch value of a string / integer / boolean column. */
export function readCategory(column: string, type: ColumnType, raw: unknown): string | null {
  if (raw === null || raw === undefined) return null;
  if (type === 'string') {
    if (typeof raw === 'string') return raw === '' ? null : raw;
    throw typeError(column, type, raw, ONLINE_HINT);
  }
  if (type === 'boolean') {
    if (typeof raw === 'boolean') return raw ? 'true' : 'false';
    throw typeError(column, type, raw, ONLINE_HINT);
  }
  const n = readNumeric(column, type, raw);
  return Number.isNaN(n) ? null : numberKey(n);
}

/** Category key of a number: its shortest round-trip decimal, with -0 folded into 0. */
export function numberKey(n: number): string {
  return String(n === 0 ? 0 : n);
}

/** Epoch ms (NaN = missing) of a batch value of a timestamp column. */
export function readTimestamp(column: string, raw: unknown): number {
  if (raw === null || raw === undefined || raw === '') return Number.NaN;
  if (typeof raw === 'string') {
    const ms = parseTimestamp(raw);
    if (ms === undefined) {
      throw new ValidationError(
        `column "${column}": ${describeValue(raw)} is not an ISO-8601 timestamp (YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH:MM])`,
      );
    }
    return ms;
  }
  if (raw instanceof Date && !Number.isNaN(raw.getTime())) return raw.getTime();
  throw typeError(column, 'timestamp', raw, ONLINE_HINT);
}

const ONLINE_HINT = ' (request rows go through coerceRowValues before applyTransform)';

// ---------------------------------------------------------------------------------------------------------
// Request reader: JSON values or CSV strings, turned into the typed values the batch reader accepts.
// ---------------------------------------------------------------------------------------------------------

const MISSING_TOKENS = new Set(['', 'na', 'n/a', 'null', 'none']);
const DECIMAL_PATTERN = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const NON_FINITE_PATTERN = /^[+-]?(?:inf|infinity|nan)$/i;
const TRUE_TOKENS = new Set(['true', 't', '1', 'yes', 'y']);
const FALSE_TOKENS = new Set(['false', 'f', '0', 'no', 'n']);

/**
 * Typed value (or null when missing) of one request value. Strings from CSV are parsed; for non-string
 * columns `""`, `NA`, `N/A`, `null`, `None` (any case) mean missing; for string columns only `""` does.
 */
export function coerceValue(column: string, type: ColumnType, raw: unknown): unknown {
  if (raw === null || raw === undefined) return null;
  if (typeof raw === 'string') return coerceString(column, type, raw);
  if (typeof raw === 'number') {
    if (Number.isNaN(raw)) {
      throw new ValidationError(`column "${column}": NaN is not allowed; send null for a missing value`);
    }
    if (!Number.isFinite(raw)) throw new ValidationError(`column "${column}": ${raw} is not a finite number`);
    if (type === 'number') return raw;
    if (type === 'integer') return checkInteger(column, raw, raw);
    if (type === 'boolean' && (raw === 0 || raw === 1)) return raw === 1;
    throw typeError(column, type, raw);
  }
  if (typeof raw === 'bigint' && (type === 'number' || type === 'integer')) return Number(raw);
  if (typeof raw === 'boolean' && type === 'boolean') return raw;
  throw typeError(column, type, raw);
}

function coerceString(column: string, type: ColumnType, raw: string): unknown {
  if (type === 'string') return raw === '' ? null : raw;
  const text = raw.trim();
  if (MISSING_TOKENS.has(text.toLowerCase())) return null;
  switch (type) {
    case 'number':
    case 'integer': {
      if (NON_FINITE_PATTERN.test(text)) {
        throw new ValidationError(`column "${column}": ${describeValue(raw)} is not a finite number`);
      }
      if (!DECIMAL_PATTERN.test(text)) {
        throw new ValidationError(`column "${column}": expected ${type}, got ${describeValue(raw)}`);
      }
      // Number() rounds decimal text correctly, exactly as DuckDB's DOUBLE parser does for the batch path.
      const n = Number(text);
      if (!Number.isFinite(n)) {
        throw new ValidationError(`column "${column}": ${describeValue(raw)} overflows a 64-bit float`);
      }
      return type === 'integer' ? checkInteger(column, n, raw) : n;
    }
    case 'boolean': {
      const lower = text.toLowerCase();
      if (TRUE_TOKENS.has(lower)) return true;
      if (FALSE_TOKENS.has(lower)) return false;
      throw new ValidationError(
        `column "${column}": expected boolean (true/false, t/f, 1/0, yes/no), got ${describeValue(raw)}`,
      );
    }
    case 'timestamp':
      if (parseTimestamp(text) === undefined) {
        throw new ValidationError(
          `column "${column}": ${describeValue(raw)} is not an ISO-8601 timestamp (YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH:MM])`,
        );
      }
      return text;
  }
}

function checkInteger(column: string, n: number, raw: unknown): number {
  if (!Number.isInteger(n)) {
    throw new ValidationError(`column "${column}": expected integer, got ${describeValue(raw)}`);
  }
  return n;
}
