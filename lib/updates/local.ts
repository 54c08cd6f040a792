import { describeError } from '../core/errors.ts';
import { EventTypes, type KilnEvent } from '../core/events.ts';
import type { LocalPlatform } from '../local/platform.ts';
import type { InferenceServer } from '../serving/server.ts';
import {
  type LocalRollout,
  type LocalRolloutOptions,
  type RolloutOutcome,
  startLocalRollout,
} from './local-rollout.ts';
import { LocalStepFunctions, RETRAINING_START_AT } from './local-sfn.ts';
import { closeWindow, DEFAULT_WINDOW_MS, handleTriggerEvent, type TriggerResult } from './retraining.ts';

/**
 * The model-update loop on one machine: the same trigger, the same synthesized retraining state machine
 * and the same rollout decision as on AWS, wired to the in-process bus.
 *
 * - `Object Created` in raw/ starts the ETL (what the data lake's EventBridge rule does on AWS); one ETL per
 *   dataset at a time, and a landing during a run makes one more run afterwards.
 * - `EtlRunSucceeded`, `DriftDetected`, `QualityDropped` and an optional schedule go to the debouncing
 *   trigger (lib/updates/retraining.ts), which starts the retraining state machine through
 *   {@link LocalStepFunctions}: Step Functions' name rule included, so a burst is one execution.
 * - `AliasMoved` to a challenger starts a canary or shadow on the local server (lib/updates/local-rollout.ts).
 */

/** Options of {@link startLocalAutomation}. */
export interface LocalAutomationOptions {
  /** Debounce window of retraining. @default DEFAULT_WINDOW_MS */
  windowMs?: number;
  /** The server canaries and shadows run on; without it a gate-passing challenger is recorded as not started. */
  server?: InferenceServer;
  /** Overrides of rollout settings and decision criteria. */
  rollout?: LocalRolloutOptions;
  /** Publish a scheduled retraining check this often (ms). @default none */
  scheduleMs?: number;
  /** Start the ETL when raw data lands (the data lake rule's job on AWS). @default true */
  etlOnLanding?: boolean;
  now?: () => Date;
  /** One line per thing the automation does. */
  log?: (line: string) => void;
}

/** An ETL run the automation started. */
export interface AutomationEtlRun {
  dataset: string;
  status: 'running' | 'succeeded' | 'failed';
  result?: Record<string, unknown>;
  error?: string;
}

/** The running automation. */
export interface LocalAutomation {
  readonly sfn: LocalStepFunctions;
  /** What the trigger did with every event it saw. */
  readonly triggers: TriggerResult[];
  readonly etlRuns: AutomationEtlRun[];
  readonly rollouts: LocalRollout[];
  /** Errors of subscribers (a failed ETL, a trigger that threw), in order. */
  readonly errors: string[];
  /** Runs everything pending now: deliveries, landed data's ETL, and retraining windows (closed early). */
  flush(): Promise<void>;
  /** Waits for deliveries, ETL and running retraining (open windows keep waiting). */
  idle(): Promise<void>;
  /** Waits for every rollout started so far to decide. */
  settleRollouts(): Promise<RolloutOutcome[]>;
  /** Unsubscribes and stops timers; waits for work in progress (rollouts are stopped and decided). */
  stop(): Promise<void>;
}

