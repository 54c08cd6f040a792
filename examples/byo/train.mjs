#!/usr/bin/env node
// A bring-your-own trainer for Kiln: softmax regression (classification) or ridge regression, written
// from scratch, honouring the SageMaker training contract and nothing else of Kiln:
//
//   in   /opt/ml/input/config/hyperparameters.json   string hyperparameters (`target` is always there)
//        /opt/ml/input/data/train/                   the curated version: train.parquet, manifest.json
//   out  /opt/ml/model/model.onnx                    the model, input tensor `input` [N, F]
//        /opt/ml/model/transform.json                a transform spec with fixed parameters: which raw
//                                                    columns the model reads and how they become `input`
//        /opt/ml/model/training.json                 (optional) algorithm, code version, hyperparameters
//        /opt/ml/output/failure                      why it failed, if it did (exit code 1)
//
// Locally there is no container, so the root comes from KILN_OPT_ML (Kiln sets it); in an image it is
// /opt/ml. Third-party packages only: @duckdb/node-api reads Parquet, onnx-proto writes the ONNX protobuf.
// See docs/byo-training.md.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DuckDBInstance } from '@duckdb/node-api';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
const root = process.env.KILN_OPT_ML ?? '/opt/ml';
const DEFAULTS = { epochs: 300, learning_rate: 0.5, l2: 0.001 };
// Set by Kiln on every job; this trainer has no use for them beyond `target` and `seed`.
const KILN_KEYS = ['target', 'seed', 'kiln_model', 'kiln_dataset', 'kiln_dataset_version'];
const MAX_CATEGORIES = 20;

class BadInput extends Error {}

try {
  await main();
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  mkdirSync(join(root, 'output'), { recursive: true });
  writeFileSync(join(root, 'output', 'failure'), `${message}\n`);
  console.error(`training failed: ${message}`);
  process.exitCode = 1;
}

async function main() {
  const hp = readJson(join(root, 'input', 'config', 'hyperparameters.json'));
  const params = parseHyperparameters(hp);
  const trainDir = join(root, 'input', 'data', 'train');
  const manifest = readJson(join(trainDir, 'manifest.json'));
  const columns = manifest.schema.columns;
  const targetColumn = columns.find((c) => c.name === params.target);
  if (!targetColumn) throw new BadInput(`target ${params.target} is not a column of the training data`);
  const rows = await readParquet(join(trainDir, 'train.parquet'));
  if (rows.length === 0) throw new BadInput('the training data has no rows');

  // 1. The transform: every other column is declared, with fixed parameters learnt here.
  const spec = buildSpec(columns, params.target, rows);
  const { names, X } = features(spec, rows);
  if (names.length === 0)
    throw new BadInput('no usable feature column (numbers, booleans, small categories)');

  // 2. The model, on standardized features (the standardization goes into the graph).
  const { mean, scale } = standardizer(X, names.length);
  const Z = X.map((row) => row.map((v, j) => (v - mean[j]) * scale[j]));
  const task = taskOf(targetColumn, rows, params.target);
  let model;
  if (task === 'regression') {
    const y = rows.map((row) => Number(row[params.target]));
    if (y.some((v) => !Number.isFinite(v))) throw new BadInput(`target ${params.target} has missing values`);
    model = { task, classes: [], ...ridge(Z, y, params.l2) };
  } else {
    const labels = rows.map((row) => row[params.target]);
    if (labels.some((v) => v === null || v === undefined)) {
      throw new BadInput(`target ${params.target} has missing values`);
    }
    const classes = [...new Set(labels.map(String))].sort();
    if (classes.length < 2) throw new BadInput(`target ${params.target} has a single class`);
    const y = labels.map((v) => classes.indexOf(String(v)));
    model = {
      task: classes.length === 2 ? 'binary' : 'multiclass',
      classes,
      ...softmax(Z, y, classes.length, params),
    };
  }

  // 3. The artifacts.
  const modelDir = join(root, 'model');
  mkdirSync(modelDir, { recursive: true });
  writeFileSync(join(modelDir, 'model.onnx'), toOnnx(model, names, mean, scale));
  writeFileSync(join(modelDir, 'transform.json'), `${JSON.stringify(spec, null, 2)}\n`);
  const source = readFileSync(fileURLToPath(import.meta.url));
  writeFileSync(
    join(modelDir, 'training.json'),
    `${JSON.stringify(
      {
        algorithm: model.task === 'regression' ? 'byo-ridge' : 'byo-softmax-regression',
        codeVersion: `examples/byo/train.mjs sha256:${createHash('sha256').update(source).digest('hex').slice(0, 16)}`,
        hyperparameters: { epochs: params.epochs, learning_rate: params.learning_rate, l2: params.l2 },
        seed: params.seed,
      },
      null,
      2,
    )}\n`,
  );
  console.log(
    JSON.stringify({ message: 'trained', task: model.task, features: names.length, rows: rows.length }),
  );
}

