import { InferenceSession, Tensor } from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../lib/core/errors.ts';
import { OnnxModel } from '../../lib/ml/onnx-model.ts';
import { holdoutSplit } from '../../lib/ml/split.ts';
import {
  type Algorithm,
  hyperparameterSchemas,
  type Task,
  type TrainingSet,
  trainModel,
} from '../../lib/ml/train.ts';
import { argmaxRows } from '../../lib/ml/types.ts';

/** Seeded synthetic data with ~5% NaN features; the target depends on several features non-linearly. */
function synthetic(task: Task, nRows: number, nFeatures = 6, nClasses = 4, seed = 7): TrainingSet {
  let s = seed;
  const rand = () => {
    s = (s * 48271) % 2147483647;
    return s / 2147483647;
  };
  const X = new Float32Array(nRows * nFeatures);
  const y = new Float64Array(nRows);
  for (let r = 0; r < nRows; r++) {
    let z = 0;
    for (let f = 0; f < nFeatures; f++) {
      const v = rand() * 4 - 2;
      const missing = rand() < 0.05;
      X[r * nFeatures + f] = missing ? Number.NaN : v;
      const used = missing ? 0.5 : v;
      z += (f % 2 === 0 ? 1 : -1) * (f + 1) * (f === 1 ? used * used : used);
    }
    const noisy = z + (rand() - 0.5) * 3;
    if (task === 'regression') y[r] = noisy;
    else if (task === 'binary') y[r] = noisy > 0 ? 1 : 0;
    else y[r] = Math.min(nClasses - 1, Math.max(0, Math.floor(((noisy + 12) / 24) * nClasses)));
  }
  const classes =
    task === 'regression'
      ? []
      : Array.from({ length: task === 'binary' ? 2 : nClasses }, (_, k) => `class_${k}`);
  return {
    X,
    nRows,
    nFeatures,
    featureNames: Array.from({ length: nFeatures }, (_, f) => `f${f}`),
    y,
    task,
    classes,
  };
}

function expectClose(actual: Float32Array, expected: Float32Array, rel = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i] as number;
    const b = expected[i] as number;
    const err = Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-30);
    if (err > worst) {
      worst = err;
      worstAt = i;
    }
  }
  expect(
    worst,
    `worst relative error at ${worstAt}: ${actual[worstAt]} vs ${expected[worstAt]}`,
  ).toBeLessThanOrEqual(rel);
}

/** Rows with NaN in every position pattern, appended to the scored batch. */
function withNanRows(data: TrainingSet): { X: Float32Array; nRows: number } {
  const F = data.nFeatures;
  const extra = new Float32Array(F * (F + 1)).fill(Number.NaN);
  for (let r = 0; r < F; r++) {
    for (let f = 0; f < F; f++) if (f !== r) extra[r * F + f] = (f - r) / F;
  }
  const X = new Float32Array(data.X.length + extra.length);
  X.set(data.X);
  X.set(extra, data.X.length);
  return { X, nRows: data.nRows + F + 1 };
}

const cases: Array<[Algorithm, Task]> = [
  ['gbdt', 'binary'],
  ['gbdt', 'multiclass'],
  ['gbdt', 'regression'],
  ['linear', 'binary'],
  ['linear', 'multiclass'],
  ['linear', 'regression'],
];

