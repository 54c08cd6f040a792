import { ValidationError } from '../core/errors.ts';
import {
  attr,
  classifierOutputs,
  DataType,
  labelFromProbabilities,
  ML_DOMAIN,
  node,
  serializeModel,
  tensorInfo,
} from './onnx-builder.ts';
import { rng, shuffle, stratifiedSplit } from './split.ts';
import { argmaxRows, type ModelOutput, type Task, type TrainedModel, type TrainingSet } from './types.ts';

/** Effective GBDT hyperparameters (defaults, from train.ts, follow scikit-learn's HistGradientBoosting). */
export interface GbdtParams {
  learning_rate: number;
  max_iter: number;
  max_leaf_nodes: number;
  /** 0 = no limit. */
  max_depth: number;
  min_samples_leaf: number;
  l2_regularization: number;
  /** Non-missing bins per feature; one more bin is reserved for NaN. */
  max_bins: number;
  growth: 'leafwise' | 'depthwise';
  /** 'auto' enables early stopping above 10,000 rows, like scikit-learn. */
  early_stopping: 'auto' | boolean;
  validation_fraction: number;
  n_iter_no_change: number;
  tol: number;
}

const MIN_HESSIAN_TO_SPLIT = 1e-3;
const BIN_SUBSAMPLE = 200_000;
const AUTO_EARLY_STOPPING_ROWS = 10_000;
const PROBA_EPS = 1e-15;

/**
 * Per-feature bin thresholds (float32, strictly increasing): midpoints between distinct values when
 * there are few, otherwise midpoint quantiles, as scikit-learn does. A value x falls in the first bin b
 * with x <= thresholds[b]; comparing in float32 makes the trainer and ONNX Runtime route rows alike.
 */
function fitBinThresholds(
  X: Float32Array,
  nFeatures: number,
  rows: Uint32Array,
  maxBins: number,
  random: () => number,
): Float32Array[] {
  let sample = rows;
  if (rows.length > BIN_SUBSAMPLE) {
    const copy = rows.slice();
    shuffle(copy, random);
    sample = copy.subarray(0, BIN_SUBSAMPLE).sort();
  }
  const out: Float32Array[] = [];
  const values = new Float32Array(sample.length);
  for (let f = 0; f < nFeatures; f++) {
    let m = 0;
    for (let i = 0; i < sample.length; i++) {
      const v = X[(sample[i] as number) * nFeatures + f] as number;
      if (!Number.isNaN(v)) values[m++] = v;
    }
    const sorted = values.subarray(0, m).sort();
    const distinct: number[] = [];
    for (let i = 0; i < m; i++) {
      const v = sorted[i] as number;
      if (distinct.length === 0 || v !== distinct[distinct.length - 1]) distinct.push(v);
    }
    const raw: number[] = [];
    if (distinct.length <= maxBins) {
      for (let i = 0; i + 1 < distinct.length; i++)
        raw.push(((distinct[i] as number) + (distinct[i + 1] as number)) / 2);
    } else {
      for (let q = 1; q < maxBins; q++) {
        const pos = (q / maxBins) * (m - 1);
        const lo = sorted[Math.floor(pos)] as number;
        const hi = sorted[Math.ceil(pos)] as number;
        raw.push((lo + hi) / 2);
      }
    }
    const thresholds: number[] = [];
    for (const t of raw) {
      const r = Math.fround(t);
      if (thresholds.length === 0 || r > (thresholds[thresholds.length - 1] as number)) thresholds.push(r);
    }
    out.push(Float32Array.from(thresholds));
  }
  return out;
}

/** Column-major bin codes for the given rows; NaN gets the feature's missing code, one past its last bin. */
function binColumns(
  X: Float32Array,
  nFeatures: number,
  rows: Uint32Array,
  thresholds: Float32Array[],
): Uint8Array[] {
  const cols: Uint8Array[] = [];
  for (let f = 0; f < nFeatures; f++) {
    const thr = thresholds[f] as Float32Array;
    const nThr = thr.length;
    const col = new Uint8Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const x = X[(rows[i] as number) * nFeatures + f] as number;
      if (Number.isNaN(x)) {
        col[i] = nThr + 1;
        continue;
      }
      let lo = 0;
      let hi = nThr;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (x <= (thr[mid] as number)) hi = mid;
        else lo = mid + 1;
      }
      col[i] = lo;
    }
    cols.push(col);
  }
  return cols;
}

/** One regression tree over raw features; node 0 is the root, children point forward. */
export interface Tree {
  feature: Int32Array;
  /** float32 threshold; x <= threshold goes left. +Infinity when only NaN goes right. */
  threshold: Float32Array;
  /** Bin code of the threshold, for routing pre-binned rows during training. */
  thresholdBin: Uint8Array;
  missingLeft: Uint8Array;
  left: Int32Array;
  right: Int32Array;
  /** Leaf value (already multiplied by the learning rate), float32 as exported. */
  value: Float32Array;
}

