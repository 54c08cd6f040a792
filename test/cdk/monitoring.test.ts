import { join } from 'node:path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as events from 'aws-cdk-lib/aws-events';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { Monitoring } from '../../lib/constructs/monitoring.ts';
import { REPO_ROOT } from '../../lib/constructs/paths.ts';
import { MONITORING_NAMESPACE } from '../../lib/monitoring/metric-names.ts';
import {
  allowStatementsOfRole,
  type CfnResource,
  covers,
  flatten,
  logicalIdOf,
  resourcesAllowed,
  synthesize,
} from './support.ts';

const sagemakerMode = synthesize();
const { stack, json } = sagemakerMode;
const monitoring = stack.monitoring;
const lakeId = logicalIdOf(stack, stack.lake.bucket);
const lakeArn = `<${lakeId}.Arn>`;
const resourcesOf = (type: string, template = json) =>
  Object.entries(template.Resources).filter(([, resource]) => resource.Type === type);

const canRead = (roleId: string, key: string) =>
  resourcesAllowed(allowStatementsOfRole(json, roleId), 's3:GetObject').some((pattern) =>
    covers(pattern, `${lakeArn}/${key}`),
  );
const canWrite = (roleId: string, key: string) =>
  ['s3:PutObject', 's3:DeleteObject'].some((action) =>
    resourcesAllowed(allowStatementsOfRole(json, roleId), action).some((pattern) =>
      covers(pattern, `${lakeArn}/${key}`),
    ),
  );

/** The synthesized alarm of an alarm construct. */
function alarmResource(alarm: IConstruct, owner: Stack = stack, template = json): CfnResource {
  const found = template.Resources[owner.getLogicalId(alarm.node.defaultChild as never)];
  if (found?.Type !== 'AWS::CloudWatch::Alarm') throw new Error(`${alarm.node.path} is not an alarm`);
  return found;
}

describe('Monitoring: schedule and rules', () => {
  it('runs the monitor Lambda on an hourly EventBridge schedule by default', () => {
    const functionId = logicalIdOf(stack, monitoring.monitorFunction.function);
    const rule = json.Resources[logicalIdOf(stack, monitoring.scheduleRule)];
    expect(rule?.Properties?.ScheduleExpression).toBe('rate(1 hour)');
    expect(rule?.Properties?.State).toBe('ENABLED');
    const ruleTargets = rule?.Properties?.Targets as Array<Record<string, unknown>>;
    expect(ruleTargets).toHaveLength(1);
    expect(flatten(ruleTargets[0]?.Arn)).toBe(`<${functionId}.Arn>`);
    expect(ruleTargets[0]?.RetryPolicy).toEqual({ MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 2 });
    // EventBridge may invoke the function.
    sagemakerMode.template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'events.amazonaws.com',
      SourceArn: { 'Fn::GetAtt': [logicalIdOf(stack, monitoring.scheduleRule), 'Arn'] },
    });
    const env = json.Resources[functionId]?.Properties?.Environment as { Variables: Record<string, unknown> };
    expect(env.Variables.KILN_HANDLER).toBe('functions/monitoring/monitor.handler');
    expect(env.Variables.KILN_MONITOR_WINDOW_HOURS).toBe('24');
    expect(env.Variables.POWERTOOLS_SERVICE_NAME).toBe('kiln-monitoring');
  });

  it('starts the labels Lambda when an object is created under labels/ of the lake', () => {
    const rule = json.Resources[logicalIdOf(stack, monitoring.labelsRule)];
    expect(rule?.Properties?.EventPattern).toEqual({
      source: ['aws.s3'],
      'detail-type': ['Object Created'],
      detail: { bucket: { name: [{ Ref: lakeId }] }, object: { key: [{ prefix: 'labels/' }] } },
    });
    // S3 events arrive on the default bus.
    expect(rule?.Properties?.EventBusName).toBeUndefined();
    const ruleTargets = rule?.Properties?.Targets as Array<Record<string, unknown>>;
    expect(flatten(ruleTargets[0]?.Arn)).toBe(
      `<${logicalIdOf(stack, monitoring.labelsFunction.function)}.Arn>`,
    );
    // The labels handler reads files with DuckDB: a container image.
    expect(
      json.Resources[logicalIdOf(stack, monitoring.labelsFunction.function)]?.Properties?.PackageType,
    ).toBe('Image');
  });

  it('takes the rate and window from props and validates them', () => {
    const app = new App();
    const scratch = new Stack(app, 'Scratch');
    const bucket = new s3.Bucket(scratch, 'Lake');
    const bus = new events.EventBus(scratch, 'Bus');
    const custom = new Monitoring(scratch, 'Custom', {
      lakeBucket: bucket,
      bus,
      schedule: Duration.minutes(15),
      windowHours: 6,
    });
    const template = Template.fromStack(scratch).toJSON() as { Resources: Record<string, CfnResource> };
    expect(
      template.Resources[scratch.getLogicalId(custom.scheduleRule.node.defaultChild as never)]?.Properties
        ?.ScheduleExpression,
    ).toBe('rate(15 minutes)');
    const drift = alarmResource(custom.driftAlarm, scratch, template);
    expect(drift.Properties?.Period).toBe(900);
    expect(
      () => new Monitoring(scratch, 'TooOften', { lakeBucket: bucket, bus, schedule: Duration.seconds(30) }),
    ).toThrow(/schedule \(minutes\) must be an integer between 1 and 1440, got 0.5/);
    expect(() => new Monitoring(scratch, 'NoWindow', { lakeBucket: bucket, bus, windowHours: 0 })).toThrow(
      /windowHours must be an integer between 1 and 9600, got 0/,
    );
  });
});

