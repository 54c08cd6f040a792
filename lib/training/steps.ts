import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { NotFoundError, ValidationError } from '../core/errors.ts';
import type { EventPublisher } from '../core/events.ts';
import { parseFittedTransform } from '../core/transform.ts';
import { readManifest } from '../etl/manifest.ts';
import { readTableFile } from '../etl/tables.ts';
import { ALGORITHMS, type Algorithm, parseHyperparameters } from '../ml/train.ts';
import { ModelRegistry } from '../registry/registry.ts';
import { lakeUri } from '../store/lake-uri.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, toJsonBody } from '../store/object-store.ts';
import { readModelArtifacts } from './artifacts.ts';
import type { TrainingSummary } from './contract.ts';
import { evaluateOnnx, primaryMetric } from './evaluation.ts';

/** The training pipeline's input (what `kiln train` and the retraining rule send). */
export const TrainingRequestSchema = z.strictObject({
  dataset: z.string(),
  target: z.string().min(1),
  model: z.string().optional(),
  version: z.string().optional(),
  algorithm: z.enum(ALGORITHMS as [Algorithm, ...Algorithm[]]).default('gbdt'),
  hyperparameters: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
  seed: z.number().int().default(0),
  /** A lake key holding a held-out file to evaluate on instead of the dataset's own test split. */
  testDataKey: z.string().optional(),
  /** How much the challenger must beat the champion by on the primary metric (absolute). */
  gateMargin: z.number().min(0).default(0),
  trigger: z.record(z.string(), z.unknown()).optional(),
});
export type TrainingRequest = z.infer<typeof TrainingRequestSchema>;

/** Prepare: resolves the dataset version, checks target and hyperparameters, and builds the training job. */
export async function prepareTraining(store: ObjectStore, raw: unknown) {
  const request = parseInput(TrainingRequestSchema, raw, 'training request');
  assertName('dataset', request.dataset);
  const model = assertName('model', request.model ?? request.dataset);
  const manifest = await readManifest(store, request.dataset, request.version);
  const columns = manifest.schema.columns.map((column) => column.name);
  if (!columns.includes(request.target)) {
    throw new ValidationError(
      `target column ${JSON.stringify(request.target)} is not in dataset ${request.dataset}; columns are ${columns.join(', ')}`,
    );
  }
  const params = Object.fromEntries(Object.entries(request.hyperparameters).map(([k, v]) => [k, String(v)]));
  parseHyperparameters(request.algorithm, params);
  const stamp = new Date()
    .toISOString()
    .replace(/[-:TZ.]/g, '')
    .slice(0, 14);
  const trainingJobName = `${model.replace(/_/g, '-').slice(0, 40)}-${stamp}-${randomBytes(2).toString('hex')}`;
  const testKey = request.testDataKey ?? lake.curatedFile(request.dataset, manifest.version, 'test.parquet');
  return {
    trainingJobName,
    model,
    dataset: request.dataset,
    datasetVersion: manifest.version,
    target: request.target,
    algorithm: request.algorithm,
    gateMargin: request.gateMargin,
    testDataKey: testKey,
    channels: {
      train: lakeUri(store, lake.curatedPrefix(request.dataset, manifest.version)),
      test: lakeUri(store, testKey),
    },
    outputUri: lakeUri(store, 'models-staging/'),
    hyperparameters: {
      ...params,
      target: request.target,
      algorithm: request.algorithm,
      seed: String(request.seed),
      kiln_model: model,
      kiln_dataset: request.dataset,
      kiln_dataset_version: manifest.version,
    },
  };
}
export type PreparedJob = Awaited<ReturnType<typeof prepareTraining>>;

const PipelineStateSchema = z.looseObject({
  job: z.looseObject({
    trainingJobName: z.string(),
    model: z.string(),
    dataset: z.string(),
    datasetVersion: z.string(),
    target: z.string(),
    gateMargin: z.number(),
    testDataKey: z.string(),
  }),
  training: z.looseObject({ modelArtifacts: z.string(), trainingJobName: z.string() }),
});

/**
 * Evaluate: scores the trained artifact with ONNX Runtime on the held-out rows and, on the same rows, the
 * current champion; the gate passes when there is no champion or the challenger beats it by the margin.
 */
