import { ValidationError } from '../core/errors.ts';
import {
  attr,
  classifierOutputs,
  DataType,
  doubleTensor,
  labelFromProbabilities,
  node,
  serializeModel,
  tensorInfo,
} from './onnx-builder.ts';
import { argmaxRows, type ModelOutput, type TrainedModel, type TrainingSet } from './types.ts';

/** Effective hyperparameters of the linear trainer (defaults filled in by the schema in train.ts). */
export interface LinearParams {
  /** L2 penalty on the (standardized) weights, never on the intercept: ridge `alpha`, logistic `1 / C`. */
  l2_regularization: number;
  /** L-BFGS iterations for logistic regression (ridge is solved in closed form). */
  max_iter: number;
  /** Stop L-BFGS when the largest gradient component of the mean loss falls below this. */
  tol: number;
  fit_intercept: boolean;
  /** Fit on z-scored features (the penalty then treats every feature alike); weights are folded back on export. */
  standardize: boolean;
}

interface LinearFit {
  /** Raw-feature weights, row-major [nFeatures x nOutputs]. */
  weights: Float64Array;
  intercepts: Float64Array;
  /** Value substituted for NaN, per feature. */
  fill: Float64Array;
  nOutputs: number;
  iterations: number;
  converged: boolean;
}

/**
 * Per-feature mean and spread, ignoring NaN. NaN is treated as 0 in the space the model is fitted in:
 * with `standardize` (the default) that is the feature's training mean, so a missing value adds
 * nothing beyond the intercept; without it, a raw 0. Why: the feature transform imputes upstream, so
 * a NaN here is an unimputed gap, and "no contribution" is the neutral choice for a linear model that
 * the exported graph can reproduce exactly (IsNaN + Where with the same fill constants).
 */
function featureStats(
  data: TrainingSet,
  standardize: boolean,
): { center: Float64Array; scale: Float64Array } {
  const { X, nRows, nFeatures } = data;
  const center = new Float64Array(nFeatures);
  const scale = new Float64Array(nFeatures).fill(1);
  if (!standardize) return { center, scale };
  const sum = new Float64Array(nFeatures);
  const count = new Float64Array(nFeatures);
  for (let r = 0; r < nRows; r++) {
    const base = r * nFeatures;
    for (let f = 0; f < nFeatures; f++) {
      const v = X[base + f] as number;
      if (!Number.isNaN(v)) {
        sum[f] = (sum[f] as number) + v;
        count[f] = (count[f] as number) + 1;
      }
    }
  }
  for (let f = 0; f < nFeatures; f++)
    center[f] = (count[f] as number) > 0 ? (sum[f] as number) / (count[f] as number) : 0;
  const sq = new Float64Array(nFeatures);
  for (let r = 0; r < nRows; r++) {
    const base = r * nFeatures;
    for (let f = 0; f < nFeatures; f++) {
      const v = X[base + f] as number;
      if (!Number.isNaN(v)) {
        const d = v - (center[f] as number);
        sq[f] = (sq[f] as number) + d * d;
      }
    }
  }
  for (let f = 0; f < nFeatures; f++) {
    const c = count[f] as number;
    const sd = c > 0 ? Math.sqrt((sq[f] as number) / c) : 0;
    // A constant column stays centered at 0 with scale 1: it carries no signal and gets weight 0.
    scale[f] = sd > 1e-12 * Math.max(1, Math.abs(center[f] as number)) ? sd : 1;
  }
  return { center, scale };
}

/** Standardized, NaN-filled design matrix, row-major [nRows x nFeatures]. */
function designMatrix(data: TrainingSet, center: Float64Array, scale: Float64Array): Float64Array {
  const { X, nRows, nFeatures } = data;
  const Z = new Float64Array(nRows * nFeatures);
  for (let r = 0; r < nRows; r++) {
    const base = r * nFeatures;
    for (let f = 0; f < nFeatures; f++) {
      const v = X[base + f] as number;
      Z[base + f] = !Number.isNaN(v) ? (v - (center[f] as number)) / (scale[f] as number) : 0;
    }
  }
  return Z;
}