interface SplitInfo {
  gain: number;
  feature: number;
  bin: number;
  missingLeft: boolean;
  leftG: number;
  leftH: number;
  leftN: number;
}

interface GrowNode {
  id: number;
  depth: number;
  start: number;
  end: number;
  sumG: number;
  sumH: number;
  hist: Float64Array | undefined;
  split: SplitInfo | undefined;
}

interface GrowContext {
  binned: Uint8Array[];
  nBins: Int32Array;
  nFeatures: number;
  /** Start slot of each feature in a histogram; feature f owns nBins[f] + 1 slots, the last for NaN. */
  offsets: Int32Array;
  params: GbdtParams;
  constantHessian: boolean;
  indices: Uint32Array;
  scratch: Uint32Array;
  orderedG: Float64Array;
  orderedH: Float64Array;
  pool: Float64Array[];
}

function takeHist(ctx: GrowContext): Float64Array {
  return ctx.pool.pop() ?? new Float64Array((ctx.offsets[ctx.nFeatures] as number) * 3);
}

/**
 * Gradient/hessian/count histogram of the rows indices[start, end), every feature. `all` says the
 * node is the root, whose rows are 0..n-1 in order, so the index indirection can be skipped.
 */
function buildHistogram(
  ctx: GrowContext,
  g: Float64Array,
  h: Float64Array,
  start: number,
  end: number,
  all: boolean,
): Float64Array {
  const hist = takeHist(ctx);
  hist.fill(0);
  const { indices, orderedG, orderedH, binned, nFeatures, offsets, nBins, constantHessian } = ctx;
  const n = end - start;
  // Gathering gradients once keeps the per-feature loops on contiguous memory.
  const og = all ? g : orderedG;
  const oh = all ? h : orderedH;
  if (!all) {
    for (let i = 0; i < n; i++) {
      const r = indices[start + i] as number;
      orderedG[i] = g[r] as number;
      if (!constantHessian) orderedH[i] = h[r] as number;
    }
  }
  for (let f = 0; f < nFeatures; f++) {
    const col = binned[f] as Uint8Array;
    const off = (offsets[f] as number) * 3;
    if (constantHessian) {
      if (all) {
        for (let i = 0; i < n; i++) {
          const j = off + (col[i] as number) * 3;
          hist[j] = (hist[j] as number) + (og[i] as number);
          hist[j + 2] = (hist[j + 2] as number) + 1;
        }
      } else {
        for (let i = 0; i < n; i++) {
          const j = off + (col[indices[start + i] as number] as number) * 3;
          hist[j] = (hist[j] as number) + (og[i] as number);
          hist[j + 2] = (hist[j + 2] as number) + 1;
        }
      }
      const slots = (nBins[f] as number) + 1;
      for (let b = 0; b < slots; b++) hist[off + b * 3 + 1] = hist[off + b * 3 + 2] as number;
    } else if (all) {
      for (let i = 0; i < n; i++) {
        const j = off + (col[i] as number) * 3;
        hist[j] = (hist[j] as number) + (og[i] as number);
        hist[j + 1] = (hist[j + 1] as number) + (oh[i] as number);
        hist[j + 2] = (hist[j + 2] as number) + 1;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const j = off + (col[indices[start + i] as number] as number) * 3;
        hist[j] = (hist[j] as number) + (og[i] as number);
        hist[j + 1] = (hist[j + 1] as number) + (oh[i] as number);
        hist[j + 2] = (hist[j + 2] as number) + 1;
      }
    }
  }
  return hist;
}

/** Best split of a node from its histogram, or undefined when no split has positive gain. */
function findBestSplit(
  ctx: GrowContext,
  hist: Float64Array,
  G: number,
  H: number,
  n: number,
): SplitInfo | undefined {
  const { nFeatures, offsets, nBins } = ctx;
  const lambda = ctx.params.l2_regularization;
  const minLeaf = ctx.params.min_samples_leaf;
  const parentScore = (G * G) / (H + lambda);
  let best: SplitInfo | undefined;
  let bestGain = 0;
  for (let f = 0; f < nFeatures; f++) {
    const off = (offsets[f] as number) * 3;
    const nb = nBins[f] as number;
    const mj = off + nb * 3;
    const missG = hist[mj] as number;
    const missH = hist[mj + 1] as number;
    const missN = hist[mj + 2] as number;
    const hasMissing = missN > 0;
    // Pass 0 sends NaN right (and may isolate NaN by putting every value left); pass 1 sends NaN left.
    for (let pass = 0; pass < (hasMissing ? 2 : 1); pass++) {
      let lg = pass === 1 ? missG : 0;
      let lh = pass === 1 ? missH : 0;
      let ln = pass === 1 ? missN : 0;
      const lastBin = pass === 0 && hasMissing ? nb - 1 : nb - 2;
      for (let b = 0; b <= lastBin; b++) {
        const j = off + b * 3;
        lg += hist[j] as number;
        lh += hist[j + 1] as number;
        ln += hist[j + 2] as number;
        if (ln < minLeaf) continue;
        const rn = n - ln;
        if (rn < minLeaf) break;
        const rh = H - lh;
        if (lh < MIN_HESSIAN_TO_SPLIT || rh < MIN_HESSIAN_TO_SPLIT) continue;
        const rg = G - lg;
        const gain = (lg * lg) / (lh + lambda) + (rg * rg) / (rh + lambda) - parentScore;
        if (gain > bestGain) {
          bestGain = gain;
          // Without NaN in this node, unseen NaN follows the larger child (scikit-learn's rule).
          const missingLeft = hasMissing ? pass === 1 : ln >= rn;
          best = { gain, feature: f, bin: b, missingLeft, leftG: lg, leftH: lh, leftN: ln };
        }
      }
    }
  }
  return best;
}

