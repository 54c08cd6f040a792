import { createHash } from 'node:crypto';
import { IntegrityError, ValidationError } from './errors.ts';
import type { ColumnContract } from './schema.ts';
import {
  CATEGORICAL_OPS,
  type ClipStep,
  DATE_PARTS,
  type FittedStep,
  type FittedTransform,
  FittedTransformSchema,
  formatIssues,
  type ImputeStep,
  type InputColumn,
  type OneHotStep,
  type OrdinalStep,
  parseTransformSpec,
  type Step,
  type TransformColumn,
  type TransformSpec,
} from './transform-schema.ts';
import {
  canonicalJson,
  coerceValue,
  describeValue,
  fnv1a32,
  numberKey,
  readCategory,
  readNumeric,
  readTimestamp,
  utcParts,
} from './transform-values.ts';

export {
  DATE_PARTS,
  type DatePart,
  type FittedStep,
  type FittedTransform,
  FittedTransformSchema,
  type InputColumn,
  parseTransformSpec,
  STEP_OPS,
  type Step,
  type StepOp,
  StepSchema,
  type TransformColumn,
  type TransformSpec,
  TransformSpecSchema,
} from './transform-schema.ts';
export { canonicalJson, fnv1a32, parseTimestamp } from './transform-values.ts';

/** Suffix of the one-hot column that catches categories not seen (or not kept) at fit time. */
export const UNKNOWN_CATEGORY = '__unknown__';
/** One-hot keeps at most this many learned categories unless the step says otherwise. */
export const DEFAULT_MAX_ONEHOT = 100;
/** `defaultTransformSpec` one-hot encodes string columns with at most this many contract categories. */
export const DEFAULT_ONEHOT_LIMIT = 50;
/** `defaultTransformSpec` hashes other string columns into this many buckets. */
export const DEFAULT_HASH_BUCKETS = 64;

const CANONICAL_NAN_BITS = 0x7fc00000;

// ---------------------------------------------------------------------------------------------------------
// Default spec
// ---------------------------------------------------------------------------------------------------------

/** A sensible spec for a schema contract: every feature NaN-free, the target left out. */
export function defaultTransformSpec(columns: ColumnContract[], target: string): TransformSpec {
  if (!columns.some((c) => c.name === target)) {
    throw new ValidationError(
      `target "${target}" is not a column of the contract (columns: ${columns.map((c) => c.name).join(', ')})`,
    );
  }
  const features = columns
    .filter((c) => c.name !== target)
    .map(
      (c): TransformColumn => ({ name: c.name, type: c.type, nullable: c.nullable, steps: defaultSteps(c) }),
    );
  return parseTransformSpec({ kind: 'kiln.transform', version: 1, target, columns: features });
}