describe('Monitoring: alarms', () => {
  it('alarms on drift, prediction drift and quality drops from the monitor’s EMF aggregates', () => {
    const expected: Array<[IConstruct, string]> = [
      [monitoring.driftAlarm, 'DriftDetected'],
      [monitoring.predictionDriftAlarm, 'PredictionDrift'],
      [monitoring.qualityAlarm, 'QualityDropped'],
    ];
    for (const [construct, metric] of expected) {
      const alarm = alarmResource(construct);
      expect(String(alarm.Properties?.AlarmName)).toMatch(
        /^KilnPlatform.*Monitoring.*-(drift|prediction-drift|quality-drop)$/,
      );
      expect(alarm.Properties).toMatchObject({
        Namespace: MONITORING_NAMESPACE,
        MetricName: metric,
        Dimensions: [{ Name: 'service', Value: 'kiln-monitoring' }],
        Statistic: 'Maximum',
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'notBreaching',
        Period: 3600,
      });
    }
  });

  it('rolls back on serving errors and latency (the endpoint’s alarms) and on prediction drift and quality', () => {
    const endpoint = stack.inferenceEndpoint;
    if (!endpoint) throw new Error('expected a SageMaker endpoint');
    expect(monitoring.errorAlarm).toBe(endpoint.errorAlarm);
    expect(monitoring.latencyAlarm).toBe(endpoint.latencyAlarm);
    expect(monitoring.rollbackAlarms).toEqual([
      endpoint.errorAlarm,
      endpoint.latencyAlarm,
      monitoring.predictionDriftAlarm,
      monitoring.qualityAlarm,
    ]);
    const metrics = monitoring.rollbackAlarms.map((alarm) => alarmResource(alarm).Properties?.MetricName);
    expect(metrics).toEqual(['Invocation5XXErrors', 'ModelLatency', 'PredictionDrift', 'QualityDropped']);
    // No duplicate 5XX or latency alarms are created for the endpoint.
    const sagemakerAlarms = resourcesOf('AWS::CloudWatch::Alarm').filter(
      ([, alarm]) => alarm.Properties?.Namespace === 'AWS/SageMaker',
    );
    expect(sagemakerAlarms).toHaveLength(2);
  });

  it('in lambda serving mode, alarms on the model host’s errors and p99 duration', () => {
    const lambdaMode = synthesize({ servingMode: 'lambda' });
    const m = lambdaMode.stack.monitoring;
    const host = lambdaMode.stack.lambdaModelHost;
    if (!host || !m.errorAlarm || !m.latencyAlarm) throw new Error('expected model host alarms');
    const hostId = logicalIdOf(lambdaMode.stack, host.function);
    const errors = alarmResource(m.errorAlarm, lambdaMode.stack, lambdaMode.json);
    expect(errors.Properties).toMatchObject({
      Namespace: 'AWS/Lambda',
      MetricName: 'Errors',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: hostId } }],
      Threshold: 5,
    });
    const latency = alarmResource(m.latencyAlarm, lambdaMode.stack, lambdaMode.json);
    expect(latency.Properties).toMatchObject({
      Namespace: 'AWS/Lambda',
      MetricName: 'Duration',
      ExtendedStatistic: 'p99',
      Threshold: 1000,
    });
    expect(m.rollbackAlarms).toHaveLength(4);
  });
});