/** Solve the symmetric positive-definite system A x = b in place by Cholesky; returns false if A is not PD. */
function choleskySolve(A: Float64Array, b: Float64Array, n: number): boolean {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * n + j] as number;
      for (let k = 0; k < j; k++) s -= (L[i * n + k] as number) * (L[j * n + k] as number);
      if (i === j) {
        if (!(s > 0)) return false;
        L[i * n + i] = Math.sqrt(s);
      } else {
        L[i * n + j] = s / (L[j * n + j] as number);
      }
    }
  }
  for (let i = 0; i < n; i++) {
    let s = b[i] as number;
    for (let k = 0; k < i; k++) s -= (L[i * n + k] as number) * (b[k] as number);
    b[i] = s / (L[i * n + i] as number);
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = b[i] as number;
    for (let k = i + 1; k < n; k++) s -= (L[k * n + i] as number) * (b[k] as number);
    b[i] = s / (L[i * n + i] as number);
  }
  return true;
}

/** Ridge regression in closed form on centered features, so the intercept is not penalized. */
function fitRidge(Z: Float64Array, y: Float64Array, n: number, F: number, p: LinearParams) {
  const zMean = new Float64Array(F);
  let yMean = 0;
  if (p.fit_intercept) {
    for (let r = 0; r < n; r++) {
      yMean += y[r] as number;
      for (let f = 0; f < F; f++) zMean[f] = (zMean[f] as number) + (Z[r * F + f] as number);
    }
    yMean /= n;
    for (let f = 0; f < F; f++) zMean[f] = (zMean[f] as number) / n;
  }
  const A = new Float64Array(F * F);
  const rhs = new Float64Array(F);
  const row = new Float64Array(F);
  for (let r = 0; r < n; r++) {
    for (let f = 0; f < F; f++) row[f] = (Z[r * F + f] as number) - (zMean[f] as number);
    const yr = (y[r] as number) - yMean;
    for (let i = 0; i < F; i++) {
      const ri = row[i] as number;
      if (ri === 0) continue;
      rhs[i] = (rhs[i] as number) + ri * yr;
      const off = i * F;
      for (let j = 0; j <= i; j++) A[off + j] = (A[off + j] as number) + ri * (row[j] as number);
    }
  }
  let trace = 0;
  for (let i = 0; i < F; i++) {
    for (let j = 0; j < i; j++) A[j * F + i] = A[i * F + j] as number;
    trace += A[i * F + i] as number;
  }
  // Without a penalty, collinear or constant columns make A singular; a vanishing jitter picks the
  // minimum-norm-like solution instead of failing.
  let jitter = 0;
  for (let attempt = 0; attempt < 12; attempt++) {
    const M = A.slice();
    for (let i = 0; i < F; i++) M[i * F + i] = (M[i * F + i] as number) + p.l2_regularization + jitter;
    const w = rhs.slice();
    if (choleskySolve(M, w, F)) {
      let b = yMean;
      for (let f = 0; f < F; f++) b -= (zMean[f] as number) * (w[f] as number);
      return { w, b };
    }
    jitter = jitter === 0 ? 1e-10 * Math.max(trace / Math.max(F, 1), 1e-12) : jitter * 100;
  }
  throw new ValidationError('ridge regression system is singular; add l2_regularization > 0');
}

/** The K = 1 case of logisticObjective without the per-class inner loops (it dominates binary training). */
function binaryLogisticObjective(
  Z: Float64Array,
  y: Float64Array,
  n: number,
  F: number,
  lambda: number,
  fitIntercept: boolean,
) {
  return (theta: Float64Array, grad: Float64Array): number => {
    grad.fill(0);
    const b = fitIntercept ? (theta[F] as number) : 0;
    let loss = 0;
    let gradB = 0;
    for (let r = 0; r < n; r++) {
      const base = r * F;
      let t = b;
      for (let f = 0; f < F; f++) t += (Z[base + f] as number) * (theta[f] as number);
      const yr = y[r] as number;
      loss += (t > 0 ? t + Math.log1p(Math.exp(-t)) : Math.log1p(Math.exp(t))) - yr * t;
      const d = (t >= 0 ? 1 / (1 + Math.exp(-t)) : Math.exp(t) / (1 + Math.exp(t))) - yr;
      for (let f = 0; f < F; f++) grad[f] = (grad[f] as number) + d * (Z[base + f] as number);
      gradB += d;
    }
    let penalty = 0;
    for (let f = 0; f < F; f++) {
      const w = theta[f] as number;
      penalty += w * w;
      grad[f] = ((grad[f] as number) + lambda * w) / n;
    }
    if (fitIntercept) grad[F] = gradB / n;
    return (loss + 0.5 * lambda * penalty) / n;
  };
}

