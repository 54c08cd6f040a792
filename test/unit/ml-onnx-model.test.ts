import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { IntegrityError, ValidationError } from '../../lib/core/errors.ts';
import { type Tree, treeEnsembleToOnnx } from '../../lib/ml/gbdt.ts';
import { OnnxModel, probeCuda } from '../../lib/ml/onnx-model.ts';
import { type TrainingSet, trainModel } from '../../lib/ml/train.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-onnx-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function tinyBinary(): TrainingSet {
  const n = 200;
  const X = new Float32Array(n * 2);
  const y = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    X[r * 2] = r / n;
    X[r * 2 + 1] = (r * 13) % 7;
    y[r] = r / n + ((r * 13) % 7) / 20 > 0.6 ? 1 : 0;
  }
  return {
    X,
    nRows: n,
    nFeatures: 2,
    featureNames: ['age', 'visits'],
    y,
    task: 'binary',
    classes: ['stay', 'churn'],
  };
}

/** A one-split tree on feature 0: x <= threshold → left leaf, NaN follows missingLeft. */
function stump(threshold: number, leftValue: number, rightValue: number, missingLeft: boolean): Tree {
  return {
    feature: Int32Array.of(0, -1, -1),
    threshold: Float32Array.of(threshold, 0, 0),
    thresholdBin: Uint8Array.of(0, 0, 0),
    missingLeft: Uint8Array.of(missingLeft ? 1 : 0, 0, 0),
    left: Int32Array.of(1, -1, -1),
    right: Int32Array.of(2, -1, -1),
    value: Float32Array.of(0, leftValue, rightValue),
  };
}

const sigmoid = (t: number) => 1 / (1 + Math.exp(-t));

describe('OnnxModel', () => {
  it('loads from bytes and from a file path, with the metadata the exporter wrote', async () => {
    const model = trainModel('linear', tinyBinary(), {}, 0);
    const bytes = model.toOnnx();
    const path = join(dir, 'model.onnx');
    writeFileSync(path, bytes);
    for (const source of [bytes, path]) {
      const onnx = await OnnxModel.load(source);
      expect(onnx.task).toBe('binary');
      expect(onnx.classes).toEqual(['stay', 'churn']);
      expect(onnx.featureNames).toEqual(['age', 'visits']);
      expect(onnx.nFeatures).toBe(2);
      expect(onnx.algorithm).toBe('linear');
      expect(['cpu', 'cuda']).toContain(onnx.provider);
      expect(onnx.providerReason.length).toBeGreaterThan(0);
      const out = await onnx.run(Float32Array.of(0.9, 6, 0.1, 0), 2);
      expect(out.task).toBe('binary');
      expect(out.nRows).toBe(2);
      expect(Array.from(out.labels ?? [])).toEqual([1, 0]);
      expect(out.values).toBeUndefined();
      await onnx.release();
    }
  });

  it('auto picks CUDA only when the machine and onnxruntime-node can, and says why', async () => {
    const probe = probeCuda();
    const onnx = await OnnxModel.load(trainModel('linear', tinyBinary(), {}, 0).toOnnx(), {
      provider: 'auto',
    });
    expect(onnx.provider).toBe(probe.available ? 'cuda' : 'cpu');
    if (!probe.available) expect(onnx.providerReason).toBe(probe.reason);
    await onnx.release();
    expect(probeCuda({ KILN_EXECUTION_PROVIDER: 'cpu' })).toEqual({
      available: false,
      reason: 'KILN_EXECUTION_PROVIDER=cpu',
    });
  });

  it('an explicit cuda request fails loudly where CUDA is unavailable', async () => {
    const bytes = trainModel('linear', tinyBinary(), {}, 0).toOnnx();
    if (probeCuda().available) {
      const onnx = await OnnxModel.load(bytes, { provider: 'cuda' });
      expect(onnx.provider).toBe('cuda');
      await onnx.release();
    } else {
      await expect(OnnxModel.load(bytes, { provider: 'cuda' })).rejects.toThrow(ValidationError);
    }
    const cpu = await OnnxModel.load(bytes, { provider: 'cpu' });
    expect(cpu.provider).toBe('cpu');
    expect(cpu.providerReason).toBe('cpu requested');
    await cpu.release();
  });

  it('rejects bad input sizes, handles empty batches, and refuses to run after release', async () => {
    const onnx = await OnnxModel.load(trainModel('gbdt', tinyBinary(), { max_iter: 3 }, 0).toOnnx());
    await expect(onnx.run(new Float32Array(3), 2)).rejects.toThrow(/expected nRows x nFeatures = 2 x 2 = 4/);
    await expect(onnx.run(new Float32Array(0), -1)).rejects.toThrow(ValidationError);
    const empty = await onnx.run(new Float32Array(0), 0);
    expect(empty.probabilities?.length).toBe(0);
    expect(empty.labels?.length).toBe(0);
    await onnx.release();
    await onnx.release();
    await expect(onnx.run(new Float32Array(2), 1)).rejects.toThrow(/after release/);
  });

  it('rejects bytes that are not an ONNX model, and missing files', async () => {
    await expect(OnnxModel.load(Uint8Array.of(1, 2, 3, 4, 5))).rejects.toThrow(IntegrityError);
    await expect(OnnxModel.load(join(dir, 'missing.onnx'))).rejects.toThrow(ValidationError);
    await expect(OnnxModel.load(new Uint8Array(0), { provider: 'tpu' as unknown as 'cpu' })).rejects.toThrow(
      /provider must be one of/,
    );
  });

  it('scores regression models through the `variable` output', async () => {
    const data = { ...tinyBinary(), task: 'regression' as const, classes: [] };
    const model = trainModel('gbdt', data, { max_iter: 10 }, 0);
    const onnx = await OnnxModel.load(model.toOnnx());
    const out = await onnx.run(data.X, data.nRows);
    expect(onnx.task).toBe('regression');
    expect(onnx.classes).toEqual([]);
    expect(out.values?.length).toBe(data.nRows);
    expect(Array.from(out.values ?? [])).toEqual(Array.from(model.predict(data.X, data.nRows).values ?? []));
    await onnx.release();
  });
});

