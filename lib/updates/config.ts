import { z } from 'zod';
import { ConflictError, IntegrityError, NotFoundError } from '../core/errors.ts';
import { assertName, NAME_PATTERN } from '../store/layout.ts';
import { type ObjectStore, toJsonBody } from '../store/object-store.ts';

/**
 * How a model is retrained and rolled out, kept in the lake next to the model's registry entries
 * (`registry/<model>/training.json`). Registration writes it from the training request that produced the
 * version, so an event-triggered retraining reruns what a person last ran; the rollout and retraining
 * switches a person sets survive later registrations.
 *
 * This module imports no DuckDB or ONNX Runtime: the light retraining and deploy Lambdas read it.
 */

/** `registry/<model>/training.json`. */
export const trainingConfigKey = (model: string) => `registry/${assertName('model', model)}/training.json`;

/** How a challenger that passed the gate reaches production. */
export const RolloutModeSchema = z.enum(['direct', 'canary', 'shadow']);
export type RolloutMode = z.infer<typeof RolloutModeSchema>;

/** Rollout of a challenger that passed the gate (see docs/model-updates.md). */
export const RolloutSettingsSchema = z.strictObject({
  /**
   * `canary`: a share of live traffic goes to the challenger while it bakes; `shadow`: every request is
   * mirrored to it and the champion answers; `direct`: the gate's winner is promoted at once.
   */
  mode: RolloutModeSchema.default('canary'),
  /** Share of requests the challenger answers (canary) or sees (shadow), in (0, 1]. */
  share: z.number().gt(0).max(1).default(0.1),
  /** Challenger requests that make a bake complete. */
  bakeRequests: z.number().int().min(1).max(10_000_000).default(200),
  /** Longest bake before an undecided canary is rolled back (ms). */
  maxBakeMs: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 3_600_000)
    .default(3_600_000),
});
export type RolloutSettings = z.infer<typeof RolloutSettingsSchema>;

/** Which events may retrain the model. */
export const RetrainCauseSchema = z.enum(['data', 'drift', 'quality', 'schedule']);
export type RetrainCause = z.infer<typeof RetrainCauseSchema>;

const scalar = z.union([z.string(), z.number(), z.boolean()]);

/** The stored document. Field constraints mirror the training request's (lib/training/steps.ts). */
export const TrainingConfigSchema = z.strictObject({
  kind: z.literal('kiln.training-config'),
  model: z.string().regex(NAME_PATTERN),
  dataset: z.string().regex(NAME_PATTERN),
  target: z.string().min(1),
  algorithm: z.string().min(1).default('gbdt'),
  hyperparameters: z.record(z.string(), scalar).default({}),
  seed: z.number().int().min(0).default(0),
  gateMargin: z.number().min(0).default(0),
  /** A held-out file under holdout/ to evaluate on (a curated test split is per version, so not kept). */
  testDataKey: z.string().startsWith('holdout/').optional(),
  image: z.string().min(1).optional(),
  instanceType: z.string().min(1).optional(),
  retrain: z
    .strictObject({
      enabled: z.boolean().default(true),
      on: z.array(RetrainCauseSchema).default(['data', 'drift', 'quality', 'schedule']),
    })
    .default({ enabled: true, on: ['data', 'drift', 'quality', 'schedule'] }),
  rollout: RolloutSettingsSchema.default(RolloutSettingsSchema.parse({})),
  updatedAt: z.string(),
  /** The registration that last wrote the training fields. */
  source: z.strictObject({ version: z.number().int().positive(), trainingJob: z.string() }).nullable(),
});
export type TrainingConfig = z.infer<typeof TrainingConfigSchema>;

/** What a registration knows about how the version was trained. */
export interface RegisteredTraining {
  model: string;
  dataset: string;
  target: string;
  algorithm: string;
  hyperparameters: Record<string, string | number | boolean>;
  seed: number;
  gateMargin: number;
  testDataKey?: string;
  image?: string;
  instanceType?: string;
  version: number;
  trainingJob: string;
}