export async function evaluateTraining(store: ObjectStore, raw: unknown) {
  const state = parseInput(PipelineStateSchema, raw, 'evaluate input');
  const artifacts = await readModelArtifacts(store, state.training.modelArtifacts);
  const testRows = await readLakeTable(store, state.job.testDataKey);
  const challenger = await evaluateOnnx(
    requireArtifact(artifacts, 'model.onnx'),
    parseFittedTransform(JSON.parse(requireArtifact(artifacts, 'transform.json').toString('utf8'))),
    testRows,
    state.job.target,
  );
  const { name: metric, higherIsBetter } = primaryMetric(challenger.task);
  const challengerScore = challenger.metrics[metric] as number;

  const registry = new ModelRegistry(store);
  let champion: { version: number; score: number; metrics: Record<string, unknown> } | null = null;
  let note = 'no champion yet';
  try {
    const record = await registry.resolve(`${state.job.model}@champion`);
    if (record.target !== state.job.target || record.task !== challenger.task) {
      note = `champion ${record.version} predicts ${record.target} (${record.task}): not comparable`;
    } else {
      const scored = await evaluateOnnx(
        await registry.readArtifact(record, 'model.onnx'),
        parseFittedTransform(
          JSON.parse((await registry.readArtifact(record, 'transform.json')).toString('utf8')),
        ),
        testRows,
        state.job.target,
      );
      champion = {
        version: record.version,
        score: scored.metrics[metric] as number,
        metrics: scored.metrics,
      };
    }
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  }
  const margin = state.job.gateMargin;
  const improvement = champion
    ? higherIsBetter
      ? challengerScore - champion.score
      : champion.score - challengerScore
    : null;
  // Beating the champion means strictly better, and by at least the margin.
  const passed = champion === null || (improvement !== null && improvement > 0 && improvement >= margin);
  return {
    metrics: challenger.metrics,
    gate: {
      passed,
      metric,
      higherIsBetter,
      margin,
      challenger: challengerScore,
      champion: champion?.score ?? null,
      championVersion: champion?.version ?? null,
      improvement,
      reason: champion
        ? `${metric} ${fmt(challengerScore)} vs champion ${champion.version} ${fmt(champion.score)} (needs ${higherIsBetter ? '+' : '-'}${margin}): ${passed ? 'challenger wins' : 'champion stays'}`
        : `${note}: the first model becomes champion`,
    },
  };
}

const RegisterInputSchema = z.strictObject({
  input: PipelineStateSchema.extend({
    evaluation: z.looseObject({
      metrics: z.record(z.string(), z.unknown()),
      gate: z.record(z.string(), z.unknown()),
    }),
  }),
  promote: z.boolean(),
});

/** Register: records the version with full lineage; a gate pass moves `champion`, otherwise `challenger`. */
export async function registerTraining(store: ObjectStore, events: EventPublisher, raw: unknown) {
  const { input, promote } = parseInput(RegisterInputSchema, raw, 'register input');
  const artifacts = await readModelArtifacts(store, input.training.modelArtifacts);
  const summary = JSON.parse(requireArtifact(artifacts, 'training.json').toString('utf8')) as TrainingSummary;
  const registry = new ModelRegistry(store, events);
  const actor = 'training-pipeline';
  const record = await registry.register({
    model: input.job.model,
    task: summary.task,
    classes: summary.classes,
    target: summary.target,
    inputs: summary.inputs,
    metrics: input.evaluation.metrics,
    artifacts,
    gate: input.evaluation.gate,
    actor,
    lineage: {
      dataset: input.job.dataset,
      datasetVersion: input.job.datasetVersion,
      transformHash: summary.transformHash,
      codeVersion: summary.codeVersion,
      algorithm: summary.algorithm,
      hyperparameters: summary.hyperparameters,
      seed: summary.seed,
      metrics: input.evaluation.metrics,
      trainingJob: input.training.trainingJobName,
      startedAt: summary.startedAt,
      endedAt: summary.endedAt,
    },
  });
  const reason = String(input.evaluation.gate.reason ?? '');
  if (promote) {
    await registry.setStage(
      record.model,
      record.version,
      'production',
      actor,
      `evaluation gate passed: ${reason}`,
    );
    await registry.setAlias(record.model, 'champion', record.version, actor, reason);
  } else {
    await registry.setAlias(record.model, 'challenger', record.version, actor, reason);
  }
  const report = {
    pipeline: 'training',
    runId: input.job.trainingJobName,
    status: 'succeeded',
    model: record.model,
    version: record.version,
    promoted: promote,
    gate: input.evaluation.gate,
    metrics: input.evaluation.metrics,
    finishedAt: new Date().toISOString(),
  };
  await store.put(lake.runReport('training', input.job.trainingJobName), toJsonBody(report));
  return {
    model: record.model,
    version: record.version,
    stage: promote ? 'production' : 'candidate',
    promoted: promote,
  };
}

async function readLakeTable(store: ObjectStore, key: string): Promise<Record<string, unknown>[]> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-table-'));
  try {
    const file = join(dir, key.split('/').at(-1) ?? 'data');
    await store.getToFile(key, file);
    return await readTableFile(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function requireArtifact(artifacts: Record<string, Buffer>, name: string): Buffer {
  const body = artifacts[name];
  if (!body) throw new ValidationError(`the training job wrote no ${name}`);
  return body;
}

function parseInput<T>(schema: z.ZodType<T>, raw: unknown, what: string): T {
  const result = schema.safeParse(raw);
  if (!result.success) {
    const detail = result.error.issues
      .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
      .join('; ');
    throw new ValidationError(`invalid ${what}: ${detail}`);
  }
  return result.data;
}

function fmt(value: number): string {
  return Number.isFinite(value) ? value.toPrecision(4) : String(value);
}
