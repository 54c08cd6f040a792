import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CreateEndpointConfigCommand,
  CreateModelCommand,
  DescribeEndpointCommand,
  DescribeEndpointConfigCommand,
  UpdateEndpointCommand,
} from '@aws-sdk/client-sagemaker';
import * as tar from 'tar';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../lib/core/errors.ts';
import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import type { ArmSnapshot, RouterSnapshot } from '../../lib/serving/canary.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { recordTrainingConfig, updateTrainingConfig } from '../../lib/updates/config.ts';
import {
  CHAMPION_ARCHIVE_KEY,
  type DeploymentRecord,
  deploymentKeys,
  handleDeployEvent,
  type SageMakerRolloutEnv,
  sageMakerEnv,
  versionOfName,
} from '../../lib/updates/deploy.ts';
import { decideRollout, rolloutCriteria } from '../../lib/updates/rollout.ts';
import { tempDir } from '../support/temp.ts';
import { passedGate, registerChampion, registerChurn } from './updates-fixtures.ts';

// ---- the decision ------------------------------------------------------------------------------------

function arm(version: string, overrides: Partial<ArmSnapshot> = {}): ArmSnapshot {
  const requests = overrides.requests ?? 200;
  const errors = overrides.errors ?? 0;
  return {
    version,
    requests,
    rows: requests,
    errors,
    serverErrors: 0,
    errorRate: requests ? errors / requests : 0,
    latency: { p50: 0.002, p95: 0.004, samples: requests },
    predictions: [],
    requestIds: [],
    ...overrides,
  };
}

const labels = (yes: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ label: i < yes ? 'yes' : 'no', probabilities: {} }));
/** The baseline prediction profile of a binary model: 20 % `yes` on held-out data. */
const PROFILE = { kind: 'categorical' as const, count: 1000, missing: 0, shares: { no: 0.8, yes: 0.2 } };

function snapshot(champion: ArmSnapshot, challenger: ArmSnapshot): RouterSnapshot {
  return { mode: 'canary', share: 0.25, champion, challenger, agreement: null, shadowDropped: 0 };
}

