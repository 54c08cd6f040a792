import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFittedTransform } from '../../lib/core/transform.ts';
import { readCuratedRows } from '../../lib/etl/tables.ts';
import { PipelineFailedError } from '../../lib/local/pipeline-runner.ts';
import { LocalPlatform } from '../../lib/local/platform.ts';
import { predictRows } from '../../lib/registry/batch-predict.ts';
import type { VersionRecord } from '../../lib/registry/records.ts';
import { lake } from '../../lib/store/layout.ts';
import { prepareTraining } from '../../lib/training/steps.ts';

/**
 * The training state machine as CDK synthesizes it, run locally end to end: Prepare, the SageMaker training
 * job (a child process under the training contract), Evaluate with ONNX Runtime, the Gate, Register, and the
 * RecordTrainingFailure path. One home for the file: handlers read the lake from KILN_LAKE.
 */

type Row = Record<string, string | number | null>;
let platform: LocalPlatform;
let home: string;

function csv(rows: Row[]): string {
  const header = Object.keys(rows[0] ?? {});
  const cell = (v: string | number | null) =>
    v === null ? '' : typeof v === 'number' ? String(v) : `"${v}"`;
  return `${[header.join(','), ...rows.map((row) => header.map((h) => cell(row[h] ?? null)).join(','))].join('\n')}\n`;
}

/** 600 rows: label depends on x1 + x2 (non-linearly through color), score is a noisy linear function. */
function toyRows(): Row[] {
  return Array.from({ length: 600 }, (_, i) => {
    const x1 = ((i * 37) % 101) / 10;
    const x2 = ((i * 53) % 89) / 9;
    const color = ['red', 'green', 'blue'][i % 3] ?? 'red';
    const shift = color === 'red' ? 1.5 : 0;
    const noise = (((i * 7919) % 13) - 6) / 10;
    return {
      x1,
      x2,
      color,
      score: Number((3 * x1 - 2 * x2 + noise).toFixed(3)),
      label: x1 + x2 + shift > 10 ? 'pos' : 'neg',
    };
  });
}

/** Rows with one bad column of each kind next to a good label. */
function mixedRows(): Row[] {
  return toyRows()
    .slice(0, 300)
    .map((row, i) => ({
      x1: row.x1 ?? null,
      x2: row.x2 ?? null,
      flat: 'k',
      one: 'a',
      gap: i % 40 === 3 ? null : String(row.label),
      ident: `id-${String(i).padStart(4, '0')}`,
      label: row.label ?? null,
    }));
}

async function land(dataset: string, rows: Row[]): Promise<string> {
  const file = join(home, `${dataset}.csv`);
  await writeFile(file, csv(rows));
  await platform.ingest([file], dataset);
  const output = await platform.etl(dataset);
  return String((output.result as { version: string }).version);
}

async function train(request: Record<string, unknown>) {
  const output = await platform.train(request);
  const job = output.job as { trainingJobName: string };
  const report = JSON.parse(
    await readFile(join(home, 'lake', lake.runReport('training', job.trainingJobName)), 'utf8'),
  ) as Record<string, unknown> & {
    gate: { passed: boolean; challenger: number; champion: number | null; margin: number; reason: string };
    promoted: boolean;
    version: number;
    runId: string;
    lineage: Record<string, unknown>;
  };
  return { output, report, job };
}

/** Every object of the registry and model zones, with its bytes' hash: "the registry is unchanged". */
async function registrySnapshot(): Promise<Record<string, string>> {
  const snapshot: Record<string, string> = {};
  for (const zone of ['registry', 'models']) {
    const dir = join(home, 'lake', zone);
    const files = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
    for (const file of files) {
      const body = await readFile(join(dir, String(file))).catch(() => null);
      if (body) snapshot[`${zone}/${file}`] = createHash('sha256').update(body).digest('hex');
    }
  }
  return snapshot;
}

async function latestFailure(): Promise<{ runId: string; error: { type: string; message: string } }> {
  const dir = join(home, 'lake', 'runs', 'training');
  const reports = await Promise.all(
    (await readdir(dir))
      .filter((name) => name.endsWith('-failed.json'))
      .map(async (name) => JSON.parse(await readFile(join(dir, name), 'utf8'))),
  );
  reports.sort((a, b) => String(a.failedAt).localeCompare(String(b.failedAt)));
  return reports.at(-1);
}

beforeAll(async () => {
  const { mkdtemp } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  home = await mkdtemp(join(tmpdir(), 'kiln-training-'));
  platform = await LocalPlatform.open({ home: join(home, 'home') });
  home = platform.home.dir;
  await land('toy', toyRows());
  await land('mixed', mixedRows());
});

