import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateEndpointConfigCommand,
  type CreateEndpointConfigCommandInput,
  CreateModelCommand,
  type CreateModelCommandInput,
  type DeploymentConfig,
  DescribeEndpointCommand,
  DescribeEndpointConfigCommand,
  type ProductionVariant,
  type SageMakerClient,
  UpdateEndpointCommand,
} from '@aws-sdk/client-sagemaker';
import * as tar from 'tar';
import { z } from 'zod';
import { ConflictError, describeError, NotFoundError, PolicyError, ValidationError } from '../core/errors.ts';
import { discardEvents, type EventPublisher, EventTypes } from '../core/events.ts';
import type { VersionRecord } from '../registry/records.ts';
import { ModelRegistry } from '../registry/registry.ts';
import { lakeUri } from '../store/lake-uri.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, readJsonIfExists, toJsonBody } from '../store/object-store.ts';
import { type RolloutSettings, RolloutSettingsSchema, readTrainingConfig } from './config.ts';
import { rolloutCompletedEvent, rolloutStartedEvent } from './events.ts';

/**
 * Safe model updates: which challenger may be rolled out, the rollout records, and the SageMaker rollout
 * that the model-update Lambda (functions/updates/deploy.ts) runs. The local server's rollout is
 * lib/updates/local-rollout.ts; both decide eligibility here and record under `runs/deployments/`.
 *
 * On SageMaker the challenger goes to the endpoint as a new endpoint configuration through deployment
 * guardrails: a blue/green update with CANARY traffic routing (a share of capacity first, baked for a
 * while) and auto-rollback on CloudWatch alarms — 5XX errors and model latency from the endpoint, and the
 * model-quality and prediction-drift alarms of the monitoring construct. The registry's champion moves only
 * once SageMaker reports the endpoint on the new configuration; a rolled-back update archives the
 * challenger instead.
 */

/** The archive the stack's endpoint configuration names (InferenceEndpoint's default modelDataKey). */
export const CHAMPION_ARCHIVE_KEY = 'models/champion/model.tar.gz';

/** Actor of registry changes the rollout makes (audit log, events). */
export const ROLLOUT_ACTOR = 'kiln-rollout';

/** Lake keys of rollout records. */
export const deploymentKeys = {
  prefix: (model: string) => `runs/deployments/${assertName('model', model)}/`,
  record: (model: string, version: number) =>
    `runs/deployments/${assertName('model', model)}/${String(version).padStart(6, '0')}.json`,
  /** The endpoint's rollout in flight (compare-and-swap), read when SageMaker reports a state change. */
  endpoint: (endpointName: string) =>
    `runs/deployments/_endpoints/${endpointName.replace(/[^A-Za-z0-9_-]/g, '_')}.json`,
} as const;

/** What happened to one challenger's rollout: `runs/deployments/<model>/<version>.json`. */
export interface DeploymentRecord {
  kind: 'kiln.rollout';
  model: string;
  challenger: number;
  champion: number | null;
  mode: 'canary' | 'shadow' | 'direct';
  host: 'local' | 'sagemaker';
  status: 'not-started' | 'baking' | 'shadowing' | 'promoted' | 'rolled-back';
  reasons: string[];
  settings: RolloutSettings | null;
  startedAt: string;
  finishedAt: string | null;
  /** Local rollouts: the decision's checks and the traffic each version saw. */
  evaluation?: Record<string, unknown>;
  /** SageMaker rollouts: what was created and the configuration before it. */
  sagemaker?: {
    endpointName: string;
    modelName: string;
    endpointConfigName: string;
    previousEndpointConfigName: string;
    modelDataUrl: string;
    alarms: string[];
    kind: 'challenger' | 'champion';
  };
}

/** Whether a version may go on a rollout now, and how. */
export type Eligibility =
  | {
      eligible: true;
      record: VersionRecord;
      champion: number | null;
      settings: RolloutSettings;
      /** Why the policy allows it. */
      satisfied: string[];
    }
  | { eligible: false; reason: string; champion: number | null };

