import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ColumnContract } from '../../lib/core/schema.ts';
import { applyTransform, parseFittedTransform } from '../../lib/core/transform.ts';
import { withDuckDB } from '../../lib/etl/duck.ts';
import { readTableFile } from '../../lib/etl/tables.ts';
import { OnnxModel } from '../../lib/ml/onnx-model.ts';
import { scorePredictions } from '../../lib/training/evaluation.ts';
import { REPO_ROOT } from '../support/cli.ts';
import { tempDir } from '../support/temp.ts';

type Row = Record<string, string | number | null>;

const COLUMNS: ColumnContract[] = [
  { name: 'x1', type: 'number', nullable: true },
  { name: 'x2', type: 'number', nullable: true },
  { name: 'color', type: 'string', nullable: true },
  { name: 'y', type: 'string', nullable: true },
];

function rows(n: number, offset = 0): Row[] {
  return Array.from({ length: n }, (_, k) => {
    const i = k + offset;
    const x1 = ((i * 37) % 101) / 10;
    const x2 = ((i * 53) % 89) / 9;
    return { x1, x2, color: ['red', 'green', 'blue'][i % 3] ?? 'red', y: x1 + x2 > 10 ? 'yes' : 'no' };
  });
}

async function writeParquet(file: string, data: Row[]): Promise<void> {
  const sqlValue = (v: string | number | null) =>
    v === null ? 'NULL' : typeof v === 'number' ? String(v) : `'${v.replace(/'/g, "''")}'`;
  await withDuckDB(async (duck) => {
    await duck.run('CREATE TABLE t (x1 DOUBLE, x2 DOUBLE, color VARCHAR, y VARCHAR)');
    await duck.run(
      `INSERT INTO t VALUES ${data.map((r) => `(${[r.x1, r.x2, r.color, r.y].map((v) => sqlValue(v ?? null)).join(', ')})`).join(', ')}`,
    );
    await duck.run(`COPY t TO '${file}' (FORMAT parquet)`);
  });
}

/** A SageMaker /opt/ml tree: hyperparameters, the curated train channel and a test channel. */
async function prepareOptMl(options: {
  hyperparameters: Record<string, string>;
  train?: Row[];
  test?: Row[] | null;
}): Promise<string> {
  const root = join(await tempDir('kiln-optml-'), 'opt', 'ml');
  await mkdir(join(root, 'input', 'config'), { recursive: true });
  await writeFile(
    join(root, 'input', 'config', 'hyperparameters.json'),
    JSON.stringify(options.hyperparameters),
  );
  const trainDir = join(root, 'input', 'data', 'train');
  await mkdir(trainDir, { recursive: true });
  await writeFile(
    join(trainDir, 'manifest.json'),
    JSON.stringify({ kind: 'kiln.dataset', schema: { columns: COLUMNS } }),
  );
  await writeParquet(join(trainDir, 'train.parquet'), options.train ?? rows(300));
  if (options.test !== null) {
    const testDir = join(root, 'input', 'data', 'test');
    await mkdir(testDir, { recursive: true });
    await writeParquet(join(testDir, 'test.parquet'), options.test ?? rows(80, 5000));
  }
  return root;
}