function defaultSteps(column: ColumnContract): Step[] {
  switch (column.type) {
    case 'number':
    case 'integer':
      return [{ op: 'impute', strategy: 'median' }];
    case 'boolean':
      return [{ op: 'impute', strategy: 'mode' }];
    case 'timestamp':
      return [{ op: 'dateparts', parts: [...DATE_PARTS] }];
    case 'string': {
      const n = column.categories?.length ?? 0;
      return n > 0 && n <= DEFAULT_ONEHOT_LIMIT
        ? [{ op: 'onehot', maxCategories: DEFAULT_ONEHOT_LIMIT, unknown: 'bucket' }]
        : [{ op: 'hash', buckets: DEFAULT_HASH_BUCKETS }];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fit
// ---------------------------------------------------------------------------------------------------------

type Rows = ReadonlyArray<Record<string, unknown>>;

/** Learns every step's parameters from training rows; the result is self-contained, hashed JSON. */
export function fitTransform(spec: TransformSpec, rows: Rows): FittedTransform {
  const parsed = parseTransformSpec(spec);
  if (rows.length === 0) throw new ValidationError('cannot fit a transform on zero rows');
  const first = rows[0] ?? {};
  for (const column of parsed.columns) {
    if (isDropped(column) || column.name in first) continue;
    throw new ValidationError(
      `column "${column.name}" of the transform spec is not in the training rows (row 0 has: ${Object.keys(first).join(', ')})`,
    );
  }
  const params = parsed.columns.map((column) => ({ column: column.name, steps: fitColumn(column, rows) }));
  const featureNames = params.flatMap((p) => columnFeatureNames(p.column, p.steps));
  const seen = new Set<string>();
  for (const name of featureNames) {
    if (seen.has(name)) {
      throw new ValidationError(
        `feature name "${name}" is produced twice; rename the column or category that collides with it`,
      );
    }
    seen.add(name);
  }
  const inputs: InputColumn[] = parsed.columns.map((c) => ({
    name: c.name,
    type: c.type,
    nullable: c.nullable ?? true,
  }));
  const body: Omit<FittedTransform, 'hash'> = { ...parsed, fitted: true, inputs, featureNames, params };
  return { ...body, hash: transformHash(body) };
}

/** sha256 hex of the canonical JSON of a fitted transform without its `hash` field. */
export function transformHash(fitted: Omit<FittedTransform, 'hash'> & { hash?: string }): string {
  const { hash: _ignored, ...body } = fitted;
  return createHash('sha256').update(canonicalJson(body)).digest('hex');
}

function isDropped(column: TransformColumn): boolean {
  return column.steps.some((s) => s.op === 'drop');
}

function isCategorical(column: TransformColumn): boolean {
  const last = column.steps.at(-1);
  return column.type === 'string' || (last !== undefined && CATEGORICAL_OPS.has(last.op));
}

function fitColumn(column: TransformColumn, rows: Rows): FittedStep[] {
  if (isDropped(column)) return [{ op: 'drop' }];
  const { name, type } = column;
  const label = `column "${name}"`;
  if (type === 'timestamp') {
    return column.steps.map((step) => {
      if (step.op !== 'dateparts') throw new ValidationError(`${label}: unexpected step ${step.op}`);
      return { op: 'dateparts', parts: [...step.parts] };
    });
  }
  const fitted: FittedStep[] = [];
  if (isCategorical(column)) {
    let keys = readColumn(rows, (row, r) => readCategory(name, type, cell(row, name, r)));
    for (const step of column.steps) {
      const params = fitCategoricalStep(step, keys, column);
      fitted.push(params);
      if (params.op === 'impute') {
        const fill = String(params.fill);
        keys = keys.map((k) => k ?? fill);
      }
    }
    return fitted;
  }
  let values = Float64Array.from(readColumn(rows, (row, r) => readNumeric(name, type, cell(row, name, r))));
  for (const step of column.steps) {
    const params = fitNumericStep(step, values, column);
    fitted.push(params);
    values = values.map(numericStep(params, name));
  }
  return fitted;
}

/** Reads one column of every row, prefixing a reader's error with the row it came from. */
function readColumn<T>(rows: Rows, read: (row: Record<string, unknown>, r: number) => T): T[] {
  const out: T[] = new Array(rows.length);
  let r = 0;
  try {
    for (; r < rows.length; r++) out[r] = read(rows[r] ?? {}, r);
  } catch (error) {
    if (error instanceof ValidationError && !error.message.startsWith('row ')) {
      throw new ValidationError(`row ${r}: ${error.message}`, { cause: error });
    }
    throw error;
  }
  return out;
}

function cell(row: Record<string, unknown>, name: string, r: number): unknown {
  const value = row[name];
  if (value === undefined && !(name in row)) {
    throw new ValidationError(`row ${r} has no column "${name}" (it has: ${Object.keys(row).join(', ')})`);
  }
  return value;
}

function present(values: Float64Array): Float64Array {
  return values.filter((v) => !Number.isNaN(v));
}

function needValues(values: Float64Array, column: TransformColumn, what: string): Float64Array {
  const observed = present(values);
  if (observed.length === 0) {
    throw new ValidationError(
      `column "${column.name}": cannot fit ${what}, all ${values.length} training values are missing (use impute "constant" first, or drop the column)`,
    );
  }
  return observed;
}

/** Folds -0 into 0: JSON writes -0 as 0, and a fitted transform must mean the same after a round trip. */
function plain(n: number): number {
  return n === 0 ? 0 : n;
}

function fitNumericStep(step: Step, values: Float64Array, column: TransformColumn): FittedStep {
  switch (step.op) {
    case 'impute':
      return { op: 'impute', fill: plain(numericFill(step, values, column)) };
    case 'clip':
      return fitClip(step, values, column);
    case 'scale': {
      const observed = needValues(values, column, `scale (${step.method})`);
      if (step.method === 'standard') {
        const mean = stableMean(observed);
        const std = Math.sqrt(stableMean(observed.map((v) => (v - mean) ** 2)));
        // A constant column would divide by zero; centring alone keeps it finite and still informative.
        return { op: 'scale', center: plain(mean), scale: std > 0 && Number.isFinite(std) ? std : 1 };
      }
      const lo = observed.reduce((a, b) => Math.min(a, b));
      const hi = observed.reduce((a, b) => Math.max(a, b));
      const range = hi - lo;
      return { op: 'scale', center: plain(lo), scale: range > 0 && Number.isFinite(range) ? range : 1 };
    }
    case 'log': {
      const offset = plain(step.offset ?? 0);
      const observed = present(values);
      const lowest = observed.length > 0 ? observed.reduce((a, b) => Math.min(a, b)) : 0;
      if (lowest + offset < 0) {
        throw new ValidationError(
          `column "${column.name}": log needs value + offset >= 0, but the training data has ${lowest} with offset ${offset}; add clip {min: ${-offset}} before log or raise offset to at least ${-lowest}`,
        );
      }
      return { op: 'log', offset };
    }
    default:
      throw new ValidationError(
        `column "${column.name}": step ${step.op} does not apply to a numeric feature`,
      );
  }
}

function numericFill(step: ImputeStep, values: Float64Array, column: TransformColumn): number {
  if (step.strategy === 'constant') {
    return Number(step.value);
  }
  const observed = needValues(values, column, `impute (${step.strategy})`);
  if (step.strategy === 'mean') return stableMean(observed);
  const sorted = observed.slice().sort();
  if (step.strategy === 'median') return quantileOfSorted(sorted, 0.5);
  // Mode: the longest run in sorted order; the first (smallest) value wins a tie.
  let best = sorted[0] ?? 0;
  let bestRun = 0;
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j < sorted.length && sorted[j] === sorted[i]) j++;
    if (j - i > bestRun) {
      bestRun = j - i;
      best = sorted[i] ?? best;
    }
    i = j;
  }
  return best;
}

function fitClip(step: ClipStep, values: Float64Array, column: TransformColumn): FittedStep {
  const needsData = step.lowerQuantile !== undefined || step.upperQuantile !== undefined;
  const sorted = needsData
    ? needValues(values, column, 'clip quantiles').slice().sort()
    : new Float64Array(0);
  const bound = (fixed: number | undefined, q: number | undefined) =>
    fixed !== undefined ? plain(fixed) : q !== undefined ? plain(quantileOfSorted(sorted, q)) : null;
  return { op: 'clip', min: bound(step.min, step.lowerQuantile), max: bound(step.max, step.upperQuantile) };
}

/** Linear interpolation between closest ranks (numpy's default, R type 7). */
function quantileOfSorted(sorted: Float64Array, q: number): number {
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const a = sorted[lo] ?? Number.NaN;
  const b = sorted[Math.min(lo + 1, sorted.length - 1)] ?? a;
  return h === lo ? a : a + (h - lo) * (b - a);
}

/** Mean by Neumaier-compensated summation, so large columns do not drift with row order as much. */
function stableMean(values: Float64Array): number {
  let sum = 0;
  let compensation = 0;
  for (const v of values) {
    const t = sum + v;
    compensation += Math.abs(sum) >= Math.abs(v) ? sum - t + v : v - t + sum;
    sum = t;
  }
  return (sum + compensation) / values.length;
}

function fitCategoricalStep(
  step: Step,
  keys: ReadonlyArray<string | null>,
  column: TransformColumn,
): FittedStep {
  switch (step.op) {
    case 'impute': {
      if (step.strategy === 'constant') {
        const v = step.value;
        return { op: 'impute', fill: typeof v === 'number' ? numberKey(v) : String(v) };
      }
      const counts = countKeys(keys);
      if (counts.size === 0) {
        throw new ValidationError(
          `column "${column.name}": cannot fit impute (mode), all ${keys.length} training values are missing (use "constant" or drop the column)`,
        );
      }
      return { op: 'impute', fill: byFrequency(counts)[0] ?? '' };
    }
    case 'onehot':
    case 'ordinal':
      return { op: step.op, categories: learnCategories(step, keys) };
    case 'hash':
      return { op: 'hash', buckets: step.buckets };
    default:
      throw new ValidationError(
        `column "${column.name}": step ${step.op} does not apply to a categorical column`,
      );
  }
}

function countKeys(keys: ReadonlyArray<string | null>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const k of keys) if (k !== null) counts.set(k, (counts.get(k) ?? 0) + 1);
  return counts;
}