describe('tree ensemble export semantics in ONNX Runtime', () => {
  // Rows: left leaf, right leaf, NaN.
  const rows = Float32Array.of(0.25, 0, 0.75, 0, Number.NaN, 0);

  it.each([
    ['mixed-sign leaves, NaN left', -1.5, 2, true, 0.25],
    ['all-positive leaves (the case ORT special-cases), NaN right', 1, 2, false, 0.5],
    ['all-negative leaves, NaN left', -1, -3, true, -0.25],
  ])(
    'binary %s: probabilities are [1 - p, p] with p = sigmoid(base + leaf)',
    async (_name, l, r, nanLeft, base) => {
      const bytes = treeEnsembleToOnnx({
        task: 'binary',
        classes: ['neg', 'pos'],
        featureNames: ['x', 'unused'],
        base: [base],
        trees: [stump(0.5, l, r, nanLeft), stump(0.6, l / 2, r / 2, nanLeft)],
      });
      const onnx = await OnnxModel.load(bytes, { provider: 'cpu' });
      const out = await onnx.run(rows, 3);
      await onnx.release();
      const scores = [base + 1.5 * l, base + 1.5 * r, base + 1.5 * (nanLeft ? l : r)];
      const probs = Array.from(out.probabilities ?? []);
      scores.forEach((s, i) => {
        expect(probs[2 * i + 1]).toBeCloseTo(sigmoid(s), 6);
        expect(probs[2 * i]).toBeCloseTo(1 - sigmoid(s), 6);
      });
      expect(Array.from(out.labels ?? [])).toEqual(scores.map((s) => (sigmoid(s) > 0.5 ? 1 : 0)));
    },
  );

  it('multiclass: column k is class k after SOFTMAX over base + leaf', async () => {
    const bytes = treeEnsembleToOnnx({
      task: 'multiclass',
      classes: ['a', 'b', 'c'],
      featureNames: ['x', 'unused'],
      base: [0.1, 0.2, 0.3],
      trees: [stump(0.5, 2, -1, true), stump(0.5, -1, 2, true), stump(0.5, 0, 0, true)],
    });
    const onnx = await OnnxModel.load(bytes, { provider: 'cpu' });
    const out = await onnx.run(rows, 3);
    await onnx.release();
    const softmax = (z: number[]) => {
      const e = z.map(Math.exp);
      const s = e.reduce((a, b) => a + b, 0);
      return e.map((v) => v / s);
    };
    const expected = [
      ...softmax([2.1, -0.8, 0.3]),
      ...softmax([-0.9, 2.2, 0.3]),
      ...softmax([2.1, -0.8, 0.3]),
    ];
    Array.from(out.probabilities ?? []).forEach((p, i) => {
      expect(p).toBeCloseTo(expected[i] as number, 6);
    });
    expect(Array.from(out.labels ?? [])).toEqual([0, 1, 0]);
  });
});
