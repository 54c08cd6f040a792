import { describeError, ValidationError } from '../core/errors.ts';
import { parseTransformSpec, type TransformSpec } from '../core/transform.ts';
import { ALGORITHMS, type Algorithm, parseHyperparameters, type Task } from '../ml/train.ts';

/** Largest seed the built-in trainers accept (they seed a 32-bit generator). */
export const MAX_SEED = 0xffffffff;

/** What to do with a feature column that has one value in every training row. */
export const CONSTANT_FEATURE_POLICIES = ['error', 'drop'] as const;
export type ConstantFeaturePolicy = (typeof CONSTANT_FEATURE_POLICIES)[number];

const TASKS: readonly Task[] = ['binary', 'multiclass', 'regression'];

/**
 * Hyperparameters that steer Kiln itself rather than the algorithm. Everything else in
 * hyperparameters.json goes to the built-in algorithm, whose schema rejects unknown names.
 */
export const KILN_HYPERPARAMETERS = [
  'target',
  'algorithm',
  'seed',
  'task',
  'transform_spec',
  'constant_features',
  'kiln_model',
  'kiln_dataset',
  'kiln_dataset_version',
] as const;

/** Kiln's own settings of one training run, parsed from string hyperparameters. */
export interface KilnSettings {
  target: string;
  algorithm: Algorithm;
  seed: number;
  task?: Task;
  transformSpec?: TransformSpec;
  constantFeatures: ConstantFeaturePolicy;
  model?: string;
  dataset?: string;
  datasetVersion?: string;
}

/** Splits hyperparameters into Kiln's settings and the algorithm's parameters, validating both. */
export function parseTrainingHyperparameters(raw: Record<string, unknown>): {
  settings: KilnSettings;
  params: Record<string, string>;
} {
  const strings = asStrings(raw);
  const kiln = new Set<string>(KILN_HYPERPARAMETERS);
  const params = Object.fromEntries(Object.entries(strings).filter(([key]) => !kiln.has(key)));
  const target = strings.target?.trim();
  if (!target) throw new ValidationError('hyperparameter "target" is required: the column to predict');
  const algorithm = parseAlgorithm(strings.algorithm);
  const settings: KilnSettings = {
    target,
    algorithm,
    seed: parseSeed(strings.seed),
    task: parseTask(strings.task),
    transformSpec: parseSpec(strings.transform_spec),
    constantFeatures: parseConstantFeatures(strings.constant_features),
    model: strings.kiln_model,
    dataset: strings.kiln_dataset,
    datasetVersion: strings.kiln_dataset_version,
  };
  parseHyperparameters(algorithm, params);
  return { settings, params };
}

/** Validates only Kiln's settings that do not need a target (Prepare builds the target itself). */
export function validateKilnSettings(raw: Record<string, unknown>): void {
  const strings = asStrings(raw);
  parseTask(strings.task);
  parseSpec(strings.transform_spec);
  parseConstantFeatures(strings.constant_features);
}

/** The seed as an integer in 0..MAX_SEED; the message names the value and the range. */
export function parseSeed(value: string | undefined): number {
  if (value === undefined || value.trim() === '') return 0;
  const seed = Number(value);
  if (!Number.isInteger(seed) || seed < 0 || seed > MAX_SEED) {
    throw new ValidationError(
      `hyperparameter seed must be an integer from 0 to ${MAX_SEED}, got ${JSON.stringify(value)}`,
    );
  }
  return seed;
}

function asStrings(raw: Record<string, unknown>): Record<string, string> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ValidationError('hyperparameters must be a JSON object of names to string values');
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    // SageMaker passes every hyperparameter as a string; numbers and booleans from hand-written files are tolerated.
    if (typeof value === 'string') out[key] = value;
    else if (typeof value === 'number' || typeof value === 'boolean') out[key] = String(value);
    else {
      throw new ValidationError(
        `hyperparameter ${key} must be a string (SageMaker passes strings), got ${JSON.stringify(value)}`,
      );
    }
  }
  return out;
}

function parseAlgorithm(value: string | undefined): Algorithm {
  const algorithm = (value ?? 'gbdt') as Algorithm;
  if (!ALGORITHMS.includes(algorithm)) {
    throw new ValidationError(
      `hyperparameter algorithm must be one of ${ALGORITHMS.join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return algorithm;
}

function parseTask(value: string | undefined): Task | undefined {
  if (value === undefined || value === '') return undefined;
  if (!TASKS.includes(value as Task)) {
    throw new ValidationError(
      `hyperparameter task must be one of ${TASKS.join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return value as Task;
}

function parseConstantFeatures(value: string | undefined): ConstantFeaturePolicy {
  if (value === undefined || value === '') return 'error';
  if (!CONSTANT_FEATURE_POLICIES.includes(value as ConstantFeaturePolicy)) {
    throw new ValidationError(
      `hyperparameter constant_features must be one of ${CONSTANT_FEATURE_POLICIES.join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return value as ConstantFeaturePolicy;
}

function parseSpec(value: string | undefined): TransformSpec | undefined {
  if (value === undefined || value === '') return undefined;
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch (cause) {
    throw new ValidationError(`hyperparameter transform_spec is not JSON: ${describeError(cause)}`, {
      cause,
    });
  }
  return parseTransformSpec(json);
}
