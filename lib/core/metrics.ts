import { ValidationError } from './errors.ts';

/** Evaluation metrics of a classifier; definitions follow scikit-learn. */
export interface ClassificationMetrics {
  accuracy: number;
  /** Mean recall over the classes present in yTrue. */
  balanced_accuracy: number;
  /** Binary: AUC of the class-1 probability. Multiclass: macro average of one-vs-rest AUCs. NaN when undefined. */
  roc_auc: number;
  /** Mean negative log-likelihood, probabilities clipped to [1e-15, 1 - 1e-15] and renormalized per row. */
  log_loss: number;
  /** Binary: F1 of class index 1. Multiclass: macro F1 over classes seen in yTrue or the predictions. */
  f1: number;
  /** confusion_matrix[true][predicted], counts. */
  confusion_matrix: number[][];
}

/** Evaluation metrics of a regressor. */
export interface RegressionMetrics {
  rmse: number;
  mae: number;
  /** Coefficient of determination; 1 for a perfect fit, 0 when yTrue is constant and the fit is not perfect. */
  r2: number;
}

const LOG_LOSS_EPS = 1e-15;

function checkClassIndices(yTrue: ArrayLike<number>, nClasses: number): void {
  for (let i = 0; i < yTrue.length; i++) {
    const v = yTrue[i] as number;
    if (!Number.isInteger(v) || v < 0 || v >= nClasses) {
      throw new ValidationError(`yTrue[${i}] is ${v}; expected a class index in 0..${nClasses - 1}`);
    }
  }
}

/**
 * Area under the ROC curve of `scores` for the rows where `positive` is true (Mann–Whitney U with
 * average ranks for ties). NaN when either side is empty.
 */