/** Stable in-place partition of indices[start, end) by the split; returns the first right position. */
function partition(ctx: GrowContext, nodeStart: number, nodeEnd: number, split: SplitInfo): number {
  const { indices, scratch } = ctx;
  const missingCode = ctx.nBins[split.feature] as number;
  const col = ctx.binned[split.feature] as Uint8Array;
  const bin = split.bin;
  const missingLeft = split.missingLeft;
  let l = nodeStart;
  let r = 0;
  for (let i = nodeStart; i < nodeEnd; i++) {
    const row = indices[i] as number;
    const b = col[row] as number;
    const goLeft = b === missingCode ? missingLeft : b <= bin;
    if (goLeft) indices[l++] = row;
    else scratch[r++] = row;
  }
  indices.set(scratch.subarray(0, r), l);
  return l;
}

/** Grow one tree on gradients g/h; adds the leaf values to `raw` for the training rows. */
function growTree(
  ctx: GrowContext,
  thresholds: Float32Array[],
  g: Float64Array,
  h: Float64Array,
  raw: Float64Array,
): Tree {
  const p = ctx.params;
  const nRows = g.length;
  for (let i = 0; i < nRows; i++) ctx.indices[i] = i;
  const feature: number[] = [];
  const threshold: number[] = [];
  const thresholdBin: number[] = [];
  const missingLeft: number[] = [];
  const left: number[] = [];
  const right: number[] = [];
  const value: number[] = [];
  const newNode = (depth: number, start: number, end: number, sumG: number, sumH: number): GrowNode => {
    const id = feature.length;
    feature.push(-1);
    threshold.push(0);
    thresholdBin.push(0);
    missingLeft.push(0);
    left.push(-1);
    right.push(-1);
    value.push(0);
    return { id, depth, start, end, sumG, sumH, hist: undefined, split: undefined };
  };
  const canSplit = (nd: GrowNode): boolean =>
    nd.end - nd.start >= 2 * p.min_samples_leaf &&
    nd.sumH >= 2 * MIN_HESSIAN_TO_SPLIT &&
    (p.max_depth === 0 || nd.depth < p.max_depth);
  const finalize = (nd: GrowNode): void => {
    const v = Math.fround((-p.learning_rate * nd.sumG) / (nd.sumH + p.l2_regularization));
    value[nd.id] = v;
    for (let i = nd.start; i < nd.end; i++) {
      const r = ctx.indices[i] as number;
      raw[r] = (raw[r] as number) + v;
    }
    if (nd.hist) ctx.pool.push(nd.hist);
    nd.hist = undefined;
  };

  let sumG = 0;
  let sumH = 0;
  for (let i = 0; i < nRows; i++) {
    sumG += g[i] as number;
    sumH += h[i] as number;
  }
  const root = newNode(0, 0, nRows, sumG, sumH);
  const candidates: GrowNode[] = [];
  if (canSplit(root)) {
    root.hist = buildHistogram(ctx, g, h, 0, nRows, true);
    root.split = findBestSplit(ctx, root.hist, sumG, sumH, nRows);
  }
  if (root.split) candidates.push(root);
  else finalize(root);

  let nLeaves = 1;
  while (candidates.length > 0 && nLeaves < p.max_leaf_nodes) {
    // Leaf-wise takes the largest gain, depth-wise the shallowest node; ties go to the older node.
    let pick = 0;
    for (let i = 1; i < candidates.length; i++) {
      const a = candidates[i] as GrowNode;
      const b = candidates[pick] as GrowNode;
      const better =
        p.growth === 'leafwise'
          ? (a.split as SplitInfo).gain > (b.split as SplitInfo).gain ||
            ((a.split as SplitInfo).gain === (b.split as SplitInfo).gain && a.id < b.id)
          : a.depth < b.depth || (a.depth === b.depth && a.id < b.id);
      if (better) pick = i;
    }
    const nd = candidates.splice(pick, 1)[0] as GrowNode;
    const split = nd.split as SplitInfo;
    const mid = partition(ctx, nd.start, nd.end, split);
    const lNode = newNode(nd.depth + 1, nd.start, mid, split.leftG, split.leftH);
    const rNode = newNode(nd.depth + 1, mid, nd.end, nd.sumG - split.leftG, nd.sumH - split.leftH);
    const nb = ctx.nBins[split.feature] as number;
    const thr = thresholds[split.feature] as Float32Array;
    feature[nd.id] = split.feature;
    threshold[nd.id] = split.bin >= nb - 1 ? Number.POSITIVE_INFINITY : (thr[split.bin] as number);
    thresholdBin[nd.id] = split.bin;
    missingLeft[nd.id] = split.missingLeft ? 1 : 0;
    left[nd.id] = lNode.id;
    right[nd.id] = rNode.id;
    nLeaves++;

    const children = [lNode, rNode];
    const splittable = children.map(canSplit);
    const parentHist = nd.hist as Float64Array;
    nd.hist = undefined;
    const smallIsLeft = lNode.end - lNode.start <= rNode.end - rNode.start;
    const small = smallIsLeft ? lNode : rNode;
    const large = smallIsLeft ? rNode : lNode;
    const smallSplittable = smallIsLeft ? splittable[0] : splittable[1];
    const largeSplittable = smallIsLeft ? splittable[1] : splittable[0];
    if (largeSplittable) {
      // Histogram subtraction: build the smaller child, derive the larger from the parent in place.
      const sh = buildHistogram(ctx, g, h, small.start, small.end, false);
      for (let i = 0; i < parentHist.length; i++)
        parentHist[i] = (parentHist[i] as number) - (sh[i] as number);
      large.hist = parentHist;
      if (smallSplittable) small.hist = sh;
      else ctx.pool.push(sh);
    } else {
      ctx.pool.push(parentHist);
      if (smallSplittable) small.hist = buildHistogram(ctx, g, h, small.start, small.end, false);
    }
    for (let c = 0; c < 2; c++) {
      const child = children[c] as GrowNode;
      if (splittable[c] && child.hist) {
        child.split = findBestSplit(ctx, child.hist, child.sumG, child.sumH, child.end - child.start);
      }
      if (child.split && nLeaves < p.max_leaf_nodes) candidates.push(child);
      else finalize(child);
    }
  }
  for (const nd of candidates) finalize(nd);
  return {
    feature: Int32Array.from(feature),
    threshold: Float32Array.from(threshold),
    thresholdBin: Uint8Array.from(thresholdBin),
    missingLeft: Uint8Array.from(missingLeft),
    left: Int32Array.from(left),
    right: Int32Array.from(right),
    value: Float32Array.from(value),
  };
}

