import { ValidationError } from '../core/errors.ts';
import { classificationMetrics, regressionMetrics } from '../core/metrics.ts';
import { applyTransform, type FittedTransform } from '../core/transform.ts';
import { OnnxModel } from '../ml/onnx-model.ts';
import type { ModelOutput, Task } from '../ml/train.ts';
import { encodeTarget } from './dataset.ts';

type Row = Record<string, unknown>;

/**
 * Held-out metrics of a set of predictions. A row whose label the model never saw counts as a miss in
 * `accuracy`; the other metrics are computed on rows with known labels, and `unseen_labels` says how many
 * rows were left out of them.
 */
export function scorePredictions(
  output: ModelOutput,
  rows: ReadonlyArray<Row>,
  target: string,
  task: Task,
  classes: string[],
): Record<string, unknown> {
  const y = encodeTarget(rows, target, task, classes);
  if (task === 'regression') {
    return { ...regressionMetrics(y, output.values ?? new Float32Array()), rows: rows.length };
  }
  const unseen = y.filter((label) => label < 0).length;
  const known = Float64Array.from(y, (label) => (label < 0 ? Number.NaN : label));
  const keep = [...known.keys()].filter((i) => !Number.isNaN(known[i] as number));
  const probabilities = output.probabilities ?? new Float32Array();
  const nClasses = classes.length;
  const keptProbabilities = new Float32Array(keep.length * nClasses);
  keep.forEach((row, i) => {
    keptProbabilities.set(probabilities.subarray(row * nClasses, (row + 1) * nClasses), i * nClasses);
  });
  const metrics = classificationMetrics(
    Float64Array.from(keep, (row) => known[row] as number),
    keptProbabilities,
    nClasses,
  ) as unknown as Record<string, unknown>;
  if (unseen > 0 && typeof metrics.accuracy === 'number') {
    metrics.accuracy = (metrics.accuracy * keep.length) / rows.length;
  }
  return { ...metrics, rows: rows.length, unseen_labels: unseen };
}

/** Runs a stored ONNX model over raw rows with its fitted transform (real ONNX Runtime) and scores it. */
export async function evaluateOnnx(
  onnx: Uint8Array,
  fitted: FittedTransform,
  rows: ReadonlyArray<Row>,
  target: string,
): Promise<{
  metrics: Record<string, unknown>;
  task: Task;
  classes: string[];
  algorithm: string;
  output: ModelOutput;
}> {
  const model = await OnnxModel.load(onnx, { provider: 'auto' });
  try {
    assertModelFitsTransform(model, fitted);
    const { features, nRows } = applyTransform(fitted, rows);
    const output = await model.run(features, nRows);
    const metrics = scorePredictions(output, rows, target, model.task, model.classes);
    if (model.task !== 'regression' && metrics.unseen_labels === rows.length) {
      const seen = [...new Set(rows.slice(0, 200).map((row) => String(row[target])))].slice(0, 5);
      throw new ValidationError(
        `the model's classes (${model.classes.join(', ')}) match none of the values of ${target} (${seen.join(', ')}, …): kiln.classes must hold the target's values`,
      );
    }
    return { metrics, task: model.task, classes: model.classes, algorithm: model.algorithm, output };
  } finally {
    await model.release();
  }
}

/** A model whose input width or declared feature names differ from its transform's output cannot be scored. */
function assertModelFitsTransform(model: OnnxModel, fitted: FittedTransform): void {
  const expected = fitted.featureNames;
  if (model.nFeatures !== expected.length) {
    throw new ValidationError(
      `model.onnx takes ${model.nFeatures} features but transform.json produces ${expected.length} (${expected.slice(0, 8).join(', ')}${expected.length > 8 ? ', …' : ''})`,
    );
  }
  // Names are only comparable when the model declared them (kiln.features); otherwise ORT reports f0, f1, …
  const declared = !model.featureNames.every((name, i) => name === `f${i}`);
  if (declared) {
    const index = model.featureNames.findIndex((name, i) => name !== expected[i]);
    if (index >= 0) {
      throw new ValidationError(
        `feature ${index} of model.onnx is ${JSON.stringify(model.featureNames[index])} but transform.json produces ${JSON.stringify(expected[index])} there: kiln.features must list the transform's featureNames in order`,
      );
    }
  }
}

/** The metric the gate compares, and whether higher is better. */
export function primaryMetric(task: Task): { name: 'accuracy' | 'rmse'; higherIsBetter: boolean } {
  return task === 'regression'
    ? { name: 'rmse', higherIsBetter: false }
    : { name: 'accuracy', higherIsBetter: true };
}

/** The gate's decision, as recorded in the run report and on the registered version. */
export interface GateDecision {
  passed: boolean;
  metric: 'accuracy' | 'rmse';
  higherIsBetter: boolean;
  /** Absolute improvement of the primary metric the challenger needs over the champion. */
  margin: number;
  challenger: number;
  champion: number | null;
  championVersion: number | null;
  /** Challenger minus champion when higher is better, champion minus challenger otherwise. */
  improvement: number | null;
  reason: string;
}

/**
 * Promotion rule: with no champion the challenger wins; otherwise it must be strictly better than the
 * champion on the primary metric, on the same held-out rows, and by at least `margin`. A champion that is
 * not comparable (another target or task) is never replaced automatically.
 */
export function decideGate(options: {
  task: Task;
  margin: number;
  challenger: number;
  champion?: { version: number; score: number } | null;
  notComparable?: string;
}): GateDecision {
  const { name: metric, higherIsBetter } = primaryMetric(options.task);
  const { margin, challenger } = options;
  if (!Number.isFinite(margin) || margin < 0) {
    throw new ValidationError(`gate margin must be a finite number >= 0, got ${margin}`);
  }
  const base = { metric, higherIsBetter, margin, challenger };
  if (options.notComparable) {
    return {
      ...base,
      passed: false,
      champion: null,
      championVersion: null,
      improvement: null,
      reason: `${options.notComparable}: registered as a candidate; promote it by hand if it should replace the champion`,
    };
  }
  const champion = options.champion ?? null;
  if (champion === null) {
    return {
      ...base,
      passed: Number.isFinite(challenger),
      champion: null,
      championVersion: null,
      improvement: null,
      reason: Number.isFinite(challenger)
        ? 'no champion yet: the first model becomes champion'
        : `${metric} is ${challenger}: not promoted`,
    };
  }
  const improvement = higherIsBetter ? challenger - champion.score : champion.score - challenger;
  // The tolerance keeps an improvement of exactly the margin (0.93 - 0.92 in binary floating point) passing.
  const passed = Number.isFinite(improvement) && improvement > 0 && improvement >= margin - 1e-12;
  return {
    ...base,
    passed,
    champion: champion.score,
    championVersion: champion.version,
    improvement,
    reason: `${metric} ${fmt(challenger)} vs champion v${champion.version} ${fmt(champion.score)} (improvement ${fmt(improvement)}, needs > 0 and >= ${margin}): ${passed ? 'challenger wins' : 'champion stays'}`,
  };
}

function fmt(value: number): string {
  return Number.isFinite(value) ? String(Number(value.toPrecision(4))) : String(value);
}
