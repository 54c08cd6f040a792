import { z } from 'zod';
import { ValidationError } from '../core/errors.ts';
import { type GbdtParams, trainGbdt } from './gbdt.ts';
import { type LinearParams, trainLinear } from './linear.ts';
import type { Algorithm, TrainedModel, TrainingSet } from './types.ts';

export type { GbdtParams } from './gbdt.ts';
export type { LinearParams } from './linear.ts';
export type { Algorithm, ModelOutput, Task, TrainedModel, TrainingSet } from './types.ts';

export const ALGORITHMS: readonly Algorithm[] = ['gbdt', 'linear'];

// SageMaker passes every hyperparameter as a string, so numbers and booleans also parse from strings.
const fromString = (v: unknown): unknown => {
  if (typeof v !== 'string') return v;
  const t = v.trim();
  if (t === '') return v;
  if (t === 'true' || t === 'True') return true;
  if (t === 'false' || t === 'False') return false;
  const n = Number(t);
  return Number.isNaN(n) ? t : n;
};

const num = (min: number, max: number, opts: { exclusiveMin?: boolean; exclusiveMax?: boolean } = {}) => {
  let s = z.number();
  s = opts.exclusiveMin ? s.gt(min) : s.gte(min);
  s = opts.exclusiveMax ? s.lt(max) : s.lte(max);
  return z.preprocess(fromString, s);
};
const int = (min: number, max: number) => z.preprocess(fromString, z.number().int().gte(min).lte(max));
const bool = () => z.preprocess(fromString, z.boolean());

/** GBDT hyperparameters; names and defaults follow scikit-learn's HistGradientBoosting. */
export const gbdtSchema = z
  .object({
    learning_rate: num(0, 10, { exclusiveMin: true }).default(0.1),
    max_iter: int(1, 100_000).default(100),
    max_leaf_nodes: int(2, 65_536).default(31),
    // 0 (or "None") means no depth limit, like scikit-learn's max_depth=None.
    max_depth: z
      .preprocess(
        (v) => (v === null || v === 'None' || v === 'none' ? 0 : fromString(v)),
        z.number().int().gte(0).lte(64),
      )
      .default(0),
    min_samples_leaf: int(1, 1_000_000_000).default(20),
    l2_regularization: num(0, 1e12).default(0),
    max_bins: int(2, 255).default(255),
    growth: z.preprocess(fromString, z.enum(['leafwise', 'depthwise'])).default('leafwise'),
    early_stopping: z
      .preprocess(
        fromString,
        z.union([z.literal('auto'), z.boolean()], { error: 'expected auto, true or false' }),
      )
      .default('auto'),
    validation_fraction: num(0, 1, { exclusiveMin: true, exclusiveMax: true }).default(0.1),
    n_iter_no_change: int(1, 100_000).default(10),
    tol: num(0, 1e12).default(1e-7),
  })
  .strict();

/** Linear/logistic hyperparameters. `l2_regularization` is ridge's `alpha` and logistic's `1 / C`. */
export const linearSchema = z
  .object({
    l2_regularization: num(0, 1e12).default(1),
    max_iter: int(1, 100_000).default(1000),
    tol: num(0, 1, { exclusiveMin: true }).default(1e-7),
    fit_intercept: bool().default(true),
    standardize: bool().default(true),
  })
  .strict();

export const hyperparameterSchemas: Record<Algorithm, z.ZodType> = { gbdt: gbdtSchema, linear: linearSchema };