/** Leaf value of a pre-binned row (training and validation only). */
function leafValueBinned(tree: Tree, cols: Uint8Array[], row: number, nBins: Int32Array): number {
  let nd = 0;
  while ((tree.left[nd] as number) >= 0) {
    const f = tree.feature[nd] as number;
    const b = (cols[f] as Uint8Array)[row] as number;
    const goLeft = b === nBins[f] ? tree.missingLeft[nd] === 1 : b <= (tree.thresholdBin[nd] as number);
    nd = goLeft ? (tree.left[nd] as number) : (tree.right[nd] as number);
  }
  return tree.value[nd] as number;
}

/** Leaf value of a raw float32 row, with the same comparisons ONNX Runtime makes. */
function leafValue(tree: Tree, X: Float32Array, base: number): number {
  let nd = 0;
  while ((tree.left[nd] as number) >= 0) {
    const x = X[base + (tree.feature[nd] as number)] as number;
    const goLeft = Number.isNaN(x) ? tree.missingLeft[nd] === 1 : x <= (tree.threshold[nd] as number);
    nd = goLeft ? (tree.left[nd] as number) : (tree.right[nd] as number);
  }
  return tree.value[nd] as number;
}

function sigmoid(t: number): number {
  return t >= 0 ? 1 / (1 + Math.exp(-t)) : Math.exp(t) / (1 + Math.exp(t));
}