/** Runs the training container's entry point as a plain Node process, as the image's ENTRYPOINT does. */
function runEntryPoint(root: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'containers/training/train.ts', 'train'], {
      cwd: REPO_ROOT,
      env: { ...process.env, KILN_OPT_ML: root, KILN_CODE_VERSION: 'kiln@test' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

describe('containers/training/train.ts honours the SageMaker training contract', () => {
  it('writes model.onnx, the fitted transform, metrics, baseline and lineage into /opt/ml/model', async () => {
    const root = await prepareOptMl({
      hyperparameters: { target: 'y', algorithm: 'gbdt', seed: '7', max_iter: '30', kiln_dataset: 'toy' },
    });
    const run = await runEntryPoint(root);
    expect(run.code, run.stderr).toBe(0);
    expect(existsSync(join(root, 'output', 'failure'))).toBe(false);
    const modelDir = join(root, 'model');
    const read = async (file: string) => JSON.parse(await readFile(join(modelDir, file), 'utf8'));
    const training = await read('training.json');
    const transform = parseFittedTransform(await read('transform.json'));
    const metrics = await read('metrics.json');
    const baseline = await read('baseline.json');
    expect(training).toMatchObject({
      task: 'binary',
      classes: ['no', 'yes'],
      target: 'y',
      algorithm: 'gbdt',
      seed: 7,
      dataset: 'toy',
      codeVersion: 'kiln@test',
      transformHash: transform.hash,
      trainRows: 300,
      testRows: 80,
      droppedConstantColumns: [],
    });
    expect(training.hyperparameters).toMatchObject({ max_iter: 30, learning_rate: 0.1 });
    expect(Date.parse(training.startedAt)).toBeLessThanOrEqual(Date.parse(training.endedAt));
    expect(Object.keys(baseline.features)).toEqual(['x1', 'x2', 'color']);
    expect(baseline.prediction.kind).toBe('categorical');
    for (const name of ['accuracy', 'balanced_accuracy', 'roc_auc', 'log_loss', 'f1', 'confusion_matrix']) {
      expect(metrics).toHaveProperty(name);
    }
    // The exported model, run by ONNX Runtime on the held-out rows, scores exactly what metrics.json says.
    const model = await OnnxModel.load(join(modelDir, 'model.onnx'), { provider: 'cpu' });
    try {
      const test = await readTableFile(join(root, 'input', 'data', 'test', 'test.parquet'));
      const { features, nRows } = applyTransform(transform, test);
      const scored = scorePredictions(await model.run(features, nRows), test, 'y', model.task, model.classes);
      expect(scored.accuracy).toBe(metrics.accuracy);
      expect(scored.accuracy).toBeGreaterThan(0.85);
    } finally {
      await model.release();
    }
  });

  const failures: Array<[string, Parameters<typeof prepareOptMl>[0], RegExp]> = [
    [
      'an unknown hyperparameter',
      { hyperparameters: { target: 'y', max_depht: '3' } },
      /invalid gbdt hyperparameters: unknown hyperparameter max_depht/,
    ],
    [
      'an out-of-range hyperparameter',
      { hyperparameters: { target: 'y', algorithm: 'linear', l2_regularization: '-2' } },
      /l2_regularization: .*>=0 \(got "-2"\)/,
    ],
    [
      'a target with one class',
      { hyperparameters: { target: 'y' }, train: rows(300).map((r) => ({ ...r, y: 'no' })) },
      /target y has a single class \("no"\)/,
    ],
    [
      'a target with missing values',
      {
        hyperparameters: { target: 'y' },
        train: rows(300).map((r, i) => (i % 100 === 1 ? { ...r, y: null } : r)),
      },
      /target y is missing \(null or NaN\) in 3 of 300 training rows/,
    ],
    [
      'a constant feature',
      { hyperparameters: { target: 'y' }, train: rows(300).map((r) => ({ ...r, x2: 4 })) },
      /constant feature column x2: one value in all 300 training rows \(x2=4\)/,
    ],
    [
      'more classes than rows',
      {
        hyperparameters: { target: 'y', task: 'multiclass' },
        train: rows(300).map((r, i) => ({ ...r, y: `id-${i}` })),
      },
      /target y has 300 classes for 300 training rows/,
    ],
    [
      'a missing test channel',
      { hyperparameters: { target: 'y' }, test: null },
      /the test channel is missing/,
    ],
  ];

  for (const [what, setup, message] of failures) {
    it(`fails on ${what}: exit code 1, the reason in /opt/ml/output/failure, no model`, async () => {
      const root = await prepareOptMl(setup);
      const run = await runEntryPoint(root);
      expect(run.code).toBe(1);
      const failure = await readFile(join(root, 'output', 'failure'), 'utf8');
      expect(failure).toMatch(message);
      // One line: SageMaker shows the first 1024 characters as FailureReason.
      expect(failure.trimEnd().split('\n')).toHaveLength(1);
      expect(existsSync(join(root, 'model', 'model.onnx'))).toBe(false);
      expect(JSON.parse(run.stderr.trim().split('\n').at(-1) ?? '{}')).toMatchObject({ level: 'error' });
    });
  }
});
