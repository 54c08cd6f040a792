import { describeError, PolicyError } from '../core/errors.ts';
import { discardEvents, type EventPublisher } from '../core/events.ts';
import type { ColumnProfile } from '../core/profile.ts';
import { loadBaseline, runMonitor } from '../monitoring/monitor.ts';
import { computeQuality, hasLabels } from '../monitoring/quality.ts';
import type { ModelRegistry } from '../registry/registry.ts';
import { CanaryRouter, type RouterSnapshot } from '../serving/canary.ts';
import type { Deployment } from '../serving/model-host.ts';
import type { InferenceServer } from '../serving/server.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { RolloutSettings } from './config.ts';
import { type DeploymentRecord, ROLLOUT_ACTOR, rolloutEligibility, writeDeploymentRecord } from './deploy.ts';
import { rolloutCompletedEvent, rolloutStartedEvent } from './events.ts';
import {
  type ArmQuality,
  decideRollout,
  type RolloutCriteria,
  type RolloutDecision,
  rolloutCriteria,
} from './rollout.ts';

/**
 * The local server's rollout: what SageMaker's deployment guardrails do on AWS, done by the Kiln server
 * itself. The challenger is loaded next to the champion, a canary router sends it a share of the traffic
 * (or a shadow router mirrors the traffic to it while the champion answers), both versions' requests are
 * captured, and once the challenger has seen enough requests (or the bake time is up) the two are compared
 * (lib/updates/rollout.ts): promote through the registry's policy, or roll back (archive the challenger).
 */

/** Collaborators of {@link startLocalRollout}. */
export interface LocalRolloutContext {
  store: ObjectStore;
  registry: ModelRegistry;
  /** The server the canary runs on; without one the challenger waits (recorded as not started). */
  server?: InferenceServer;
  events?: EventPublisher;
}

/** Options of {@link startLocalRollout}. */
export interface LocalRolloutOptions {
  /** Overrides of the model's rollout settings (training config). */
  settings?: Partial<RolloutSettings>;
  /** Overrides of the decision thresholds. */
  criteria?: Partial<RolloutCriteria>;
  /**
   * Called once the bake ended and the traffic is captured, before the comparison: the place where late
   * labels for the bake's traffic can arrive (the drill ingests them here).
   */
  beforeDecision?: (bake: {
    model: string;
    champion: number;
    challenger: number;
    since: string;
  }) => Promise<void>;
  now?: () => Date;
}

/** A finished (or refused) rollout: the record written under runs/deployments/ plus the decision. */
export interface RolloutOutcome extends DeploymentRecord {
  recordKey: string;
  decision: RolloutDecision | null;
}

/** A rollout in progress. */
export interface LocalRollout {
  model: string;
  challenger: number;
  /** Settles with the outcome; never rejects (failures are rollbacks with the reason). */
  done: Promise<RolloutOutcome>;
  /** The router while baking (undefined when the rollout did not start). */
  router: CanaryRouter | undefined;
  /** End the bake now and decide on the traffic seen so far. */
  stop(): void;
}