/** Gradients and hessians of the loss at the current raw scores (one array pair per output). */
function computeGradients(
  task: Task,
  raw: Float64Array[],
  y: Float64Array,
  g: Float64Array[],
  h: Float64Array[],
  probs: Float64Array,
): void {
  const n = y.length;
  if (task === 'regression') {
    const r0 = raw[0] as Float64Array;
    const g0 = g[0] as Float64Array;
    for (let i = 0; i < n; i++) g0[i] = (r0[i] as number) - (y[i] as number);
    return;
  }
  if (task === 'binary') {
    const r0 = raw[0] as Float64Array;
    const g0 = g[0] as Float64Array;
    const h0 = h[0] as Float64Array;
    for (let i = 0; i < n; i++) {
      const pr = sigmoid(r0[i] as number);
      g0[i] = pr - (y[i] as number);
      h0[i] = pr * (1 - pr);
    }
    return;
  }
  const K = raw.length;
  for (let i = 0; i < n; i++) {
    let max = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < K; k++) max = Math.max(max, (raw[k] as Float64Array)[i] as number);
    let sum = 0;
    for (let k = 0; k < K; k++) {
      const e = Math.exp(((raw[k] as Float64Array)[i] as number) - max);
      probs[k] = e;
      sum += e;
    }
    const yi = y[i] as number;
    for (let k = 0; k < K; k++) {
      const pk = (probs[k] as number) / sum;
      (g[k] as Float64Array)[i] = pk - (k === yi ? 1 : 0);
      (h[k] as Float64Array)[i] = pk * (1 - pk);
    }
  }
}

/** Mean loss (log loss or half squared error, as scikit-learn) of raw scores against targets. */
function meanLoss(task: Task, raw: Float64Array[], y: Float64Array): number {
  const n = y.length;
  let loss = 0;
  if (task === 'regression') {
    const r0 = raw[0] as Float64Array;
    for (let i = 0; i < n; i++) {
      const d = (r0[i] as number) - (y[i] as number);
      loss += 0.5 * d * d;
    }
  } else if (task === 'binary') {
    const r0 = raw[0] as Float64Array;
    for (let i = 0; i < n; i++) {
      const t = r0[i] as number;
      loss += (t > 0 ? t + Math.log1p(Math.exp(-t)) : Math.log1p(Math.exp(t))) - (y[i] as number) * t;
    }
  } else {
    const K = raw.length;
    for (let i = 0; i < n; i++) {
      let max = Number.NEGATIVE_INFINITY;
      for (let k = 0; k < K; k++) max = Math.max(max, (raw[k] as Float64Array)[i] as number);
      let sum = 0;
      for (let k = 0; k < K; k++) sum += Math.exp(((raw[k] as Float64Array)[i] as number) - max);
      loss += Math.log(sum) + max - ((raw[y[i] as number] as Float64Array)[i] as number);
    }
  }
  return loss / Math.max(n, 1);
}

/** Initial raw score per output: mean for regression, log-odds / log-prior for classification. */
function baseline(task: Task, y: Float64Array, nClasses: number): Float64Array {
  const n = y.length;
  if (task === 'regression') {
    let s = 0;
    for (let i = 0; i < n; i++) s += y[i] as number;
    return Float64Array.of(Math.fround(s / n));
  }
  const counts = new Float64Array(nClasses);
  for (let i = 0; i < n; i++) counts[y[i] as number] = (counts[y[i] as number] as number) + 1;
  if (task === 'binary') {
    const p = Math.min(Math.max((counts[1] as number) / n, PROBA_EPS), 1 - PROBA_EPS);
    return Float64Array.of(Math.fround(Math.log(p / (1 - p))));
  }
  return counts.map((c) => Math.fround(Math.log(Math.max(c / n, PROBA_EPS))));
}

interface GbdtFit {
  task: Task;
  nFeatures: number;
  /** One entry per output (1, or C for multiclass). */
  base: Float64Array;
  /** Round-major: trees[round * nOutputs + k]. */
  trees: Tree[];
  nOutputs: number;
  iterations: number;
  bestIteration: number;
  validationLoss: number;
  trainLoss: number;
  earlyStopping: boolean;
}