describe('rollout decision', () => {
  const criteria = rolloutCriteria({});

  it('promotes a challenger that is as good as the champion on every check', () => {
    const decision = decideRollout({
      snapshot: snapshot(
        arm('1', { predictions: labels(40, 200) }),
        arm('2', { predictions: labels(41, 200) }),
      ),
      profiles: { champion: PROFILE, challenger: PROFILE },
      quality: {
        champion: { metric: 'accuracy', value: 0.9, labelled: 200 },
        challenger: { metric: 'accuracy', value: 0.91, labelled: 200 },
      },
      criteria,
    });
    expect(decision.decision).toBe('promote');
    expect(decision.checks.map((check) => [check.name, check.status])).toEqual([
      ['traffic', 'pass'],
      ['errors', 'pass'],
      ['latency', 'pass'],
      ['prediction-drift', 'pass'],
      ['quality', 'pass'],
    ]);
  });

  it.each<[string, Partial<ArmSnapshot>, RegExp]>([
    ['too little traffic (inconclusive)', { requests: 10 }, /^traffic: .*inconclusive/],
    ['more errors', { errors: 12 }, /^errors: error rate 6\.0 %/],
    [
      'a slower tail',
      { latency: { p50: 0.02, p95: 0.09, samples: 200 } },
      /^latency: p95 90\.0 ms vs champion 4\.0 ms/,
    ],
  ])('rolls back on %s', (_name, challenger, reason) => {
    const decision = decideRollout({
      snapshot: snapshot(arm('1'), arm('2', challenger)),
      profiles: { champion: null, challenger: null },
      quality: null,
      criteria,
    });
    expect(decision.decision).toBe('rollback');
    expect(decision.reasons).toEqual([expect.stringMatching(reason)]);
  });

  it('rolls back a challenger whose predictions drift from its own baseline more than the champion', () => {
    const decision = decideRollout({
      // The champion answers like it did on held-out data; the challenger says `yes` to nearly everyone.
      snapshot: snapshot(
        arm('1', { predictions: labels(42, 200) }),
        arm('2', { predictions: labels(190, 200) }),
      ),
      profiles: { champion: PROFILE, challenger: PROFILE },
      quality: null,
      criteria,
    });
    expect(decision.decision).toBe('rollback');
    expect(decision.drift.challenger?.drifted).toBe(true);
    expect(decision.drift.champion?.drifted).toBe(false);
    expect(decision.reasons[0]).toMatch(
      /^prediction-drift: against their own baselines: challenger js-distance/,
    );
  });

  it('keeps a challenger that drifts less than the champion when the traffic itself moved', () => {
    const decision = decideRollout({
      snapshot: snapshot(
        arm('1', { predictions: labels(120, 200) }),
        arm('2', { predictions: labels(70, 200) }),
      ),
      profiles: { champion: PROFILE, challenger: PROFILE },
      quality: null,
      criteria,
    });
    expect(decision.drift.champion?.drifted).toBe(true);
    expect(decision.checks.find((check) => check.name === 'prediction-drift')?.status).toBe('pass');
    expect(decision.decision).toBe('promote');
  });

  it('rolls back on worse quality on labelled live traffic, and only judges with enough labels', () => {
    const base = {
      snapshot: snapshot(arm('1'), arm('2')),
      profiles: { champion: null, challenger: null },
      criteria,
    };
    const worse = decideRollout({
      ...base,
      quality: {
        champion: { metric: 'accuracy', value: 0.9, labelled: 300 },
        challenger: { metric: 'accuracy', value: 0.8, labelled: 100 },
      },
    });
    expect(worse.decision).toBe('rollback');
    expect(worse.reasons[0]).toMatch(/^quality: accuracy 0\.8 on 100 labels vs champion 0\.9/);
    const thin = decideRollout({
      ...base,
      quality: {
        champion: { metric: 'accuracy', value: 0.9, labelled: 300 },
        challenger: { metric: 'accuracy', value: 0.5, labelled: 5 },
      },
    });
    expect(thin.checks.find((check) => check.name === 'quality')?.status).toBe('skipped');
    const rmse = decideRollout({
      ...base,
      quality: {
        champion: { metric: 'rmse', value: 10, labelled: 300 },
        challenger: { metric: 'rmse', value: 12, labelled: 300 },
      },
    });
    expect(rmse.decision).toBe('rollback');
  });

  it('names the bad criterion and its range', () => {
    expect(() => rolloutCriteria({ maxErrorRateIncrease: 2 })).toThrow(
      /invalid rollout criterion maxErrorRateIncrease: Too big/,
    );
    expect(() => rolloutCriteria({ minRequests: 0 })).toThrow(ValidationError);
  });
});

// ---- the SageMaker rollout (model-update Lambda) ------------------------------------------------------

const ENV: SageMakerRolloutEnv = {
  endpointName: 'kiln-endpoint',
  variantName: 'AllTraffic',
  image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/kiln-inference:abc',
  roleArn: 'arn:aws:iam::123456789012:role/KilnInference',
  alarms: ['kiln-invocation-5xx', 'kiln-model-latency', 'kiln-prediction-drift', 'kiln-model-quality'],
  canaryPercent: 10,
  bakeSeconds: 600,
};

/** A SageMaker client that records each command and answers Describe* like an endpoint in service. */
class FakeSageMaker {
  readonly calls: Array<{ command: string; input: Record<string, unknown> }> = [];
  endpoint = { EndpointStatus: 'InService', EndpointConfigName: 'KilnPlatformConfig-abc' };

  async send(command: { constructor: { name: string }; input: unknown }): Promise<Record<string, unknown>> {
    this.calls.push({ command: command.constructor.name, input: command.input as Record<string, unknown> });
    if (command instanceof DescribeEndpointCommand)
      return { ...this.endpoint, EndpointName: ENV.endpointName };
    if (command instanceof DescribeEndpointConfigCommand) {
      return {
        EndpointConfigName: 'KilnPlatformConfig-abc',
        ProductionVariants: [
          {
            VariantName: 'AllTraffic',
            ModelName: 'KilnPlatformModel-abc',
            InstanceType: 'ml.g5.xlarge',
            InitialInstanceCount: 2,
            InitialVariantWeight: 1,
          },
        ],
        DataCaptureConfig: {
          EnableCapture: true,
          InitialSamplingPercentage: 100,
          DestinationS3Uri: 's3://lake/capture/endpoint',
          CaptureOptions: [{ CaptureMode: 'Input' }, { CaptureMode: 'Output' }],
        },
        KmsKeyId: 'arn:aws:kms:eu-west-1:123456789012:key/abc',
      };
    }
    return {};
  }