describe('ONNX export parity (real onnxruntime-node)', () => {
  it.each(cases)('%s %s: ORT output equals predict(), NaN rows included', async (algorithm, task) => {
    const data = synthetic(task, 1500);
    const model = trainModel(algorithm, data, { max_iter: 40 }, 3);
    const { X, nRows } = withNanRows(data);
    const ours = model.predict(X, nRows);
    const onnx = await OnnxModel.load(model.toOnnx(), { provider: 'cpu' });
    try {
      expect(onnx.task).toBe(task);
      expect(onnx.classes).toEqual(data.classes);
      expect(onnx.featureNames).toEqual(data.featureNames);
      expect(onnx.nFeatures).toBe(data.nFeatures);
      const ort = await onnx.run(X, nRows);
      expect(ort.nRows).toBe(nRows);
      if (task === 'regression') {
        expectClose(ort.values ?? new Float32Array(), ours.values ?? new Float32Array(0));
        expect(ort.probabilities).toBeUndefined();
      } else {
        const C = data.classes.length;
        const probs = ort.probabilities ?? new Float32Array();
        expectClose(probs, ours.probabilities ?? new Float32Array(0));
        expect(Array.from(ort.labels ?? [])).toEqual(Array.from(ours.labels ?? []));
        expect(Array.from(ours.labels ?? [])).toEqual(Array.from(argmaxRows(probs, nRows, C)));
        for (let r = 0; r < nRows; r++) {
          let sum = 0;
          for (let k = 0; k < C; k++) sum += probs[r * C + k] as number;
          expect(sum).toBeCloseTo(1, 5);
        }
        // The model is useful: far better than the majority class on its training data.
        let correct = 0;
        for (let r = 0; r < data.nRows; r++) if (ours.labels?.[r] === data.y[r]) correct++;
        expect(correct / data.nRows).toBeGreaterThan(task === 'binary' ? 0.85 : 0.6);
      }
    } finally {
      await onnx.release();
    }
  });

  it.each(['gbdt', 'linear'] as const)(
    "%s: the graph's own label output is the argmax of its probabilities",
    async (algorithm) => {
      for (const task of ['binary', 'multiclass'] as const) {
        const data = synthetic(task, 800);
        const model = trainModel(algorithm, data, { max_iter: 20 }, 1);
        const session = await InferenceSession.create(model.toOnnx());
        try {
          const out = await session.run({
            input: new Tensor('float32', data.X, [data.nRows, data.nFeatures]),
          });
          const probs = out.probabilities?.data as Float32Array;
          const label = Array.from(out.label?.data as BigInt64Array, Number);
          expect(out.label?.dims).toEqual([data.nRows]);
          expect(out.probabilities?.dims).toEqual([data.nRows, data.classes.length]);
          expect(label).toEqual(Array.from(argmaxRows(probs, data.nRows, data.classes.length)));
        } finally {
          await session.release();
        }
      }
    },
  );
});

describe('determinism', () => {
  it.each(cases)('%s %s: the same seed gives byte-identical ONNX', (algorithm, task) => {
    const data = synthetic(task, 12_000, 4);
    // > 10,000 rows switches on early stopping, so the seeded validation split is exercised too.
    const params = { max_iter: 15 };
    const a = trainModel(algorithm, data, params, 42).toOnnx();
    const b = trainModel(algorithm, data, params, 42).toOnnx();
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
  });

  it('gbdt: a different seed changes the early-stopping split and so the model', () => {
    const data = synthetic('regression', 12_000, 4);
    const a = trainModel('gbdt', data, { max_iter: 15 }, 1);
    const b = trainModel('gbdt', data, { max_iter: 15 }, 2);
    expect(a.summary.earlyStopping).toBe(1);
    expect(Buffer.from(a.toOnnx()).equals(Buffer.from(b.toOnnx()))).toBe(false);
  });
});

