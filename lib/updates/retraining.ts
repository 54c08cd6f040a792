import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ConflictError, NotFoundError, ValidationError } from '../core/errors.ts';
import { discardEvents, type EventPublisher, EventTypes } from '../core/events.ts';
import { DriftDetectedDetailSchema, QualityDroppedDetailSchema } from '../monitoring/events.ts';
import { ModelRegistry } from '../registry/registry.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, readJsonIfExists, toJsonBody } from '../store/object-store.ts';
import { listTrainingConfigs, type RetrainCause, readTrainingConfig, type TrainingConfig } from './config.ts';
import { retrainingRunCompletedEvent } from './events.ts';
import { EXECUTION_NAME, ExecutionAlreadyExistsError, type StepFunctionsPort } from './sfn.ts';

/**
 * Event-triggered retraining with a debounce window.
 *
 * New curated data (`EtlRunSucceeded`), `DriftDetected`, `QualityDropped` and a schedule all end in the same
 * place: a retraining run of one model. The first event for a model opens a window (a compare-and-swap
 * document in the lake, so concurrent Lambdas agree on it) and starts the retraining state machine under a
 * name derived from the window; every later event in the window starts it again under the same name and
 * input, which Step Functions answers with the running execution (or ExecutionAlreadyExists), so a burst of
 * events is one run. The run waits for the window to close, runs the ETL (anything landed but not curated),
 * plans (this module), trains and records which events caused it. Planning claims the dataset version
 * create-only, so a model is never trained twice on the same data however many windows ask for it: a flood
 * of events costs at most one run per window, and a run with nothing new to learn from is recorded as
 * skipped.
 *
 * The same functions run in Lambda (functions/updates/*) and in the local runtime (lib/updates/local.ts).
 */

/** Events within this long of a window's first event join its run. */
export const DEFAULT_WINDOW_MS = 10 * 60_000;
/** Bounds of the window (1 s to 24 h). */
export const WINDOW_MS_RANGE = { min: 1_000, max: 24 * 3_600_000 } as const;

/** The window from an environment variable (milliseconds); ValidationError naming the value and the range. */
export function windowMsOf(value: string | undefined): number {
  if (value === undefined || value === '') return DEFAULT_WINDOW_MS;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < WINDOW_MS_RANGE.min || ms > WINDOW_MS_RANGE.max) {
    throw new ValidationError(
      `KILN_RETRAINING_WINDOW_MS must be an integer from ${WINDOW_MS_RANGE.min} to ${WINDOW_MS_RANGE.max} ms, got ${JSON.stringify(value)}`,
    );
  }
  return ms;
}

/** Lake keys of the trigger records (`runs/triggers/…`). */
export const triggerKeys = {
  prefix: (model: string) => `runs/triggers/${assertName('model', model)}/`,
  /** The model's current window (compare-and-swap). */
  window: (model: string) => `runs/triggers/${assertName('model', model)}/window.json`,
  /** One record per event that asked for a run. */
  event: (model: string, windowId: string, stamp: string, eventId: string) =>
    `runs/triggers/${model}/${windowId}/events/${stamp}-${eventId}.json`,
  events: (model: string, windowId: string) => `runs/triggers/${model}/${windowId}/events/`,
  /** What the window's run did. */
  run: (model: string, windowId: string) => `runs/triggers/${model}/${windowId}/run.json`,
  /** Create-only: this dataset version is (being) trained on. */
  claim: (model: string, datasetVersion: string) => `runs/triggers/${model}/claims/${datasetVersion}.json`,
} as const;

/** Why an event asks for retraining. */
export interface TriggerCause {
  cause: RetrainCause;
  eventId: string;
  source: string;
  detailType: string;
  /** When the event happened (the event's time, else when it was received). */
  time: string;
  /** One line for people. */
  summary: string;
  /** The model the event is about (drift, quality). */
  model?: string;
  /** The dataset the event is about (new data). */
  dataset?: string;
}

/** One model's debounce window. */
export interface RetrainingWindow {
  kind: 'kiln.retraining-window';
  model: string;
  windowId: string;
  start: string;
  end: string;
  executionName: string;
}

