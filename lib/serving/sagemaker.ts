import { z } from 'zod';
import { ValidationError } from '../core/errors.ts';
import type { InputColumn } from '../core/transform.ts';
import type { ModelOutput } from '../ml/types.ts';
import { type CsvField, parseCsv } from './csv.ts';
import { NotAcceptableError, PayloadTooLargeError, UnsupportedMediaTypeError } from './errors.ts';

/** A request row before coercion: an object by column name, or an array in input order. */
export type RawRow = Record<string, unknown> | unknown[];

/** One prediction in the SageMaker JSON response (and in capture records). */
export type Prediction = { label: string; probabilities: Record<string, number> } | { value: number };

// Instances are checked by hand rather than with z.record, which would copy them and turn an own
// "__proto__" key into a prototype; coerceRowValues rejects that key as an unknown column instead.
const InvocationJsonSchema = z.union(
  [z.strictObject({ instances: z.array(z.unknown()) }), z.array(z.unknown())],
  {
    error: 'expected {"instances": [...]} where each instance is an object or an array',
  },
);

function isRawRow(value: unknown): value is RawRow {
  return typeof value === 'object' && value !== null;
}

/** Media type without parameters, lower-cased; undefined when the header is absent or blank. */
export function mediaType(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const semi = header.indexOf(';');
  const type = (semi === -1 ? header : header.slice(0, semi)).trim().toLowerCase();
  return type === '' ? undefined : type;
}

