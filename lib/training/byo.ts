import { z } from 'zod';
import { describeError, ValidationError } from '../core/errors.ts';
import {
  type FittedTransform,
  fitTransform,
  parseFittedTransform,
  parseTransformSpec,
  type Step,
  type TransformSpec,
} from '../core/transform.ts';

type Row = Record<string, unknown>;

/** Where a training image must put what Kiln reads back (the SageMaker contract's model directory). */
const MODEL_DIR = '/opt/ml/model';

/**
 * The optional training.json of a bring-your-own image: what Kiln cannot know about foreign code. Every
 * field is optional; Kiln fills in the job's own values (see docs/byo-training.md).
 */
export const ByoTrainingInfoSchema = z.looseObject({
  algorithm: z.string().min(1).max(200).optional(),
  codeVersion: z.string().min(1).max(500).optional(),
  hyperparameters: z.record(z.string(), z.unknown()).optional(),
  seed: z.number().int().optional(),
});
export type ByoTrainingInfo = z.infer<typeof ByoTrainingInfoSchema>;

/** Reads a BYO image's training.json, if it wrote one; a malformed one is an error, not silently ignored. */
export function readByoTrainingInfo(body: Buffer | undefined): ByoTrainingInfo {
  if (!body) return {};
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new ValidationError(
      `training.json written by the training image is not JSON: ${describeError(cause)}`,
      {
        cause,
      },
    );
  }
  const parsed = ByoTrainingInfoSchema.safeParse(json);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ValidationError(`training.json written by the training image is invalid: ${detail}`);
  }
  return parsed.data;
}

/**
 * The fitted transform of a trained model. transform.json is either a fitted Kiln transform (what the
 * built-in trainer writes, hash checked) or, for a bring-your-own model, a transform spec whose every step has
 * fixed parameters: it declares the model's input columns and how they become its input tensor, and fitting
 * it learns nothing, so fitting it on any rows gives the transform the model was trained with.
 */
export function resolveTransform(
  artifacts: Record<string, Buffer>,
  rows: ReadonlyArray<Row>,
): FittedTransform {
  const body = artifacts['transform.json'];
  if (!body) {
    throw new ValidationError(
      `the training job wrote no transform.json to ${MODEL_DIR}: write a fitted Kiln transform, or a transform spec with fixed parameters that declares the model's input columns (docs/byo-training.md)`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new ValidationError(`transform.json is not JSON: ${describeError(cause)}`, { cause });
  }
  if ((json as { fitted?: unknown } | null)?.fitted === true) return parseFittedTransform(json);
  const spec = parseTransformSpec(json);
  const learning = learnedSteps(spec);
  if (learning.length > 0) {
    throw new ValidationError(
      `transform.json is a spec with steps that learn from data (${learning.slice(0, 5).join(', ')}): a trained model's transform must be fitted, or give every parameter (impute constant, clip min/max, explicit categories)`,
    );
  }
  if (rows.length === 0) throw new ValidationError('no rows to check the transform spec against');
  return fitTransform(spec, rows);
}

/** `column.op` for every step of a spec whose parameters would be learnt by fitting. */
export function learnedSteps(spec: TransformSpec): string[] {
  return spec.columns.flatMap((column) =>
    column.steps.filter((step) => learns(step)).map((step) => `${column.name}.${step.op}`),
  );
}

function learns(step: Step): boolean {
  switch (step.op) {
    case 'impute':
      return step.strategy !== 'constant';
    case 'clip':
      return step.lowerQuantile !== undefined || step.upperQuantile !== undefined;
    case 'scale':
      return true;
    case 'onehot':
    case 'ordinal':
      return step.categories === undefined;
    case 'log':
    case 'hash':
    case 'dateparts':
    case 'drop':
      return false;
  }
}
