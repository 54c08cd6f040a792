import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { describeError, NotFoundError, PolicyError, ValidationError } from '../core/errors.ts';
import type { EventPublisher } from '../core/events.ts';
import type { FittedTransform } from '../core/transform.ts';
import { type DatasetManifest, readManifest } from '../etl/manifest.ts';
import { readTableFile } from '../etl/tables.ts';
import { ALGORITHMS, type Algorithm, parseHyperparameters, type Task } from '../ml/train.ts';
import { ModelRegistry } from '../registry/registry.ts';
import { lakeUri } from '../store/lake-uri.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, toJsonBody } from '../store/object-store.ts';
import { RolloutModeSchema, recordTrainingConfig } from '../updates/config.ts';
import { readModelArtifacts } from './artifacts.ts';
import { baselineProfile } from './baseline.ts';
import { readByoTrainingInfo, resolveTransform } from './byo.ts';
import { codeVersion } from './code-version.ts';
import type { TrainingSummary } from './contract.ts';
import { decideGate, evaluateOnnx, primaryMetric } from './evaluation.ts';
import { KILN_HYPERPARAMETERS, MAX_SEED, validateKilnSettings } from './hyperparameters.ts';

/** SageMaker instance types: `ml.<family>.<size>`. */
export const INSTANCE_TYPE_PATTERN = /^ml\.[a-z0-9-]+\.[a-z0-9]+$/;
/** A container image reference (ECR URI, optionally with tag or digest); locally a key of the image map. */
export const IMAGE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$/;
/** Lake prefixes a held-out file may come from (the training role reads only these). */
const TEST_DATA_PREFIXES = ['curated/', 'holdout/'];
/** Hyperparameters Kiln sets from the request's own fields; sending them as hyperparameters is an error. */
const RESERVED_HYPERPARAMETERS = [
  'target',
  'algorithm',
  'seed',
  'kiln_model',
  'kiln_dataset',
  'kiln_dataset_version',
];

/** The training pipeline's input (what `kiln train` and the retraining rule send). */
export const TrainingRequestSchema = z.strictObject({
  dataset: z.string(),
  target: z.string().min(1),
  model: z.string().optional(),
  version: z.string().optional(),
  algorithm: z.enum(ALGORITHMS as [Algorithm, ...Algorithm[]]).default('gbdt'),
  hyperparameters: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
  seed: z.number().int().min(0).max(MAX_SEED).default(0),
  /** A lake key holding a held-out file to evaluate on instead of the dataset's own test split. */
  testDataKey: z.string().optional(),
  /** How much the challenger must beat the champion by on the primary metric (absolute). */
  gateMargin: z.number().min(0).max(1e12).default(0),
  /** Bring your own: a training image honouring the SageMaker training contract (default: the built-in). */
  image: z
    .string()
    .regex(IMAGE_PATTERN, 'expected an image reference without spaces, at most 255 characters')
    .optional(),
  /** SageMaker instance type of this job (e.g. a GPU type for a BYO image); default: the pipeline's. */
  instanceType: z.string().regex(INSTANCE_TYPE_PATTERN, "expected 'ml.<family>.<size>'").optional(),
  trigger: z.record(z.string(), z.unknown()).optional(),
  /**
   * How a gate winner reaches production when there is a champion: `direct` promotes it at once; `canary`
   * and `shadow` make it the challenger and leave promotion to the rollout (lib/updates/deploy.ts).
   */
  rollout: RolloutModeSchema.default('direct'),
});
export type TrainingRequest = z.infer<typeof TrainingRequestSchema>;

/** What the deployment decides for Prepare: the built-in training image and the default instance type. */
export interface PrepareDefaults {
  /** Image URI of the built-in trainer (`containers/training`). */
  trainingImage: string;
  /** Instance type for built-in jobs that do not ask for one. */
  instanceType: string;
  /** Instance type for bring-your-own jobs that do not ask for one. @default instanceType */
  byoInstanceType?: string;
  /**
   * Repository URIs bring-your-own images may come from (the training role can pull from no others).
   * @default - any image (locally, where images map to commands)
   */
  byoImageRepositories?: readonly string[];
}

