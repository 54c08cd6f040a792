import { describeError, ValidationError } from '../core/errors.ts';
import { applyTransform, coerceRowValues, parseFittedTransform } from '../core/transform.ts';
import { OnnxModel } from '../ml/onnx-model.ts';
import { type Prediction, predictionsOf } from '../serving/sagemaker.ts';
import type { VersionRecord } from './records.ts';
import type { ModelRegistry } from './registry.ts';

/**
 * Batch scoring: the registered transform and ONNX model (hash-verified) over rows typed by the model's own
 * input schema, exactly as the online server types request rows; other columns (the target, ids) are ignored.
 */
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
    const typed = rows.map((row, i) => {
      try {
        return coerceRowValues(
          fitted,
          Object.fromEntries(fitted.inputs.map((input) => [input.name, row[input.name]])),
        );
      } catch (error) {
        throw new ValidationError(`row ${i + 1}: ${describeError(error)}`, { cause: error });
      }
    });
    const { features, nRows } = applyTransform(fitted, typed);
    const output = await model.run(features, nRows);
    return predictionsOf(output, model.classes);
  } finally {
    await model.release();
  }
}
