import { describe, expect, it } from 'vitest';
import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { driftDetectedEvent, qualityDroppedEvent } from '../../lib/monitoring/events.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { lake } from '../../lib/store/layout.ts';
import { toJsonBody } from '../../lib/store/object-store.ts';
import {
  readTrainingConfig,
  recordTrainingConfig,
  trainingConfigKey,
  updateTrainingConfig,
} from '../../lib/updates/config.ts';
import { LocalStepFunctions } from '../../lib/updates/local-sfn.ts';
import {
  classifyEvent,
  handleTriggerEvent,
  planRetraining,
  type RetrainingInput,
  recordRetraining,
  triggerKeys,
  windowMsOf,
} from '../../lib/updates/retraining.ts';
import {
  ExecutionAlreadyExistsError,
  type StartExecutionRequest,
  type StepFunctionsPort,
} from '../../lib/updates/sfn.ts';
import { AwsStepFunctions } from '../../lib/updates/sfn-aws.ts';
import { tempDir } from '../support/temp.ts';
import { registerChampion } from './updates-fixtures.ts';

const WINDOW = 60_000;
const T0 = Date.parse('2026-11-26T12:00:00.000Z');

/** Step Functions' naming rule, in memory: a name is one execution; repeats are joined or refused. */
class FakeStepFunctions implements StepFunctionsPort {
  readonly executions = new Map<string, { input: string; closed: boolean; starts: number }>();

  async startExecution(request: StartExecutionRequest) {
    const existing = this.executions.get(request.name);
    if (existing) {
      if (existing.closed || existing.input !== request.input)
        throw new ExecutionAlreadyExistsError(request.name);
      existing.starts++;
    } else this.executions.set(request.name, { input: request.input, closed: false, starts: 1 });
    return { executionArn: `arn:aws:states:::execution:retraining:${request.name}`, startDate: new Date(T0) };
  }
}

/** A clock the test moves by hand. */
function clock(start = T0) {
  let now = start;
  return { now: () => new Date(now), advance: (ms: number) => (now += ms) };
}

async function lakeWithConfigs(...configs: Array<{ model: string; dataset: string }>) {
  const store = new FileSystemStore(await tempDir('kiln-updates-'));
  for (const config of configs) {
    await recordTrainingConfig(store, {
      ...config,
      target: 'churned',
      algorithm: 'gbdt',
      hyperparameters: { max_iter: 20 },
      seed: 0,
      gateMargin: 0,
      version: 1,
      trainingJob: 'job-1',
    });
  }
  return store;
}

function drift(model = 'churn', n = 0): KilnEvent {
  const event = driftDetectedEvent({
    model,
    version: 1,
    generatedAt: new Date(T0 + n).toISOString(),
    since: null,
    until: null,
    requests: 100,
    rows: 500,
    driftedFeatures: ['x'],
    driftedFeatureCount: 1,
    scores: { x: 0.4 },
    predictionDrift: false,
    predictionPsi: null,
    reportKey: `monitoring/${model}/1/drift/r${n}.json`,
    htmlKey: `monitoring/${model}/1/drift/r${n}.html`,
  });
  return { ...event, time: new Date(T0 + n).toISOString() };
}

function etlSucceeded(dataset: string, version: string, created = true): KilnEvent {
  return {
    source: 'kiln.etl',
    detailType: 'EtlRunSucceeded',
    detail: { dataset, version, created, accepted: 100, read: 100, quarantined: 0 },
    time: new Date(T0).toISOString(),
  };
}