afterAll(async () => {
  const { rm } = await import('node:fs/promises');
  await rm(join(home, '..'), { recursive: true, force: true });
});

describe('the evaluation gate, through the state machine', () => {
  it('promotes only a challenger that beats the champion by the margin on the same held-out rows', async () => {
    const weak = { algorithm: 'linear', hyperparameters: { l2_regularization: 1e6 } };
    const base = { dataset: 'toy', target: 'label', model: 'gate' };

    const first = await train({ ...base, ...weak });
    expect(first.report).toMatchObject({ version: 1, promoted: true, stage: 'production' });
    expect(first.report.gate).toMatchObject({ passed: true, champion: null });
    const weakScore = first.report.gate.challenger;

    // Better, but not by the margin: registered as a candidate, the champion stays.
    const short = await train({ ...base, gateMargin: 0.9 });
    expect(short.report).toMatchObject({ version: 2, promoted: false, stage: 'candidate' });
    expect(short.report.gate).toMatchObject({
      passed: false,
      margin: 0.9,
      champion: weakScore,
      championVersion: 1,
    });
    expect(short.report.gate.challenger).toBeGreaterThan(weakScore);
    expect(short.report.gate.reason).toMatch(/champion stays/);
    expect((await platform.registry.readAliases('gate')).aliases).toMatchObject({
      champion: 1,
      challenger: 2,
    });

    // Better with no margin: the new champion.
    const better = await train({ ...base, gateMargin: 0 });
    expect(better.report).toMatchObject({ version: 3, promoted: true });
    expect(better.report.gate).toMatchObject({ passed: true, champion: weakScore, championVersion: 1 });
    // Both models were scored on the same rows: the challenger's score equals the earlier measurement.
    expect(better.report.gate.challenger).toBe(short.report.gate.challenger);

    // Worse than the champion: never promoted.
    const worse = await train({ ...base, ...weak });
    expect(worse.report).toMatchObject({ version: 4, promoted: false });
    expect(worse.report.gate).toMatchObject({
      passed: false,
      challenger: weakScore,
      champion: better.report.gate.challenger,
      championVersion: 3,
    });
    const { aliases } = await platform.registry.readAliases('gate');
    expect(aliases).toMatchObject({ champion: 3, challenger: 4 });
    expect((await platform.registry.getVersion('gate', 4)).stage).toBe('candidate');
  });

  it('records full lineage on the version and in the run report', async () => {
    const { report } = await train({ dataset: 'toy', target: 'label', model: 'lineage', seed: 11 });
    const record: VersionRecord = await platform.registry.getVersion('lineage', report.version);
    const manifestVersion = JSON.parse(
      await readFile(join(home, 'lake', lake.datasetHead('toy')), 'utf8'),
    ).version;
    const onnx = await readFile(join(home, 'lake', lake.modelFile('lineage', record.version, 'model.onnx')));
    const transform = parseFittedTransform(
      JSON.parse(
        await readFile(
          join(home, 'lake', lake.modelFile('lineage', record.version, 'transform.json')),
          'utf8',
        ),
      ),
    );
    expect(record.lineage).toMatchObject({
      dataset: 'toy',
      datasetVersion: manifestVersion,
      transformHash: transform.hash,
      algorithm: 'gbdt',
      seed: 11,
      artifactSha256: createHash('sha256').update(onnx).digest('hex'),
      trainingJob: report.runId,
    });
    expect(record.lineage.codeVersion).toMatch(/^kiln@\d+\.\d+\.\d+/);
    expect(record.lineage.hyperparameters).toMatchObject({ max_iter: 100, learning_rate: 0.1 });
    expect(Date.parse(record.lineage.startedAt)).toBeLessThanOrEqual(Date.parse(record.lineage.endedAt));
    for (const name of ['accuracy', 'balanced_accuracy', 'roc_auc', 'log_loss', 'f1', 'confusion_matrix']) {
      expect(record.lineage.metrics).toHaveProperty(name);
    }
    expect(report.lineage).toEqual(record.lineage);
    expect(Object.keys(record.artifacts).sort()).toEqual([
      'baseline.json',
      'metrics.json',
      'model.onnx',
      'training.json',
      'transform.json',
    ]);
  });

  it('evaluates regression on RMSE, MAE and R²', async () => {
    const { report } = await train({ dataset: 'toy', target: 'score', model: 'toy-score' });
    const metrics = report.metrics as Record<string, number>;
    expect(Object.keys(metrics)).toEqual(expect.arrayContaining(['rmse', 'mae', 'r2']));
    expect(metrics.r2).toBeGreaterThan(0.9);
    expect(report.gate).toMatchObject({ metric: 'rmse', passed: true });
  });
});