  commands(): string[] {
    return this.calls.map((call) => call.command);
  }

  input<T>(command: { name: string }): T {
    const call = this.calls.find((c) => c.command === command.name);
    if (!call) throw new Error(`no ${command.name} call; calls: ${this.commands().join(', ')}`);
    return call.input as T;
  }
}

async function deployLake() {
  const dir = await tempDir('kiln-deploy-');
  const store = new FileSystemStore(dir);
  const bus = new LocalEventBus();
  const events: KilnEvent[] = [];
  bus.subscribe({}, (event) => {
    events.push(event);
  });
  const registry = new ModelRegistry(store, bus);
  await registerChampion(registry);
  await recordTrainingConfig(store, {
    model: 'churn',
    dataset: 'churn',
    target: 'churned',
    algorithm: 'gbdt',
    hyperparameters: {},
    seed: 0,
    gateMargin: 0,
    version: 1,
    trainingJob: 'job-1',
  });
  const sagemaker = new FakeSageMaker();
  const now = () => new Date('2026-11-26T12:00:00.000Z');
  const deps = { store, events: bus, sagemaker, env: ENV, now };
  return { dir, store, registry, bus, events, sagemaker, deps };
}

const aliasMoved = (alias: string, version: number | null) => ({
  version: '0',
  id: 'evt-1',
  source: 'kiln.registry',
  'detail-type': 'AliasMoved',
  detail: { model: 'churn', alias, version, previous: null },
});
const endpointChanged = {
  source: 'aws.sagemaker',
  'detail-type': 'SageMaker Endpoint Deployment State Change',
  detail: { EndpointName: ENV.endpointName, EndpointStatus: 'IN_SERVICE' },
};