/** Keys by count descending, ties by UTF-16 code unit order (never locale order, which varies by host). */
function byFrequency(counts: Map<string, number>): string[] {
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([k]) => k);
}

function learnCategories(step: OneHotStep | OrdinalStep, keys: ReadonlyArray<string | null>): string[] {
  if (step.categories) return [...step.categories];
  const limit = step.maxCategories ?? (step.op === 'onehot' ? DEFAULT_MAX_ONEHOT : Number.POSITIVE_INFINITY);
  return byFrequency(countKeys(keys)).slice(0, limit).sort();
}

function columnFeatureNames(name: string, steps: ReadonlyArray<FittedStep>): string[] {
  const last = steps.at(-1);
  switch (last?.op) {
    case 'drop':
      return [];
    case 'onehot':
      return [...last.categories.map((c) => `${name}=${c}`), `${name}=${UNKNOWN_CATEGORY}`];
    case 'hash':
      return Array.from({ length: last.buckets }, (_, i) => `${name}#${i}`);
    case 'dateparts':
      return last.parts.map((p) => `${name}.${p}`);
    default:
      return [name];
  }
}

// ---------------------------------------------------------------------------------------------------------
// Apply
// ---------------------------------------------------------------------------------------------------------

function numericStep(step: FittedStep, column: string): (x: number) => number {
  switch (step.op) {
    case 'impute': {
      const fill = Number(step.fill);
      return (x) => (Number.isNaN(x) ? fill : x);
    }
    case 'clip': {
      const lo = step.min ?? Number.NEGATIVE_INFINITY;
      const hi = step.max ?? Number.POSITIVE_INFINITY;
      // Math.max/min return NaN for NaN, so a missing value passes through as missing.
      return (x) => Math.min(Math.max(x, lo), hi);
    }
    case 'scale': {
      const { center, scale } = step;
      return (x) => (x - center) / scale;
    }
    case 'log': {
      const { offset } = step;
      return (x) => {
        const shifted = x + offset;
        if (shifted < 0) {
          throw new ValidationError(
            `column "${column}": log needs value + offset >= 0, got ${x} with offset ${offset} (clip the column before log)`,
          );
        }
        return Math.log1p(shifted);
      };
    }
    default:
      throw new ValidationError(`column "${column}": fitted step ${step.op} is not a numeric step`);
  }
}