/** Prepare: resolves the dataset version, checks target and hyperparameters, and builds the training job. */
export async function prepareTraining(store: ObjectStore, raw: unknown, defaults: PrepareDefaults) {
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
  assertTargetUsable(manifest, request.target);
  const builtin = request.image === undefined || request.image === defaults.trainingImage;
  if (!builtin && request.image !== undefined)
    assertImageAllowed(request.image, defaults.byoImageRepositories);
  const params = Object.fromEntries(Object.entries(request.hyperparameters).map(([k, v]) => [k, String(v)]));
  const reserved = Object.keys(params).filter((key) => RESERVED_HYPERPARAMETERS.includes(key));
  if (reserved.length > 0) {
    throw new ValidationError(
      `hyperparameter${reserved.length > 1 ? 's' : ''} ${reserved.join(', ')} come${reserved.length > 1 ? '' : 's'} from the request (target, algorithm, seed, model, dataset): do not pass ${reserved.length > 1 ? 'them' : 'it'} as hyperparameters`,
    );
  }
  if (builtin) {
    // Fail before a training job is launched: Kiln's own keys here, the algorithm's schema for the rest.
    validateKilnSettings(params);
    const kiln = new Set<string>(KILN_HYPERPARAMETERS);
    parseHyperparameters(
      request.algorithm,
      Object.fromEntries(Object.entries(params).filter(([key]) => !kiln.has(key))),
    );
  }
  const testKey = request.testDataKey ?? lake.curatedFile(request.dataset, manifest.version, 'test.parquet');
  if (!TEST_DATA_PREFIXES.some((prefix) => testKey.startsWith(prefix)) || testKey.includes('..')) {
    throw new ValidationError(
      `testDataKey must be a lake key under ${TEST_DATA_PREFIXES.join(' or ')}, got ${JSON.stringify(testKey)}`,
    );
  }
  const stamp = new Date()
    .toISOString()
    .replace(/[-:TZ.]/g, '')
    .slice(0, 14);
  const trainingJobName = `${model.replace(/_/g, '-').slice(0, 40)}-${stamp}-${randomBytes(2).toString('hex')}`;
  return {
    trainingJobName,
    model,
    dataset: request.dataset,
    datasetVersion: manifest.version,
    target: request.target,
    builtin,
    algorithm: builtin ? request.algorithm : 'byo',
    trainingImage: request.image ?? defaults.trainingImage,
    instanceType:
      request.instanceType ??
      (builtin ? defaults.instanceType : (defaults.byoInstanceType ?? defaults.instanceType)),
    seed: request.seed,
    gateMargin: request.gateMargin,
    rollout: request.rollout,
    testDataKey: testKey,
    channels: {
      train: lakeUri(store, lake.curatedPrefix(request.dataset, manifest.version)),
      test: lakeUri(store, testKey),
    },
    outputUri: lakeUri(store, 'models-staging/'),
    hyperparameters: {
      ...params,
      target: request.target,
      ...(builtin ? { algorithm: request.algorithm } : {}),
      seed: String(request.seed),
      kiln_model: model,
      kiln_dataset: request.dataset,
      kiln_dataset_version: manifest.version,
    },
  };
}
export type PreparedJob = Awaited<ReturnType<typeof prepareTraining>>;

/**
 * Bad targets found from the manifest's column profile, before any training job is paid for: missing values,
 * or one value in every row. The trainer checks its own split again, exactly.
 */
function assertTargetUsable(manifest: DatasetManifest, target: string): void {
  const profile = manifest.profile?.find((column) => column.name === target);
  if (!profile) return;
  if (profile.nulls > 0) {
    throw new ValidationError(
      `target ${target} is missing (null or NaN) in ${profile.nulls} of ${profile.count + profile.nulls} rows of ${manifest.dataset}@${manifest.version}: label them or drop them before training`,
    );
  }
  const single =
    profile.count > 0 &&
    ((profile.min !== undefined && profile.min === profile.max) ||
      (profile.top !== undefined && profile.top.length === 1 && profile.top[0]?.count === profile.count) ||
      (profile.trueCount !== undefined && (profile.trueCount === 0 || profile.trueCount === profile.count)));
  if (single) {
    const value = profile.top?.[0]?.value ?? profile.min ?? (profile.trueCount ?? 0) > 0;
    throw new ValidationError(
      `target ${target} has a single value (${JSON.stringify(value)}) in all ${profile.count} rows of ${manifest.dataset}@${manifest.version}: nothing to learn`,
    );
  }
}

function assertImageAllowed(image: string, repositories: readonly string[] | undefined): void {
  if (repositories === undefined) return;
  const allowed = repositories.some(
    (repository) => image.startsWith(`${repository}:`) || image.startsWith(`${repository}@`),
  );
  if (!allowed) {
    throw new ValidationError(
      `training image ${JSON.stringify(image)} is not in a repository this pipeline may pull from (${repositories.length ? repositories.join(', ') : 'none: set byoImageRepositories on TrainingPipeline'}); give <repository-uri>:<tag> or <repository-uri>@<digest>`,
    );
  }
}

const TimeSchema = z.union([z.string(), z.number()]).optional();