describe('hyperparameters', () => {
  it('fills scikit-learn defaults and reports the effective values', () => {
    const data = synthetic('binary', 300);
    const gbdt = trainModel('gbdt', data, {}, 0);
    expect(gbdt.hyperparameters).toMatchObject({
      learning_rate: 0.1,
      max_iter: 100,
      max_leaf_nodes: 31,
      max_depth: 0,
      min_samples_leaf: 20,
      l2_regularization: 0,
      max_bins: 255,
      early_stopping: 'auto',
      validation_fraction: 0.1,
      n_iter_no_change: 10,
    });
    expect(gbdt.summary.earlyStopping).toBe(0);
    expect(gbdt.summary.trees).toBe(100);
    const linear = trainModel('linear', data, {}, 0);
    expect(linear.hyperparameters).toMatchObject({
      l2_regularization: 1,
      fit_intercept: true,
      standardize: true,
    });
  });

  it('accepts numbers and booleans given as strings, as SageMaker passes them', () => {
    const data = synthetic('binary', 400);
    const model = trainModel(
      'gbdt',
      data,
      {
        learning_rate: '0.05',
        max_iter: '7',
        max_depth: 'None',
        early_stopping: 'false',
        growth: 'depthwise',
      },
      0,
    );
    expect(model.hyperparameters).toMatchObject({
      learning_rate: 0.05,
      max_iter: 7,
      max_depth: 0,
      early_stopping: false,
    });
    expect(model.summary.trees).toBe(7);
    const linear = trainModel('linear', data, { fit_intercept: 'False', l2_regularization: '10' }, 0);
    expect(linear.hyperparameters).toMatchObject({ fit_intercept: false, l2_regularization: 10 });
    expect(hyperparameterSchemas.gbdt.parse({ max_bins: '64' })).toMatchObject({ max_bins: 64 });
  });

  it.each([
    ['gbdt', { n_estimators: 10 }, /unknown hyperparameter n_estimators/],
    ['gbdt', { learning_rate: 0 }, /learning_rate: .*>0 \(got 0\)/],
    ['gbdt', { max_bins: 256 }, /max_bins: .*<=255 \(got 256\)/],
    ['gbdt', { max_leaf_nodes: 1 }, /max_leaf_nodes/],
    ['gbdt', { max_iter: 2.5 }, /max_iter/],
    ['gbdt', { min_samples_leaf: 'many' }, /min_samples_leaf/],
    ['gbdt', { growth: 'sideways' }, /growth/],
    ['gbdt', { validation_fraction: 1 }, /validation_fraction/],
    ['linear', { alpha: 1 }, /unknown hyperparameter alpha/],
    ['linear', { l2_regularization: -1 }, /l2_regularization/],
  ] as const)('%s rejects %j', (algorithm, params, message) => {
    const data = synthetic('binary', 100);
    const attempt = () => trainModel(algorithm, data, params as Record<string, unknown>, 0);
    expect(attempt).toThrow(ValidationError);
    expect(attempt).toThrow(message);
  });

  it('depth-wise growth honours max_depth and min_samples_leaf', () => {
    const data = synthetic('regression', 2000);
    const model = trainModel('gbdt', data, { growth: 'depthwise', max_depth: 3, max_iter: 10 }, 0);
    expect(model.summary.maxDepth).toBeLessThanOrEqual(3);
    expect(model.summary.leaves).toBeLessThanOrEqual(10 * 8);
    const leafy = trainModel('gbdt', data, { max_leaf_nodes: 4, max_iter: 10 }, 0);
    expect(leafy.summary.leaves).toBeLessThanOrEqual(10 * 4);
  });

  it('early stopping keeps the rounds up to the best validation loss', () => {
    const data = synthetic('binary', 3000);
    const model = trainModel('gbdt', data, { early_stopping: true, max_iter: 500, learning_rate: 0.5 }, 0);
    expect(model.summary.earlyStopping).toBe(1);
    expect(model.summary.iterations).toBeLessThan(500);
    expect(model.summary.bestIteration).toBeLessThanOrEqual((model.summary.iterations ?? 0) - 10);
    expect(model.summary.trees).toBe(model.summary.bestIteration);
  });
});