/** Mean loss and gradient of L2-penalized logistic (K=1) or multinomial (K=C) regression. */
function logisticObjective(
  Z: Float64Array,
  y: Float64Array,
  n: number,
  F: number,
  K: number,
  lambda: number,
  fitIntercept: boolean,
) {
  const nW = F * K;
  const logits = new Float64Array(K);
  if (K === 1) return binaryLogisticObjective(Z, y, n, F, lambda, fitIntercept);
  return (theta: Float64Array, grad: Float64Array): number => {
    grad.fill(0);
    let loss = 0;
    for (let r = 0; r < n; r++) {
      const base = r * F;
      for (let k = 0; k < K; k++) logits[k] = fitIntercept ? (theta[nW + k] as number) : 0;
      for (let f = 0; f < F; f++) {
        const z = Z[base + f] as number;
        if (z === 0) continue;
        const off = f * K;
        for (let k = 0; k < K; k++) logits[k] = (logits[k] as number) + z * (theta[off + k] as number);
      }
      const yr = y[r] as number;
      if (K === 1) {
        const t = logits[0] as number;
        // log(1 + e^t) computed without overflow.
        loss += (t > 0 ? t + Math.log1p(Math.exp(-t)) : Math.log1p(Math.exp(t))) - yr * t;
        logits[0] = (t >= 0 ? 1 / (1 + Math.exp(-t)) : Math.exp(t) / (1 + Math.exp(t))) - yr;
      } else {
        let max = Number.NEGATIVE_INFINITY;
        for (let k = 0; k < K; k++) max = Math.max(max, logits[k] as number);
        let sum = 0;
        for (let k = 0; k < K; k++) {
          const e = Math.exp((logits[k] as number) - max);
          logits[k] = e;
          sum += e;
        }
        const yk = yr | 0;
        loss += Math.log(sum) - Math.log(logits[yk] as number);
        for (let k = 0; k < K; k++) logits[k] = (logits[k] as number) / sum - (k === yk ? 1 : 0);
      }
      for (let f = 0; f < F; f++) {
        const z = Z[base + f] as number;
        if (z === 0) continue;
        const off = f * K;
        for (let k = 0; k < K; k++) grad[off + k] = (grad[off + k] as number) + z * (logits[k] as number);
      }
      if (fitIntercept)
        for (let k = 0; k < K; k++) grad[nW + k] = (grad[nW + k] as number) + (logits[k] as number);
    }
    let penalty = 0;
    for (let i = 0; i < nW; i++) {
      const t = theta[i] as number;
      penalty += t * t;
      grad[i] = (grad[i] as number) + lambda * t;
    }
    for (let i = 0; i < grad.length; i++) grad[i] = (grad[i] as number) / n;
    return (loss + 0.5 * lambda * penalty) / n;
  };
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] as number));
  return m;
}

