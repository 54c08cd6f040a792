import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type { IConstruct } from 'constructs';
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { KilnNodeFunction } from '../../lib/constructs/kiln-function.ts';
import { REPO_ROOT } from '../../lib/constructs/paths.ts';
import { ValidationError } from '../../lib/core/errors.ts';
import {
  allowStatementsOfRole,
  type CfnResource,
  covers,
  flatten,
  logicalIdOf,
  property,
  resourcesAllowed,
  synthesize,
} from './support.ts';

const { stack, json } = synthesize();
const lakeArn = `<${logicalIdOf(stack, stack.lake.bucket)}.Arn>`;
const functions = Object.entries(json.Resources).filter(
  ([, resource]) => resource.Type === 'AWS::Lambda::Function',
);
const variables = (resource: CfnResource) =>
  property<{ Variables: Record<string, unknown> }>(resource, 'Environment').Variables;
const roleOf = (construct: { role: IConstruct }) => logicalIdOf(stack, construct.role);

/** Object-level S3 actions that change the lake. */
const WRITE_ACTIONS = ['s3:PutObject', 's3:DeleteObject'];
const canWrite = (roleId: string, key: string) => {
  const statements = allowStatementsOfRole(json, roleId);
  return WRITE_ACTIONS.some((action) =>
    resourcesAllowed(statements, action).some((pattern) => covers(pattern, `${lakeArn}/${key}`)),
  );
};
const canRead = (roleId: string, key: string) =>
  resourcesAllowed(allowStatementsOfRole(json, roleId), 's3:GetObject').some((pattern) =>
    covers(pattern, `${lakeArn}/${key}`),
  );

