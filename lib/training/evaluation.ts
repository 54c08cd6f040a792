import { classificationMetrics, regressionMetrics } from '../core/metrics.ts';
import { applyTransform, type FittedTransform } from '../core/transform.ts';
import { OnnxModel } from '../ml/onnx-model.ts';
import type { ModelOutput, Task } from '../ml/train.ts';
import { encodeTarget } from './dataset.ts';

type Row = Record<string, unknown>;

/** Held-out metrics of a set of predictions; rows whose label the model never saw count as errors. */
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
  // A label absent from training cannot be predicted: score it as a miss against an impossible class.
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
): Promise<{ metrics: Record<string, unknown>; task: Task; classes: string[]; output: ModelOutput }> {
  const model = await OnnxModel.load(onnx, { provider: 'auto' });
  try {
    const { features, nRows } = applyTransform(fitted, rows);
    const output = await model.run(features, nRows);
    const metrics = scorePredictions(output, rows, target, model.task, model.classes);
    return { metrics, task: model.task, classes: model.classes, output };
  } finally {
    await model.release();
  }
}

/** The metric the gate compares, and whether higher is better. */
export function primaryMetric(task: Task): { name: 'accuracy' | 'rmse'; higherIsBetter: boolean } {
  return task === 'regression'
    ? { name: 'rmse', higherIsBetter: false }
    : { name: 'accuracy', higherIsBetter: true };
}