function fitGbdt(data: TrainingSet, p: GbdtParams, seed: number): GbdtFit {
  const { X, nRows, nFeatures, task } = data;
  const random = rng(seed);
  const nClasses = data.classes.length;
  const K = task === 'multiclass' ? nClasses : 1;
  const earlyStopping = p.early_stopping === 'auto' ? nRows > AUTO_EARLY_STOPPING_ROWS : p.early_stopping;
  let trainRows: Uint32Array;
  let validRows: Uint32Array = new Uint32Array(0);
  if (earlyStopping) {
    const split = stratifiedSplit(
      data.y,
      task === 'regression' ? 0 : nClasses,
      p.validation_fraction,
      random,
    );
    trainRows = split.train;
    validRows = split.valid;
    if (validRows.length === 0 || trainRows.length < 2) {
      throw new ValidationError(
        `early stopping needs a validation split, but validation_fraction ${p.validation_fraction} of ${nRows} rows leaves ${validRows.length} validation and ${trainRows.length} training rows; set early_stopping=false`,
      );
    }
  } else {
    trainRows = Uint32Array.from({ length: nRows }, (_, i) => i);
  }
  const n = trainRows.length;
  const yTrain = Float64Array.from(trainRows, (r) => data.y[r] as number);
  const yValid = Float64Array.from(validRows, (r) => data.y[r] as number);
  if (task !== 'regression') {
    const seen = new Set(yTrain);
    if (seen.size < 2) {
      throw new ValidationError(
        'the training part of the split holds a single class; provide more rows per class',
      );
    }
  }

  const thresholds = fitBinThresholds(X, nFeatures, trainRows, p.max_bins, random);
  const binned = binColumns(X, nFeatures, trainRows, thresholds);
  const binnedValid = binColumns(X, nFeatures, validRows, thresholds);
  const nBins = Int32Array.from(thresholds, (t) => t.length + 1);
  const offsets = new Int32Array(nFeatures + 1);
  for (let f = 0; f < nFeatures; f++) offsets[f + 1] = (offsets[f] as number) + (nBins[f] as number) + 1;

  const base = baseline(task, yTrain, nClasses);
  const raw = Array.from({ length: K }, (_, k) => new Float64Array(n).fill(base[k] as number));
  const rawValid = Array.from({ length: K }, (_, k) =>
    new Float64Array(validRows.length).fill(base[k] as number),
  );
  const g = Array.from({ length: K }, () => new Float64Array(n));
  const constantHessian = task === 'regression';
  const h = Array.from({ length: K }, () =>
    constantHessian ? new Float64Array(n).fill(1) : new Float64Array(n),
  );
  const probs = new Float64Array(K);

  const ctx: GrowContext = {
    binned,
    nBins,
    nFeatures,
    offsets,
    params: p,
    constantHessian,
    indices: new Uint32Array(n),
    scratch: new Uint32Array(n),
    orderedG: new Float64Array(n),
    orderedH: new Float64Array(n),
    pool: [],
  };

  const trees: Tree[] = [];
  const validScores: number[] = [];
  if (earlyStopping) validScores.push(meanLoss(task, rawValid, yValid));
  let bestIteration = 0;
  let bestLoss = Number.POSITIVE_INFINITY;
  let trainLossAtBest = Number.NaN;
  let iterations = 0;
  for (let it = 0; it < p.max_iter; it++) {
    computeGradients(task, raw, yTrain, g, h, probs);
    for (let k = 0; k < K; k++) {
      const tree = growTree(
        ctx,
        thresholds,
        g[k] as Float64Array,
        h[k] as Float64Array,
        raw[k] as Float64Array,
      );
      trees.push(tree);
      const rv = rawValid[k] as Float64Array;
      for (let i = 0; i < validRows.length; i++) {
        rv[i] = (rv[i] as number) + leafValueBinned(tree, binnedValid, i, nBins);
      }
    }
    iterations = it + 1;
    if (!earlyStopping) continue;
    const loss = meanLoss(task, rawValid, yValid);
    validScores.push(loss);
    if (loss < bestLoss) {
      bestLoss = loss;
      trainLossAtBest = meanLoss(task, raw, yTrain);
      bestIteration = iterations;
    }
    // scikit-learn's rule: stop when none of the last n_iter_no_change rounds beat the round before them by tol.
    const m = p.n_iter_no_change;
    if (validScores.length > m) {
      const reference = validScores[validScores.length - m - 1] as number;
      const recent = validScores.slice(-m);
      if (!recent.some((s) => s < reference - p.tol)) break;
    }
  }
  if (!earlyStopping) bestIteration = iterations;
  // Keep the rounds up to the best validation loss (later ones only fit noise).
  const kept = Math.max(bestIteration, 1);
  trees.length = kept * K;
  return {
    task,
    nFeatures,
    base,
    trees,
    nOutputs: K,
    iterations,
    bestIteration: kept,
    validationLoss: earlyStopping ? bestLoss : Number.NaN,
    trainLoss: earlyStopping ? trainLossAtBest : meanLoss(task, raw, yTrain),
    earlyStopping,
  };
}

/** Raw scores of raw feature rows: tree sum, then the base value, in double like the exported graph. */
function rawScores(fit: GbdtFit, X: Float32Array, nRows: number): Float64Array {
  const K = fit.nOutputs;
  const F = fit.nFeatures;
  const out = new Float64Array(nRows * K);
  const nRounds = fit.trees.length / K;
  for (let r = 0; r < nRows; r++) {
    const base = r * F;
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let t = 0; t < nRounds; t++) s += leafValue(fit.trees[t * K + k] as Tree, X, base);
      out[r * K + k] = s + (fit.base[k] as number);
    }
  }
  return out;
}

const f32 = Math.fround;

/**
 * ONNX Runtime's float32 logistic (ml_common.h): 1 / (1 + e^-|x|), mirrored for x < 0. Reproducing
 * its rounding keeps tiny probabilities equal to ORT's to the last bit rather than to 1e-7 absolute.
 */
