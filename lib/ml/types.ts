/** Shared types of the built-in trainers, the ONNX exporter and the ONNX Runtime wrapper. */

export type Task = 'binary' | 'multiclass' | 'regression';

/** Predictions for a batch of rows; the same shape whether they come from a trainer or from ONNX Runtime. */
export interface ModelOutput {
  task: Task;
  nRows: number;
  /** Row-major [nRows x nClasses], classification only. */
  probabilities?: Float32Array;
  /** Class index per row, the argmax of `probabilities` (ties go to the lowest index). */
  labels?: Int32Array;
  /** One prediction per row, regression only. */
  values?: Float32Array;
}

/** A dense, already-transformed feature matrix with its target; missing feature values are NaN. */
export interface TrainingSet {
  /** Row-major [nRows x nFeatures]. */
  X: Float32Array;
  nRows: number;
  nFeatures: number;
  featureNames: string[];
  /** Class index (0..C-1) for classification, the value for regression. */
  y: Float64Array;
  task: Task;
  /** Class names in index order; [] for regression. */
  classes: string[];
}

export type Algorithm = 'gbdt' | 'linear';

/** A fitted model: predicts in process and exports itself to ONNX. */
export interface TrainedModel {
  algorithm: Algorithm;
  task: Task;
  classes: string[];
  featureNames: string[];
  /** The effective hyperparameters, defaults filled in. */
  hyperparameters: Record<string, number | string | boolean>;
  /** The trainer's own prediction, same shape as `OnnxModel.run`. */
  predict(X: Float32Array, nRows: number): ModelOutput;
  /** Serialized ONNX ModelProto. */
  toOnnx(): Uint8Array;
  summary: Record<string, number>;
}

/** Metadata keys the exporter writes into ModelProto.metadata_props and OnnxModel reads back. */
export const METADATA_KEYS = {
  task: 'kiln.task',
  classes: 'kiln.classes',
  features: 'kiln.features',
  algorithm: 'kiln.algorithm',
} as const;

/** Class index per row: argmax over each row of a row-major [nRows x nClasses] matrix, ties to the lowest index. */
export function argmaxRows(probabilities: ArrayLike<number>, nRows: number, nClasses: number): Int32Array {
  const labels = new Int32Array(nRows);
  for (let r = 0; r < nRows; r++) {
    const base = r * nClasses;
    let best = 0;
    let bestValue = probabilities[base] ?? Number.NEGATIVE_INFINITY;
    for (let c = 1; c < nClasses; c++) {
      const v = probabilities[base + c] ?? Number.NEGATIVE_INFINITY;
      // Strict `>` keeps the lowest index on ties; NaN never wins.
      if (v > bestValue || (Number.isNaN(bestValue) && !Number.isNaN(v))) {
        best = c;
        bestValue = v;
      }
    }
    labels[r] = best;
  }
  return labels;
}