function parseHyperparameters(hp) {
  const allowed = [...KILN_KEYS, ...Object.keys(DEFAULTS)];
  const unknown = Object.keys(hp).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) {
    throw new BadInput(
      `unknown hyperparameter ${unknown.join(', ')} (allowed: ${Object.keys(DEFAULTS).join(', ')})`,
    );
  }
  if (!hp.target) throw new BadInput('hyperparameter target is required');
  const out = { target: hp.target, seed: Number(hp.seed ?? 0) };
  for (const [key, fallback] of Object.entries(DEFAULTS)) {
    const value = hp[key] === undefined ? fallback : Number(hp[key]);
    if (!Number.isFinite(value) || value < 0 || (key !== 'l2' && value === 0)) {
      throw new BadInput(`hyperparameter ${key} must be a positive number, got ${JSON.stringify(hp[key])}`);
    }
    out[key] = value;
  }
  if (!Number.isInteger(out.epochs) || out.epochs > 100_000) {
    throw new BadInput(
      `hyperparameter epochs must be an integer from 1 to 100000, got ${JSON.stringify(hp.epochs)}`,
    );
  }
  return out;
}

/** A Kiln transform spec whose every parameter is given, so Kiln reproduces exactly these features. */
function buildSpec(columns, target, rows) {
  const specColumns = [];
  for (const column of columns) {
    if (column.name === target) continue;
    const values = rows.map((row) => row[column.name]);
    const present = values.filter((v) => v !== null && v !== undefined && v !== '');
    let steps = [{ op: 'drop' }];
    if ((column.type === 'number' || column.type === 'integer') && present.length > 0) {
      const mean = present.reduce((sum, v) => sum + Number(v), 0) / present.length;
      steps = [{ op: 'impute', strategy: 'constant', value: Number(mean.toPrecision(12)) }];
    } else if (column.type === 'boolean') {
      steps = [{ op: 'impute', strategy: 'constant', value: false }];
    } else if (column.type === 'string') {
      const categories = [...new Set(present.map(String))].sort();
      if (categories.length >= 2 && categories.length <= MAX_CATEGORIES)
        steps = [{ op: 'onehot', categories }];
    }
    specColumns.push({ name: column.name, type: column.type, nullable: column.nullable, steps });
  }
  return { kind: 'kiln.transform', version: 1, target, columns: specColumns };
}

/** The feature matrix exactly as Kiln's transform computes it from the spec (feature names included). */
function features(spec, rows) {
  const names = [];
  const encoders = [];
  for (const column of spec.columns) {
    const step = column.steps[0];
    if (step.op === 'impute') {
      names.push(column.name);
      const fill = step.value === false ? 0 : step.value;
      encoders.push((row) => {
        const v = row[column.name];
        if (v === null || v === undefined) return [fill];
        return [typeof v === 'boolean' ? Number(v) : Number(v)];
      });
    } else if (step.op === 'onehot') {
      names.push(...step.categories.map((c) => `${column.name}=${c}`), `${column.name}=__unknown__`);
      encoders.push((row) => {
        const v = row[column.name];
        const out = new Array(step.categories.length + 1).fill(0);
        if (v === null || v === undefined || v === '') return out;
        const i = step.categories.indexOf(String(v));
        out[i >= 0 ? i : step.categories.length] = 1;
        return out;
      });
    }
  }
  return { names, X: rows.map((row) => encoders.flatMap((encode) => encode(row))) };
}

function standardizer(X, width) {
  const mean = new Array(width).fill(0);
  const scale = new Array(width).fill(1);
  for (let j = 0; j < width; j++) {
    mean[j] = X.reduce((sum, row) => sum + row[j], 0) / X.length;
    const variance = X.reduce((sum, row) => sum + (row[j] - mean[j]) ** 2, 0) / X.length;
    scale[j] = variance > 0 ? 1 / Math.sqrt(variance) : 1;
  }
  return { mean, scale };
}

function taskOf(column, rows, target) {
  if (column.type === 'string' || column.type === 'boolean') return 'classification';
  const distinct = new Set(rows.map((row) => String(row[target])));
  return column.type === 'integer' && distinct.size <= 10 ? 'classification' : 'regression';
}

/** Multinomial logistic regression by full-batch gradient descent (deterministic: no sampling). */
function softmax(Z, y, nClasses, { epochs, learning_rate: rate, l2 }) {
  const n = Z.length;
  const width = Z[0].length;
  const W = Array.from({ length: width }, () => new Array(nClasses).fill(0));
  const b = new Array(nClasses).fill(0);
  for (let epoch = 0; epoch < epochs; epoch++) {
    const gW = Array.from({ length: width }, () => new Array(nClasses).fill(0));
    const gb = new Array(nClasses).fill(0);
    for (let i = 0; i < n; i++) {
      const p = probabilities(Z[i], W, b);
      p[y[i]] -= 1;
      for (let k = 0; k < nClasses; k++) {
        gb[k] += p[k];
        for (let j = 0; j < width; j++) gW[j][k] += p[k] * Z[i][j];
      }
    }
    for (let k = 0; k < nClasses; k++) {
      b[k] -= (rate * gb[k]) / n;
      for (let j = 0; j < width; j++) W[j][k] -= rate * (gW[j][k] / n + l2 * W[j][k]);
    }
  }
  return { W, b };
}