const PipelineStateSchema = z.looseObject({
  job: z.looseObject({
    trainingJobName: z.string(),
    model: z.string(),
    dataset: z.string(),
    datasetVersion: z.string(),
    target: z.string(),
    builtin: z.boolean(),
    trainingImage: z.string(),
    instanceType: z.string().optional(),
    seed: z.number().int(),
    gateMargin: z.number(),
    testDataKey: z.string(),
    hyperparameters: z.record(z.string(), z.string()),
  }),
  training: z.looseObject({
    modelArtifacts: z.string(),
    trainingJobName: z.string(),
    startedAt: TimeSchema,
    endedAt: TimeSchema,
  }),
});
type PipelineState = z.infer<typeof PipelineStateSchema>;

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
    resolveTransform(artifacts, testRows),
    testRows,
    state.job.target,
  );
  const { name: metric } = primaryMetric(challenger.task);
  const challengerScore = challenger.metrics[metric] as number;

  const registry = new ModelRegistry(store);
  let champion: { version: number; score: number } | null = null;
  let notComparable: string | undefined;
  try {
    const record = await registry.resolve(`${state.job.model}@champion`);
    if (record.target !== state.job.target || record.task !== challenger.task) {
      notComparable = `champion v${record.version} predicts ${record.target} (${record.task}), this model ${state.job.target} (${challenger.task}): not comparable`;
    } else {
      const scored = await evaluateOnnx(
        await registry.readArtifact(record, 'model.onnx'),
        resolveTransform(
          { 'transform.json': await registry.readArtifact(record, 'transform.json') },
          testRows,
        ),
        testRows,
        state.job.target,
      );
      champion = { version: record.version, score: scored.metrics[metric] as number };
    }
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  }
  const gate = decideGate({
    task: challenger.task,
    margin: state.job.gateMargin,
    challenger: challengerScore,
    champion,
    notComparable,
  });
  return { metrics: challenger.metrics, gate };
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
  const summary = input.job.builtin
    ? builtinSummary(artifacts)
    : await completeByoArtifacts(store, input, artifacts);
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
  const reason = String(input.evaluation.gate.reason ?? '') || 'evaluation gate';
  // The gate proposes; the registry's promotion policy disposes (it may also want a person's approval).
  let promoted = false;
  let promotion: { allowed: boolean; detail: string[] } = {
    allowed: false,
    detail: ['the evaluation gate did not pass'],
  };
  // A canary or shadow rollout replaces a champion only after live traffic agrees (lib/updates/deploy.ts);
  // with no champion to protect there is nothing to roll out against.
  const rollout = RolloutModeSchema.catch('direct').parse(input.job.rollout);
  const staged = promote && rollout !== 'direct' && input.evaluation.gate.championVersion != null;
  if (staged) {
    const decision = await registry.checkPromotion(record.model, record.version);
    promotion = {
      allowed: decision.allowed,
      detail: [`${rollout} rollout before promotion`, ...decision.satisfied, ...decision.violations],
    };
  } else if (promote) {
    try {
      const result = await registry.promote(
        record.model,
        record.version,
        actor,
        `evaluation gate passed: ${reason}`,
      );
      promoted = true;
      promotion = { allowed: true, detail: result.decision.satisfied };
    } catch (error) {
      if (!(error instanceof PolicyError)) throw error;
      promotion = { allowed: false, detail: [describeError(error)] };
    }
  }
  if (!promoted) await registry.setAlias(record.model, 'challenger', record.version, actor, reason);
  const report = {
    kind: 'kiln.training-run',
    pipeline: 'training',
    runId: input.job.trainingJobName,
    status: 'succeeded',
    model: record.model,
    version: record.version,
    stage: promoted ? 'production' : 'candidate',
    promoted,
    promotion,
    rollout,
    gate: input.evaluation.gate,
    metrics: input.evaluation.metrics,
    lineage: record.lineage,
    training: {
      builtin: input.job.builtin,
      image: input.job.trainingImage,
      instanceType: input.job.instanceType ?? null,
      testDataKey: input.job.testDataKey,
    },
    artifacts: record.artifacts,
    finishedAt: new Date().toISOString(),
  };
  await store.put(lake.runReport('training', input.job.trainingJobName), toJsonBody(report));
  // How this version was trained is how event-triggered retraining reruns it (lib/updates/config.ts).
  await recordTrainingConfig(store, {
    model: record.model,
    dataset: input.job.dataset,
    target: input.job.target,
    // A bring-your-own image is the algorithm; the field only has to satisfy the request schema.
    algorithm: input.job.builtin ? String(summary.algorithm) : 'gbdt',
    hyperparameters: userHyperparameters(input.job.hyperparameters),
    seed: input.job.seed,
    gateMargin: input.job.gateMargin,
    testDataKey: input.job.testDataKey,
    ...(input.job.builtin ? {} : { image: input.job.trainingImage }),
    ...(input.job.instanceType ? { instanceType: input.job.instanceType } : {}),
    version: record.version,
    trainingJob: input.job.trainingJobName,
  });
  return {
    model: record.model,
    version: record.version,
    stage: promoted ? 'production' : 'candidate',
    promoted,
    promotion,
    rollout,
  };
}