/** The retraining state machine's input: identical for every event of a window (so starts are idempotent). */
export interface RetrainingInput {
  model: string;
  /** The dataset the model is trained on: the run's ETL curates it first. */
  dataset: string;
  windowId: string;
  window: { start: string; end: string };
}

/** What one event did for one model. */
export interface TriggerOutcome {
  model: string;
  windowId: string;
  executionName: string;
  /** This event opened the window. */
  opened: boolean;
  /** `started`: a new run; `joined`: coalesced into the window's run. */
  start: 'started' | 'joined';
  executionArn: string;
  recordKey: string;
}

/** What the trigger did with one event. */
export interface TriggerResult {
  cause: TriggerCause | null;
  /** Why the event asked for nothing (unknown shape, no dataset, …). */
  ignored: string | null;
  runs: TriggerOutcome[];
  /** Models the event was about that are not retrained by it, and why. */
  skipped: Array<{ model: string; reason: string }>;
}

/** Collaborators of {@link handleTriggerEvent}. */
export interface TriggerDeps {
  store: ObjectStore;
  sfn: StepFunctionsPort;
  /** The retraining state machine. */
  stateMachineArn: string;
  /** @default DEFAULT_WINDOW_MS */
  windowMs?: number;
  now?: () => Date;
}

// ---- events ------------------------------------------------------------------------------------------

interface NormalisedEvent {
  id?: string;
  source: string;
  detailType: string;
  time?: string;
  detail: Record<string, unknown>;
}

/** EventBridge delivers `detail-type`, the local bus `detailType`; both carry source and detail. */
function normaliseEvent(event: unknown): NormalisedEvent | undefined {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) return undefined;
  const record = event as Record<string, unknown>;
  const detailType = record['detail-type'] ?? record.detailType;
  if (typeof record.source !== 'string' || typeof detailType !== 'string') return undefined;
  const detail =
    record.detail !== null && typeof record.detail === 'object' && !Array.isArray(record.detail)
      ? (record.detail as Record<string, unknown>)
      : {};
  return {
    ...(typeof record.id === 'string' ? { id: record.id } : {}),
    source: record.source,
    detailType,
    ...(typeof record.time === 'string' ? { time: record.time } : {}),
    detail,
  };
}

/**
 * Why an event asks for retraining, or a sentence saying why it does not. Events are validated with the
 * publishers' own schemas (lib/monitoring/events.ts), so a malformed one is reported, never guessed at.
 */
export function classifyEvent(event: unknown, now: Date = new Date()): TriggerCause | { ignored: string } {
  const e = normaliseEvent(event);
  if (!e) return { ignored: 'not an event: expected { source, detail-type, detail }' };
  const eventId =
    e.id ??
    (typeof e.detail.eventId === 'string' ? e.detail.eventId : undefined) ??
    createHash('sha256').update(JSON.stringify(event)).digest('hex').slice(0, 24);
  const base = { eventId, source: e.source, detailType: e.detailType, time: e.time ?? now.toISOString() };
  if (e.source === 'kiln.etl' && e.detailType === EventTypes.etlRunSucceeded) {
    const dataset = e.detail.dataset;
    if (typeof dataset !== 'string' || !/^[a-z][a-z0-9_-]{0,63}$/.test(dataset)) {
      return { ignored: `${e.detailType} without a valid dataset name (got ${JSON.stringify(dataset)})` };
    }
    if (e.detail.created === false) return { ignored: `${dataset}: the ETL created no new version` };
    const version = typeof e.detail.version === 'string' ? e.detail.version : '?';
    const accepted = typeof e.detail.accepted === 'number' ? ` (${e.detail.accepted} rows)` : '';
    return { ...base, cause: 'data', dataset, summary: `new curated data ${dataset}@${version}${accepted}` };
  }
  if (e.source === 'kiln.monitoring' && e.detailType === EventTypes.driftDetected) {
    const parsed = DriftDetectedDetailSchema.safeParse(e.detail);
    if (!parsed.success)
      return { ignored: `${e.detailType} with an invalid detail: ${firstIssue(parsed.error)}` };
    const d = parsed.data;
    const what = [
      ...(d.driftedFeatureCount > 0
        ? [`${d.driftedFeatureCount} feature(s) (${d.driftedFeatures.slice(0, 5).join(', ')})`]
        : []),
      ...(d.predictionDrift ? ['the prediction'] : []),
    ].join(' and ');
    return {
      ...base,
      cause: 'drift',
      model: d.model,
      summary: `${d.model}@${d.version}: drift in ${what || 'traffic'} over ${d.requests} requests`,
    };
  }
  if (e.source === 'kiln.monitoring' && e.detailType === EventTypes.qualityDropped) {
    const parsed = QualityDroppedDetailSchema.safeParse(e.detail);
    if (!parsed.success)
      return { ignored: `${e.detailType} with an invalid detail: ${firstIssue(parsed.error)}` };
    const d = parsed.data;
    return {
      ...base,
      cause: 'quality',
      model: d.model,
      summary: `${d.model}@${d.version}: ${d.metric} ${round(d.value)} on ${d.labelled} labels vs held-out ${round(d.heldOut)}`,
    };
  }
  if (
    (e.source === 'aws.events' && e.detailType === 'Scheduled Event') ||
    (e.source === 'kiln.schedule' && e.detailType === 'Scheduled Event')
  ) {
    return { ...base, cause: 'schedule', summary: 'scheduled retraining check' };
  }
  return { ignored: `${e.source} ${e.detailType} does not trigger retraining` };
}