/** Writes one column's features, computed from that column's value in one row, into `out` at `at`. */
type ColumnWriter = (value: unknown, out: Float32Array, at: number) => void;

interface Plan {
  nFeatures: number;
  /** One per column that produces features: its name, its position in `inputs`, and where its features go. */
  writers: Array<{ name: string; input: number; at: number; write: ColumnWriter }>;
}

// A fitted transform never changes once fitted (its hash covers it), so its compiled plan and column sets
// are cached per object: the online server applies the same transform to every request.
const compiledPlans = new WeakMap<FittedTransform, Plan>();
const columnSets = new WeakMap<FittedTransform, { dropped: boolean[]; known: Set<string> }>();

function compile(fitted: FittedTransform): Plan {
  let plan = compiledPlans.get(fitted);
  if (!plan) {
    plan = compileUncached(fitted);
    compiledPlans.set(fitted, plan);
  }
  return plan;
}

function columnSetsOf(fitted: FittedTransform): { dropped: boolean[]; known: Set<string> } {
  let sets = columnSets.get(fitted);
  if (!sets) {
    const droppedNames = new Set(fitted.columns.filter(isDropped).map((c) => c.name));
    sets = {
      dropped: fitted.inputs.map((c) => droppedNames.has(c.name)),
      known: new Set(fitted.inputs.map((c) => c.name)),
    };
    columnSets.set(fitted, sets);
  }
  return sets;
}

