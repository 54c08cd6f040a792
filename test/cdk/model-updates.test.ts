import { Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import { describe, expect, it } from 'vitest';
import { DataLake } from '../../lib/constructs/data-lake.ts';
import { KilnBus } from '../../lib/constructs/event-bus.ts';
import { InferenceEndpoint } from '../../lib/constructs/inference-endpoint.ts';
import { ModelUpdates, RetrainingStates } from '../../lib/constructs/model-updates.ts';
import { ValidationError } from '../../lib/core/errors.ts';
import { platformApp } from '../../lib/stacks/synth.ts';
import {
  allowStatementsOfRole,
  type CfnResource,
  covers,
  definitionOf,
  flatten,
  logicalIdOf,
  property,
  resourcesAllowed,
  stateNamed,
  synthesize,
} from './support.ts';

const { stack, json } = synthesize();
const updates = stack.updates;
const endpoint = stack.inferenceEndpoint;
if (!endpoint) throw new Error('the default serving mode must create a SageMaker endpoint');
const id = (construct: Parameters<typeof logicalIdOf>[1]) => logicalIdOf(stack, construct);
const machineId = id(updates.stateMachine);
const definition = definitionOf(json, machineId);
const lakeArn = `<${id(stack.lake.bucket)}.Arn>`;
const busRef = `<${id(stack.bus.bus)}>`;
const resource = (logicalId: string): CfnResource => {
  const found = json.Resources[logicalId];
  if (!found) throw new Error(`no resource ${logicalId}`);
  return found;
};
const rule = (construct: events.Rule) =>
  flatten(resource(id(construct)).Properties) as Record<string, unknown>;
const functionArn = (fn: { function: { node: { defaultChild?: unknown } } }) =>
  `<${logicalIdOf(stack, fn.function as never)}.Arn>`;
const roleOf = (fn: { role: never }) => logicalIdOf(stack, fn.role);
const canWrite = (roleId: string, key: string) =>
  ['s3:PutObject', 's3:DeleteObject'].some((action) =>
    resourcesAllowed(allowStatementsOfRole(json, roleId), action).some((p) => covers(p, `${lakeArn}/${key}`)),
  );
const canRead = (roleId: string, key: string) =>
  resourcesAllowed(allowStatementsOfRole(json, roleId), 's3:GetObject').some((p) =>
    covers(p, `${lakeArn}/${key}`),
  );

describe('retraining state machine', () => {
  it('waits out the debounce window, then runs ETL, plan, training and record as child executions', () => {
    expect(definition.StartAt).toBe(RetrainingStates.debounce);
    expect(stateNamed(definition, RetrainingStates.debounce)).toMatchObject({
      Type: 'Wait',
      TimestampPath: '$.window.end',
      Next: RetrainingStates.etl,
    });
    expect(stateNamed(definition, RetrainingStates.etl)).toMatchObject({
      Type: 'Task',
      Resource: 'arn:<AWS::Partition>:states:::states:startExecution.sync:2',
      Parameters: { StateMachineArn: `<${id(stack.etl.stateMachine)}>`, Input: { 'dataset.$': '$.dataset' } },
      ResultSelector: { 'result.$': '$.Output.result' },
      // A failed ETL does not stop retraining on what is already curated.
      Catch: [{ ErrorEquals: ['States.ALL'], ResultPath: '$.etlError', Next: RetrainingStates.plan }],
      Next: RetrainingStates.plan,
    });
    expect(stateNamed(definition, RetrainingStates.plan)).toMatchObject({
      Resource: functionArn(updates.planFunction),
      ResultPath: '$.plan',
      Next: RetrainingStates.shouldTrain,
    });
    expect(stateNamed(definition, RetrainingStates.shouldTrain)).toMatchObject({
      Type: 'Choice',
      Choices: [{ Variable: '$.plan.train', BooleanEquals: true, Next: RetrainingStates.train }],
      Default: RetrainingStates.record,
    });
    expect(stateNamed(definition, RetrainingStates.train)).toMatchObject({
      Resource: 'arn:<AWS::Partition>:states:::states:startExecution.sync:2',
      Parameters: { StateMachineArn: `<${id(stack.training.stateMachine)}>`, 'Input.$': '$.plan.request' },
      Catch: [{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: RetrainingStates.record }],
      Next: RetrainingStates.record,
    });
    expect(stateNamed(definition, RetrainingStates.record)).toMatchObject({
      Resource: functionArn(updates.recordFunction),
    });
    expect(stateNamed(definition, RetrainingStates.failed)).toMatchObject({
      Type: 'Fail',
      Error: 'RetrainingFailed',
    });
    const machine = resource(machineId).Properties ?? {};
    expect(machine.TracingConfiguration).toEqual({ Enabled: true });
    expect(flatten(machine.LoggingConfiguration)).toMatchObject({ Level: 'ALL', IncludeExecutionData: true });
  });
});

describe('event rules', () => {
  it('send new curated data, drift and quality drops on the Kiln bus to the debouncing trigger', () => {
    const trigger = functionArn(updates.triggerFunction);
    expect(rule(updates.dataRule)).toMatchObject({
      EventBusName: busRef,
      EventPattern: { source: ['kiln.etl'], 'detail-type': ['EtlRunSucceeded'] },
      Targets: [
        expect.objectContaining({
          Arn: trigger,
          RetryPolicy: { MaximumRetryAttempts: 3, MaximumEventAgeInSeconds: 7200 },
        }),
      ],
    });
    expect(rule(updates.monitoringRule)).toMatchObject({
      EventBusName: busRef,
      EventPattern: { source: ['kiln.monitoring'], 'detail-type': ['DriftDetected', 'QualityDropped'] },
      Targets: [expect.objectContaining({ Arn: trigger })],
    });
  });

  it('check daily on a schedule (the default bus: schedules cannot live on a custom bus)', () => {
    const schedule = rule(updates.scheduleRule);
    expect(schedule).toMatchObject({
      ScheduleExpression: 'rate(1 day)',
      State: 'ENABLED',
      Targets: [expect.objectContaining({ Arn: functionArn(updates.triggerFunction) })],
    });
    expect(schedule.EventBusName).toBeUndefined();
  });

  it('send challenger / champion moves and the endpoint state changes to the deploy function', () => {
    const deploy = updates.deployFunction;
    if (!deploy || !updates.rolloutRule || !updates.endpointRule)
      throw new Error('sagemaker serving deploys');
    expect(rule(updates.rolloutRule)).toMatchObject({
      EventBusName: busRef,
      EventPattern: {
        source: ['kiln.registry'],
        'detail-type': ['AliasMoved'],
        detail: { alias: ['challenger', 'champion'] },
      },
      Targets: [expect.objectContaining({ Arn: functionArn(deploy) })],
    });
    expect(rule(updates.endpointRule)).toMatchObject({
      EventPattern: {
        source: ['aws.sagemaker'],
        'detail-type': ['SageMaker Endpoint Deployment State Change', 'SageMaker Endpoint State Change'],
        detail: { EndpointName: [`<${id(endpoint.endpoint)}.EndpointName>`] },
      },
    });
  });
});

describe('least privilege', () => {
  it('the trigger starts only the retraining state machine, with its window in the environment', () => {
    const fn = resource(logicalIdOf(stack, updates.triggerFunction.function as never));
    const variables = property<{ Variables: Record<string, unknown> }>(fn, 'Environment').Variables;
    expect(flatten(variables.KILN_RETRAINING_STATE_MACHINE)).toBe(`<${machineId}>`);
    expect(variables.KILN_RETRAINING_WINDOW_MS).toBe('600000');
    const role = roleOf(updates.triggerFunction as never);
    expect(resourcesAllowed(allowStatementsOfRole(json, role), 'states:StartExecution')).toEqual([
      `<${machineId}>`,
    ]);
    expect(canRead(role, 'registry/churn/training.json')).toBe(true);
    expect(canWrite(role, 'runs/triggers/churn/window.json')).toBe(true);
    for (const key of [
      'registry/churn/aliases.json',
      'runs/training/x.json',
      'models/churn/1/model.onnx',
      'curated/x',
    ]) {
      expect(canWrite(role, key), key).toBe(false);
    }
  });

  it('plan and record touch only the trigger records; the registry is read-only to them', () => {
    for (const fn of [updates.planFunction, updates.recordFunction]) {
      const role = roleOf(fn as never);
      expect(canWrite(role, 'runs/triggers/churn/claims/v2.json')).toBe(true);
      for (const key of [
        'registry/churn/training.json',
        'curated/churn/v2/manifest.json',
        'models/churn/2/model.onnx',
      ]) {
        expect(canWrite(role, key), key).toBe(false);
      }
    }
    expect(canRead(roleOf(updates.planFunction as never), 'curated/churn/latest.json')).toBe(true);
  });

  it('the deploy function creates only kiln- SageMaker resources, updates only this endpoint and passes only its role', () => {
    const deploy = updates.deployFunction;
    if (!deploy) throw new Error('sagemaker serving deploys');
    const statements = allowStatementsOfRole(json, roleOf(deploy as never));
    const arn = (r: string) => `arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:${r}`;
    expect(resourcesAllowed(statements, 'sagemaker:CreateModel')).toEqual([arn('model/kiln-*')]);
    expect(resourcesAllowed(statements, 'sagemaker:CreateEndpointConfig')).toEqual([
      arn('endpoint-config/kiln-*'),
    ]);
    expect(resourcesAllowed(statements, 'sagemaker:UpdateEndpoint')).toEqual(
      expect.arrayContaining([`<${id(endpoint.endpoint)}>`]),
    );
    expect(
      resourcesAllowed(statements, 'sagemaker:UpdateEndpoint').every((r) => !r.endsWith(':endpoint/*')),
    ).toBe(true);
    const pass = statements.find((s) =>
      (Array.isArray(s.Action) ? s.Action : [s.Action]).includes('iam:PassRole'),
    );
    expect(pass).toMatchObject({
      Resource: `<${id(endpoint.role)}.Arn>`,
      Condition: { StringEquals: { 'iam:PassedToService': 'sagemaker.amazonaws.com' } },
    });
    const role = roleOf(deploy as never);
    expect(canWrite(role, 'models/churn/2/model.tar.gz')).toBe(true);
    expect(canWrite(role, 'runs/deployments/churn/000002.json')).toBe(true);
    for (const key of [
      'raw/churn/x.csv',
      'curated/churn/v1/manifest.json',
      'runs/triggers/churn/window.json',
    ]) {
      expect(canWrite(role, key), key).toBe(false);
    }
  });

  it('rolls back on error, latency, prediction-drift and model-quality alarms, with the canary from props', () => {
    const deploy = updates.deployFunction;
    if (!deploy) throw new Error('sagemaker serving deploys');
    const variables = property<{ Variables: Record<string, unknown> }>(
      resource(logicalIdOf(stack, deploy.function as never)),
      'Environment',
    ).Variables;
    // The endpoint's own alarms, and the monitoring construct's prediction-drift and quality alarms.
    expect(String(flatten(variables.KILN_ROLLBACK_ALARMS)).split(',')).toEqual([
      `<${id(endpoint.errorAlarm)}>`,
      `<${id(endpoint.latencyAlarm)}>`,
      `<${id(stack.monitoring.predictionDriftAlarm)}>`,
      `<${id(stack.monitoring.qualityAlarm)}>`,
    ]);
    expect(variables).toMatchObject({
      KILN_CANARY_PERCENT: '10',
      KILN_CANARY_BAKE_SECONDS: '600',
      KILN_ENDPOINT_VARIANT: 'AllTraffic',
    });
  });
});

/** The platform's feature flags, no bundling, no asset copies. */
function testApp() {
  return platformApp({
    context: { [cxapi.DISABLE_ASSET_STAGING_CONTEXT]: true, 'aws:cdk:bundling-stacks': [] },
  });
}

/** A stack with just what ModelUpdates needs (no platform around it). */
function standalone(
  props: Partial<ConstructorParameters<typeof ModelUpdates>[2]> = {},
  withEndpoint = false,
) {
  const app = testApp();
  const s = new Stack(app, 'Updates');
  const lake = new DataLake(s, 'Lake');
  const bus = new KilnBus(s, 'Bus');
  const machine = (name: string) =>
    new sfn.StateMachine(s, name, {
      definitionBody: sfn.DefinitionBody.fromChainable(new sfn.Pass(s, `${name}Pass`)),
    });
  const inference = withEndpoint
    ? new InferenceEndpoint(s, 'Inference', { lakeBucket: lake.bucket })
    : undefined;
  const updatesConstruct = new ModelUpdates(s, 'ModelUpdates', {
    lakeBucket: lake.bucket,
    bus: bus.bus,
    etlStateMachine: machine('Etl'),
    trainingStateMachine: machine('Training'),
    ...(inference ? { endpoint: inference } : {}),
    ...props,
  });
  return { stack: s, updates: updatesConstruct, template: Template.fromStack(s) };
}

describe('ModelUpdates props', () => {
  it('adds model-quality and prediction-drift alarms to the rollback alarms, and takes window, canary and schedule', () => {
    const s = new Stack(testApp(), 'Alarms');
    const metric = (name: string) =>
      new cloudwatch.Metric({ namespace: 'Kiln/Monitoring', metricName: name });
    const alarm = (name: string) =>
      new cloudwatch.Alarm(s, name, {
        alarmName: `kiln-${name}`,
        metric: metric(name),
        threshold: 1,
        evaluationPeriods: 1,
      });
    const built = (() => {
      const lake = new DataLake(s, 'Lake');
      const bus = new KilnBus(s, 'Bus');
      const m = (name: string) =>
        new sfn.StateMachine(s, name, {
          definitionBody: sfn.DefinitionBody.fromChainable(new sfn.Pass(s, `${name}Pass`)),
        });
      return new ModelUpdates(s, 'ModelUpdates', {
        lakeBucket: lake.bucket,
        bus: bus.bus,
        etlStateMachine: m('Etl'),
        trainingStateMachine: m('Training'),
        endpoint: new InferenceEndpoint(s, 'Inference', { lakeBucket: lake.bucket }),
        rollbackAlarms: [alarm('prediction-drift'), alarm('model-quality')],
        canaryPercentage: 25,
        canaryBakeTime: Duration.minutes(30),
        debounceWindow: Duration.minutes(2),
        schedule: events.Schedule.cron({ minute: '0', hour: '3' }),
        scheduleEnabled: false,
      });
    })();
    const template = Template.fromStack(s).toJSON() as { Resources: Record<string, CfnResource> };
    const deploy =
      template.Resources[s.getLogicalId(built.deployFunction?.function.node.defaultChild as never)];
    const variables = property<{ Variables: Record<string, unknown> }>(deploy, 'Environment').Variables;
    expect(String(flatten(variables.KILN_ROLLBACK_ALARMS)).split(',').slice(2)).toEqual([
      `<${s.getLogicalId(s.node.findChild('prediction-drift').node.defaultChild as never)}>`,
      `<${s.getLogicalId(s.node.findChild('model-quality').node.defaultChild as never)}>`,
    ]);
    expect(variables).toMatchObject({ KILN_CANARY_PERCENT: '25', KILN_CANARY_BAKE_SECONDS: '1800' });
    const trigger =
      template.Resources[s.getLogicalId(built.triggerFunction.function.node.defaultChild as never)];
    expect(
      property<{ Variables: Record<string, unknown> }>(trigger, 'Environment').Variables
        .KILN_RETRAINING_WINDOW_MS,
    ).toBe('120000');
    expect(
      template.Resources[s.getLogicalId(built.scheduleRule.node.defaultChild as never)]?.Properties,
    ).toMatchObject({
      ScheduleExpression: 'cron(0 3 * * ? *)',
      State: 'DISABLED',
    });
  });

  it('without an endpoint (Lambda serving) retrains but creates no deploy function', () => {
    const { updates: built, template } = standalone();
    expect(built.deployFunction).toBeUndefined();
    expect(built.rolloutRule).toBeUndefined();
    template.resourceCountIs('AWS::Events::Rule', 3);
    const lambdaServing = synthesize({ servingMode: 'lambda' });
    expect(lambdaServing.stack.updates.deployFunction).toBeUndefined();
  });

  it.each<[string, Partial<ConstructorParameters<typeof ModelUpdates>[2]>, RegExp]>([
    [
      'a zero window',
      { debounceWindow: Duration.seconds(0) },
      /debounceWindow \(seconds\) must be an integer between 1 and 86400, got 0/,
    ],
    [
      'a huge canary',
      { canaryPercentage: 60 },
      /canaryPercentage must be an integer between 1 and 50, got 60/,
    ],
    [
      'an endless bake',
      { canaryBakeTime: Duration.hours(2) },
      /canaryBakeTime \(seconds\) must be an integer between 0 and 3600, got 7200/,
    ],
  ])('rejects %s, naming the value and the range', (_name, props, message) => {
    expect(() => standalone(props)).toThrow(ValidationError);
    expect(() => standalone(props)).toThrow(message);
  });

  it('is cdk-nag clean (every acknowledgment names one finding)', () => {
    for (const withEndpoint of [false, true]) {
      const { stack: s } = standalone({}, withEndpoint);
      const report = new AwsSolutionsChecks().validateScope(s.node.findChild('ModelUpdates'));
      const findings = report.violations.flatMap((v) =>
        v.violatingResources.map((r) => `${v.ruleName} @ ${r.constructPath}`),
      );
      expect(findings).toEqual([]);
    }
    const report = new AwsSolutionsChecks().validateScope(updates);
    expect(report.violations).toEqual([]);
  });
});