// ---- windows -----------------------------------------------------------------------------------------

const WindowSchema = z.strictObject({
  kind: z.literal('kiln.retraining-window'),
  model: z.string(),
  windowId: z.string(),
  start: z.string(),
  end: z.string(),
  executionName: z.string(),
});

/** `retrain-<model>-<windowId>`: at most 80 characters of Step Functions' name alphabet. */
export function executionNameOf(model: string, windowId: string): string {
  const name = `retrain-${model.slice(0, 40)}-${windowId}`;
  if (!EXECUTION_NAME.test(name)) throw new ConflictError(`cannot name an execution ${JSON.stringify(name)}`);
  return name;
}

/** `20261126T132549Z-1a2b`: sortable, and unique between two windows opened in the same second. */
function newWindowId(now: Date): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${randomBytes(2).toString('hex')}`;
}

/**
 * Joins the model's open window, or opens one when there is none or it has closed. Compare-and-swap on
 * `runs/triggers/<model>/window.json`: two events racing to open a window end up in the same one.
 */
export async function joinWindow(
  store: ObjectStore,
  model: string,
  now: Date,
  windowMs: number,
): Promise<{ window: RetrainingWindow; opened: boolean }> {
  const key = triggerKeys.window(model);
  for (let attempt = 0; attempt < 20; attempt++) {
    const info = await store.head(key);
    if (info) {
      const current = WindowSchema.parse(JSON.parse((await store.get(key)).toString('utf8')));
      if (now.getTime() < Date.parse(current.end)) return { window: current, opened: false };
    }
    const windowId = newWindowId(now);
    const window: RetrainingWindow = {
      kind: 'kiln.retraining-window',
      model,
      windowId,
      start: now.toISOString(),
      end: new Date(now.getTime() + windowMs).toISOString(),
      executionName: executionNameOf(model, windowId),
    };
    try {
      await store.put(key, toJsonBody(window), info ? { ifMatch: info.etag } : { ifNoneMatch: '*' });
      return { window, opened: true };
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
    }
  }
  throw new ConflictError(`too much contention on ${key}`);
}

/**
 * Closes a window early (the local runtime's flush, or a window whose run already ended): later events
 * open a new one. A no-op when the window is no longer the model's current one.
 */
export async function closeWindow(
  store: ObjectStore,
  model: string,
  windowId: string,
  now: Date,
): Promise<void> {
  const key = triggerKeys.window(model);
  for (let attempt = 0; attempt < 20; attempt++) {
    const info = await store.head(key);
    if (!info) return;
    const current = WindowSchema.parse(JSON.parse((await store.get(key)).toString('utf8')));
    if (current.windowId !== windowId || Date.parse(current.end) <= now.getTime()) return;
    try {
      await store.put(key, toJsonBody({ ...current, end: now.toISOString() }), { ifMatch: info.etag });
      return;
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
    }
  }
}

/** The state machine input of a window. */
export function retrainingInput(window: RetrainingWindow, dataset: string): RetrainingInput {
  return {
    model: window.model,
    dataset,
    windowId: window.windowId,
    window: { start: window.start, end: window.end },
  };
}

// ---- trigger -----------------------------------------------------------------------------------------

/**
 * The debouncing trigger (functions/updates/trigger.ts on AWS, the local bus subscriber locally): records
 * the event against each model it concerns and starts (or joins) that model's windowed retraining run.
 */
export async function handleTriggerEvent(event: unknown, deps: TriggerDeps): Promise<TriggerResult> {
  const clock = deps.now ?? (() => new Date());
  const windowMs = deps.windowMs ?? DEFAULT_WINDOW_MS;
  const classified = classifyEvent(event, clock());
  if ('ignored' in classified) return { cause: null, ignored: classified.ignored, runs: [], skipped: [] };
  const cause = classified;
  const { models, skipped } = await modelsFor(deps.store, cause);
  const runs: TriggerOutcome[] = [];
  for (const config of models) runs.push(await triggerModel(deps, cause, config, windowMs, clock));
  const ignored =
    models.length === 0
      ? skipped.length > 0
        ? 'no model is retrained by this event'
        : cause.dataset
          ? `no model is trained on dataset ${cause.dataset}`
          : 'no model has a training config'
      : null;
  return { cause, ignored, runs, skipped };
}

async function triggerModel(
  deps: TriggerDeps,
  cause: TriggerCause,
  config: TrainingConfig,
  windowMs: number,
  clock: () => Date,
): Promise<TriggerOutcome> {
  const model = config.model;
  // Two attempts: a window whose run has already closed is closed here and the event opens the next one.
  for (let attempt = 0; ; attempt++) {
    const now = clock();
    const { window, opened } = await joinWindow(deps.store, model, now, windowMs);
    let executionArn: string;
    try {
      const started = await deps.sfn.startExecution({
        stateMachineArn: deps.stateMachineArn,
        name: window.executionName,
        input: JSON.stringify(retrainingInput(window, config.dataset)),
      });
      executionArn = started.executionArn;
    } catch (error) {
      if (!(error instanceof ExecutionAlreadyExistsError) || attempt > 0) throw error;
      await closeWindow(deps.store, model, window.windowId, now);
      continue;
    }
    const stamp = now.toISOString().replace(/[-:]/g, '').replace('.', '');
    const recordKey = triggerKeys.event(model, window.windowId, stamp, safeId(cause.eventId));
    const outcome: TriggerOutcome = {
      model,
      windowId: window.windowId,
      executionName: window.executionName,
      opened,
      start: opened ? 'started' : 'joined',
      executionArn,
      recordKey,
    };
    await deps.store.put(
      recordKey,
      toJsonBody({ kind: 'kiln.retraining-trigger', ...cause, receivedAt: now.toISOString(), ...outcome }),
      { contentType: 'application/json' },
    );
    return outcome;
  }
}

async function modelsFor(
  store: ObjectStore,
  cause: TriggerCause,
): Promise<{ models: TrainingConfig[]; skipped: Array<{ model: string; reason: string }> }> {
  const skipped: Array<{ model: string; reason: string }> = [];
  let configs: TrainingConfig[];
  if (cause.model !== undefined) {
    const config = await readTrainingConfig(store, cause.model);
    if (!config) {
      return {
        models: [],
        skipped: [{ model: cause.model, reason: 'no training config: train it once with `kiln train`' }],
      };
    }
    configs = [config];
  } else {
    configs = (await listTrainingConfigs(store)).filter(
      (config) => cause.dataset === undefined || config.dataset === cause.dataset,
    );
  }
  const models: TrainingConfig[] = [];
  for (const config of configs) {
    if (!config.retrain.enabled) skipped.push({ model: config.model, reason: 'retraining is switched off' });
    else if (!config.retrain.on.includes(cause.cause)) {
      skipped.push({ model: config.model, reason: `not retrained on ${cause.cause} events` });
    } else models.push(config);
  }
  return { models, skipped };
}

// ---- plan --------------------------------------------------------------------------------------------

const IsoSchema = z.string().refine((value) => !Number.isNaN(Date.parse(value)), 'an ISO-8601 time');

/** The Plan step's input: the state machine input plus what the ETL step left. */
export const PlanInputSchema = z.looseObject({
  model: z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/),
  dataset: z.string().optional(),
  windowId: z.string().regex(/^[A-Za-z0-9_-]{1,40}$/),
  window: z.looseObject({ start: IsoSchema, end: IsoSchema }),
  etl: z.looseObject({ result: z.unknown() }).optional(),
  etlError: z.unknown().optional(),
});

/** One event that caused a run, as the run record lists it. */
export interface RunCause {
  cause: string;
  detailType: string;
  source: string;
  eventId: string;
  time: string;
  summary: string;
  key: string;
}

/** What a retraining run did: `runs/triggers/<model>/<window>/run.json`. */
export interface RetrainingRunRecord {
  kind: 'kiln.retraining-run';
  model: string;
  runId: string;
  windowId: string;
  window: { start: string; end: string };
  status: 'training' | 'trained' | 'skipped' | 'failed';
  reason: string;
  causes: RunCause[];
  etl: Record<string, unknown> | null;
  datasetVersion: string | null;
  request: Record<string, unknown> | null;
  registration: Record<string, unknown> | null;
  gate: Record<string, unknown> | null;
  plannedAt: string;
  finishedAt: string | null;
}

/** The Plan step's answer: train (with the training request) or skip (with the reason). */
export interface RetrainingPlan {
  train: boolean;
  reason: string;
  datasetVersion: string | null;
  request: Record<string, unknown> | null;
  recordKey: string;
}

/**
 * Plan: decides whether the window's run trains, and on what. It trains on the dataset's latest curated
 * version, unless the model was already trained on it (a registered version's lineage, or a claim by
 * another run): retraining the same configuration on the same data reproduces the same model, so that run
 * is recorded as skipped with the reason.
 */
export async function planRetraining(
  store: ObjectStore,
  raw: unknown,
  options: { now?: Date } = {},
): Promise<RetrainingPlan> {
  const input = PlanInputSchema.parse(raw);
  const now = options.now ?? new Date();
  const runId = executionNameOf(input.model, input.windowId);
  const recordKey = triggerKeys.run(input.model, input.windowId);
  const causes = await readCauses(store, input.model, input.windowId);
  const record: RetrainingRunRecord = {
    kind: 'kiln.retraining-run',
    model: input.model,
    runId,
    windowId: input.windowId,
    window: { start: input.window.start, end: input.window.end },
    status: 'skipped',
    reason: '',
    causes,
    etl: etlSummary(input.etl, input.etlError),
    datasetVersion: null,
    request: null,
    registration: null,
    gate: null,
    plannedAt: now.toISOString(),
    finishedAt: null,
  };
  const skip = async (reason: string): Promise<RetrainingPlan> => {
    record.reason = reason;
    await store.put(recordKey, toJsonBody(record), { contentType: 'application/json' });
    return { train: false, reason, datasetVersion: record.datasetVersion, request: null, recordKey };
  };

  const config = await readTrainingConfig(store, input.model);
  if (!config) return skip('no training config: train the model once with `kiln train`');
  if (!config.retrain.enabled) return skip('retraining is switched off for this model');
  const head = await readJsonIfExists<{ version?: unknown }>(store, lake.datasetHead(config.dataset));
  if (typeof head?.version !== 'string') return skip(`dataset ${config.dataset} has no curated version yet`);
  const datasetVersion = head.version;
  record.datasetVersion = datasetVersion;

  const registry = new ModelRegistry(store);
  let trained: number | undefined;
  try {
    trained = (await registry.listVersions(input.model)).find(
      (version) => version.lineage.datasetVersion === datasetVersion,
    )?.version;
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  }
  if (trained !== undefined) {
    return skip(
      `nothing new to learn from: ${input.model}@${trained} was already trained on ${config.dataset}@${datasetVersion}; land new data to retrain`,
    );
  }
  try {
    await store.put(
      triggerKeys.claim(input.model, datasetVersion),
      toJsonBody({ runId, windowId: input.windowId, claimedAt: now.toISOString() }),
      { ifNoneMatch: '*' },
    );
  } catch (error) {
    if (!(error instanceof ConflictError)) throw error;
    const claim = await readJsonIfExists<{ runId?: string }>(
      store,
      triggerKeys.claim(input.model, datasetVersion),
    );
    return skip(
      `run ${claim?.runId ?? '(unknown)'} is already training ${input.model} on ${config.dataset}@${datasetVersion}`,
    );
  }
  const request: Record<string, unknown> = {
    dataset: config.dataset,
    target: config.target,
    model: config.model,
    version: datasetVersion,
    algorithm: config.algorithm,
    hyperparameters: config.hyperparameters,
    seed: config.seed,
    gateMargin: config.gateMargin,
    ...(config.testDataKey ? { testDataKey: config.testDataKey } : {}),
    ...(config.image ? { image: config.image } : {}),
    ...(config.instanceType ? { instanceType: config.instanceType } : {}),
    rollout: config.rollout.mode,
    trigger: { runId, windowId: input.windowId, causes: causes.map((c) => c.detailType) },
  };
  record.status = 'training';
  record.request = request;
  record.reason = `training ${input.model} on ${config.dataset}@${datasetVersion} (${describeCauses(causes)})`;
  await store.put(recordKey, toJsonBody(record), { contentType: 'application/json' });
  return { train: true, reason: record.reason, datasetVersion, request, recordKey };
}

// ---- record ------------------------------------------------------------------------------------------

/** The Record step's input: the whole state after Plan, and Train when it ran (or the error that stopped it). */
export const RecordInputSchema = PlanInputSchema.extend({
  plan: z
    .looseObject({
      train: z.boolean(),
      reason: z.string(),
      datasetVersion: z.string().nullable(),
      recordKey: z.string(),
    })
    .optional(),
  training: z
    .looseObject({
      registration: z.record(z.string(), z.unknown()).optional(),
      evaluation: z.record(z.string(), z.unknown()).optional(),
    })
    .optional(),
  error: z.looseObject({ Error: z.string().optional(), Cause: z.string().optional() }).optional(),
});

/**
 * Record: completes the run record (trained, skipped or failed), releases the dataset claim of a failed
 * run so that a later window may try again, and publishes `RetrainingRunCompleted`.
 */
export async function recordRetraining(
  store: ObjectStore,
  raw: unknown,
  options: { events?: EventPublisher; now?: Date } = {},
): Promise<RetrainingRunRecord> {
  const input = RecordInputSchema.parse(raw);
  const now = options.now ?? new Date();
  const recordKey = triggerKeys.run(input.model, input.windowId);
  const runId = executionNameOf(input.model, input.windowId);
  const existing = await readJsonIfExists<RetrainingRunRecord>(store, recordKey);
  const record: RetrainingRunRecord = existing ?? {
    kind: 'kiln.retraining-run',
    model: input.model,
    runId,
    windowId: input.windowId,
    window: { start: input.window.start, end: input.window.end },
    status: 'failed',
    reason: '',
    causes: await readCauses(store, input.model, input.windowId),
    etl: etlSummary(input.etl, input.etlError),
    datasetVersion: input.plan?.datasetVersion ?? null,
    request: null,
    registration: null,
    gate: null,
    plannedAt: now.toISOString(),
    finishedAt: null,
  };
  if (input.error) {
    record.status = 'failed';
    record.reason = `failed: ${input.error.Error ?? 'Error'}: ${causeMessage(input.error.Cause)}`;
    if (record.datasetVersion) await releaseClaim(store, input.model, record.datasetVersion, runId);
  } else if (input.training?.registration) {
    const registration = input.training.registration;
    const gate = (input.training.evaluation?.gate as Record<string, unknown> | undefined) ?? null;
    record.status = 'trained';
    record.registration = registration;
    record.gate = gate;
    const promoted = registration.promoted === true;
    record.reason = `registered ${input.model}@${String(registration.version)}: ${
      promoted
        ? 'promoted to champion'
        : gate?.passed === true
          ? 'challenger, passed the gate (awaiting rollout)'
          : `candidate, the gate kept the champion (${String(gate?.reason ?? 'no reason')})`
    }`;
  } else if (input.plan && !input.plan.train) {
    record.status = 'skipped';
    record.reason = input.plan.reason;
  } else {
    record.status = 'failed';
    record.reason = 'the run ended without a plan or a training result';
  }
  record.finishedAt = now.toISOString();
  await store.put(recordKey, toJsonBody(record), { contentType: 'application/json' });
  const version = record.registration?.version;
  await (options.events ?? discardEvents).publish([
    retrainingRunCompletedEvent({
      model: record.model,
      runId: record.runId,
      windowId: record.windowId,
      status: record.status,
      reason: record.reason,
      causes: record.causes.map((cause) => cause.detailType),
      datasetVersion: record.datasetVersion,
      version: typeof version === 'number' ? version : null,
      gatePassed: typeof record.gate?.passed === 'boolean' ? record.gate.passed : null,
      recordKey,
    }),
  ]);
  return record;
}

/** Every retraining run of a model, oldest first. */
export async function listRetrainingRuns(store: ObjectStore, model: string): Promise<RetrainingRunRecord[]> {
  const keys = (await store.list(triggerKeys.prefix(model)))
    .map((info) => info.key)
    .filter((key) => key.endsWith('/run.json'));
  const runs: RetrainingRunRecord[] = [];
  for (const key of keys) {
    const run = await readJsonIfExists<RetrainingRunRecord>(store, key);
    if (run) runs.push(run);
  }
  return runs;
}

async function readCauses(store: ObjectStore, model: string, windowId: string): Promise<RunCause[]> {
  const infos = await store.list(triggerKeys.events(model, windowId));
  const causes: RunCause[] = [];
  for (const info of infos) {
    const record = await readJsonIfExists<Record<string, unknown>>(store, info.key);
    if (!record) continue;
    causes.push({
      cause: String(record.cause ?? ''),
      detailType: String(record.detailType ?? ''),
      source: String(record.source ?? ''),
      eventId: String(record.eventId ?? ''),
      time: String(record.time ?? ''),
      summary: String(record.summary ?? ''),
      key: info.key,
    });
  }
  return causes;
}

async function releaseClaim(store: ObjectStore, model: string, datasetVersion: string, runId: string) {
  const key = triggerKeys.claim(model, datasetVersion);
  const claim = await readJsonIfExists<{ runId?: string }>(store, key);
  if (claim?.runId === runId) await store.delete(key);
}

function etlSummary(etl: { result?: unknown } | undefined, error: unknown): Record<string, unknown> | null {
  if (error !== undefined && error !== null) {
    const e = error as { Error?: unknown; Cause?: unknown };
    return { error: `${String(e.Error ?? 'Error')}: ${causeMessage(e.Cause)}` };
  }
  const result = etl?.result;
  if (result === null || typeof result !== 'object') return null;
  const r = result as Record<string, unknown>;
  const pick = ['dataset', 'version', 'created', 'read', 'accepted', 'quarantined'];
  return Object.fromEntries(pick.filter((key) => key in r).map((key) => [key, r[key]]));
}

/** A Step Functions error cause is often JSON (`errorMessage`, or a child execution's description). */
function causeMessage(cause: unknown): string {
  if (typeof cause !== 'string') return String(cause ?? '');
  try {
    const parsed = JSON.parse(cause) as Record<string, unknown>;
    if (typeof parsed.errorMessage === 'string') return parsed.errorMessage;
    if (typeof parsed.Cause === 'string') return causeMessage(parsed.Cause);
    if (typeof parsed.Error === 'string') return parsed.Error;
  } catch {
    // plain text
  }
  return cause.slice(0, 500);
}

function describeCauses(causes: RunCause[]): string {
  if (causes.length === 0) return 'no recorded cause';
  const counts = new Map<string, number>();
  for (const cause of causes) counts.set(cause.detailType, (counts.get(cause.detailType) ?? 0) + 1);
  return [...counts].map(([type, n]) => (n > 1 ? `${n}× ${type}` : type)).join(', ');
}

function safeId(id: string): string {
  const cleaned = id.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 40);
  return cleaned || createHash('sha256').update(id).digest('hex').slice(0, 16);
}

function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  return `${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`;
}

function round(value: number): string {
  return String(Number(value.toPrecision(4)));
}