function ortLogistic(x: number): number {
  const xf = f32(x);
  const v = f32(1 / f32(1 + f32(Math.exp(-Math.abs(xf)))));
  return xf < 0 ? f32(1 - v) : v;
}

/** ONNX Runtime's float32 softmax over one row, in place: subtract the max, exponentiate, normalize. */
function ortSoftmax(scores: Float32Array): void {
  let max = Number.NEGATIVE_INFINITY;
  for (let k = 0; k < scores.length; k++) max = Math.max(max, scores[k] as number);
  let sum = 0;
  for (let k = 0; k < scores.length; k++) {
    const e = f32(Math.exp(f32((scores[k] as number) - max)));
    scores[k] = e;
    sum = f32(sum + e);
  }
  for (let k = 0; k < scores.length; k++) scores[k] = f32((scores[k] as number) / sum);
}

function predictGbdt(fit: GbdtFit, X: Float32Array, nRows: number, nClasses: number): ModelOutput {
  const task = fit.task;
  if (!Number.isInteger(nRows) || nRows < 0 || X.length !== nRows * fit.nFeatures) {
    throw new ValidationError(
      `X has ${X.length} values; expected nRows x nFeatures = ${nRows} x ${fit.nFeatures} = ${nRows * fit.nFeatures}`,
    );
  }
  const raw = rawScores(fit, X, nRows);
  if (task === 'regression') return { task, nRows, values: Float32Array.from(raw) };
  const probabilities = new Float32Array(nRows * nClasses);
  if (task === 'binary') {
    for (let r = 0; r < nRows; r++) {
      const t = raw[r] as number;
      probabilities[r * 2] = ortLogistic(-t);
      probabilities[r * 2 + 1] = ortLogistic(t);
    }
  } else {
    const scores = new Float32Array(nClasses);
    for (let r = 0; r < nRows; r++) {
      for (let k = 0; k < nClasses; k++) scores[k] = raw[r * nClasses + k] as number;
      ortSoftmax(scores);
      probabilities.set(scores, r * nClasses);
    }
  }
  return { task, nRows, probabilities, labels: argmaxRows(probabilities, nRows, nClasses) };
}

/** What the exporter needs of a tree ensemble; exported so tests can pin ONNX Runtime's semantics. */
export interface TreeEnsembleSpec {
  task: Task;
  classes: string[];
  featureNames: string[];
  /** Initial raw score per output (1, or one per class for multiclass). */
  base: ArrayLike<number>;
  /** Round-major: trees[round * outputs + k]. */
  trees: Tree[];
}

/**
 * Export as ai.onnx.ml TreeEnsembleRegressor / TreeEnsembleClassifier.
 *
 * The input is cast to double first: ONNX Runtime then compares and accumulates in double (with
 * float input it sums leaf values in float32), so its output matches predict() to float32 rounding.
 * Comparing a float32 feature against a float32 threshold gives the same answer in either precision.
 *
 * Binary classifiers: ONNX Runtime (checked against 1.30) treats a two-class ensemble whose leaves
 * write to a single class id as a special case whose second column skips the LOGISTIC transform when
 * every leaf weight is positive. With weights on both class ids and base_values [b, b], it instead
 * computes s = b + (class-0 sum), scores [-s, s], and LOGISTIC gives exactly [sigmoid(-s), sigmoid(s)]
 * for any weights. So every leaf writes +v to both class ids. A unit test pins this column order.
 */