describe('bad input fails with a clear message in the run report and leaves the registry unchanged', () => {
  const cases: Array<[string, () => Record<string, unknown>, RegExp]> = [
    [
      'an unknown hyperparameter',
      () => ({ dataset: 'toy', target: 'label', hyperparameters: { max_depht: 3 } }),
      /unknown hyperparameter max_depht/,
    ],
    [
      'an out-of-range hyperparameter',
      () => ({ dataset: 'toy', target: 'label', hyperparameters: { learning_rate: 0 } }),
      /learning_rate: .*\(got "0"\)/,
    ],
    ['an out-of-range seed', () => ({ dataset: 'toy', target: 'label', seed: -1 }), /seed: .*>=0 \(got -1\)/],
    [
      'a target with one class',
      () => ({ dataset: 'mixed', target: 'one' }),
      /target one has a single value \("a"\)/,
    ],
    [
      'a target with missing values',
      () => ({ dataset: 'mixed', target: 'gap' }),
      /target gap is missing \(null or NaN\) in \d+ of 300 rows/,
    ],
    [
      'constant features',
      () => ({ dataset: 'mixed', target: 'label' }),
      /constant feature columns flat, one: one value in all \d+ training rows/,
    ],
    [
      'more classes than rows',
      () => ({ dataset: 'mixed', target: 'ident', hyperparameters: { constant_features: 'drop' } }),
      /target ident has \d+ classes for \d+ training rows/,
    ],
    [
      'a BYO command that exits non-zero',
      () => ({
        dataset: 'toy',
        target: 'label',
        image: platform.trainingImages.registerCommand('echo boom >&2; exit 3'),
      }),
      /AlgorithmError: the training command exited with code 3 .*last output: boom/,
    ],
    [
      'a BYO command that writes no model',
      () => ({ dataset: 'toy', target: 'label', image: platform.trainingImages.registerCommand('true') }),
      /the training job wrote no model.onnx to \/opt\/ml\/model \(it wrote nothing\)/,
    ],
    [
      'a BYO command that reports its own failure',
      () => ({
        dataset: 'toy',
        target: 'label',
        image: platform.trainingImages.registerCommand('node examples/byo/train.mjs'),
        hyperparameters: { epochs: 'lots' },
      }),
      /hyperparameter epochs must be a positive number, got "lots"/,
    ],
    [
      'an unknown BYO image',
      () => ({ dataset: 'toy', target: 'label', image: 'registry.example/nope:1' }),
      /no local command for training image "registry.example\/nope:1"/,
    ],
  ];

  for (const [what, request, message] of cases) {
    it(what, async () => {
      const before = await registrySnapshot();
      const failure = await platform.train(request()).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(PipelineFailedError);
      expect((failure as Error).message).toMatch(message);
      // RecordTrainingFailure wrote the failed run report, with the same message.
      const report = await latestFailure();
      expect(report.error.message).toMatch(message);
      expect(await registrySnapshot()).toEqual(before);
    });
  }

  it("names a failed training job's report after the job", async () => {
    const failure = await platform
      .train({ dataset: 'mixed', target: 'label', model: 'named' })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(PipelineFailedError);
    const report = await latestFailure();
    expect(report.runId).toMatch(/^named-\d{14}-[0-9a-f]{4}$/);
  });

  it('drops constant features when asked to (the documented opt-in) and records it', async () => {
    const { report } = await train({
      dataset: 'mixed',
      target: 'label',
      model: 'mixed-drop',
      hyperparameters: { constant_features: 'drop' },
    });
    const training = JSON.parse(
      await readFile(
        join(home, 'lake', lake.modelFile('mixed-drop', report.version, 'training.json')),
        'utf8',
      ),
    );
    expect(training.droppedConstantColumns).toEqual(['flat', 'one']);
  });
});