describe('event classification', () => {
  it('reads the publishers own shapes and says why anything else triggers nothing', () => {
    expect(classifyEvent(drift())).toMatchObject({ cause: 'drift', model: 'churn' });
    expect(classifyEvent(etlSucceeded('churn', 'v2'))).toMatchObject({ cause: 'data', dataset: 'churn' });
    // EventBridge delivers `detail-type`; a schedule rule sends its own event.
    expect(
      classifyEvent({ id: 'e1', source: 'aws.events', 'detail-type': 'Scheduled Event', detail: {} }),
    ).toMatchObject({ cause: 'schedule', eventId: 'e1' });
    expect(
      classifyEvent(
        qualityDroppedEvent({
          model: 'churn',
          version: 1,
          generatedAt: new Date(T0).toISOString(),
          since: null,
          until: null,
          metric: 'accuracy',
          value: 0.7,
          heldOut: 0.9,
          threshold: 0.81,
          bound: 0.75,
          labelled: 200,
          reportKey: 'monitoring/churn/quality/q.json',
        }),
      ),
    ).toMatchObject({ cause: 'quality', model: 'churn' });
    expect(classifyEvent(etlSucceeded('churn', 'v1', false))).toEqual({
      ignored: 'churn: the ETL created no new version',
    });
    expect(
      classifyEvent({ source: 'kiln.monitoring', detailType: 'DriftDetected', detail: { model: 1 } }),
    ).toEqual({
      ignored: expect.stringMatching(/^DriftDetected with an invalid detail: model/),
    });
    expect(classifyEvent('not an event')).toEqual({ ignored: expect.stringMatching(/^not an event/) });
    expect(classifyEvent({ source: 'kiln.registry', detailType: 'AliasMoved', detail: {} })).toEqual({
      ignored: 'kiln.registry AliasMoved does not trigger retraining',
    });
  });
});