/** Wires retraining and rollouts to the local platform's bus (see the module comment). */
export function startLocalAutomation(
  platform: LocalPlatform,
  options: LocalAutomationOptions = {},
): LocalAutomation {
  const log = options.log ?? (() => undefined);
  const clock = options.now ?? (() => new Date());
  const windowMs = options.windowMs ?? DEFAULT_WINDOW_MS;
  const triggers: TriggerResult[] = [];
  const etlRuns: AutomationEtlRun[] = [];
  const rollouts: LocalRollout[] = [];
  const errors: string[] = [];
  const work = new Set<Promise<unknown>>();
  const track = <T>(promise: Promise<T>): Promise<T> => {
    work.add(promise);
    void promise.finally(() => work.delete(promise)).catch(() => undefined);
    return promise;
  };
  const fail = (what: string, error: unknown) => {
    const line = `${what}: ${describeError(error)}`;
    errors.push(line);
    log(`error ${line}`);
  };

  const sfn = new LocalStepFunctions({
    now: clock,
    run: async (input) => {
      const pipelines = await platform.pipelines();
      log(`retrain ${input.model}: window ${input.windowId} closed; running the retraining state machine`);
      return pipelines.run('retraining', RETRAINING_START_AT, { ...input });
    },
    closeWindow: (input, at) => closeWindow(platform.store, input.model, input.windowId, at),
    onSettled: (execution) => {
      if (execution.status === 'failed') fail(`retraining ${execution.name}`, execution.error);
    },
  });

  // ---- landing → ETL (single flight per dataset) ----
  const etlState = new Map<string, { running: Promise<void>; again: boolean }>();
  const runEtl = (dataset: string): Promise<void> => {
    const state = etlState.get(dataset);
    if (state) {
      state.again = true;
      return state.running;
    }
    const entry = { running: Promise.resolve(), again: false };
    entry.running = (async () => {
      do {
        entry.again = false;
        const run: AutomationEtlRun = { dataset, status: 'running' };
        etlRuns.push(run);
        log(`etl ${dataset}: raw data landed; running the ETL state machine (the data lake rule on AWS)`);
        try {
          const output = await platform.etl(dataset);
          run.result = (output.result ?? output) as Record<string, unknown>;
          run.status = 'succeeded';
        } catch (error) {
          run.status = 'failed';
          run.error = describeError(error);
          fail(`etl ${dataset}`, error);
        }
      } while (entry.again);
      etlState.delete(dataset);
    })();
    etlState.set(dataset, entry);
    return track(entry.running);
  };

  const trigger = async (event: KilnEvent | Record<string, unknown>) => {
    try {
      const result = await handleTriggerEvent(event, {
        store: platform.store,
        sfn,
        stateMachineArn: 'local:retraining',
        windowMs,
        now: clock,
      });
      triggers.push(result);
      for (const run of result.runs) {
        log(
          `trigger ${result.cause?.detailType} → ${run.model}: ${run.opened ? 'opened' : 'joined'} the retraining window of run ${run.executionName}`,
        );
      }
    } catch (error) {
      fail('retraining trigger', error);
    }
  };

  const unsubscribe = [
    platform.bus.subscribe({ detailType: [EventTypes.rawObjectCreated] }, (event) => {
      if (options.etlOnLanding === false) return;
      const key = (event.detail.object as { key?: unknown } | undefined)?.key;
      const dataset = typeof key === 'string' ? /^raw\/([^/]+)\//.exec(key)?.[1] : undefined;
      if (dataset) void runEtl(dataset);
    }),
    platform.bus.subscribe(
      {
        source: ['kiln.etl', 'kiln.monitoring'],
        detailType: [EventTypes.etlRunSucceeded, EventTypes.driftDetected, EventTypes.qualityDropped],
      },
      (event) => track(trigger(event)),
    ),
    platform.bus.subscribe({ source: ['kiln.registry'], detailType: [EventTypes.aliasMoved] }, (event) => {
      const { model, alias, version } = event.detail as {
        model?: unknown;
        alias?: unknown;
        version?: unknown;
      };
      if (alias !== 'challenger' || typeof model !== 'string' || typeof version !== 'number') return;
      const server = options.server;
      return track(
        (async () => {
          if (!server) {
            log(`rollout ${model}@${version}: no local server, the challenger waits`);
          }
          const rollout = await startLocalRollout(
            {
              store: platform.store,
              registry: platform.registry,
              ...(server ? { server } : {}),
              events: platform.bus,
            },
            model,
            version,
            options.rollout ?? {},
          );
          rollouts.push(rollout);
          log(
            `rollout ${model}@${version}: ${rollout.router ? `${rollout.router.mode} started` : 'not started'}`,
          );
        })().catch((error: unknown) => fail(`rollout ${model}@${version}`, error)),
      );
    }),
  ];

  let schedule: NodeJS.Timeout | undefined;
  if (options.scheduleMs !== undefined && options.scheduleMs > 0) {
    schedule = setInterval(() => {
      const time = clock().toISOString();
      void track(
        trigger({
          id: `schedule-${time}`,
          source: 'kiln.schedule',
          'detail-type': 'Scheduled Event',
          time,
          detail: {},
        }),
      );
    }, options.scheduleMs);
    schedule.unref();
  }

  const settle = async () => {
    for (;;) {
      await platform.bus.drain();
      if (work.size === 0) break;
      await Promise.allSettled([...work]);
    }
  };

  return {
    sfn,
    triggers,
    etlRuns,
    rollouts,
    errors,
    async flush() {
      await settle();
      for (;;) {
        await sfn.flush();
        await settle();
        if (!sfn.list().some((execution) => execution.status === 'waiting')) break;
      }
    },
    async idle() {
      await settle();
      await sfn.idle();
      await settle();
    },
    async settleRollouts() {
      await settle();
      return Promise.all(rollouts.map((rollout) => rollout.done));
    },
    async stop() {
      for (const off of unsubscribe) off();
      if (schedule) clearInterval(schedule);
      sfn.cancelWaiting();
      await settle();
      await sfn.idle();
      for (const rollout of rollouts) rollout.stop();
      await Promise.all(rollouts.map((rollout) => rollout.done));
    },
  };
}