export function rocAuc(scores: ArrayLike<number>, positive: ArrayLike<boolean>): number {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => (scores[a] as number) - (scores[b] as number),
  );
  let nPos = 0;
  let rankSumPos = 0;
  let i = 0;
  while (i < n) {
    let j = i;
    const v = scores[order[i] as number] as number;
    while (j + 1 < n && scores[order[j + 1] as number] === v) j++;
    // Ranks i+1..j+1 are tied; each gets their average.
    const avgRank = (i + j + 2) / 2;
    for (let k = i; k <= j; k++) {
      if (positive[order[k] as number]) {
        nPos++;
        rankSumPos += avgRank;
      }
    }
    i = j + 1;
  }
  const nNeg = n - nPos;
  if (nPos === 0 || nNeg === 0) return Number.NaN;
  return (rankSumPos - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

/** Accuracy, balanced accuracy, ROC AUC, log loss, F1 and the confusion matrix from class probabilities. */
export function classificationMetrics(
  yTrue: Int32Array | Float64Array | ArrayLike<number>,
  probabilities: Float32Array | Float64Array | ArrayLike<number>,
  nClasses: number,
): ClassificationMetrics {
  if (!Number.isInteger(nClasses) || nClasses < 2) {
    throw new ValidationError(`nClasses must be an integer >= 2, got ${nClasses}`);
  }
  const n = yTrue.length;
  if (n === 0) throw new ValidationError('classification metrics need at least one row');
  if (probabilities.length !== n * nClasses) {
    throw new ValidationError(
      `probabilities has ${probabilities.length} values; expected rows x classes = ${n} x ${nClasses} = ${n * nClasses}`,
    );
  }
  checkClassIndices(yTrue, nClasses);
  const cm = Array.from({ length: nClasses }, () => new Array<number>(nClasses).fill(0));
  let correct = 0;
  let logLoss = 0;
  for (let r = 0; r < n; r++) {
    const base = r * nClasses;
    let pred = 0;
    let best = probabilities[base] as number;
    let sum = 0;
    for (let k = 0; k < nClasses; k++) {
      const p = probabilities[base + k] as number;
      if (Number.isNaN(p)) throw new ValidationError(`probabilities[${r}][${k}] is NaN`);
      if (p > best) {
        best = p;
        pred = k;
      }
      sum += Math.min(Math.max(p, LOG_LOSS_EPS), 1 - LOG_LOSS_EPS);
    }
    const t = yTrue[r] as number;
    const pt = Math.min(Math.max(probabilities[base + t] as number, LOG_LOSS_EPS), 1 - LOG_LOSS_EPS) / sum;
    logLoss -= Math.log(pt);
    (cm[t] as number[])[pred] = ((cm[t] as number[])[pred] as number) + 1;
    if (pred === t) correct++;
  }

  const support = cm.map((row) => row.reduce((s, v) => s + v, 0));
  const predicted = cm[0]?.map((_, k) => cm.reduce((s, row) => s + (row[k] as number), 0)) ?? [];
  let recallSum = 0;
  let present = 0;
  const f1s: number[] = [];
  for (let k = 0; k < nClasses; k++) {
    const tp = (cm[k] as number[])[k] as number;
    const sup = support[k] as number;
    const pred = predicted[k] as number;
    if (sup > 0) {
      recallSum += tp / sup;
      present++;
    }
    if (sup > 0 || pred > 0) f1s.push((2 * tp) / (sup + pred));
  }
  let f1: number;
  if (nClasses === 2) {
    const tp = (cm[1] as number[])[1] as number;
    const denom = (support[1] as number) + (predicted[1] as number);
    f1 = denom === 0 ? 0 : (2 * tp) / denom;
  } else {
    f1 = f1s.length === 0 ? 0 : f1s.reduce((s, v) => s + v, 0) / f1s.length;
  }

  let auc: number;
  const column = (k: number) =>
    Float64Array.from({ length: n }, (_, r) => probabilities[r * nClasses + k] as number);
  const isClass = (k: number) => Array.from({ length: n }, (_, r) => yTrue[r] === k);
  if (nClasses === 2) {
    auc = rocAuc(column(1), isClass(1));
  } else {
    const aucs: number[] = [];
    for (let k = 0; k < nClasses; k++) {
      const a = rocAuc(column(k), isClass(k));
      if (!Number.isNaN(a)) aucs.push(a);
    }
    auc = aucs.length === 0 ? Number.NaN : aucs.reduce((s, v) => s + v, 0) / aucs.length;
  }

  return {
    accuracy: correct / n,
    balanced_accuracy: recallSum / present,
    roc_auc: auc,
    log_loss: logLoss / n,
    f1,
    confusion_matrix: cm,
  };
}

/** RMSE, MAE and R² of predictions against targets. */
export function regressionMetrics(
  yTrue: Float64Array | Float32Array | ArrayLike<number>,
  yPred: Float64Array | Float32Array | ArrayLike<number>,
): RegressionMetrics {
  const n = yTrue.length;
  if (n === 0) throw new ValidationError('regression metrics need at least one row');
  if (yPred.length !== n) throw new ValidationError(`yPred has ${yPred.length} values for ${n} targets`);
  let mean = 0;
  for (let i = 0; i < n; i++) {
    const t = yTrue[i] as number;
    const p = yPred[i] as number;
    if (!Number.isFinite(t)) throw new ValidationError(`yTrue[${i}] is ${t}; expected a finite number`);
    if (!Number.isFinite(p)) throw new ValidationError(`yPred[${i}] is ${p}; expected a finite number`);
    mean += t;
  }
  mean /= n;
  let sse = 0;
  let sae = 0;
  let sst = 0;
  for (let i = 0; i < n; i++) {
    const t = yTrue[i] as number;
    const d = t - (yPred[i] as number);
    sse += d * d;
    sae += Math.abs(d);
    sst += (t - mean) * (t - mean);
  }
  const r2 = sst === 0 ? (sse === 0 ? 1 : 0) : 1 - sse / sst;
  return { rmse: Math.sqrt(sse / n), mae: sae / n, r2 };
}