describe('debounced trigger', () => {
  it('turns a burst of events into one run and records every event against it', async () => {
    const store = await lakeWithConfigs({ model: 'churn', dataset: 'churn' });
    const sfn = new FakeStepFunctions();
    const time = clock();
    const results = [];
    for (let i = 0; i < 25; i++) {
      results.push(
        await handleTriggerEvent(drift('churn', i), {
          store,
          sfn,
          stateMachineArn: 'sm',
          windowMs: WINDOW,
          now: time.now,
        }),
      );
      time.advance(2_000);
    }
    expect(sfn.executions.size).toBe(1);
    const [name, execution] = [...sfn.executions][0] ?? [];
    expect(execution?.starts).toBe(25);
    expect(results.map((result) => result.runs[0]?.start)).toEqual(['started', ...Array(24).fill('joined')]);
    expect(new Set(results.map((result) => result.runs[0]?.executionName))).toEqual(new Set([name]));
    const windowId = results[0]?.runs[0]?.windowId ?? '';
    const input = JSON.parse(execution?.input ?? '{}') as RetrainingInput;
    expect(input).toEqual({
      model: 'churn',
      dataset: 'churn',
      windowId,
      window: { start: new Date(T0).toISOString(), end: new Date(T0 + WINDOW).toISOString() },
    });
    const records = await store.list(triggerKeys.events('churn', windowId));
    expect(records).toHaveLength(25);
    const first = JSON.parse((await store.get(records[0]?.key ?? '')).toString()) as Record<string, unknown>;
    expect(first).toMatchObject({
      cause: 'drift',
      detailType: 'DriftDetected',
      executionName: name,
      opened: true,
    });
  });

  it('starts a new run for events after the window closed', async () => {
    const store = await lakeWithConfigs({ model: 'churn', dataset: 'churn' });
    const sfn = new FakeStepFunctions();
    const time = clock();
    const deps = { store, sfn, stateMachineArn: 'sm', windowMs: WINDOW, now: time.now };
    const first = await handleTriggerEvent(drift('churn', 0), deps);
    time.advance(WINDOW - 1);
    const inside = await handleTriggerEvent(drift('churn', 1), deps);
    time.advance(1);
    const after = await handleTriggerEvent(drift('churn', 2), deps);
    expect(inside.runs[0]?.executionName).toBe(first.runs[0]?.executionName);
    expect(after.runs[0]?.executionName).not.toBe(first.runs[0]?.executionName);
    expect(after.runs[0]?.start).toBe('started');
    expect(sfn.executions.size).toBe(2);
  });

  it('agrees on one window when events race (compare-and-swap in the lake)', async () => {
    const store = await lakeWithConfigs({ model: 'churn', dataset: 'churn' });
    const sfn = new FakeStepFunctions();
    const time = clock();
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        handleTriggerEvent(drift('churn', i), {
          store,
          sfn,
          stateMachineArn: 'sm',
          windowMs: WINDOW,
          now: time.now,
        }),
      ),
    );
    expect(sfn.executions.size).toBe(1);
    expect(results.filter((result) => result.runs[0]?.opened)).toHaveLength(1);
  });

  it('opens a new window when the window run already finished (Step Functions refuses the name)', async () => {
    const store = await lakeWithConfigs({ model: 'churn', dataset: 'churn' });
    const sfn = new FakeStepFunctions();
    const time = clock();
    const deps = { store, sfn, stateMachineArn: 'sm', windowMs: WINDOW, now: time.now };
    const first = await handleTriggerEvent(drift('churn', 0), deps);
    for (const execution of sfn.executions.values()) execution.closed = true;
    time.advance(1_000);
    const second = await handleTriggerEvent(drift('churn', 1), deps);
    expect(second.runs[0]?.executionName).not.toBe(first.runs[0]?.executionName);
    expect(second.runs[0]?.opened).toBe(true);
  });

  it('routes new data to every model trained on the dataset, and skips models that opted out', async () => {
    const store = await lakeWithConfigs(
      { model: 'churn', dataset: 'churn' },
      { model: 'churn_linear', dataset: 'churn' },
      { model: 'spend', dataset: 'spend' },
    );
    await updateTrainingConfig(store, 'churn_linear', { retrain: { on: ['drift'] } });
    const sfn = new FakeStepFunctions();
    const deps = { store, sfn, stateMachineArn: 'sm', windowMs: WINDOW, now: clock().now };
    const result = await handleTriggerEvent(etlSucceeded('churn', 'v2'), deps);
    expect(result.runs.map((run) => run.model)).toEqual(['churn']);
    expect(result.skipped).toEqual([{ model: 'churn_linear', reason: 'not retrained on data events' }]);
    expect((await handleTriggerEvent(etlSucceeded('other', 'v1'), deps)).ignored).toBe(
      'no model is trained on dataset other',
    );
    expect((await handleTriggerEvent(drift('unknown'), deps)).skipped).toEqual([
      { model: 'unknown', reason: 'no training config: train it once with `kiln train`' },
    ]);
    await updateTrainingConfig(store, 'spend', { retrain: { enabled: false } });
    expect((await handleTriggerEvent(drift('spend'), deps)).skipped).toEqual([
      { model: 'spend', reason: 'retraining is switched off' },
    ]);
    expect(sfn.executions.size).toBe(1);
  });

  it('keeps person-set switches when a registration rewrites the training fields', async () => {
    const store = await lakeWithConfigs({ model: 'churn', dataset: 'churn' });
    await updateTrainingConfig(store, 'churn', { rollout: { mode: 'shadow', share: 0.5 } });
    await recordTrainingConfig(store, {
      model: 'churn',
      dataset: 'churn',
      target: 'churned',
      algorithm: 'linear',
      hyperparameters: {},
      seed: 3,
      gateMargin: 0.01,
      testDataKey: 'curated/churn/v1/test.parquet',
      version: 2,
      trainingJob: 'job-2',
    });
    const config = await readTrainingConfig(store, 'churn');
    expect(config).toMatchObject({
      algorithm: 'linear',
      seed: 3,
      rollout: { mode: 'shadow', share: 0.5 },
      source: { version: 2, trainingJob: 'job-2' },
    });
    // A curated test split belongs to one dataset version: retraining evaluates on the new version's.
    expect(config?.testDataKey).toBeUndefined();
    await store.put(trainingConfigKey('churn'), '{"kind":"something else"}');
    await expect(readTrainingConfig(store, 'churn')).rejects.toThrow(/is not a training config/);
  });
});