/** The request's own hyperparameters: without the keys Kiln adds from the request's fields. */
function userHyperparameters(params: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(params).filter(([key]) => !RESERVED_HYPERPARAMETERS.includes(key)),
  );
}

type RegisteredSummary = Pick<
  TrainingSummary,
  | 'task'
  | 'classes'
  | 'target'
  | 'inputs'
  | 'transformHash'
  | 'codeVersion'
  | 'seed'
  | 'startedAt'
  | 'endedAt'
> & { algorithm: string; hyperparameters: Record<string, unknown> };

function builtinSummary(artifacts: Record<string, Buffer>): RegisteredSummary {
  requireArtifact(artifacts, 'transform.json');
  return JSON.parse(requireArtifact(artifacts, 'training.json').toString('utf8')) as TrainingSummary;
}

/**
 * A bring-your-own image writes model.onnx and a transform (spec); Kiln completes the version so it is served
 * and monitored like a built-in one: the fitted transform, the baseline profile (training rows and held-out
 * predictions), the held-out metrics and a training.json with lineage. The image's own training.json may
 * supply algorithm, code version, hyperparameters and seed.
 */
async function completeByoArtifacts(
  store: ObjectStore,
  input: PipelineState & { evaluation: { metrics: Record<string, unknown> } },
  artifacts: Record<string, Buffer>,
): Promise<RegisteredSummary> {
  const { job, training } = input;
  const info = readByoTrainingInfo(artifacts['training.json']);
  const trainRows = await readLakeTable(
    store,
    lake.curatedFile(job.dataset, job.datasetVersion, 'train.parquet'),
  );
  const testRows = await readLakeTable(store, job.testDataKey);
  const fitted: FittedTransform = resolveTransform(artifacts, trainRows);
  const scored = await evaluateOnnx(requireArtifact(artifacts, 'model.onnx'), fitted, testRows, job.target);
  const reserved = new Set(['target', 'seed', 'kiln_model', 'kiln_dataset', 'kiln_dataset_version']);
  const summary = {
    task: scored.task as Task,
    classes: scored.classes,
    target: job.target,
    inputs: fitted.inputs,
    algorithm: info.algorithm ?? scored.algorithm,
    hyperparameters:
      info.hyperparameters ??
      Object.fromEntries(Object.entries(job.hyperparameters).filter(([key]) => !reserved.has(key))),
    seed: info.seed ?? job.seed,
    transformHash: fitted.hash,
    // Foreign code has no Kiln commit: the image reference is the code, unless the image says better.
    codeVersion: info.codeVersion ?? `image:${job.trainingImage}`,
    startedAt: isoTime(training.startedAt),
    endedAt: isoTime(training.endedAt),
    byo: { image: job.trainingImage, platform: codeVersion() },
  };
  if (!artifacts['baseline.json']) {
    const baseline = baselineProfile(fitted.inputs, trainRows, scored.output, scored.task, scored.classes);
    artifacts['baseline.json'] = Buffer.from(`${JSON.stringify(baseline)}\n`);
  }
  artifacts['transform.json'] = Buffer.from(`${JSON.stringify(fitted, null, 2)}\n`);
  artifacts['metrics.json'] = Buffer.from(`${JSON.stringify(input.evaluation.metrics, null, 2)}\n`);
  artifacts['training.json'] = Buffer.from(`${JSON.stringify(summary, null, 2)}\n`);
  return summary;
}

/** A DescribeTrainingJob time (ISO text locally, epoch seconds or text from Step Functions) as ISO text. */
function isoTime(value: string | number | undefined): string {
  if (value === undefined) return new Date().toISOString();
  const date = typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString();
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
  if (!body) throw new ValidationError(`the training job wrote no ${name} to /opt/ml/model`);
  return body;
}

function parseInput<T>(schema: z.ZodType<T>, raw: unknown, what: string): T {
  const result = schema.safeParse(raw);
  if (!result.success) {
    const detail = result.error.issues
      .map((issue) => {
        const path = issue.path.map(String);
        let got: unknown = raw;
        for (const key of path) got = (got as Record<string, unknown> | undefined)?.[key];
        const received = got === undefined || typeof got === 'object' ? '' : ` (got ${JSON.stringify(got)})`;
        return `${path.join('.') || '(root)'}: ${issue.message}${received}`;
      })
      .join('; ');
    throw new ValidationError(`invalid ${what}: ${detail}`);
  }
  return result.data;
}
