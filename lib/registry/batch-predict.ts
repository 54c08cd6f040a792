import { applyTransform, parseFittedTransform } from '../core/transform.ts';
import { OnnxModel } from '../ml/onnx-model.ts';
import type { VersionRecord } from './records.ts';
import type { ModelRegistry } from './registry.ts';

/** One prediction, in the same shape the inference server returns. */
export type Prediction = { label: string; probabilities: Record<string, number> } | { value: number };

/** Batch scoring: the registered transform and ONNX model (hash-verified) over typed rows. */
export async function predictRows(
  registry: ModelRegistry,
  record: VersionRecord,
  rows: ReadonlyArray<Record<string, unknown>>,
): Promise<Prediction[]> {
  const fitted = parseFittedTransform(
    JSON.parse((await registry.readArtifact(record, 'transform.json')).toString('utf8')),
  );
  const model = await OnnxModel.load(await registry.readArtifact(record, 'model.onnx'));
  try {
    const { features, nRows } = applyTransform(fitted, rows);
    const output = await model.run(features, nRows);
    return formatPredictions(output, model.classes);
  } finally {
    await model.release();
  }
}

/** Turns model output into per-row predictions: label + class probabilities, or a value. */
export function formatPredictions(
  output: { nRows: number; probabilities?: Float32Array; labels?: Int32Array; values?: Float32Array },
  classes: string[],
): Prediction[] {
  const predictions: Prediction[] = [];
  for (let row = 0; row < output.nRows; row++) {
    if (output.values) {
      predictions.push({ value: output.values[row] as number });
      continue;
    }
    const probabilities: Record<string, number> = {};
    classes.forEach((name, c) => {
      probabilities[name] = output.probabilities?.[row * classes.length + c] as number;
    });
    predictions.push({ label: classes[output.labels?.[row] ?? 0] as string, probabilities });
  }
  return predictions;
}