describe('plan and record', () => {
  async function trainedLake() {
    const store = await lakeWithConfigs({ model: 'churn', dataset: 'churn' });
    const registry = new ModelRegistry(store);
    await registerChampion(registry, { datasetVersion: 'v1' });
    await store.put(lake.datasetHead('churn'), toJsonBody({ version: 'v1' }));
    return { store, registry };
  }
  const input = (windowId: string) => ({
    model: 'churn',
    dataset: 'churn',
    windowId,
    window: { start: new Date(T0).toISOString(), end: new Date(T0 + WINDOW).toISOString() },
  });

  it('skips a run with nothing new to learn from, and trains once on a new version', async () => {
    const { store } = await trainedLake();
    const skipped = await planRetraining(store, input('w1'));
    expect(skipped).toMatchObject({ train: false, datasetVersion: 'v1' });
    expect(skipped.reason).toMatch(/nothing new to learn from: churn@1 was already trained on churn@v1/);

    await store.put(lake.datasetHead('churn'), toJsonBody({ version: 'v2' }));
    await updateTrainingConfig(store, 'churn', { rollout: { mode: 'canary' } });
    const plan = await planRetraining(store, input('w2'));
    expect(plan.train).toBe(true);
    expect(plan.request).toMatchObject({
      dataset: 'churn',
      target: 'churned',
      model: 'churn',
      version: 'v2',
      algorithm: 'gbdt',
      hyperparameters: { max_iter: 20 },
      rollout: 'canary',
      trigger: { runId: 'retrain-churn-w2', windowId: 'w2' },
    });
    // Another window asking for the same data while the first trains is skipped by the claim.
    const again = await planRetraining(store, input('w3'));
    expect(again).toMatchObject({ train: false });
    expect(again.reason).toBe('run retrain-churn-w2 is already training churn on churn@v2');
  });

  it('records a trained run and publishes RetrainingRunCompleted with its causes', async () => {
    const { store } = await trainedLake();
    await store.put(lake.datasetHead('churn'), toJsonBody({ version: 'v2' }));
    const sfn = new FakeStepFunctions();
    const trigger = await handleTriggerEvent(drift('churn', 0), {
      store,
      sfn,
      stateMachineArn: 'sm',
      windowMs: WINDOW,
      now: clock().now,
    });
    const windowId = trigger.runs[0]?.windowId ?? '';
    const plan = await planRetraining(store, input(windowId));
    const bus = new LocalEventBus();
    const published: KilnEvent[] = [];
    bus.subscribe({ source: ['kiln.updates'] }, (event) => {
      published.push(event);
    });
    const record = await recordRetraining(
      store,
      {
        ...input(windowId),
        plan,
        training: {
          registration: {
            model: 'churn',
            version: 2,
            stage: 'candidate',
            promoted: false,
            rollout: 'canary',
          },
          evaluation: { gate: { passed: true, reason: 'challenger wins' } },
        },
      },
      { events: bus },
    );
    await bus.drain();
    expect(record).toMatchObject({ status: 'trained', datasetVersion: 'v2' });
    expect(record.reason).toBe('registered churn@2: challenger, passed the gate (awaiting rollout)');
    expect(record.causes.map((cause) => cause.detailType)).toEqual(['DriftDetected']);
    expect(published[0]).toMatchObject({
      detailType: 'RetrainingRunCompleted',
      detail: { model: 'churn', status: 'trained', version: 2, gatePassed: true, causes: ['DriftDetected'] },
    });
  });

  it('releases the claim of a failed run so that a later window can try again', async () => {
    const { store } = await trainedLake();
    await store.put(lake.datasetHead('churn'), toJsonBody({ version: 'v2' }));
    const plan = await planRetraining(store, input('w1'));
    expect(plan.train).toBe(true);
    const failed = await recordRetraining(store, {
      ...input('w1'),
      plan,
      error: {
        Error: 'States.TaskFailed',
        Cause: JSON.stringify({ errorMessage: 'training job failed: OOM' }),
      },
    });
    expect(failed).toMatchObject({
      status: 'failed',
      reason: 'failed: States.TaskFailed: training job failed: OOM',
    });
    expect(await store.head(triggerKeys.claim('churn', 'v2'))).toBeUndefined();
    expect((await planRetraining(store, input('w2'))).train).toBe(true);
  });

  it('a flood of events over many windows trains once: no retraining storm', async () => {
    const { store } = await trainedLake();
    await store.put(lake.datasetHead('churn'), toJsonBody({ version: 'v2' }));
    const sfn = new FakeStepFunctions();
    const time = clock();
    for (let i = 0; i < 300; i++) {
      await handleTriggerEvent(i % 3 === 0 ? etlSucceeded('churn', 'v2') : drift('churn', i), {
        store,
        sfn,
        stateMachineArn: 'sm',
        windowMs: WINDOW,
        now: time.now,
      });
      time.advance(1_000);
    }
    // 300 events over five minutes: one run per one-minute window…
    expect(sfn.executions.size).toBe(5);
    const plans = [];
    for (const execution of sfn.executions.values()) {
      plans.push(await planRetraining(store, JSON.parse(execution.input)));
    }
    // …and only one of them trains: the others find the data claimed.
    expect(plans.filter((plan) => plan.train)).toHaveLength(1);
    expect(plans.filter((plan) => !plan.train).every((plan) => /already training/.test(plan.reason))).toBe(
      true,
    );
  });
});