describe('Monitoring: dashboard', () => {
  const dashboards = resourcesOf('AWS::CloudWatch::Dashboard');
  const body = String(flatten(dashboards[0]?.[1].Properties?.DashboardBody));

  it('is one dashboard with serving metrics per variant from AWS/SageMaker', () => {
    expect(dashboards).toHaveLength(1);
    const endpointId = logicalIdOf(stack, stack.inferenceEndpoint?.endpoint as IConstruct);
    for (const metric of [
      'Invocations',
      'Invocation5XXErrors',
      'Invocation4XXErrors',
      'ModelLatency',
      'OverheadLatency',
    ]) {
      expect(body).toContain(
        `["AWS/SageMaker","${metric}","EndpointName","<${endpointId}.EndpointName>","VariantName","AllTraffic"`,
      );
    }
  });

  it('charts drift and quality of every model with search expressions over the monitor’s namespace', () => {
    for (const metric of [
      'FeatureDriftScore',
      'DriftedFeatures',
      'PredictionPsi',
      'ModelAccuracy',
      'ModelRmse',
    ]) {
      expect(body).toMatch(
        new RegExp(
          `SEARCH\\('\\{Kiln/Monitoring,service,model,version[^}]*\\} MetricName=\\\\"${metric}\\\\"'`,
        ),
      );
    }
    expect(body).toContain('"type":"alarm"');
  });
});

describe('Monitoring: least privilege', () => {
  const monitorRole = logicalIdOf(stack, monitoring.monitorFunction.role);
  const labelsRole = logicalIdOf(stack, monitoring.labelsFunction.role);

  it('the monitor reads capture/, models/, registry/ and monitoring/, and writes only monitoring/', () => {
    for (const key of [
      'capture/churn/1/x.jsonl',
      'models/churn/1/baseline.json',
      'registry/churn/aliases.json',
    ]) {
      expect(canRead(monitorRole, key), key).toBe(true);
      expect(canWrite(monitorRole, key), key).toBe(false);
    }
    expect(canRead(monitorRole, 'monitoring/churn/labels/a.jsonl')).toBe(true);
    expect(canWrite(monitorRole, 'monitoring/churn/1/drift/r.json')).toBe(true);
    for (const key of ['raw/churn/a.csv', 'curated/churn/v/train.parquet', 'labels/churn/a.csv']) {
      expect(canRead(monitorRole, key), key).toBe(false);
    }
    const deletes = resourcesAllowed(allowStatementsOfRole(json, monitorRole), 's3:DeleteObject');
    expect(deletes).toEqual([]);
  });

  it('the labels handler reads labels/, capture/ and registry/, and writes only monitoring/', () => {
    for (const key of [
      'labels/churn/a.csv',
      'capture/churn/1/x.jsonl',
      'registry/churn/versions/000001.json',
    ]) {
      expect(canRead(labelsRole, key), key).toBe(true);
      expect(canWrite(labelsRole, key), key).toBe(false);
    }
    expect(canWrite(labelsRole, 'monitoring/churn/labels/a.jsonl')).toBe(true);
    expect(canRead(labelsRole, 'models/churn/1/model.onnx')).toBe(false);
  });

  it('both put events on the Kiln bus only', () => {
    const busArn = `<${logicalIdOf(stack, stack.bus.bus)}.Arn>`;
    for (const role of [monitorRole, labelsRole]) {
      expect(resourcesAllowed(allowStatementsOfRole(json, role), 'events:PutEvents')).toEqual([busArn]);
    }
  });

  it('the monitor handler bundles as a light zip without native modules', async () => {
    expect(json.Resources[logicalIdOf(stack, monitoring.monitorFunction.function)]?.Properties?.Runtime).toBe(
      'nodejs22.x',
    );
    const result = await build({
      entryPoints: [join(REPO_ROOT, 'functions/monitoring/monitor.ts')],
      bundle: true,
      write: false,
      metafile: true,
      platform: 'node',
      format: 'esm',
      target: 'node22',
      external: ['@aws-sdk/*'],
      logLevel: 'silent',
    });
    const native = Object.keys(result.metafile.inputs).filter((input) =>
      /onnxruntime-node|@duckdb\/|\.node$/.test(input),
    );
    expect(native).toEqual([]);
  });
});

describe('Monitoring: cdk-nag', () => {
  it.each([
    ['sagemaker serving', {}],
    ['lambda serving', { servingMode: 'lambda' as const }],
  ])('reports no unacknowledged AwsSolutions finding under the construct (%s)', (_name, props) => {
    const { stack: s } = synthesize(props);
    const report = new AwsSolutionsChecks().validateScope(s.monitoring);
    const findings = report.violations.flatMap((violation) =>
      violation.violatingResources.map((resource) => `${violation.ruleName} @ ${resource.constructPath}`),
    );
    expect(findings).toEqual([]);
  });
});