function compileUncached(fitted: FittedTransform): Plan {
  if (
    fitted.fitted !== true ||
    !Array.isArray(fitted.params) ||
    fitted.params.length !== fitted.columns.length
  ) {
    throw new ValidationError(
      'not a fitted transform: use fitTransform, or parseFittedTransform for stored JSON',
    );
  }
  const inputIndex = new Map(fitted.inputs.map((c, i) => [c.name, i]));
  const writers: Plan['writers'] = [];
  let at = 0;
  fitted.columns.forEach((column, ci) => {
    const params = fitted.params[ci];
    if (params?.column !== column.name) {
      throw new ValidationError(
        `fitted params ${ci} belong to "${params?.column}", not to column "${column.name}"`,
      );
    }
    const width = columnFeatureNames(column.name, params.steps).length;
    if (width > 0) {
      const input = inputIndex.get(column.name);
      if (input === undefined) {
        throw new ValidationError(`fitted transform: column "${column.name}" is not one of its inputs`);
      }
      writers.push({ name: column.name, input, at, write: columnWriter(column, params.steps) });
    }
    at += width;
  });
  if (at !== fitted.featureNames.length) {
    throw new ValidationError(
      `fitted transform lists ${fitted.featureNames.length} feature names but produces ${at}`,
    );
  }
  return { nFeatures: at, writers };
}

function columnWriter(column: TransformColumn, steps: ReadonlyArray<FittedStep>): ColumnWriter {
  const { name, type } = column;
  const last = steps.at(-1);
  if (last?.op === 'dateparts') {
    const parts = last.parts;
    return (value, out, at) => {
      const ms = readTimestamp(name, value);
      if (Number.isNaN(ms)) {
        for (let k = 0; k < parts.length; k++) out[at + k] = Number.NaN;
        return;
      }
      const fields = utcParts(ms);
      parts.forEach((part, k) => {
        out[at + k] = fields[part];
      });
    };
  }
  if (last && CATEGORICAL_OPS.has(last.op)) {
    const first = steps[0];
    const fill = first?.op === 'impute' ? String(first.fill) : null;
    const read = (value: unknown) => readCategory(name, type, value) ?? fill;
    if (last.op === 'hash') {
      const buckets = last.buckets;
      return (value, out, at) => {
        const key = read(value);
        if (key !== null) out[at + (fnv1a32(key) % buckets)] = 1;
      };
    }
    if (last.op === 'onehot' || last.op === 'ordinal') {
      const index = new Map(last.categories.map((c, i) => [c, i]));
      const unknown = last.categories.length;
      if (last.op === 'ordinal') {
        return (value, out, at) => {
          const key = read(value);
          out[at] = key === null ? Number.NaN : (index.get(key) ?? unknown);
        };
      }
      return (value, out, at) => {
        const key = read(value);
        // Missing stays all zeros, so the model can tell "absent" from "a category it never saw".
        if (key !== null) out[at + (index.get(key) ?? unknown)] = 1;
      };
    }
  }
  // The most common numeric column (impute only, e.g. every spambase column) gets a writer of its own: it runs
  // once per feature of every row served, and the general loop below costs it a second call per value.
  const only = steps.length === 1 ? steps[0] : undefined;
  if (only?.op === 'impute') {
    const fill = Number(only.fill);
    return (value, out, at) => {
      const x = readNumeric(name, type, value);
      out[at] = Number.isNaN(x) ? fill : x;
    };
  }
  const fns = steps.map((s) => numericStep(s, name));
  return (value, out, at) => {
    let x = readNumeric(name, type, value);
    for (let k = 0; k < fns.length; k++) x = (fns[k] as (x: number) => number)(x);
    out[at] = x;
  };
}