function describeIssues(error: z.ZodError, params: Record<string, unknown>): string {
  return error.issues
    .map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return `unknown hyperparameter${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
      }
      const key = issue.path.map(String).join('.') || '(root)';
      const top = issue.path[0];
      const got = typeof top === 'string' && Object.hasOwn(params, top) ? params[top] : undefined;
      const received = got === undefined ? '' : ` (got ${JSON.stringify(got)})`;
      return `${key}: ${issue.message}${received}`;
    })
    .join('; ');
}

/** Validate hyperparameters for an algorithm and fill in defaults; throws ValidationError naming the bad keys. */
export function parseHyperparameters(
  algorithm: Algorithm,
  params: Record<string, unknown>,
): GbdtParams | LinearParams {
  const schema = algorithm === 'gbdt' ? gbdtSchema : algorithm === 'linear' ? linearSchema : undefined;
  if (schema === undefined) {
    throw new ValidationError(
      `unknown algorithm ${JSON.stringify(algorithm)}; expected one of ${ALGORITHMS.join(', ')}`,
    );
  }
  const result = schema.safeParse(params ?? {});
  if (!result.success) {
    const allowed = Object.keys(schema.shape).join(', ');
    throw new ValidationError(
      `invalid ${algorithm} hyperparameters: ${describeIssues(result.error, params ?? {})} (allowed: ${allowed})`,
      { cause: result.error },
    );
  }
  return result.data;
}

/** Check shapes, target values and feature values; every message names the offending value. */
export function validateTrainingSet(data: TrainingSet): void {
  const { X, nRows, nFeatures, featureNames, y, task, classes } = data;
  if (!['binary', 'multiclass', 'regression'].includes(task)) {
    throw new ValidationError(`task must be binary, multiclass or regression; got ${JSON.stringify(task)}`);
  }
  if (!Number.isInteger(nRows) || nRows < 1)
    throw new ValidationError(`nRows must be a positive integer, got ${nRows}`);
  if (!Number.isInteger(nFeatures) || nFeatures < 1) {
    throw new ValidationError(`nFeatures must be a positive integer, got ${nFeatures}`);
  }
  if (!(X instanceof Float32Array) || X.length !== nRows * nFeatures) {
    throw new ValidationError(
      `X must be a Float32Array of nRows x nFeatures = ${nRows} x ${nFeatures} = ${nRows * nFeatures} values; got ${X?.length}`,
    );
  }
  if (featureNames.length !== nFeatures) {
    throw new ValidationError(`featureNames has ${featureNames.length} names for ${nFeatures} features`);
  }
  if (new Set(featureNames).size !== featureNames.length)
    throw new ValidationError('featureNames must be unique');
  if (!(y instanceof Float64Array) || y.length !== nRows) {
    throw new ValidationError(`y must be a Float64Array of ${nRows} values; got ${y?.length}`);
  }
  for (let r = 0; r < nRows; r++) {
    const v = y[r] as number;
    if (!Number.isFinite(v))
      throw new ValidationError(`target y[${r}] is ${v}; the target must not be NaN or infinite`);
  }
  for (let i = 0; i < X.length; i++) {
    const v = X[i] as number;
    if (v === Number.POSITIVE_INFINITY || v === Number.NEGATIVE_INFINITY) {
      throw new ValidationError(
        `feature ${featureNames[i % nFeatures]} is ${v} in row ${Math.floor(i / nFeatures)}; use NaN for missing values`,
      );
    }
  }
  if (task === 'regression') {
    if (classes.length !== 0) throw new ValidationError(`regression takes no classes; got ${classes.length}`);
  } else {
    const C = classes.length;
    if (C < 2) throw new ValidationError(`${task} classification needs at least 2 classes; got ${C}`);
    if (task === 'binary' && C !== 2)
      throw new ValidationError(`binary classification needs exactly 2 classes; got ${C}`);
    if (task === 'multiclass' && C < 3) {
      throw new ValidationError(`multiclass classification needs at least 3 classes; got ${C} (use binary)`);
    }
    if (new Set(classes).size !== C) throw new ValidationError('class names must be unique');
    if (C > nRows) {
      throw new ValidationError(`there are more classes (${C}) than training rows (${nRows})`);
    }
    const counts = new Float64Array(C);
    for (let r = 0; r < nRows; r++) {
      const v = y[r] as number;
      if (!Number.isInteger(v) || v < 0 || v >= C) {
        throw new ValidationError(`target y[${r}] is ${v}; expected a class index in 0..${C - 1}`);
      }
      counts[v] = (counts[v] as number) + 1;
    }
    const present = counts.filter((c) => c > 0).length;
    if (present < 2) {
      const only = classes[counts.findIndex((c) => c > 0)];
      throw new ValidationError(
        `the target has only one class (${JSON.stringify(only)}) in ${nRows} rows; a classifier needs at least two`,
      );
    }
  }
  // One constant column is harmless (it is never split on / gets weight 0), but with nothing
  // varying there is nothing to learn, which is almost certainly an upstream bug.
  let anyVarying = false;
  for (let f = 0; f < nFeatures && !anyVarying; f++) {
    const first = X[f] as number;
    for (let r = 1; r < nRows; r++) {
      const v = X[r * nFeatures + f] as number;
      if (v !== first && !(Number.isNaN(v) && Number.isNaN(first))) {
        anyVarying = true;
        break;
      }
    }
  }
  if (!anyVarying) {
    throw new ValidationError(
      `every feature is constant across the ${nRows} training rows (${featureNames.slice(0, 5).join(', ')}${nFeatures > 5 ? ', …' : ''}); nothing to learn from`,
    );
  }
}

/** Train a built-in model; deterministic for a given seed. */
export function trainModel(
  algorithm: Algorithm,
  data: TrainingSet,
  params: Record<string, unknown>,
  seed: number,
): TrainedModel {
  const parsed = parseHyperparameters(algorithm, params);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new ValidationError(`seed must be an integer in 0..4294967295, got ${seed}`);
  }
  validateTrainingSet(data);
  if (algorithm === 'gbdt') return trainGbdt(data, parsed as GbdtParams, seed);
  return trainLinear(data, parsed as LinearParams);
}