function probabilities(z, W, b) {
  const logits = b.map((bias, k) => z.reduce((sum, v, j) => sum + v * W[j][k], bias));
  const max = Math.max(...logits);
  const exp = logits.map((l) => Math.exp(l - max));
  const total = exp.reduce((a, c) => a + c, 0);
  return exp.map((e) => e / total);
}

/** Ridge regression in closed form: (ZᵀZ + λnI) w = Zᵀ(y - ȳ), intercept ȳ (Z is centred). */
function ridge(Z, y, l2) {
  const n = Z.length;
  const width = Z[0].length;
  const yMean = y.reduce((a, c) => a + c, 0) / n;
  const A = Array.from({ length: width }, (_, r) =>
    Array.from(
      { length: width },
      (_, c) => Z.reduce((sum, row) => sum + row[r] * row[c], 0) + (r === c ? l2 * n : 0),
    ),
  );
  const rhs = Array.from({ length: width }, (_, r) =>
    Z.reduce((sum, row, i) => sum + row[r] * (y[i] - yMean), 0),
  );
  const w = solve(A, rhs);
  return { W: w.map((v) => [v]), b: [yMean] };
}

/** Gaussian elimination with partial pivoting. */
function solve(A, rhs) {
  const n = rhs.length;
  const M = A.map((row, i) => [...row, rhs[i]]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(M[r][col]) > Math.abs(M[pivot][col])) pivot = r;
    [M[col], M[pivot]] = [M[pivot], M[col]];
    if (Math.abs(M[col][col]) < 1e-12) continue;
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = M[r][col] / M[col][col];
      for (let c = col; c <= n; c++) M[r][c] -= f * M[col][c];
    }
  }
  return M.map((row, i) => (Math.abs(row[i]) < 1e-12 ? 0 : row[n] / row[i]));
}

/** The ONNX graph: (input - mean) * scale → MatMul W → Add b → Softmax (classes) or a [N] vector (regression). */
function toOnnx(model, names, mean, scale) {
  const F = names.length;
  const C = model.W[0].length;
  const tensor = (name, dims, values) => ({
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    floatData: values,
  });
  const info = (name, elemType, dims) => ({
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
  const intAttr = (name, i) => ({ name, type: onnx.AttributeProto.AttributeType.INT, i });
  const nodes = [
    { opType: 'Sub', input: ['input', 'mean'], output: ['centred'] },
    { opType: 'Mul', input: ['centred', 'scale'], output: ['z'] },
    { opType: 'MatMul', input: ['z', 'W'], output: ['xw'] },
    { opType: 'Add', input: ['xw', 'b'], output: ['scores'] },
  ];
  const initializer = [
    tensor('mean', [F], mean),
    tensor('scale', [F], scale),
    tensor('W', [F, C], model.W.flat()),
    tensor('b', [C], model.b),
  ];
  let output;
  if (model.task === 'regression') {
    initializer.push({ name: 'flat', dims: [1], dataType: onnx.TensorProto.DataType.INT64, int64Data: [-1] });
    nodes.push({ opType: 'Reshape', input: ['scores', 'flat'], output: ['variable'] });
    output = [info('variable', onnx.TensorProto.DataType.FLOAT, ['N'])];
  } else {
    nodes.push(
      { opType: 'Softmax', input: ['scores'], output: ['probabilities'], attribute: [intAttr('axis', 1)] },
      {
        opType: 'ArgMax',
        input: ['probabilities'],
        output: ['label'],
        attribute: [intAttr('axis', 1), intAttr('keepdims', 0)],
      },
    );
    output = [
      info('label', onnx.TensorProto.DataType.INT64, ['N']),
      info('probabilities', onnx.TensorProto.DataType.FLOAT, ['N', C]),
    ];
  }
  const proto = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'examples/byo/train.mjs',
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'byo',
      node: nodes,
      initializer,
      input: [info('input', onnx.TensorProto.DataType.FLOAT, ['N', F])],
      output,
    },
    // Kiln reads these: what the model predicts, its classes, and its features in input order.
    metadataProps: [
      { key: 'kiln.task', value: model.task },
      { key: 'kiln.classes', value: JSON.stringify(model.classes) },
      { key: 'kiln.features', value: JSON.stringify(names) },
      { key: 'kiln.algorithm', value: model.task === 'regression' ? 'byo-ridge' : 'byo-softmax-regression' },
    ],
  });
  return onnx.ModelProto.encode(proto).finish();
}

async function readParquet(path) {
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  try {
    const reader = await connection.runAndReadAll(
      `SELECT * FROM read_parquet('${path.replaceAll("'", "''")}')`,
    );
    return reader
      .getRowObjectsJS()
      .map((row) =>
        Object.fromEntries(Object.entries(row).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v])),
      );
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

function readJson(path) {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new BadInput(`cannot read ${path}: ${error instanceof Error ? error.message : error}`);
  }
}