/** Rows as `coerceRowInputs` returns them: typed values in the transform's `inputs` order. */
export type InputValues = ReadonlyArray<unknown>;

/**
 * Features of `rows` as a row-major float32 matrix: the one implementation behind ETL, training, batch
 * scoring and serving. Everything is computed in float64 and rounded to float32 once, at the end.
 */
export function applyTransform(
  fitted: FittedTransform,
  rows: ReadonlyArray<Record<string, unknown>>,
): { features: Float32Array; nRows: number; nFeatures: number } {
  return fillFeatures(fitted, rows.length, (writers, r, features, base) => {
    const row = rows[r];
    if (typeof row !== 'object' || row === null) {
      throw new ValidationError(`expected an object keyed by column name, got ${describeValue(row)}`);
    }
    for (const { name, at, write } of writers) write(cell(row, name, r), features, base + at);
  });
}

/**
 * `applyTransform` for rows of values in `inputs` order (what `coerceRowInputs` returns): the same column
 * writers, reached by position instead of by name, which is what the online server needs per request.
 */
export function applyTransformToInputs(
  fitted: FittedTransform,
  rows: ReadonlyArray<InputValues>,
): { features: Float32Array; nRows: number; nFeatures: number } {
  const width = fitted.inputs.length;
  return fillFeatures(fitted, rows.length, (writers, r, features, base) => {
    const row = rows[r];
    if (!Array.isArray(row) || row.length !== width) {
      throw new ValidationError(`expected ${width} values in inputs order, got ${describeValue(row)}`);
    }
    for (const { input, at, write } of writers) write(row[input], features, base + at);
  });
}

function fillFeatures(
  fitted: FittedTransform,
  nRows: number,
  writeRow: (writers: Plan['writers'], r: number, features: Float32Array, base: number) => void,
): { features: Float32Array; nRows: number; nFeatures: number } {
  const { nFeatures, writers } = compile(fitted);
  // Zero-filled, so one-hot and hash writers only set their ones. Each feature is computed in float64 and
  // stored once: that store is the single rounding to float32.
  const features = new Float32Array(nRows * nFeatures);
  let r = 0;
  try {
    for (; r < nRows; r++) writeRow(writers, r, features, r * nFeatures);
  } catch (error) {
    if (error instanceof ValidationError && !error.message.startsWith('row ')) {
      throw new ValidationError(`row ${r}: ${error.message}`, { cause: error });
    }
    throw error;
  }
  // NaN payloads differ by how a NaN was made (0/0 vs Number.NaN) and -0 differs from 0 in its bits;
  // folding both keeps identical rows byte-identical whichever path they took.
  const bits = new Uint32Array(features.buffer, features.byteOffset, features.length);
  for (let i = 0; i < features.length; i++) {
    const v = features[i] ?? 0;
    if (Number.isNaN(v)) bits[i] = CANONICAL_NAN_BITS;
    else if (v === 0) bits[i] = 0;
  }
  return { features, nRows, nFeatures };
}

// ---------------------------------------------------------------------------------------------------------
// Online rows and stored documents
// ---------------------------------------------------------------------------------------------------------