describe('bring your own training', () => {
  it('on AWS, Prepare accepts BYO images only from the repositories the pipeline may pull from', async () => {
    const repository = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/byo';
    const defaults = {
      trainingImage: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/cdk-assets:abc',
      instanceType: 'ml.m5.xlarge',
      byoInstanceType: 'ml.g5.xlarge',
      byoImageRepositories: [repository],
    };
    const request = { dataset: 'toy', target: 'label', image: `${repository}:1` };
    const job = await prepareTraining(platform.store, request, defaults);
    expect(job).toMatchObject({
      builtin: false,
      trainingImage: `${repository}:1`,
      instanceType: 'ml.g5.xlarge',
    });
    expect(job.hyperparameters).not.toHaveProperty('algorithm');
    const pinned = await prepareTraining(
      platform.store,
      { ...request, image: `${repository}@sha256:${'a'.repeat(64)}`, instanceType: 'ml.p3.2xlarge' },
      defaults,
    );
    expect(pinned.instanceType).toBe('ml.p3.2xlarge');
    await expect(
      prepareTraining(platform.store, { ...request, image: `${repository}-other:1` }, defaults),
    ).rejects.toThrow(/training image ".*byo-other:1" is not in a repository this pipeline may pull from/);
    await expect(
      prepareTraining(
        platform.store,
        { ...request, image: 'docker.io/evil:1' },
        { ...defaults, byoImageRepositories: [] },
      ),
    ).rejects.toThrow(/none: set byoImageRepositories on TrainingPipeline/);
    // The built-in image needs no listing, and keeps the CPU default.
    const builtin = await prepareTraining(platform.store, { dataset: 'toy', target: 'label' }, defaults);
    expect(builtin).toMatchObject({
      builtin: true,
      trainingImage: defaults.trainingImage,
      instanceType: 'ml.m5.xlarge',
    });
    await expect(
      prepareTraining(platform.store, { ...request, instanceType: 'g5.xlarge' }, defaults),
    ).rejects.toThrow(/instanceType: expected 'ml.<family>.<size>' \(got "g5.xlarge"\)/);
  });

  it('trains examples/byo/train.mjs under the contract; Kiln completes, evaluates, gates and registers it', async () => {
    const image = platform.trainingImages.registerCommand('node examples/byo/train.mjs');
    const { report } = await train({ dataset: 'toy', target: 'label', model: 'byo', image, seed: 5 });
    expect(report).toMatchObject({ version: 1, promoted: true, training: { builtin: false, image } });
    const record = await platform.registry.getVersion('byo', 1);
    expect(record.lineage).toMatchObject({
      algorithm: 'byo-softmax-regression',
      seed: 5,
      hyperparameters: { epochs: 300, learning_rate: 0.5, l2: 0.001 },
    });
    expect(record.lineage.codeVersion).toMatch(/^examples\/byo\/train\.mjs sha256:[0-9a-f]{16}$/);
    expect(Object.keys(record.artifacts).sort()).toEqual([
      'baseline.json',
      'metrics.json',
      'model.onnx',
      'training.json',
      'transform.json',
    ]);
    // The registered transform is fitted (the image wrote a spec), and serving-side batch scoring works.
    const transform = parseFittedTransform(
      JSON.parse((await platform.registry.readArtifact(record, 'transform.json')).toString('utf8')),
    );
    expect(record.lineage.transformHash).toBe(transform.hash);
    expect(transform.featureNames).toEqual([
      'x1',
      'x2',
      'color=blue',
      'color=green',
      'color=red',
      'color=__unknown__',
      'score',
    ]);
    const baseline = JSON.parse(
      (await platform.registry.readArtifact(record, 'baseline.json')).toString('utf8'),
    );
    expect(Object.keys(baseline.features)).toEqual(['x1', 'x2', 'color', 'score']);
    const version = JSON.parse(await readFile(join(home, 'lake', lake.datasetHead('toy')), 'utf8')).version;
    const test = await readCuratedRows(platform.store, 'toy', version, 'test');
    const predictions = await predictRows(platform.registry, record, test);
    const correct = predictions.filter((p, i) => 'label' in p && p.label === test[i]?.label).length;
    expect(correct / test.length).toBe((record.metrics as { accuracy: number }).accuracy);
    expect(correct / test.length).toBeGreaterThan(0.8);
  });

  it('runs an image mapped to a command in <home>/images.json, regression included, against a built-in champion', async () => {
    await writeFile(
      join(home, 'images.json'),
      JSON.stringify({ images: { 'registry.example/byo-ridge:1': 'node examples/byo/train.mjs' } }),
    );
    const builtin = await train({ dataset: 'toy', target: 'score', model: 'byo-score', algorithm: 'linear' });
    expect(builtin.report.promoted).toBe(true);
    const byo = await train({
      dataset: 'toy',
      target: 'score',
      model: 'byo-score',
      image: 'registry.example/byo-ridge:1',
      hyperparameters: { l2: 0.0001 },
    });
    expect(byo.report.gate).toMatchObject({ metric: 'rmse', championVersion: 1 });
    expect(byo.report.gate.champion).toBe(builtin.report.gate.challenger);
    const record = await platform.registry.getVersion('byo-score', 2);
    expect(record.lineage).toMatchObject({ algorithm: 'byo-ridge', hyperparameters: { l2: 0.0001 } });
    expect((record.metrics as { r2: number }).r2).toBeGreaterThan(0.9);
  });
});