describe('model-update Lambda (SageMaker deployment guardrails)', () => {
  it('rolls a gate-passing challenger out as a blue/green canary with every rollback alarm', async () => {
    const { dir, store, registry, sagemaker, deps, events, bus } = await deployLake();
    const challenger = await registerChurn(registry, { gate: passedGate(1) });
    const result = await handleDeployEvent(aliasMoved('challenger', challenger.version), deps);
    expect(result).toMatchObject({ action: 'rollout-started', model: 'churn', version: 2 });
    expect(sagemaker.commands()).toEqual([
      'DescribeEndpointCommand',
      'DescribeEndpointConfigCommand',
      'CreateModelCommand',
      'CreateEndpointConfigCommand',
      'UpdateEndpointCommand',
    ]);
    const name = 'kiln-churn-v2-20261126120000';
    expect(sagemaker.input(CreateModelCommand)).toEqual({
      ModelName: name,
      ExecutionRoleArn: ENV.roleArn,
      PrimaryContainer: {
        Image: ENV.image,
        ModelDataUrl: 's3://kiln-local-lake/models/churn/2/model.tar.gz',
        Environment: { SAGEMAKER_BIND_TO_PORT: '8080', KILN_MODEL_NAME: 'churn', KILN_MODEL_VERSION: '2' },
      },
    });
    expect(sagemaker.input(CreateEndpointConfigCommand)).toEqual({
      EndpointConfigName: name,
      // Blue/green needs the variant name unchanged; size and capture come from the current config.
      ProductionVariants: [
        {
          VariantName: 'AllTraffic',
          ModelName: name,
          InstanceType: 'ml.g5.xlarge',
          InitialInstanceCount: 2,
          InitialVariantWeight: 1,
        },
      ],
      DataCaptureConfig: expect.objectContaining({ EnableCapture: true }),
      KmsKeyId: 'arn:aws:kms:eu-west-1:123456789012:key/abc',
    });
    expect(sagemaker.input(UpdateEndpointCommand)).toEqual({
      EndpointName: ENV.endpointName,
      EndpointConfigName: name,
      DeploymentConfig: {
        BlueGreenUpdatePolicy: {
          TrafficRoutingConfiguration: {
            Type: 'CANARY',
            CanarySize: { Type: 'CAPACITY_PERCENT', Value: 10 },
            WaitIntervalInSeconds: 600,
          },
          TerminationWaitInSeconds: 600,
          MaximumExecutionTimeoutInSeconds: 3600,
        },
        AutoRollbackConfiguration: {
          Alarms: [
            { AlarmName: 'kiln-invocation-5xx' },
            { AlarmName: 'kiln-model-latency' },
            { AlarmName: 'kiln-prediction-drift' },
            { AlarmName: 'kiln-model-quality' },
          ],
        },
      },
    });
    // The archive SageMaker unpacks to /opt/ml/model: the version's own, hash-verified files.
    const out = join(dir, 'unpacked');
    await mkdir(out);
    await store.getToFile('models/churn/2/model.tar.gz', join(out, 'model.tar.gz'));
    await tar.extract({ file: join(out, 'model.tar.gz'), cwd: out });
    const sha = async (file: string) =>
      createHash('sha256')
        .update(await readFile(join(out, file)))
        .digest('hex');
    expect(await sha('model.onnx')).toBe(challenger.artifacts['model.onnx']?.sha256);
    expect(await sha('transform.json')).toBe(challenger.artifacts['transform.json']?.sha256);
    // Nothing is promoted until SageMaker says the canary held.
    expect((await registry.readAliases('churn')).aliases.champion).toBe(1);
    await bus.drain();
    expect(events.map((event) => event.detailType)).toContain('RolloutStarted');
  });

  it('treats a repeated AliasMoved as the rollout under way, and refuses a second one during a bake', async () => {
    const { registry, sagemaker, deps } = await deployLake();
    await registerChurn(registry, { gate: passedGate(1) });
    await handleDeployEvent(aliasMoved('challenger', 2), deps);
    const calls = sagemaker.calls.length;
    expect((await handleDeployEvent(aliasMoved('challenger', 2), deps)).action).toBe('in-progress');
    expect(sagemaker.commands().slice(calls)).toEqual(['DescribeEndpointCommand']);
    await registerChurn(registry, { gate: passedGate(1) });
    const second = await handleDeployEvent(aliasMoved('challenger', 3), deps);
    expect(second).toMatchObject({
      action: 'not-started',
      detail: 'churn@2 is still rolling out on kiln-endpoint',
    });
  });

  it('promotes when the endpoint reports the new configuration in service', async () => {
    const { store, registry, sagemaker, deps, events, bus } = await deployLake();
    await registerChurn(registry, { gate: passedGate(1) });
    await handleDeployEvent(aliasMoved('challenger', 2), deps);
    sagemaker.endpoint = { EndpointStatus: 'Updating', EndpointConfigName: 'KilnPlatformConfig-abc' };
    expect((await handleDeployEvent(endpointChanged, deps)).action).toBe('in-progress');
    sagemaker.endpoint = { EndpointStatus: 'InService', EndpointConfigName: 'kiln-churn-v2-20261126120000' };
    const result = await handleDeployEvent(endpointChanged, deps);
    expect(result).toMatchObject({ action: 'promoted', version: 2 });
    expect((await registry.readAliases('churn')).aliases.champion).toBe(2);
    expect(await store.head(CHAMPION_ARCHIVE_KEY)).toBeDefined();
    const record = JSON.parse(
      (await store.get(deploymentKeys.record('churn', 2))).toString(),
    ) as DeploymentRecord;
    expect(record).toMatchObject({ status: 'promoted', host: 'sagemaker', champion: 1, challenger: 2 });
    // The champion's AliasMoved comes back to the function: the endpoint already serves it.
    expect((await handleDeployEvent(aliasMoved('champion', 2), deps)).action).toBe('ignored');
    await bus.drain();
    expect(events.filter((event) => event.detailType === 'RolloutCompleted')[0]?.detail).toMatchObject({
      decision: 'promoted',
      host: 'sagemaker',
    });
  });

  it('archives the challenger when the alarms rolled the endpoint back', async () => {
    const { registry, sagemaker, deps } = await deployLake();
    await registerChurn(registry, { gate: passedGate(1) });
    await handleDeployEvent(aliasMoved('challenger', 2), deps);
    sagemaker.endpoint = {
      EndpointStatus: 'InService',
      EndpointConfigName: 'KilnPlatformConfig-abc',
      FailureReason: 'CloudWatch alarm kiln-prediction-drift went into ALARM',
    } as typeof sagemaker.endpoint;
    const result = await handleDeployEvent(endpointChanged, deps);
    expect(result.action).toBe('rolled-back');
    expect(result.detail).toMatch(/kiln-prediction-drift went into ALARM/);
    expect((await registry.readAliases('churn')).aliases.champion).toBe(1);
    expect((await registry.getVersion('churn', 2)).stage).toBe('archived');
    // The rollout is settled: later state changes find nothing in flight.
    expect((await handleDeployEvent(endpointChanged, deps)).action).toBe('ignored');
  });

  it('mirrors traffic to a shadow variant when the model rolls out in shadow mode', async () => {
    const { store, registry, sagemaker, deps } = await deployLake();
    await updateTrainingConfig(store, 'churn', { rollout: { mode: 'shadow', share: 0.5 } });
    await registerChurn(registry, { gate: passedGate(1) });
    await handleDeployEvent(aliasMoved('challenger', 2), deps);
    const config = sagemaker.input<Record<string, unknown>>(CreateEndpointConfigCommand);
    expect(config.ProductionVariants).toEqual([
      expect.objectContaining({ VariantName: 'AllTraffic', ModelName: 'KilnPlatformModel-abc' }),
    ]);
    expect(config.ShadowProductionVariants).toEqual([
      expect.objectContaining({
        VariantName: 'Shadow',
        ModelName: 'kiln-churn-v2-20261126120000',
        InitialVariantWeight: 0.5,
      }),
    ]);
    const update = sagemaker.input<{ DeploymentConfig: { BlueGreenUpdatePolicy: unknown } }>(
      UpdateEndpointCommand,
    );
    expect(update.DeploymentConfig.BlueGreenUpdatePolicy).toMatchObject({
      TrafficRoutingConfiguration: { Type: 'ALL_AT_ONCE' },
    });
  });

  it('does not roll out a challenger the policy would not promote, and ignores removed aliases', async () => {
    const { registry, sagemaker, deps } = await deployLake();
    await registerChurn(registry, { gate: { ...passedGate(1), passed: false, reason: 'champion stays' } });
    const result = await handleDeployEvent(aliasMoved('challenger', 2), deps);
    expect(result.action).toBe('not-started');
    expect(result.detail).toMatch(/does not allow it: .*gate: did not pass \(champion stays\)/);
    expect(sagemaker.calls).toEqual([]);
    expect((await handleDeployEvent(aliasMoved('challenger', null), deps)).action).toBe('ignored');
    expect(
      (await handleDeployEvent({ source: 'kiln.etl', 'detail-type': 'EtlRunSucceeded' }, deps)).action,
    ).toBe('ignored');
  });

  it('reads its environment once and names a missing variable', () => {
    expect(() =>
      sageMakerEnv({ KILN_INFERENCE_IMAGE: 'x', KILN_INFERENCE_ROLE_ARN: 'arn:aws:iam::1:role/r' }),
    ).toThrow(/KILN_ENDPOINT_NAME/);
    expect(
      sageMakerEnv({
        KILN_ENDPOINT_NAME: 'e',
        KILN_INFERENCE_IMAGE: 'i',
        KILN_INFERENCE_ROLE_ARN: 'arn:aws:iam::1:role/r',
        KILN_ROLLBACK_ALARMS: 'a, b,',
        KILN_CANARY_PERCENT: '20',
      }),
    ).toMatchObject({ alarms: ['a', 'b'], canaryPercent: 20, bakeSeconds: 600, variantName: 'AllTraffic' });
    expect(versionOfName('kiln-churn-v12-20261126120000', 'churn')).toBe(12);
    expect(versionOfName('KilnPlatformConfig-abc', 'churn')).toBeUndefined();
  });
});