/**
 * A challenger goes on a rollout when the promotion policy would let it replace the current champion now
 * (by default: it passed the evaluation gate against this champion, or a person approved it). The rollout
 * mode and sizes come from the model's training config (`registry/<model>/training.json`).
 */
export async function rolloutEligibility(
  store: ObjectStore,
  registry: ModelRegistry,
  model: string,
  version: number,
): Promise<Eligibility> {
  const champion = (await registry.readAliases(model)).aliases.champion ?? null;
  const record = await registry.getVersion(model, version);
  if (champion === version)
    return { eligible: false, reason: `${model}@${version} is already the champion`, champion };
  if (record.stage === 'archived' || record.stage === 'rejected') {
    return { eligible: false, reason: `${model}@${version} is ${record.stage}`, champion };
  }
  const decision = await registry.checkPromotion(model, version);
  if (!decision.allowed) {
    return {
      eligible: false,
      reason: `the promotion policy (revision ${decision.policyRevision}) does not allow it: ${decision.violations.join('; ')}`,
      champion,
    };
  }
  const config = await readTrainingConfig(store, model);
  const settings = config?.rollout ?? RolloutSettingsSchema.parse({});
  return { eligible: true, record, champion, settings, satisfied: decision.satisfied };
}

/** Writes a rollout record (overwriting the version's previous one). */
export async function writeDeploymentRecord(store: ObjectStore, record: DeploymentRecord): Promise<string> {
  const key = deploymentKeys.record(record.model, record.challenger);
  await store.put(key, toJsonBody(record), { contentType: 'application/json' });
  return key;
}

/** Every rollout record of a model, oldest version first. */
export async function listDeploymentRecords(store: ObjectStore, model: string): Promise<DeploymentRecord[]> {
  const records: DeploymentRecord[] = [];
  for (const info of await store.list(deploymentKeys.prefix(model))) {
    const record = await readJsonIfExists<DeploymentRecord>(store, info.key);
    if (record) records.push(record);
  }
  return records;
}

/**
 * The archive SageMaker serves: `models/<model>/<version>/model.tar.gz` holding the version's hash-verified
 * model.onnx and transform.json (SageMaker unpacks it to /opt/ml/model). Written once per version.
 */