/** Starts a canary or shadow of `model@version` on the local server (or records why it cannot). */
export async function startLocalRollout(
  ctx: LocalRolloutContext,
  model: string,
  version: number,
  options: LocalRolloutOptions = {},
): Promise<LocalRollout> {
  const clock = options.now ?? (() => new Date());
  const events = ctx.events ?? discardEvents;
  const criteria = rolloutCriteria(options.criteria ?? {});
  const startedAt = clock().toISOString();
  const finish = async (
    record: Omit<DeploymentRecord, 'kind' | 'model' | 'challenger' | 'host' | 'startedAt' | 'finishedAt'>,
    decision: RolloutDecision | null = null,
  ): Promise<RolloutOutcome> => {
    const full: DeploymentRecord = {
      kind: 'kiln.rollout',
      model,
      challenger: version,
      host: 'local',
      startedAt,
      finishedAt: clock().toISOString(),
      ...record,
    };
    const recordKey = await writeDeploymentRecord(ctx.store, full);
    return { ...full, recordKey, decision };
  };
  const settled = (outcome: Promise<RolloutOutcome>): LocalRollout => ({
    model,
    challenger: version,
    done: outcome,
    router: undefined,
    stop: () => undefined,
  });

  const eligibility = await rolloutEligibility(ctx.store, ctx.registry, model, version);
  if (!eligibility.eligible) {
    return settled(
      finish({
        champion: eligibility.champion,
        mode: 'canary',
        status: 'not-started',
        reasons: [eligibility.reason],
        settings: null,
      }),
    );
  }
  const settings: RolloutSettings = { ...eligibility.settings, ...options.settings };
  const champion = eligibility.champion;
  if (champion === null || settings.mode === 'direct') {
    return settled(
      (async () => {
        await ctx.registry.promote(
          model,
          version,
          ROLLOUT_ACTOR,
          'direct rollout: the gate and the policy allow it',
        );
        await ctx.server?.reload(model).catch(() => undefined);
        return finish({
          champion,
          mode: 'direct',
          status: 'promoted',
          reasons: ['direct rollout: promoted without a canary'],
          settings,
        });
      })(),
    );
  }
  const mode = settings.mode;
  const server = ctx.server;
  const serving = server?.models.find(model);
  if (!server || !serving) {
    return settled(
      finish({
        champion,
        mode,
        status: 'not-started',
        reasons: [`the local server does not serve ${model}; start \`kiln serve\` and roll out again`],
        settings,
      }),
    );
  }
  let championDeployment: Deployment = serving;
  if (serving.version !== String(champion)) {
    await server.reload(model, String(champion));
    championDeployment = server.models.get(model);
  }
  let challengerDeployment: Deployment;
  try {
    challengerDeployment = await server.models.loadDetached(model, String(version));
  } catch (error) {
    const reason = `the challenger cannot be served: ${describeError(error)}`;
    await ctx.registry
      .archive(model, version, ROLLOUT_ACTOR, `rollout failed: ${reason}`)
      .catch(() => undefined);
    return settled(finish({ champion, mode, status: 'rolled-back', reasons: [reason], settings }));
  }
  const router = new CanaryRouter({
    champion: championDeployment,
    challenger: challengerDeployment,
    mode,
    share: settings.share,
    bakeRequests: settings.bakeRequests,
    ...(server.capture ? { capture: server.capture } : {}),
  });
  server.setRouter(model, router);
  const baking: DeploymentRecord = {
    kind: 'kiln.rollout',
    model,
    challenger: version,
    champion,
    mode,
    host: 'local',
    status: mode === 'shadow' ? 'shadowing' : 'baking',
    reasons: [],
    settings,
    startedAt,
    finishedAt: null,
  };
  const recordKey = await writeDeploymentRecord(ctx.store, baking);
  await events.publish([
    rolloutStartedEvent({
      model,
      champion,
      challenger: version,
      mode,
      share: settings.share,
      host: 'local',
      recordKey,
    }),
  ]);

  let stopNow: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => {
    stopNow = resolve;
  });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, settings.maxBakeMs);
    timer.unref();
  });
  const done = (async (): Promise<RolloutOutcome> => {
    await Promise.race([router.baked, timedOut, stopped]);
    if (timer) clearTimeout(timer);
    server.setRouter(model, undefined);
    await router.detach();
    await server.capture?.flush();
    const snapshot = router.snapshot();
    if (options.beforeDecision) {
      await options.beforeDecision({ model, champion, challenger: version, since: startedAt });
    }
    let decision: RolloutDecision;
    const evaluation: Record<string, unknown> = { traffic: summarize(snapshot) };
    try {
      const profiles = {
        champion: await predictionProfile(ctx.registry, model, champion),
        challenger: await predictionProfile(ctx.registry, model, version),
      };
      const quality = await labelledQuality(ctx.store, ctx.registry, model, champion, version, startedAt);
      evaluation.quality = quality;
      decision = decideRollout({ snapshot, profiles, quality, criteria });
      evaluation.challengerDrift = await challengerDrift(ctx.store, ctx.registry, model, version, startedAt);
    } catch (error) {
      decision = {
        decision: 'rollback',
        checks: [],
        reasons: [`the rollout could not be evaluated: ${describeError(error)}`],
        drift: { champion: null, challenger: null },
        predictions: null,
      };
    }
    evaluation.checks = decision.checks;
    evaluation.drift = decision.drift;
    evaluation.predictions = decision.predictions;
    let status: DeploymentRecord['status'] = decision.decision === 'promote' ? 'promoted' : 'rolled-back';
    const reasons = [...decision.reasons];
    if (status === 'promoted') {
      try {
        await ctx.registry.promote(
          model,
          version,
          ROLLOUT_ACTOR,
          `${mode} passed on ${snapshot.challenger.requests} requests: ${decision.checks.map((c) => `${c.name} ${c.status}`).join(', ')}`,
        );
        reasons.push(`${mode} passed every check; promoted to champion`);
        await server.reload(model).catch((error: unknown) => reasons.push(`reload: ${describeError(error)}`));
      } catch (error) {
        if (!(error instanceof PolicyError)) throw error;
        status = 'rolled-back';
        reasons.push(`promotion refused: ${describeError(error)}`);
      }
    }
    if (status === 'rolled-back') {
      await ctx.registry
        .archive(model, version, ROLLOUT_ACTOR, `${mode} rolled back: ${reasons.join('; ').slice(0, 900)}`)
        .catch((error: unknown) => reasons.push(`archive: ${describeError(error)}`));
    }
    await challengerDeployment.retire();
    const outcome = await finish({ champion, mode, status, reasons, settings, evaluation }, decision);
    await events.publish([
      rolloutCompletedEvent({
        model,
        champion,
        challenger: version,
        mode,
        share: settings.share,
        host: 'local',
        recordKey: outcome.recordKey,
        decision: status === 'promoted' ? 'promoted' : 'rolled-back',
        reasons,
      }),
    ]);
    return outcome;
  })().catch(async (error: unknown) => {
    // Never leave a router attached or a rollout unrecorded, whatever failed.
    server.setRouter(model, undefined);
    await router.detach();
    await challengerDeployment.retire().catch(() => undefined);
    return finish({
      champion,
      mode,
      status: 'rolled-back',
      reasons: [`the rollout failed: ${describeError(error)}`],
      settings,
    });
  });
  return { model, challenger: version, done, router, stop: () => stopNow() };
}