describe('LocalStepFunctions', () => {
  it('keeps Step Functions name semantics and runs an execution when its window ends or on flush', async () => {
    const ran: RetrainingInput[] = [];
    const closed: string[] = [];
    const sfn = new LocalStepFunctions({
      run: async (input) => {
        ran.push(input);
        return { ok: true };
      },
      closeWindow: async (input) => {
        closed.push(input.windowId);
      },
    });
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const input = JSON.stringify({
      model: 'churn',
      dataset: 'churn',
      windowId: 'w1',
      window: { start: later, end: later },
    });
    await sfn.startExecution({ stateMachineArn: 'sm', name: 'retrain-churn-w1', input });
    // The same name and input while waiting: the same execution.
    await sfn.startExecution({ stateMachineArn: 'sm', name: 'retrain-churn-w1', input });
    await expect(
      sfn.startExecution({
        stateMachineArn: 'sm',
        name: 'retrain-churn-w1',
        input: input.replace('w1', 'w2'),
      }),
    ).rejects.toBeInstanceOf(ExecutionAlreadyExistsError);
    expect(sfn.list().map((execution) => execution.status)).toEqual(['waiting']);
    await sfn.flush();
    expect(ran).toHaveLength(1);
    expect(closed).toEqual(['w1']);
    expect(sfn.list()[0]).toMatchObject({ status: 'succeeded', closedEarly: true });
    // Closed executions keep their name.
    await expect(
      sfn.startExecution({ stateMachineArn: 'sm', name: 'retrain-churn-w1', input }),
    ).rejects.toBeInstanceOf(ExecutionAlreadyExistsError);
  });
});

describe('the AWS side of the trigger', () => {
  it('starts executions with StartExecution and turns ExecutionAlreadyExists into a typed error', async () => {
    const sent: Array<{ name: string; input: unknown }> = [];
    const client = {
      send: async (command: { constructor: { name: string }; input: { name?: string } }) => {
        sent.push({ name: command.constructor.name, input: command.input });
        if (command.input.name === 'taken') {
          throw Object.assign(new Error('Execution Already Exists: taken'), {
            name: 'ExecutionAlreadyExists',
          });
        }
        return {
          executionArn: `arn:aws:states:eu-west-1:1:execution:sm:${command.input.name}`,
          startDate: new Date(T0),
        };
      },
    };
    const sfn = new AwsStepFunctions(client as never);
    const started = await sfn.startExecution({
      stateMachineArn: 'arn:sm',
      name: 'retrain-churn-w1',
      input: '{}',
    });
    expect(started.executionArn).toBe('arn:aws:states:eu-west-1:1:execution:sm:retrain-churn-w1');
    expect(sent[0]).toEqual({
      name: 'StartExecutionCommand',
      input: { stateMachineArn: 'arn:sm', name: 'retrain-churn-w1', input: '{}' },
    });
    await expect(
      sfn.startExecution({ stateMachineArn: 'arn:sm', name: 'taken', input: '{}' }),
    ).rejects.toBeInstanceOf(ExecutionAlreadyExistsError);
  });

  it('reads the window from its environment variable, naming a bad value and the range', () => {
    expect(windowMsOf(undefined)).toBe(600_000);
    expect(windowMsOf('120000')).toBe(120_000);
    expect(() => windowMsOf('10')).toThrow(
      'KILN_RETRAINING_WINDOW_MS must be an integer from 1000 to 86400000 ms, got "10"',
    );
    expect(() => windowMsOf('ten minutes')).toThrow(/got "ten minutes"/);
  });
});