describe('Lambda handlers', () => {
  it('are the fifteen Kiln handlers, each naming its module in KILN_HANDLER', () => {
    const handlers = functions.map(([, resource]) => variables(resource).KILN_HANDLER).sort();
    expect(handlers).toEqual(
      [
        'functions/etl/finalize.handler',
        'functions/etl/plan.handler',
        'functions/etl/shard.handler',
        'functions/inference/proxy.handler',
        'functions/monitoring/labels.handler',
        'functions/monitoring/monitor.handler',
        'functions/pipeline/failure.handler',
        'functions/registry/api.handler',
        'functions/training/evaluate.handler',
        'functions/training/prepare.handler',
        'functions/training/register.handler',
        'functions/updates/deploy.handler',
        'functions/updates/plan.handler',
        'functions/updates/record.handler',
        'functions/updates/trigger.handler',
      ].sort(),
    );
  });

  it('all receive the lake URI, the bus name, a Powertools service name and tracing', () => {
    const lakeRef = `s3://<${logicalIdOf(stack, stack.lake.bucket)}>`;
    const busRef = `<${logicalIdOf(stack, stack.bus.bus)}>`;
    for (const [id, resource] of functions) {
      const env = variables(resource);
      expect(flatten(env.KILN_LAKE), id).toBe(lakeRef);
      expect(flatten(env.KILN_EVENT_BUS), id).toBe(busRef);
      expect(env.POWERTOOLS_SERVICE_NAME, id).toMatch(/^kiln/);
      expect(resource.Properties?.TracingConfig, id).toEqual({ Mode: 'Active' });
      expect(resource.Properties?.LoggingConfig, id).toMatchObject({ LogFormat: 'JSON' });
    }
  });

  it('light handlers are Node.js 22 arm64 zips; heavy ones are container images with room to work', () => {
    const zips: string[] = [];
    for (const [id, resource] of functions) {
      const props = resource.Properties ?? {};
      const handler = String(variables(resource).KILN_HANDLER);
      if (props.PackageType === 'Image') {
        expect(props.ImageConfig, id).toEqual({ Command: [`dist/${handler}`] });
        expect(props.MemorySize as number, id).toBeGreaterThanOrEqual(3008);
        // The data-heavy steps get Lambda's full 15 minutes; the others less, to fail fast.
        const dataHeavy = /^functions\/(etl\/(shard|finalize)|training\/evaluate)\.handler$/.test(handler);
        if (dataHeavy) expect(props.Timeout, id).toBe(900);
        expect(props.Timeout as number, id).toBeGreaterThanOrEqual(120);
        expect(props.Architectures, id).toEqual(['x86_64']);
      } else {
        expect(props.Runtime, id).toBe('nodejs22.x');
        expect(props.Architectures, id).toEqual(['arm64']);
        expect(props.Handler, id).toBe('index.handler');
        zips.push(handler);
      }
    }
    // Everything else reaches DuckDB or ONNX Runtime through lib/ (see the bundling test below).
    expect(zips.sort()).toEqual([
      'functions/inference/proxy.handler',
      'functions/monitoring/monitor.handler',
      'functions/registry/api.handler',
      'functions/updates/deploy.handler',
      'functions/updates/plan.handler',
      'functions/updates/record.handler',
      'functions/updates/trigger.handler',
    ]);
  });

  it('zip handlers bundle without native modules (esbuild, as NodejsFunction runs it)', async () => {
    const zipEntries = functions
      .filter(([, resource]) => resource.Properties?.PackageType !== 'Image')
      .map(([, resource]) => String(variables(resource).KILN_HANDLER).replace(/\.[A-Za-z_$]+$/, '.ts'));
    for (const entry of zipEntries) {
      const result = await build({
        entryPoints: [join(REPO_ROOT, entry)],
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
      expect(native, entry).toEqual([]);
    }
  });

  it('every heavy function runs the same image (one build), selecting its handler by CMD', () => {
    const images = new Set(
      functions
        .filter(([, resource]) => resource.Properties?.PackageType === 'Image')
        .map(([, resource]) => JSON.stringify(resource.Properties?.Code)),
    );
    expect(images.size).toBe(1);
  });

  it('log to their own log group with a retention', () => {
    for (const [id, resource] of functions) {
      const group = flatten(property<{ LogGroup: unknown }>(resource, 'LoggingConfig').LogGroup);
      const logGroupId = String(group).slice(1, -1);
      expect(json.Resources[logGroupId]?.Type, id).toBe('AWS::Logs::LogGroup');
      expect(json.Resources[logGroupId]?.Properties?.RetentionInDays, id).toBe(30);
    }
  });

  it('use roles without AWS-managed policies', () => {
    for (const [id, resource] of functions) {
      const roleId = String(flatten(resource.Properties?.Role)).replace(/^<|\.Arn>$/g, '');
      expect(json.Resources[roleId]?.Properties?.ManagedPolicyArns, id).toBeUndefined();
    }
  });
});

describe('least privilege on the lake', () => {
  it('shard reads raw/, writes only curated-staging/ and quarantine/', () => {
    const shard = roleOf(stack.etl.shardFunction);
    expect(canRead(shard, 'raw/churn/i-1/part-0.csv')).toBe(true);
    expect(canWrite(shard, 'curated-staging/churn/run-1/part-0.parquet')).toBe(true);
    expect(canWrite(shard, 'quarantine/churn/run-1/part-0.jsonl')).toBe(true);
    expect(canWrite(shard, 'curated/churn/v1/data.parquet')).toBe(false);
    expect(canWrite(shard, 'models/churn/1/model.onnx')).toBe(false);
    expect(canWrite(shard, 'raw/churn/i-1/part-0.csv')).toBe(false);
    expect(canWrite(shard, 'registry/churn.json')).toBe(false);
  });

  it('finalize commits staging into curated/ but cannot touch raw/ or models/', () => {
    const finalize = roleOf(stack.etl.finalizeFunction);
    expect(canRead(finalize, 'curated-staging/churn/run-1/part-0.parquet')).toBe(true);
    expect(canWrite(finalize, 'curated/churn/v1/manifest.json')).toBe(true);
    expect(canWrite(finalize, 'raw/churn/i-1/part-0.csv')).toBe(false);
    expect(canWrite(finalize, 'models/churn/1/model.onnx')).toBe(false);
  });

  it('plan reads raw/ and writes only the raw index and schema contracts', () => {
    const plan = roleOf(stack.etl.planFunction);
    expect(canRead(plan, 'raw/churn/i-1/part-0.csv')).toBe(true);
    expect(canWrite(plan, 'index/raw/churn/i-1/part-0.csv.json')).toBe(true);
    expect(canWrite(plan, 'schemas/churn/schema.json')).toBe(true);
    for (const key of ['raw/x', 'curated/x', 'curated-staging/x', 'models/x', 'registry/x', 'runs/x']) {
      expect(canWrite(plan, key), key).toBe(false);
    }
  });

  it('prepare and evaluate only read: curated data, holdout files, staged and registered models', () => {
    const prepare = roleOf(stack.training.prepareFunction);
    const evaluate = roleOf(stack.training.evaluateFunction);
    expect(canRead(prepare, 'curated/churn/v1/manifest.json')).toBe(true);
    expect(canRead(evaluate, 'holdout/churn/0123abcd/test.csv')).toBe(true);
    expect(canRead(evaluate, 'models-staging/job-1/output/model.tar.gz')).toBe(true);
    expect(canRead(evaluate, 'models/churn/1/model.onnx')).toBe(true);
    for (const role of [prepare, evaluate]) {
      for (const key of ['curated/x', 'holdout/x', 'models-staging/x', 'models/x', 'registry/x', 'runs/x']) {
        expect(canWrite(role, key), `${role} ${key}`).toBe(false);
      }
    }
  });

  it('the failure handler writes only run records', () => {
    const failure = roleOf(stack.failureFunction);
    expect(canWrite(failure, 'runs/etl/run-1-failed.json')).toBe(true);
    for (const key of ['raw/x', 'curated/x', 'models/x', 'registry/x', 'schemas/x']) {
      expect(canWrite(failure, key), key).toBe(false);
    }
  });

  it('only register and the registry API write models/ and registry/', () => {
    const writers = [roleOf(stack.training.registerFunction), roleOf(stack.registryApi.handler)];
    expect(writers.every((role) => canWrite(role, 'registry/churn/record.json'))).toBe(true);
    expect(canWrite(roleOf(stack.training.registerFunction), 'models/churn/1/model.onnx')).toBe(true);
    const others = [
      stack.etl.planFunction,
      stack.etl.shardFunction,
      stack.etl.finalizeFunction,
      stack.training.prepareFunction,
      stack.training.evaluateFunction,
      stack.failureFunction,
    ].map(roleOf);
    for (const role of others) {
      expect(canWrite(role, 'models/churn/1/model.onnx'), role).toBe(false);
      expect(canWrite(role, 'registry/churn/record.json'), role).toBe(false);
    }
  });

  it('the SageMaker training role reads curated/ and writes only models-staging/', () => {
    const role = logicalIdOf(stack, stack.training.trainingRole);
    expect(canRead(role, 'curated/churn/v1/train/part-0.parquet')).toBe(true);
    expect(canWrite(role, 'models-staging/churn/kiln-churn-1/output/model.tar.gz')).toBe(true);
    expect(canWrite(role, 'models/churn/1/model.onnx')).toBe(false);
    expect(canRead(role, 'raw/churn/i-1/part-0.csv')).toBe(false);
  });

  it('no role is allowed any S3 action on every bucket', () => {
    for (const [id, resource] of Object.entries(json.Resources)) {
      if (resource.Type !== 'AWS::IAM::Role') continue;
      const statements = allowStatementsOfRole(json, id);
      for (const action of ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:ListBucket']) {
        expect(resourcesAllowed(statements, action), `${id} ${action}`).not.toContain('*');
      }
    }
  });

  it('only the handlers that publish events may put events, and only on the Kiln bus', () => {
    const busArn = `<${logicalIdOf(stack, stack.bus.bus)}.Arn>`;
    const publishers = [
      stack.etl.finalizeFunction,
      stack.training.registerFunction,
      stack.registryApi.handler,
    ];
    for (const construct of publishers) {
      expect(resourcesAllowed(allowStatementsOfRole(json, roleOf(construct)), 'events:PutEvents')).toEqual([
        busArn,
      ]);
    }
    const silent = [
      stack.etl.planFunction,
      stack.etl.shardFunction,
      stack.training.evaluateFunction,
      stack.failureFunction,
    ];
    for (const construct of silent) {
      expect(resourcesAllowed(allowStatementsOfRole(json, roleOf(construct)), 'events:PutEvents')).toEqual(
        [],
      );
    }
  });
});

describe('KilnNodeFunction props', () => {
  const scope = () => {
    const stack = new Stack(new App(), 'Props');
    return {
      stack,
      lake: s3.Bucket.fromBucketName(stack, 'Lake', 'lake'),
      bus: events.EventBus.fromEventBusName(stack, 'Bus', 'bus'),
    };
  };

  it('rejects a handler reference outside functions/, naming it', () => {
    const { stack, lake, bus } = scope();
    expect(() => new KilnNodeFunction(stack, 'Fn', { handler: 'lib/etl/plan.handler', lake, bus })).toThrow(
      ValidationError,
    );
    expect(() => new KilnNodeFunction(stack, 'Fn2', { handler: 'functions/etl/plan', lake, bus })).toThrow(
      /handler must be 'functions\/<dir>\/<module>\.<export>', got 'functions\/etl\/plan'/,
    );
  });

  it('rejects memory outside Lambda limits', () => {
    const { stack, lake, bus } = scope();
    expect(
      () =>
        new KilnNodeFunction(stack, 'Fn', {
          handler: 'functions/etl/plan.handler',
          lake,
          bus,
          memorySize: 64,
        }),
    ).toThrow(/memorySize must be an integer between 128 and 10240, got 64/);
  });
});