function summarize(snapshot: RouterSnapshot) {
  const arm = (a: RouterSnapshot['champion']) => ({
    version: a.version,
    requests: a.requests,
    rows: a.rows,
    errors: a.errors,
    errorRate: a.errorRate,
    latencyMs: {
      p50: a.latency.p50 === null ? null : a.latency.p50 * 1000,
      p95: a.latency.p95 === null ? null : a.latency.p95 * 1000,
    },
  });
  return {
    mode: snapshot.mode,
    share: snapshot.share,
    champion: arm(snapshot.champion),
    challenger: arm(snapshot.challenger),
    agreement: snapshot.agreement,
    shadowDropped: snapshot.shadowDropped,
  };
}

async function predictionProfile(
  registry: ModelRegistry,
  model: string,
  version: number,
): Promise<ColumnProfile | null> {
  try {
    const { baseline } = await loadBaseline(registry, await registry.getVersion(model, version));
    return baseline.prediction;
  } catch {
    return null;
  }
}

/** Each version's quality on the labelled part of the rollout's traffic (null without labels). */
async function labelledQuality(
  store: ObjectStore,
  registry: ModelRegistry,
  model: string,
  champion: number,
  challenger: number,
  since: string,
): Promise<{ champion: ArmQuality; challenger: ArmQuality } | null> {
  if (!(await hasLabels(store, model))) return null;
  const report = await computeQuality(store, { model, since, minLabels: 1 }, { write: false, registry });
  const arm = (version: number): ArmQuality => {
    const found = report.versions.find((entry) => entry.version === version);
    return {
      metric: found?.metric ?? 'accuracy',
      value: found?.value ?? null,
      labelled: found?.labelled ?? 0,
    };
  };
  return { champion: arm(champion), challenger: arm(challenger) };
}

/** The challenger's own drift report over the rollout's traffic (informational; written to monitoring/). */
async function challengerDrift(
  store: ObjectStore,
  registry: ModelRegistry,
  model: string,
  version: number,
  since: string,
) {
  try {
    const report = await runMonitor(store, { model, version, since }, { registry });
    return { status: report.status, summary: report.summary, reportKey: report.keys.json };
  } catch (error) {
    return { status: 'unavailable', summary: describeError(error), reportKey: null };
  }
}