describe('bad training data', () => {
  const base = () => synthetic('binary', 200);
  const cases: Array<[string, (d: TrainingSet) => TrainingSet, RegExp]> = [
    ['one class in the target', (d) => ({ ...d, y: new Float64Array(d.nRows) }), /only one class/],
    [
      'NaN in y',
      (d) => {
        const y = d.y.slice();
        y[5] = Number.NaN;
        return { ...d, y };
      },
      /y\[5\] is NaN/,
    ],
    [
      'every feature constant',
      (d) => ({ ...d, X: new Float32Array(d.X.length).fill(3) }),
      /every feature is constant/,
    ],
    [
      'more classes than rows',
      (d) => ({
        ...d,
        task: 'multiclass',
        nRows: 3,
        X: d.X.slice(0, 3 * d.nFeatures),
        y: Float64Array.of(0, 1, 2),
        classes: ['a', 'b', 'c', 'd'],
      }),
      /more classes \(4\) than training rows \(3\)/,
    ],
    ['class index out of range', (d) => ({ ...d, y: d.y.map((v, i) => (i === 0 ? 2 : v)) }), /y\[0\] is 2/],
    ['X of the wrong length', (d) => ({ ...d, X: d.X.slice(1) }), /X must be a Float32Array/],
    [
      'infinite feature value',
      (d) => {
        const X = d.X.slice();
        X[7] = Number.POSITIVE_INFINITY;
        return { ...d, X };
      },
      /feature f1 is Infinity in row 1/,
    ],
    ['binary with three classes', (d) => ({ ...d, classes: ['a', 'b', 'c'] }), /exactly 2 classes/],
    ['multiclass with two classes', (d) => ({ ...d, task: 'multiclass' }), /at least 3 classes/],
    ['regression with classes', (d) => ({ ...d, task: 'regression' }), /no classes/],
  ];
  it.each(cases)('%s → ValidationError', (_name, mutate, message) => {
    for (const algorithm of ['gbdt', 'linear'] as const) {
      const attempt = () => trainModel(algorithm, mutate(base()), {}, 0);
      expect(attempt).toThrow(ValidationError);
      expect(attempt).toThrow(message);
    }
  });

  it('a single constant feature is harmless and ignored by both trainers', async () => {
    const data = synthetic('binary', 600);
    const F = data.nFeatures;
    for (let r = 0; r < data.nRows; r++) data.X[r * F + 2] = 1.5;
    for (const algorithm of ['gbdt', 'linear'] as const) {
      const model = trainModel(algorithm, data, { max_iter: 20 }, 0);
      const changed = data.X.slice();
      for (let r = 0; r < data.nRows; r++) changed[r * F + 2] = r % 7;
      const a = model.predict(data.X, data.nRows).probabilities;
      const b = model.predict(changed, data.nRows).probabilities;
      expect(Array.from(b ?? [])).toEqual(Array.from(a ?? []));
    }
  });

  it('gbdt learns where missing values go, and ORT routes them the same way', async () => {
    const n = 1000;
    const X = new Float32Array(n * 2);
    const y = new Float64Array(n);
    for (let r = 0; r < n; r++) {
      // The label is "feature 0 is missing", the opposite of what its present values suggest.
      const missing = r % 3 === 0;
      X[r * 2] = missing ? Number.NaN : (r % 100) / 100;
      X[r * 2 + 1] = (r * 37) % 11;
      y[r] = missing ? 1 : 0;
    }
    const data: TrainingSet = {
      X,
      nRows: n,
      nFeatures: 2,
      featureNames: ['a', 'b'],
      y,
      task: 'binary',
      classes: ['no', 'yes'],
    };
    const model = trainModel('gbdt', data, { max_iter: 5 }, 0);
    const probe = Float32Array.of(Number.NaN, 3, 0.5, 3, Number.NaN, Number.NaN, 0.01, Number.NaN);
    const ours = model.predict(probe, 4);
    expect(Array.from(ours.labels ?? [])).toEqual([1, 0, 1, 0]);
    const onnx = await OnnxModel.load(model.toOnnx(), { provider: 'cpu' });
    const ort = await onnx.run(probe, 4);
    await onnx.release();
    expect(Array.from(ort.labels ?? [])).toEqual([1, 0, 1, 0]);
    expectClose(ort.probabilities ?? new Float32Array(), ours.probabilities ?? new Float32Array(0));
  });

  it('predict validates its input size', () => {
    const data = synthetic('regression', 100);
    for (const algorithm of ['gbdt', 'linear'] as const) {
      const model = trainModel(algorithm, data, { max_iter: 2 }, 0);
      expect(() => model.predict(new Float32Array(5), 1)).toThrow(ValidationError);
    }
  });
});

describe('holdoutSplit', () => {
  it('is stratified, complete, disjoint and deterministic for a seed', () => {
    const y = Float64Array.from({ length: 1000 }, (_, i) => (i % 10 === 0 ? 1 : i % 10 < 4 ? 2 : 0));
    const a = holdoutSplit(y, 3, 0.2, 0);
    expect(a.test.length).toBe(200);
    expect(a.train.length).toBe(800);
    expect(new Set([...a.train, ...a.test]).size).toBe(1000);
    const share = (rows: Uint32Array, k: number) => rows.filter((r) => y[r] === k).length / rows.length;
    for (const k of [0, 1, 2]) expect(share(a.test, k)).toBeCloseTo(share(a.train, k), 2);
    const b = holdoutSplit(y, 3, 0.2, 0);
    expect(Array.from(b.test)).toEqual(Array.from(a.test));
    const c = holdoutSplit(y, 3, 0.2, 1);
    expect(Array.from(c.test)).not.toEqual(Array.from(a.test));
    const regression = holdoutSplit(
      Float64Array.from({ length: 10 }, (_, i) => i * 1.5),
      0,
      0.25,
      0,
    );
    expect(regression.test.length).toBe(3);
  });
});
