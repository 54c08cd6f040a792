import { applyTransform, parseFittedTransform } from '../core/transform.ts';
import { OnnxModel } from '../ml/onnx-model.ts';
import { type Prediction, predictionsOf } from '../serving/sagemaker.ts';
import type { VersionRecord } from './records.ts';
import type { ModelRegistry } from './registry.ts';

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
    return predictionsOf(output, model.classes);
  } finally {
    await model.release();
  }
}