/**
 * Turns one request row (object by column name, or array in `inputs` order; CSV strings allowed) into typed
 * values in `inputs` order, ready for `applyTransformToInputs`. Dropped columns are accepted and left null.
 */
export function coerceRowInputs(
  fitted: FittedTransform,
  row: Record<string, unknown> | unknown[],
): unknown[] {
  const inputs = fitted.inputs;
  const { dropped, known } = columnSetsOf(fitted);
  const out: unknown[] = new Array(inputs.length);
  if (Array.isArray(row)) {
    if (row.length !== inputs.length) {
      throw new ValidationError(
        `expected ${inputs.length} values in inputs order (${inputs.map((c) => c.name).join(', ')}), got ${row.length}`,
      );
    }
    for (let i = 0; i < inputs.length; i++)
      out[i] = coerceInput(inputs[i] as InputColumn, dropped[i], row[i]);
    return out;
  }
  if (typeof row !== 'object' || row === null) {
    throw new ValidationError(`a row must be an object or an array, got ${describeValue(row)}`);
  }
  for (const key of Object.keys(row)) {
    if (known.has(key)) continue;
    const why = key === fitted.target ? ` ("${key}" is the target, not an input)` : '';
    throw new ValidationError(
      `unknown column "${key}"${why}; allowed: ${inputs.map((c) => c.name).join(', ')}`,
    );
  }
  for (let i = 0; i < inputs.length; i++) {
    const input = inputs[i] as InputColumn;
    out[i] = coerceInput(input, dropped[i], row[input.name]);
  }
  return out;
}

function coerceInput(input: InputColumn, dropped: boolean | undefined, raw: unknown): unknown {
  if (dropped) return null;
  const value = coerceValue(input.name, input.type, raw);
  if (value === null && !input.nullable) {
    throw new ValidationError(`column "${input.name}" is not nullable; a ${input.type} value is required`);
  }
  return value;
}

/** `coerceRowInputs` as an object by column name (dropped columns left out), the shape capture records keep. */
export function coerceRowValues(
  fitted: FittedTransform,
  row: Record<string, unknown> | unknown[],
): Record<string, unknown> {
  return inputsAsObject(fitted, coerceRowInputs(fitted, row));
}

/** Values in `inputs` order as an object by column name, dropped columns left out. */
export function inputsAsObject(fitted: FittedTransform, values: InputValues): Record<string, unknown> {
  const { dropped } = columnSetsOf(fitted);
  const out: Record<string, unknown> = {};
  fitted.inputs.forEach((input, i) => {
    if (!dropped[i]) out[input.name] = values[i];
  });
  return out;
}

/** Validates a stored fitted transform and checks its `hash`; throws IntegrityError if they disagree. */
export function parseFittedTransform(json: unknown): FittedTransform {
  const result = FittedTransformSchema.safeParse(json);
  if (!result.success) {
    throw new ValidationError(formatIssues('fitted transform', result.error, json), { cause: result.error });
  }
  const fitted = result.data;
  fitted.columns.forEach((column, ci) => {
    const ops = fitted.params[ci]?.steps.map((s) => s.op).join(',');
    if (fitted.params[ci]?.column !== column.name || ops !== column.steps.map((s) => s.op).join(',')) {
      throw new IntegrityError(
        `fitted transform: params[${ci}] do not match the steps of column "${column.name}"`,
      );
    }
  });
  if (fitted.params.length !== fitted.columns.length) {
    throw new IntegrityError(
      `fitted transform: ${fitted.params.length} params for ${fitted.columns.length} columns`,
    );
  }
  const names = fitted.params.flatMap((p) => columnFeatureNames(p.column, p.steps));
  if (canonicalJson(names) !== canonicalJson(fitted.featureNames)) {
    throw new IntegrityError('fitted transform: featureNames do not match the fitted params');
  }
  const expected = transformHash(fitted);
  if (expected !== fitted.hash) {
    throw new IntegrityError(
      `fitted transform hash mismatch: stored ${fitted.hash}, content hashes to ${expected}`,
    );
  }
  return fitted;
}