/** Parses an `/invocations` body (CSV or JSON) into raw rows; throws 4xx errors naming the problem. */
export function parseInvocationBody(
  body: Buffer,
  contentType: string | undefined,
  inputs: readonly InputColumn[],
  target: string | undefined,
  maxRows: number,
): RawRow[] {
  let type = mediaType(contentType);
  const text = body.toString('utf8');
  if (type === undefined || type === 'application/octet-stream') {
    // InvokeEndpoint defaults to octet-stream; sniff rather than refuse an obviously JSON or CSV body.
    const first = text.trimStart()[0];
    type = first === '{' || first === '[' ? 'application/json' : 'text/csv';
  }
  let rows: RawRow[];
  if (type === 'application/json' || type === 'application/jsonlines' || type.endsWith('+json')) {
    rows = type === 'application/jsonlines' ? parseJsonLines(text) : parseJsonInstances(text);
  } else if (type === 'text/csv' || type === 'application/csv') {
    rows = csvRows(parseCsv(text, maxRows), inputs, target);
  } else {
    throw new UnsupportedMediaTypeError(
      `unsupported Content-Type ${JSON.stringify(contentType)}; send text/csv or application/json`,
    );
  }
  if (rows.length === 0) throw new ValidationError('empty batch: the request has no rows');
  if (rows.length > maxRows) {
    throw new PayloadTooLargeError(
      `the request has ${rows.length} rows; the limit is ${maxRows} per request`,
    );
  }
  return rows;
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new ValidationError(`${what} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
}

function parseJsonInstances(text: string): RawRow[] {
  const json = parseJson(text, 'the request body');
  // The common shape, checked without zod's allocation; everything else gets zod's precise message.
  const instances = (json as { instances?: unknown } | null)?.instances;
  if (
    Array.isArray(instances) &&
    instances.every(isRawRow) &&
    Object.getPrototypeOf(json) === Object.prototype &&
    Object.keys(json as object).length === 1
  ) {
    return instances;
  }
  const result = InvocationJsonSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = issue?.path.length ? ` at ${issue.path.join('.')}` : '';
    throw new ValidationError(`${issue?.message ?? 'invalid request body'}${path}`, { cause: result.error });
  }
  const list = Array.isArray(result.data) ? result.data : result.data.instances;
  list.forEach((instance, i) => {
    if (!isRawRow(instance)) {
      throw new ValidationError(
        `instance ${i}: expected an object {column: value} or an array of values in input order, got ${JSON.stringify(instance)?.slice(0, 40)}`,
      );
    }
  });
  return list as RawRow[];
}

function parseJsonLines(text: string): RawRow[] {
  const rows: RawRow[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const value = parseJson(line, `line ${i + 1}`);
    if (!isRawRow(value)) throw new ValidationError(`line ${i + 1}: each line must be an object or an array`);
    rows.push(value);
  });
  return rows;
}

/**
 * CSV rows are in input order with no header; a first row made only of column names is taken as a header
 * (then columns may come in any order, and a target column is ignored).
 */
function csvRows(rows: CsvField[][], inputs: readonly InputColumn[], target: string | undefined): RawRow[] {
  const first = rows[0];
  if (first === undefined) return [];
  const names = new Set(inputs.map((c) => c.name));
  const header = first.map((f) => (f === null ? '' : f.trim()));
  const isHeader =
    header.every((h) => names.has(h) || (h !== '' && h === target)) && new Set(header).size === header.length;
  if (!isHeader) return rows;
  return rows.slice(1).map((row, r) => {
    if (row.length !== header.length) {
      throw new ValidationError(
        `CSV row ${r + 1}: ${row.length} fields under a header of ${header.length} columns`,
      );
    }
    const object: Record<string, unknown> = {};
    header.forEach((h, i) => {
      if (h !== target) object[h] = row[i];
    });
    return object;
  });
}

/** Per-row predictions: label and per-class probabilities, or the regression value. */
export function predictionsOf(output: ModelOutput, classes: readonly string[]): Prediction[] {
  const out: Prediction[] = new Array(output.nRows);
  if (output.values !== undefined) {
    for (let r = 0; r < output.nRows; r++) out[r] = { value: output.values[r] ?? Number.NaN };
    return out;
  }
  const probs = output.probabilities ?? new Float32Array(0);
  const labels = output.labels ?? new Int32Array(0);
  const c = classes.length;
  for (let r = 0; r < output.nRows; r++) {
    const probabilities: Record<string, number> = {};
    for (let k = 0; k < c; k++) probabilities[classes[k] as string] = probs[r * c + k] ?? Number.NaN;
    out[r] = { label: classes[labels[r] ?? 0] ?? '', probabilities };
  }
  return out;
}

/** Which format the client accepts: JSON unless text/csv is asked for (and JSON is not preferred). */
export function negotiate(accept: string | undefined): 'json' | 'csv' {
  if (accept === undefined || accept === '') return 'json';
  let best: 'json' | 'csv' | undefined;
  let bestQ = -1;
  for (const part of accept.split(',')) {
    const [rawType, ...params] = part.split(';');
    const type = (rawType ?? '').trim().toLowerCase();
    let q = 1;
    for (const p of params) {
      const [k, v] = p.split('=');
      if (k?.trim() === 'q') q = Number(v);
    }
    if (!(q > 0)) continue;
    const kind =
      type === 'text/csv' || type === 'application/csv'
        ? 'csv'
        : type === 'application/json' || type === 'application/*' || type === '*/*' || type.endsWith('+json')
          ? 'json'
          : undefined;
    if (kind !== undefined && q > bestQ) {
      best = kind;
      bestQ = q;
    }
  }
  if (best === undefined) {
    throw new NotAcceptableError(
      `cannot answer with ${JSON.stringify(accept)}; use application/json or text/csv`,
    );
  }
  return best;
}

/** The JSON body of a successful `/invocations`. */
export function predictionsJson(predictions: Prediction[]): string {
  return JSON.stringify({ predictions });
}

/** A number as JSON.stringify writes it (non-finite values become null). */
function jsonNumber(value: number): string {
  return Number.isFinite(value) ? String(value) : 'null';
}

/**
 * `predictionsJson(predictionsOf(output, classes))` written straight from the model output, without the
 * per-row objects: this runs once per request on the server's hot path. A test holds the two equal.
 */
export function predictionsJsonOf(output: ModelOutput, classes: readonly string[]): string {
  let text = '{"predictions":[';
  if (output.values !== undefined) {
    for (let r = 0; r < output.nRows; r++) {
      text += `${r === 0 ? '' : ','}{"value":${jsonNumber(output.values[r] ?? Number.NaN)}}`;
    }
    return `${text}]}`;
  }
  const probs = output.probabilities ?? new Float32Array(0);
  const labels = output.labels ?? new Int32Array(0);
  const keys = classes.map((c) => JSON.stringify(c));
  const c = classes.length;
  for (let r = 0; r < output.nRows; r++) {
    text += `${r === 0 ? '' : ','}{"label":${keys[labels[r] ?? 0] ?? '""'},"probabilities":{`;
    for (let k = 0; k < c; k++) {
      text += `${k === 0 ? '' : ','}${keys[k]}:${jsonNumber(probs[r * c + k] ?? Number.NaN)}`;
    }
    text += '}}';
  }
  return `${text}]}`;
}

function csvCell(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * CSV answer, one line per input row and no header (so Batch Transform can join lines): `label,p_1,…,p_C`
 * with probabilities in the model's class order, or the value for regression.
 */
export function predictionsCsv(output: ModelOutput, classes: readonly string[]): string {
  const lines: string[] = [];
  if (output.values !== undefined) {
    for (let r = 0; r < output.nRows; r++) lines.push(String(output.values[r]));
  } else {
    const probs = output.probabilities ?? new Float32Array(0);
    const labels = output.labels ?? new Int32Array(0);
    const c = classes.length;
    for (let r = 0; r < output.nRows; r++) {
      const cells = [csvCell(classes[labels[r] ?? 0] ?? '')];
      for (let k = 0; k < c; k++) cells.push(String(probs[r * c + k]));
      lines.push(cells.join(','));
    }
  }
  return `${lines.join('\n')}\n`;
}