/** Reads a model's training config; undefined when none was ever written. */
export async function readTrainingConfig(
  store: ObjectStore,
  model: string,
): Promise<TrainingConfig | undefined> {
  const key = trainingConfigKey(model);
  if (!(await store.head(key))) return undefined;
  return parseConfig(await store.get(key), key);
}

/** Reads a model's training config or throws NotFoundError saying how one comes to exist. */
export async function requireTrainingConfig(store: ObjectStore, model: string): Promise<TrainingConfig> {
  const config = await readTrainingConfig(store, model);
  if (!config) {
    throw new NotFoundError(
      `model ${model} has no training config (${trainingConfigKey(model)}): train it once with \`kiln train\`; registration records how to retrain it`,
    );
  }
  return config;
}

/**
 * Records how a just-registered version was trained (compare-and-swap, so two registrations never lose
 * each other's write); the person-set `retrain` and `rollout` switches of an existing config are kept.
 */
export async function recordTrainingConfig(
  store: ObjectStore,
  training: RegisteredTraining,
  now: Date = new Date(),
): Promise<TrainingConfig> {
  const key = trainingConfigKey(training.model);
  for (let attempt = 0; attempt < 20; attempt++) {
    const info = await store.head(key);
    const existing = info ? parseConfig(await store.get(key), key) : undefined;
    const next = TrainingConfigSchema.parse({
      kind: 'kiln.training-config',
      model: training.model,
      dataset: training.dataset,
      target: training.target,
      algorithm: training.algorithm,
      hyperparameters: training.hyperparameters,
      seed: training.seed,
      gateMargin: training.gateMargin,
      ...(training.testDataKey?.startsWith('holdout/') ? { testDataKey: training.testDataKey } : {}),
      ...(training.image ? { image: training.image } : {}),
      ...(training.instanceType ? { instanceType: training.instanceType } : {}),
      ...(existing ? { retrain: existing.retrain, rollout: existing.rollout } : {}),
      updatedAt: now.toISOString(),
      source: { version: training.version, trainingJob: training.trainingJob },
    });
    try {
      await store.put(key, toJsonBody(next), info ? { ifMatch: info.etag } : { ifNoneMatch: '*' });
      return next;
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
    }
  }
  throw new ConflictError(`too much contention on ${key}; register again`);
}

/** Changes the retraining or rollout switches of an existing config (compare-and-swap). */
export async function updateTrainingConfig(
  store: ObjectStore,
  model: string,
  change: { retrain?: Partial<TrainingConfig['retrain']>; rollout?: Partial<RolloutSettings> },
  now: Date = new Date(),
): Promise<TrainingConfig> {
  const key = trainingConfigKey(model);
  for (let attempt = 0; attempt < 20; attempt++) {
    const info = await store.head(key);
    if (!info) {
      // Throws NotFoundError unless another writer created it a moment ago; then try again.
      await requireTrainingConfig(store, model);
      continue;
    }
    const current = parseConfig(await store.get(key), key);
    const next = TrainingConfigSchema.parse({
      ...current,
      retrain: { ...current.retrain, ...change.retrain },
      rollout: { ...current.rollout, ...change.rollout },
      updatedAt: now.toISOString(),
    });
    try {
      await store.put(key, toJsonBody(next), { ifMatch: info.etag });
      return next;
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
    }
  }
  throw new ConflictError(`too much contention on ${key}; try again`);
}

/** Every model with a training config, sorted (one listing of registry/). */
export async function listTrainingConfigs(store: ObjectStore): Promise<TrainingConfig[]> {
  const keys = (await store.list('registry/'))
    .map((info) => info.key)
    .filter((key) => /^registry\/[^/]+\/training\.json$/.test(key));
  const configs: TrainingConfig[] = [];
  for (const key of keys) configs.push(parseConfig(await store.get(key), key));
  return configs.sort((a, b) => a.model.localeCompare(b.model));
}

function parseConfig(body: Buffer, key: string): TrainingConfig {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new IntegrityError(`${key} is not JSON`, { cause });
  }
  const parsed = TrainingConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new IntegrityError(
      `${key} is not a training config (${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'})`,
      { cause: parsed.error },
    );
  }
  return parsed.data;
}