export async function packageModelArchive(
  store: ObjectStore,
  registry: ModelRegistry,
  record: VersionRecord,
): Promise<string> {
  const key = lake.modelFile(record.model, record.version, 'model.tar.gz');
  if (await store.head(key)) return key;
  const dir = await mkdtemp(join(tmpdir(), 'kiln-archive-'));
  try {
    const files = ['model.onnx', 'transform.json'];
    for (const file of files) await writeFile(join(dir, file), await registry.readArtifact(record, file));
    const archive = join(dir, 'model.tar.gz');
    await tar.create({ gzip: true, file: archive, cwd: dir, portable: true }, files);
    try {
      await store.putFile(key, archive, { ifNoneMatch: '*', contentType: 'application/gzip' });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
    }
    return key;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- SageMaker ---------------------------------------------------------------------------------------

/** What the deploy function needs to know about the endpoint (read once from its environment). */
export interface SageMakerRolloutEnv {
  endpointName: string;
  variantName: string;
  /** The inference image (`containers/inference`). */
  image: string;
  /** The role SageMaker models run as (passed on CreateModel). */
  roleArn: string;
  /** Alarms that roll an update back: endpoint errors and latency, model quality and prediction drift. */
  alarms: string[];
  /** Share of capacity the new configuration gets first (1–50). */
  canaryPercent: number;
  /** Seconds the canary bakes before the rest of the traffic shifts. */
  bakeSeconds: number;
  /** The model this endpoint serves (unset: whichever model a rollout names). */
  model?: string;
}

const EnvSchema = z.object({
  KILN_ENDPOINT_NAME: z.string().min(1),
  KILN_ENDPOINT_VARIANT: z.string().min(1).default('AllTraffic'),
  KILN_INFERENCE_IMAGE: z.string().min(1),
  KILN_INFERENCE_ROLE_ARN: z.string().startsWith('arn:'),
  KILN_ROLLBACK_ALARMS: z.string().default(''),
  KILN_CANARY_PERCENT: z.coerce.number().int().min(1).max(50).default(10),
  KILN_CANARY_BAKE_SECONDS: z.coerce.number().int().min(0).max(3600).default(600),
  KILN_ENDPOINT_MODEL: z.string().optional(),
});

/** The deploy function's environment, validated; fails loudly naming the bad variable. */
export function sageMakerEnv(env: NodeJS.ProcessEnv = process.env): SageMakerRolloutEnv {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ValidationError(
      `deploy function environment: ${issue?.path.join('.') ?? '?'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  const e = parsed.data;
  return {
    endpointName: e.KILN_ENDPOINT_NAME,
    variantName: e.KILN_ENDPOINT_VARIANT,
    image: e.KILN_INFERENCE_IMAGE,
    roleArn: e.KILN_INFERENCE_ROLE_ARN,
    alarms: e.KILN_ROLLBACK_ALARMS.split(',')
      .map((name) => name.trim())
      .filter(Boolean),
    canaryPercent: e.KILN_CANARY_PERCENT,
    bakeSeconds: e.KILN_CANARY_BAKE_SECONDS,
    ...(e.KILN_ENDPOINT_MODEL ? { model: e.KILN_ENDPOINT_MODEL } : {}),
  };
}

/** Collaborators of {@link handleDeployEvent}. */
export interface DeployDeps {
  store: ObjectStore;
  events?: EventPublisher;
  sagemaker: Pick<SageMakerClient, 'send'>;
  env: SageMakerRolloutEnv;
  now?: () => Date;
}

/** What the deploy function did with one event. */
export interface DeployResult {
  action: 'ignored' | 'not-started' | 'rollout-started' | 'promoted' | 'rolled-back' | 'in-progress';
  detail: string;
  model?: string;
  version?: number;
  recordKey?: string;
}

/** SageMaker's resource names: letters, digits and hyphens, at most 63. */
export function sageMakerName(model: string, version: number, now: Date): string {
  const stamp = now
    .toISOString()
    .replace(/[-:TZ.]/g, '')
    .slice(0, 14);
  return `kiln-${model.replace(/_/g, '-').slice(0, 30)}-v${version}-${stamp}`.replace(/-+/g, '-');
}

/** The version a configuration named by {@link sageMakerName} serves, if it is one of ours. */
export function versionOfName(name: string, model: string): number | undefined {
  const prefix = `kiln-${model.replace(/_/g, '-').slice(0, 30)}-v`.replace(/-+/g, '-');
  if (!name.startsWith(prefix)) return undefined;
  const match = /^(\d+)-/.exec(name.slice(prefix.length));
  return match ? Number(match[1]) : undefined;
}

const AliasMovedSchema = z.looseObject({
  source: z.literal('kiln.registry'),
  detail: z.looseObject({
    model: z.string(),
    alias: z.string(),
    version: z.number().int().positive().nullable(),
  }),
});

/**
 * The model-update Lambda: `AliasMoved` (challenger → canary or shadow; champion → blue/green to it) and
 * SageMaker endpoint state changes (the update finished → promote; rolled back → archive the challenger).
 */
export async function handleDeployEvent(event: unknown, deps: DeployDeps): Promise<DeployResult> {
  const record = (event ?? {}) as Record<string, unknown>;
  const detailType = record['detail-type'] ?? record.detailType;
  if (record.source === 'aws.sagemaker') return reconcileEndpoint(deps);
  if (record.source === 'kiln.registry' && detailType === EventTypes.aliasMoved) {
    const parsed = AliasMovedSchema.safeParse(record);
    if (!parsed.success) return { action: 'ignored', detail: 'AliasMoved with an invalid detail' };
    const { model, alias, version } = parsed.data.detail;
    if (version === null) return { action: 'ignored', detail: `${model}: alias ${alias} removed` };
    if (deps.env.model !== undefined && deps.env.model !== model) {
      return { action: 'ignored', detail: `the endpoint serves ${deps.env.model}, not ${model}` };
    }
    if (alias === 'challenger') return rolloutChallenger(deps, model, version);
    if (alias === 'champion') return deployChampion(deps, model, version);
    return { action: 'ignored', detail: `alias ${alias} is not rolled out` };
  }
  return {
    action: 'ignored',
    detail: `${String(record.source)} ${String(detailType)} is not a deployment event`,
  };
}

async function rolloutChallenger(deps: DeployDeps, model: string, version: number): Promise<DeployResult> {
  const registry = new ModelRegistry(deps.store, deps.events ?? discardEvents);
  const now = (deps.now ?? (() => new Date()))();
  const eligibility = await rolloutEligibility(deps.store, registry, model, version);
  if (!eligibility.eligible) {
    const recordKey = await writeDeploymentRecord(deps.store, {
      kind: 'kiln.rollout',
      model,
      challenger: version,
      champion: eligibility.champion,
      mode: 'canary',
      host: 'sagemaker',
      status: 'not-started',
      reasons: [eligibility.reason],
      settings: null,
      startedAt: now.toISOString(),
      finishedAt: now.toISOString(),
    });
    return { action: 'not-started', detail: eligibility.reason, model, version, recordKey };
  }
  if (eligibility.champion === null || eligibility.settings.mode === 'direct') {
    // Nothing to canary against (or a direct rollout): promote; the champion's AliasMoved deploys it.
    await registry.promote(model, version, ROLLOUT_ACTOR, 'direct rollout: the gate and the policy allow it');
    return { action: 'promoted', detail: `${model}@${version} promoted directly`, model, version };
  }
  return startEndpointRollout(deps, registry, eligibility.record, {
    kind: 'challenger',
    mode: eligibility.settings.mode,
    champion: eligibility.champion,
    settings: eligibility.settings,
    now,
  });
}

async function deployChampion(deps: DeployDeps, model: string, version: number): Promise<DeployResult> {
  const registry = new ModelRegistry(deps.store, deps.events ?? discardEvents);
  const described = await deps.sagemaker.send(
    new DescribeEndpointCommand({ EndpointName: deps.env.endpointName }),
  );
  const serving = described.EndpointConfigName
    ? versionOfName(described.EndpointConfigName, model)
    : undefined;
  if (serving === version) {
    return { action: 'ignored', detail: `the endpoint already serves ${model}@${version}`, model, version };
  }
  const active = await readActive(deps);
  if (active && active.model === model && active.challenger === version && active.status === 'baking') {
    return { action: 'in-progress', detail: `${model}@${version} is already rolling out`, model, version };
  }
  const now = (deps.now ?? (() => new Date()))();
  return startEndpointRollout(deps, registry, await registry.getVersion(model, version), {
    kind: 'champion',
    mode: 'canary',
    champion: serving ?? null,
    settings: null,
    now,
  });
}

async function startEndpointRollout(
  deps: DeployDeps,
  registry: ModelRegistry,
  record: VersionRecord,
  options: {
    kind: 'challenger' | 'champion';
    mode: 'canary' | 'shadow';
    champion: number | null;
    settings: RolloutSettings | null;
    now: Date;
  },
): Promise<DeployResult> {
  const { env, sagemaker } = deps;
  const { model, version } = record;
  const endpoint = await sagemaker.send(new DescribeEndpointCommand({ EndpointName: env.endpointName }));
  const active = await readActive(deps);
  const inFlight = active !== undefined && (active.status === 'baking' || active.status === 'shadowing');
  if (inFlight && active.model === model && active.challenger === version) {
    // EventBridge delivers at least once: the same AliasMoved again is the rollout already under way.
    return { action: 'in-progress', detail: `${model}@${version} is already rolling out`, model, version };
  }
  if (endpoint.EndpointStatus !== 'InService' || inFlight) {
    const reason =
      endpoint.EndpointStatus !== 'InService'
        ? `endpoint ${env.endpointName} is ${endpoint.EndpointStatus ?? 'unknown'}, not InService: one update at a time`
        : `${active?.model}@${active?.challenger} is still rolling out on ${env.endpointName}`;
    const recordKey = await writeDeploymentRecord(deps.store, {
      kind: 'kiln.rollout',
      model,
      challenger: version,
      champion: options.champion,
      mode: options.mode,
      host: 'sagemaker',
      status: 'not-started',
      reasons: [reason],
      settings: options.settings,
      startedAt: options.now.toISOString(),
      finishedAt: options.now.toISOString(),
    });
    return { action: 'not-started', detail: reason, model, version, recordKey };
  }
  const previousConfigName = endpoint.EndpointConfigName ?? '';
  const previous = await sagemaker.send(
    new DescribeEndpointConfigCommand({ EndpointConfigName: previousConfigName }),
  );
  const current =
    previous.ProductionVariants?.find((variant) => variant.VariantName === env.variantName) ??
    previous.ProductionVariants?.[0];
  if (!current) throw new NotFoundError(`endpoint config ${previousConfigName} has no production variant`);

  const archiveKey = await packageModelArchive(deps.store, registry, record);
  const name = sageMakerName(model, version, options.now);
  const modelDataUrl = lakeUri(deps.store, archiveKey);
  await sagemaker.send(new CreateModelCommand(createModelInput(env, name, modelDataUrl, model, version)));
  await sagemaker.send(
    new CreateEndpointConfigCommand(
      endpointConfigInput(env, name, current, previous, options.mode, options.settings?.share ?? 0.1),
    ),
  );
  await sagemaker.send(
    new UpdateEndpointCommand({
      EndpointName: env.endpointName,
      EndpointConfigName: name,
      DeploymentConfig: deploymentConfig(env, options.mode),
    }),
  );
  const deployment: DeploymentRecord = {
    kind: 'kiln.rollout',
    model,
    challenger: version,
    champion: options.champion,
    mode: options.mode,
    host: 'sagemaker',
    status: options.mode === 'shadow' ? 'shadowing' : 'baking',
    reasons: [],
    settings: options.settings,
    startedAt: options.now.toISOString(),
    finishedAt: null,
    sagemaker: {
      endpointName: env.endpointName,
      modelName: name,
      endpointConfigName: name,
      previousEndpointConfigName: previousConfigName,
      modelDataUrl,
      alarms: env.alarms,
      kind: options.kind,
    },
  };
  const recordKey = await writeDeploymentRecord(deps.store, deployment);
  await deps.store.put(deploymentKeys.endpoint(env.endpointName), toJsonBody(deployment), {
    contentType: 'application/json',
  });
  if (options.champion !== null) {
    await (deps.events ?? discardEvents).publish([
      rolloutStartedEvent({
        model,
        champion: options.champion,
        challenger: version,
        mode: options.mode,
        share: options.mode === 'shadow' ? (options.settings?.share ?? 0.1) : env.canaryPercent / 100,
        host: 'sagemaker',
        recordKey,
      }),
    ]);
  }
  return {
    action: 'rollout-started',
    detail: `${model}@${version}: ${options.mode} on ${env.endpointName} (${name})`,
    model,
    version,
    recordKey,
  };
}

/** CreateModel: the inference image on the version's archive, labelled with model and version. */
export function createModelInput(
  env: SageMakerRolloutEnv,
  name: string,
  modelDataUrl: string,
  model: string,
  version: number,
): CreateModelCommandInput {
  return {
    ModelName: name,
    ExecutionRoleArn: env.roleArn,
    PrimaryContainer: {
      Image: env.image,
      ModelDataUrl: modelDataUrl,
      Environment: {
        SAGEMAKER_BIND_TO_PORT: '8080',
        KILN_MODEL_NAME: model,
        KILN_MODEL_VERSION: String(version),
      },
    },
  };
}

/**
 * CreateEndpointConfig. Canary: one production variant with the endpoint's variant name (blue/green needs
 * it unchanged), instance type and count copied from the current configuration. Shadow: the current
 * variant keeps answering and the challenger is a shadow variant that receives `share` of the requests
 * (SageMaker shadow variants; their responses are captured, never returned).
 */
export function endpointConfigInput(
  env: SageMakerRolloutEnv,
  name: string,
  current: ProductionVariant,
  previous: { DataCaptureConfig?: CreateEndpointConfigCommandInput['DataCaptureConfig']; KmsKeyId?: string },
  mode: 'canary' | 'shadow',
  share: number,
): CreateEndpointConfigCommandInput {
  const sized = {
    InstanceType: current.InstanceType,
    InitialInstanceCount: current.InitialInstanceCount ?? 1,
  };
  const common = {
    EndpointConfigName: name,
    ...(previous.DataCaptureConfig ? { DataCaptureConfig: previous.DataCaptureConfig } : {}),
    ...(previous.KmsKeyId ? { KmsKeyId: previous.KmsKeyId } : {}),
  };
  if (mode === 'shadow') {
    return {
      ...common,
      ProductionVariants: [
        { VariantName: env.variantName, ModelName: current.ModelName, ...sized, InitialVariantWeight: 1 },
      ],
      ShadowProductionVariants: [
        { VariantName: 'Shadow', ModelName: name, ...sized, InitialVariantWeight: share },
      ],
    };
  }
  return {
    ...common,
    ProductionVariants: [
      { VariantName: env.variantName, ModelName: name, ...sized, InitialVariantWeight: 1 },
    ],
  };
}

/**
 * UpdateEndpoint's deployment guardrails: blue/green with CANARY routing (the canary share of capacity,
 * baked for `bakeSeconds`), auto-rollback on every alarm. A shadow update shifts all at once (the
 * production variant does not change) but keeps the same alarms.
 */
export function deploymentConfig(env: SageMakerRolloutEnv, mode: 'canary' | 'shadow'): DeploymentConfig {
  return {
    BlueGreenUpdatePolicy: {
      TrafficRoutingConfiguration:
        mode === 'canary'
          ? {
              Type: 'CANARY',
              CanarySize: { Type: 'CAPACITY_PERCENT', Value: env.canaryPercent },
              WaitIntervalInSeconds: env.bakeSeconds,
            }
          : { Type: 'ALL_AT_ONCE', WaitIntervalInSeconds: 0 },
      TerminationWaitInSeconds: 600,
      MaximumExecutionTimeoutInSeconds: Math.max(600, env.bakeSeconds * 3 + 1800),
    },
    ...(env.alarms.length > 0
      ? { AutoRollbackConfiguration: { Alarms: env.alarms.map((AlarmName) => ({ AlarmName })) } }
      : {}),
  };
}

async function readActive(deps: DeployDeps): Promise<DeploymentRecord | undefined> {
  return readJsonIfExists<DeploymentRecord>(deps.store, deploymentKeys.endpoint(deps.env.endpointName));
}

/**
 * A SageMaker state change: look at the endpoint itself (events can repeat and arrive out of order) and
 * settle the rollout in flight — on the new configuration and InService: promote (a challenger) or
 * record the deployment (a champion); back on the previous configuration: the alarms rolled it back, so
 * archive the challenger (or roll the registry's champion back to what the endpoint serves).
 */
async function reconcileEndpoint(deps: DeployDeps): Promise<DeployResult> {
  const active = await readActive(deps);
  if (!active?.sagemaker || (active.status !== 'baking' && active.status !== 'shadowing')) {
    return { action: 'ignored', detail: 'no rollout in flight on this endpoint' };
  }
  const { model, challenger } = active;
  const endpoint = await deps.sagemaker.send(
    new DescribeEndpointCommand({ EndpointName: deps.env.endpointName }),
  );
  const status = endpoint.EndpointStatus ?? 'Unknown';
  if (status !== 'InService' && status !== 'Failed' && status !== 'UpdateRollbackFailed') {
    return { action: 'in-progress', detail: `endpoint is ${status}`, model, version: challenger };
  }
  const now = (deps.now ?? (() => new Date()))();
  const registry = new ModelRegistry(deps.store, deps.events ?? discardEvents);
  const onNew = endpoint.EndpointConfigName === active.sagemaker.endpointConfigName && status === 'InService';
  let outcome: DeploymentRecord['status'];
  const reasons: string[] = [];
  if (onNew && active.status === 'shadowing') {
    return {
      action: 'in-progress',
      detail: `${model}@${challenger} is shadowing`,
      model,
      version: challenger,
    };
  }
  if (onNew) {
    outcome = 'promoted';
    if (active.sagemaker.kind === 'challenger') {
      try {
        await registry.promote(
          model,
          challenger,
          ROLLOUT_ACTOR,
          `canary on ${deps.env.endpointName} passed: no rollback alarm fired`,
        );
        reasons.push('the canary baked without a rollback alarm; promoted');
      } catch (error) {
        if (!(error instanceof PolicyError)) throw error;
        // The policy changed its mind (say, a newer champion): put the endpoint back on what it served.
        outcome = 'rolled-back';
        reasons.push(`promotion refused: ${describeError(error)}`);
        await deps.sagemaker.send(
          new UpdateEndpointCommand({
            EndpointName: deps.env.endpointName,
            EndpointConfigName: active.sagemaker.previousEndpointConfigName,
            DeploymentConfig: deploymentConfig(deps.env, 'canary'),
          }),
        );
      }
    } else reasons.push('the endpoint serves the champion');
    if (outcome === 'promoted') {
      // The archive the stack's own endpoint config names, so a re-created endpoint serves the champion.
      const archive = await deps.store.get(lake.modelFile(model, challenger, 'model.tar.gz'));
      await deps.store.put(CHAMPION_ARCHIVE_KEY, archive, { contentType: 'application/gzip' });
    }
  } else {
    outcome = 'rolled-back';
    reasons.push(
      `SageMaker rolled the update back (${status}${endpoint.FailureReason ? `: ${endpoint.FailureReason}` : ''}); rollback alarms: ${active.sagemaker.alarms.join(', ') || 'none'}`,
    );
    if (active.sagemaker.kind === 'challenger') {
      await registry
        .archive(model, challenger, ROLLOUT_ACTOR, `canary rolled back on ${deps.env.endpointName}`)
        .catch((error: unknown) => reasons.push(`archive: ${describeError(error)}`));
    } else {
      await registry
        .rollback(model, {
          actor: ROLLOUT_ACTOR,
          reason: `the endpoint rolled ${model}@${challenger} back`,
          from: challenger,
        })
        .catch((error: unknown) => reasons.push(`registry rollback: ${describeError(error)}`));
    }
  }
  const finished: DeploymentRecord = { ...active, status: outcome, reasons, finishedAt: now.toISOString() };
  const recordKey = await writeDeploymentRecord(deps.store, finished);
  await deps.store.put(deploymentKeys.endpoint(deps.env.endpointName), toJsonBody(finished));
  if (active.champion !== null && active.mode !== 'direct') {
    await (deps.events ?? discardEvents).publish([
      rolloutCompletedEvent({
        model,
        champion: active.champion,
        challenger,
        mode: active.mode,
        share: deps.env.canaryPercent / 100,
        host: 'sagemaker',
        recordKey,
        decision: outcome === 'promoted' ? 'promoted' : 'rolled-back',
        reasons,
      }),
    ]);
  }
  return {
    action: outcome === 'promoted' ? 'promoted' : 'rolled-back',
    detail: reasons.join('; '),
    model,
    version: challenger,
    recordKey,
  };
}