/** L-BFGS with a backtracking Armijo line search; the objective is smooth and strictly convex. */
function lbfgs(
  fg: (theta: Float64Array, grad: Float64Array) => number,
  dim: number,
  maxIter: number,
  tol: number,
): { theta: Float64Array; iterations: number; converged: boolean } {
  const m = 10;
  let theta = new Float64Array(dim);
  let grad = new Float64Array(dim);
  let f = fg(theta, grad);
  const S: Float64Array[] = [];
  const Y: Float64Array[] = [];
  const rho: number[] = [];
  const alpha = new Float64Array(m);
  const dir = new Float64Array(dim);
  const nextTheta = new Float64Array(dim);
  const nextGrad = new Float64Array(dim);
  for (let iter = 0; iter < maxIter; iter++) {
    if (maxAbs(grad) < tol) return { theta, iterations: iter, converged: true };
    // Two-loop recursion: dir = -H grad.
    for (let i = 0; i < dim; i++) dir[i] = -(grad[i] as number);
    for (let j = S.length - 1; j >= 0; j--) {
      const a = (rho[j] as number) * dot(S[j] as Float64Array, dir);
      alpha[j] = a;
      const yj = Y[j] as Float64Array;
      for (let i = 0; i < dim; i++) dir[i] = (dir[i] as number) - a * (yj[i] as number);
    }
    if (S.length > 0) {
      const sLast = S[S.length - 1] as Float64Array;
      const yLast = Y[Y.length - 1] as Float64Array;
      const gamma = dot(sLast, yLast) / dot(yLast, yLast);
      for (let i = 0; i < dim; i++) dir[i] = (dir[i] as number) * gamma;
    } else {
      const g = Math.sqrt(dot(grad, grad));
      for (let i = 0; i < dim; i++) dir[i] = (dir[i] as number) / Math.max(g, 1);
    }
    for (let j = 0; j < S.length; j++) {
      const yj = Y[j] as Float64Array;
      const b = (rho[j] as number) * dot(yj, dir);
      const sj = S[j] as Float64Array;
      const c = (alpha[j] as number) - b;
      for (let i = 0; i < dim; i++) dir[i] = (dir[i] as number) + c * (sj[i] as number);
    }
    let slope = dot(grad, dir);
    if (!(slope < 0)) {
      // Not a descent direction (numerical trouble): restart from steepest descent.
      S.length = 0;
      Y.length = 0;
      rho.length = 0;
      for (let i = 0; i < dim; i++) dir[i] = -(grad[i] as number);
      slope = dot(grad, dir);
    }
    let step = 1;
    let fNext = Number.POSITIVE_INFINITY;
    for (let ls = 0; ls < 40; ls++) {
      for (let i = 0; i < dim; i++) nextTheta[i] = (theta[i] as number) + step * (dir[i] as number);
      fNext = fg(nextTheta, nextGrad);
      if (fNext <= f + 1e-4 * step * slope) break;
      step *= 0.5;
    }
    if (!(fNext <= f)) return { theta, iterations: iter, converged: false };
    const s = new Float64Array(dim);
    const yv = new Float64Array(dim);
    for (let i = 0; i < dim; i++) {
      s[i] = (nextTheta[i] as number) - (theta[i] as number);
      yv[i] = (nextGrad[i] as number) - (grad[i] as number);
    }
    const sy = dot(s, yv);
    if (sy > 1e-12 * Math.sqrt(dot(s, s) * dot(yv, yv))) {
      if (S.length === m) {
        S.shift();
        Y.shift();
        rho.shift();
      }
      S.push(s);
      Y.push(yv);
      rho.push(1 / sy);
    }
    const relChange = Math.abs(f - fNext) / Math.max(Math.abs(f), Math.abs(fNext), 1);
    theta = nextTheta.slice();
    grad = nextGrad.slice();
    f = fNext;
    if (relChange < 1e-15) return { theta, iterations: iter + 1, converged: maxAbs(grad) < tol * 10 };
  }
  return { theta, iterations: maxIter, converged: maxAbs(grad) < tol };
}

function fitLinear(data: TrainingSet, p: LinearParams): LinearFit {
  const { nRows: n, nFeatures: F, task } = data;
  const { center, scale } = featureStats(data, p.standardize);
  const Z = designMatrix(data, center, scale);
  const nClasses = data.classes.length;
  // Binary uses one logit; the exported graph prepends a zero column so softmax gives [1 - p, p].
  const K = task === 'regression' || task === 'binary' ? 1 : nClasses;
  let wStd: Float64Array;
  let bStd: Float64Array;
  let iterations = 0;
  let converged = true;
  if (task === 'regression') {
    const { w, b } = fitRidge(Z, data.y, n, F, p);
    wStd = w;
    bStd = Float64Array.of(b);
  } else {
    const objective = logisticObjective(Z, data.y, n, F, K, p.l2_regularization, p.fit_intercept);
    const result = lbfgs(objective, F * K + K, p.max_iter, p.tol);
    wStd = result.theta.subarray(0, F * K);
    bStd = result.theta.slice(F * K);
    iterations = result.iterations;
    converged = result.converged;
  }
  // Fold standardization into raw-feature weights so the export is one MatMul + Add.
  const nOutputs = task === 'binary' ? 2 : K;
  const offset = task === 'binary' ? 1 : 0;
  const weights = new Float64Array(F * nOutputs);
  const intercepts = new Float64Array(nOutputs);
  for (let k = 0; k < K; k++) {
    let b = bStd[k] as number;
    for (let f = 0; f < F; f++) {
      const w = (wStd[f * K + k] as number) / (scale[f] as number);
      weights[f * nOutputs + k + offset] = w;
      b -= (center[f] as number) * w;
    }
    intercepts[k + offset] = b;
  }
  return { weights, intercepts, fill: center, nOutputs, iterations, converged };
}

