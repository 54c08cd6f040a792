import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runKiln } from '../support/cli.ts';

const SAMPLE = join(REPO_ROOT, 'examples', 'data', 'churn.csv');

interface TrainSummary {
  model: string;
  version: number;
  algorithm: string;
  promoted: boolean;
  artifact: { key: string; sha256: string; size: number };
  trainingJob: string;
  gate: { passed: boolean; reason: string };
}

/** `kiln train` as a user runs it: one process per command, one home for the file. */
describe('kiln train', () => {
  let home: string;
  const kiln = (...args: string[]) => runKiln([...args, '--home', home]);

  beforeAll(async () => {
    const { mkdtemp } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    home = join(await mkdtemp(join(tmpdir(), 'kiln-train-cli-')), 'home');
    expect((await kiln('ingest', SAMPLE, '--dataset', 'churn')).code).toBe(0);
    const etl = await kiln('etl', '--dataset', 'churn');
    expect(etl.code, etl.stderr).toBe(0);
  }, 120_000);

  it('is deterministic: the same data, algorithm and seed give the same model bytes', async () => {
    // Early stopping draws a seeded validation split, so the seed matters to the model.
    const args = [
      'train',
      '--dataset',
      'churn',
      '--target',
      'churn',
      '--param',
      'early_stopping=true',
      '--json',
    ];
    const run = async () => {
      const result = await kiln(...args, '--seed', '3');
      expect(result.code, result.stderr).toBe(0);
      return JSON.parse(result.stdout) as TrainSummary;
    };
    const first = await run();
    const second = await run();
    expect(second.version).toBe(first.version + 1);
    expect(second.trainingJob).not.toBe(first.trainingJob);
    expect(second.artifact.sha256).toBe(first.artifact.sha256);
    // Identical bytes stored twice, and an identical model cannot beat itself.
    const stored = await Promise.all(
      [first, second].map((s) => readFile(join(home, 'lake', s.artifact.key))),
    );
    expect(stored[0]?.equals(stored[1] ?? Buffer.alloc(0))).toBe(true);
    expect(second.gate.passed).toBe(false);
    // A different seed draws another validation split, hence another model.
    const other = await kiln(...args, '--seed', '4');
    expect(other.code, other.stderr).toBe(0);
    expect((JSON.parse(other.stdout) as TrainSummary).artifact.sha256).not.toBe(first.artifact.sha256);
  }, 120_000);

  it('trains with --command under the training contract (bring your own)', async () => {
    const result = await kiln(
      'train',
      '--dataset',
      'churn',
      '--target',
      'churn',
      '--model',
      'churn-byo',
      '--command',
      'node examples/byo/train.mjs',
      '--json',
    );
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout) as TrainSummary;
    expect(summary).toMatchObject({
      model: 'churn-byo',
      version: 1,
      algorithm: 'byo-softmax-regression',
      promoted: true,
    });
  }, 60_000);

  it('prints one line and exits non-zero when training fails', async () => {
    const result = await kiln('train', '--dataset', 'churn', '--target', 'churn', '--param', 'max_depht=3');
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    const errors = result.stderr.split('\n').filter((line) => line.startsWith('kiln:'));
    expect(errors).toEqual([
      expect.stringMatching(
        /^kiln: training pipeline failed: ValidationError: invalid gbdt hyperparameters: unknown hyperparameter max_depht \(allowed: .*\)$/,
      ),
    ]);
    const byo = await kiln('train', '--dataset', 'churn', '--target', 'churn', '--command', 'exit 7');
    expect(byo.code).toBe(1);
    expect(byo.stderr.split('\n').filter((line) => line.startsWith('kiln:'))).toEqual([
      'kiln: training pipeline failed: States.TaskFailed: AlgorithmError: the training command exited with code 7 and wrote no /opt/ml/output/failure',
    ]);
  }, 60_000);
});