export function treeEnsembleToOnnx(fit: TreeEnsembleSpec): Uint8Array {
  const meta = fit;
  const treeIds: number[] = [];
  const nodeIds: number[] = [];
  const featureIds: number[] = [];
  const modes: string[] = [];
  const values: number[] = [];
  const trueIds: number[] = [];
  const falseIds: number[] = [];
  const missingTrue: number[] = [];
  const leafTree: number[] = [];
  const leafNode: number[] = [];
  const leafTarget: number[] = [];
  const leafWeight: number[] = [];
  const K = fit.task === 'multiclass' ? fit.classes.length : 1;
  const binary = fit.task === 'binary';
  fit.trees.forEach((tree, t) => {
    const k = t % K;
    for (let nd = 0; nd < tree.feature.length; nd++) {
      treeIds.push(t);
      nodeIds.push(nd);
      const isLeaf = (tree.left[nd] as number) < 0;
      featureIds.push(isLeaf ? 0 : (tree.feature[nd] as number));
      modes.push(isLeaf ? 'LEAF' : 'BRANCH_LEQ');
      values.push(isLeaf ? 0 : (tree.threshold[nd] as number));
      trueIds.push(isLeaf ? 0 : (tree.left[nd] as number));
      falseIds.push(isLeaf ? 0 : (tree.right[nd] as number));
      missingTrue.push(isLeaf ? 0 : (tree.missingLeft[nd] as number));
      if (!isLeaf) continue;
      const v = tree.value[nd] as number;
      if (binary) {
        leafTree.push(t, t);
        leafNode.push(nd, nd);
        leafTarget.push(0, 1);
        leafWeight.push(v, v);
      } else {
        leafTree.push(t);
        leafNode.push(nd);
        leafTarget.push(k);
        leafWeight.push(v);
      }
    }
  });
  const common = [
    attr.ints('nodes_treeids', treeIds),
    attr.ints('nodes_nodeids', nodeIds),
    attr.ints('nodes_featureids', featureIds),
    attr.strings('nodes_modes', modes),
    attr.floats('nodes_values', values),
    attr.ints('nodes_truenodeids', trueIds),
    attr.ints('nodes_falsenodeids', falseIds),
    attr.ints('nodes_missing_value_tracks_true', missingTrue),
  ];
  const base = Array.from(fit.base);
  const toDouble = node('Cast', ['input'], ['x_double'], [attr.int('to', DataType.DOUBLE)]);
  if (fit.task === 'regression') {
    const ensemble = node(
      'TreeEnsembleRegressor',
      ['x_double'],
      ['variable'],
      [
        ...common,
        attr.ints('target_treeids', leafTree),
        attr.ints('target_nodeids', leafNode),
        attr.ints('target_ids', leafTarget),
        attr.floats('target_weights', leafWeight),
        attr.int('n_targets', 1),
        attr.floats('base_values', base),
        attr.string('aggregate_function', 'SUM'),
        attr.string('post_transform', 'NONE'),
      ],
      ML_DOMAIN,
    );
    return serializeModel({
      graphName: 'kiln_gbdt_regressor',
      task: fit.task,
      classes: [],
      featureNames: meta.featureNames,
      algorithm: 'gbdt',
      nodes: [toDouble, ensemble],
      outputs: [tensorInfo('variable', DataType.FLOAT, ['N', 1])],
      usesMlDomain: true,
    });
  }
  const nClasses = meta.classes.length;
  const ensemble = node(
    'TreeEnsembleClassifier',
    ['x_double'],
    ['ensemble_label', 'probabilities'],
    [
      ...common,
      attr.ints('class_treeids', leafTree),
      attr.ints('class_nodeids', leafNode),
      attr.ints('class_ids', leafTarget),
      attr.floats('class_weights', leafWeight),
      attr.ints(
        'classlabels_int64s',
        Array.from({ length: nClasses }, (_, i) => i),
      ),
      attr.floats('base_values', binary ? [base[0] as number, base[0] as number] : base),
      attr.string('post_transform', binary ? 'LOGISTIC' : 'SOFTMAX'),
    ],
    ML_DOMAIN,
  );
  return serializeModel({
    graphName: 'kiln_gbdt_classifier',
    task: fit.task,
    classes: meta.classes,
    featureNames: meta.featureNames,
    algorithm: 'gbdt',
    nodes: [toDouble, ensemble, ...labelFromProbabilities()],
    outputs: classifierOutputs(nClasses),
    usesMlDomain: true,
  });
}

/** Train histogram gradient-boosted trees (binary log loss, softmax, or squared error). */
export function trainGbdt(data: TrainingSet, params: GbdtParams, seed: number): TrainedModel {
  const fit = fitGbdt(data, params, seed);
  const task = data.task;
  const classes = [...data.classes];
  const featureNames = [...data.featureNames];
  let leaves = 0;
  let maxDepth = 0;
  for (const tree of fit.trees) {
    const depth = new Int32Array(tree.feature.length);
    for (let nd = 0; nd < tree.feature.length; nd++) {
      const l = tree.left[nd] as number;
      if (l < 0) {
        leaves++;
        maxDepth = Math.max(maxDepth, depth[nd] as number);
      } else {
        depth[l] = (depth[nd] as number) + 1;
        depth[tree.right[nd] as number] = (depth[nd] as number) + 1;
      }
    }
  }
  return {
    algorithm: 'gbdt',
    task,
    classes,
    featureNames,
    hyperparameters: { ...params },
    summary: {
      trees: fit.trees.length,
      iterations: fit.iterations,
      bestIteration: fit.bestIteration,
      leaves,
      maxDepth,
      earlyStopping: fit.earlyStopping ? 1 : 0,
      trainLoss: fit.trainLoss,
      ...(fit.earlyStopping ? { validationLoss: fit.validationLoss } : {}),
    },
    predict: (X: Float32Array, nRows: number) => predictGbdt(fit, X, nRows, classes.length),
    toOnnx: () => treeEnsembleToOnnx({ task, classes, featureNames, base: fit.base, trees: fit.trees }),
  };
}