/** Score raw features exactly as the exported graph does: NaN fill, double-precision MatMul/Add/Softmax. */
function predictLinear(
  fit: LinearFit,
  data: Pick<TrainingSet, 'task'>,
  X: Float32Array,
  nRows: number,
  F: number,
) {
  const { weights, intercepts, fill, nOutputs: K } = fit;
  if (X.length !== nRows * F) {
    throw new ValidationError(`X has ${X.length} values; expected nRows x nFeatures = ${nRows} x ${F}`);
  }
  const out = new Float32Array(nRows * K);
  const z = new Float64Array(K);
  for (let r = 0; r < nRows; r++) {
    for (let k = 0; k < K; k++) z[k] = 0;
    for (let f = 0; f < F; f++) {
      const raw = X[r * F + f] as number;
      const v = !Number.isNaN(raw) ? raw : (fill[f] as number);
      for (let k = 0; k < K; k++) z[k] = (z[k] as number) + v * (weights[f * K + k] as number);
    }
    for (let k = 0; k < K; k++) z[k] = (z[k] as number) + (intercepts[k] as number);
    if (data.task === 'regression') {
      out[r] = z[0] as number;
      continue;
    }
    let max = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < K; k++) max = Math.max(max, z[k] as number);
    let sum = 0;
    for (let k = 0; k < K; k++) {
      const e = Math.exp((z[k] as number) - max);
      z[k] = e;
      sum += e;
    }
    for (let k = 0; k < K; k++) out[r * K + k] = (z[k] as number) / sum;
  }
  return out;
}

interface ExportMeta {
  task: TrainingSet['task'];
  classes: string[];
  featureNames: string[];
  nFeatures: number;
}

function exportLinear(fit: LinearFit, data: ExportMeta): Uint8Array {
  const F = data.nFeatures;
  const K = fit.nOutputs;
  // Computing in double makes ORT's result match predict() to float32 rounding, whatever the feature scale.
  const nodes = [
    node('Cast', ['input'], ['x_double'], [attr.int('to', DataType.DOUBLE)]),
    node('IsNaN', ['x_double'], ['x_missing']),
    node('Where', ['x_missing', 'fill', 'x_double'], ['x_filled']),
    node('MatMul', ['x_filled', 'weights'], ['z_linear']),
    node('Add', ['z_linear', 'intercepts'], ['z']),
  ];
  const initializers = [
    doubleTensor('fill', [1, F], fit.fill),
    doubleTensor('weights', [F, K], fit.weights),
    doubleTensor('intercepts', [K], fit.intercepts),
  ];
  if (data.task === 'regression') {
    nodes.push(node('Cast', ['z'], ['variable'], [attr.int('to', DataType.FLOAT)]));
    return serializeModel({
      graphName: 'kiln_ridge',
      task: data.task,
      classes: [],
      featureNames: data.featureNames,
      algorithm: 'linear',
      nodes,
      initializers,
      outputs: [tensorInfo('variable', DataType.FLOAT, ['N', 1])],
      usesMlDomain: false,
    });
  }
  nodes.push(
    node('Softmax', ['z'], ['p_double'], [attr.int('axis', 1)]),
    node('Cast', ['p_double'], ['probabilities'], [attr.int('to', DataType.FLOAT)]),
    ...labelFromProbabilities(),
  );
  return serializeModel({
    graphName: 'kiln_logistic',
    task: data.task,
    classes: data.classes,
    featureNames: data.featureNames,
    algorithm: 'linear',
    nodes,
    initializers,
    outputs: classifierOutputs(K),
    usesMlDomain: false,
  });
}

/** Fit ridge regression or (multinomial) logistic regression with an unpenalized intercept. */
export function trainLinear(data: TrainingSet, params: LinearParams): TrainedModel {
  const fit = fitLinear(data, params);
  const F = data.nFeatures;
  const task = data.task;
  const classes = [...data.classes];
  const featureNames = [...data.featureNames];
  let nonZero = 0;
  for (let i = 0; i < fit.weights.length; i++) if (fit.weights[i] !== 0) nonZero++;
  return {
    algorithm: 'linear',
    task,
    classes,
    featureNames,
    hyperparameters: { ...params },
    summary: {
      iterations: fit.iterations,
      converged: fit.converged ? 1 : 0,
      nonZeroWeights: nonZero,
      outputs: fit.nOutputs,
    },
    predict(X: Float32Array, nRows: number): ModelOutput {
      const out = predictLinear(fit, { task }, X, nRows, F);
      if (task === 'regression') return { task, nRows, values: out };
      return { task, nRows, probabilities: out, labels: argmaxRows(out, nRows, fit.nOutputs) };
    },
    toOnnx: () => exportLinear(fit, { task, classes, featureNames, nFeatures: F }),
  };
}
