import { App, CfnParameter, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as events from 'aws-cdk-lib/aws-events';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { describe, expect, it } from 'vitest';
import { RetrainingStates } from '../../lib/constructs/model-updates.ts';
import { ValidationError } from '../../lib/core/errors.ts';
import { EtlStates } from '../../lib/pipelines/etl-pipeline.ts';
import { TrainingPipeline, TrainingStates } from '../../lib/pipelines/training-pipeline.ts';
import type { KilnPlatformStackProps } from '../../lib/stacks/platform-stack.ts';
import { synthesizePlatformTemplate } from '../../lib/stacks/synth.ts';
import { type CfnResource, type CfnTemplate, definitionOf, property, synthesize } from './support.ts';

describe('synthesizePlatformTemplate', () => {
  const template = synthesizePlatformTemplate() as unknown as CfnTemplate;
  const machines = Object.entries(template.Resources).filter(
    ([, resource]) => resource.Type === 'AWS::StepFunctions::StateMachine',
  );

  it('returns the CloudFormation template with both state machines, readable as ASL', () => {
    const starts = machines.map(([id]) => definitionOf(template, id).StartAt).sort();
    expect(starts).toEqual([EtlStates.plan, TrainingStates.prepare, RetrainingStates.debounce].sort());
  });

  it('matches what the CDK app synthesizes (same definitions the cloud runs)', () => {
    const { json } = synthesize();
    // Image tags hash the source tree, which may change between the two syntheses while others edit it.
    const normalized = (definition: unknown) =>
      JSON.stringify(definition).replace(/:[0-9a-f]{64}"/g, ':<hash>"');
    for (const [id] of machines) {
      expect(normalized(definitionOf(template, id))).toEqual(normalized(definitionOf(json, id)));
    }
  });

  it('names the handler module of every function, for the local runtime', () => {
    const functions = Object.values(template.Resources).filter(
      (resource) => resource.Type === 'AWS::Lambda::Function',
    );
    expect(functions.length).toBe(15);
    for (const fn of functions) {
      const variables = property<{ Variables: Record<string, unknown> }>(fn, 'Environment').Variables;
      expect(variables.KILN_HANDLER).toMatch(/^functions\/[a-z/-]+\.handler$/);
    }
  });

  it('passes stack props through (lambda serving has no SageMaker endpoint)', () => {
    const lambda = synthesizePlatformTemplate({
      stackProps: { servingMode: 'lambda' },
    }) as unknown as CfnTemplate;
    const types = Object.values(lambda.Resources).map((resource) => resource.Type);
    expect(types).not.toContain('AWS::SageMaker::Endpoint');
  });
});

describe('KilnPlatformStack props', () => {
  it.each<[KilnPlatformStackProps, RegExp]>([
    [{ servingMode: 'ec2' as 'lambda' }, /servingMode must be one of sagemaker, lambda, got 'ec2'/],
    [
      { trainingInstanceType: 'm5.xlarge' },
      /trainingInstanceType must be 'ml.<family>.<size>', got 'm5.xlarge'/,
    ],
    [{ inferenceInstanceType: 'ml.g5' }, /instanceType must be 'ml.<family>.<size>', got 'ml.g5'/],
    [{ etlMaxConcurrency: 0 }, /maxConcurrency must be an integer between 1 and 10000, got 0/],
  ])('rejects %o with a message naming the value and the range', (props, message) => {
    expect(() => synthesize(props)).toThrow(ValidationError);
    expect(() => synthesize(props)).toThrow(message);
  });

  it('accepts an instance type only known at deploy time (a token)', () => {
    const app = new App({
      builtinCloudFormationValidation: false,
      context: { [cxapi.BUNDLING_STACKS]: [] },
    });
    const stack = new Stack(app, 'Tokens');
    const instanceType = new CfnParameter(stack, 'TrainingInstanceType', { default: 'ml.c5.2xlarge' })
      .valueAsString;
    const lakeBucket = new s3.Bucket(stack, 'Lake', { encryption: s3.BucketEncryption.KMS });
    new TrainingPipeline(stack, 'Training', {
      lakeBucket,
      bus: new events.EventBus(stack, 'Bus'),
      failureFunction: lambda.Function.fromFunctionName(stack, 'Failure', 'failure'),
      trainingInstanceType: instanceType,
    });
    // The deploy-time type reaches Prepare, which writes it into each job ($.job.instanceType) unless the
    // request names another; the state machine passes that JSONPath through.
    const template = Template.fromStack(stack);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          KILN_HANDLER: 'functions/training/prepare.handler',
          KILN_TRAINING_INSTANCE_TYPE: { Ref: 'TrainingInstanceType' },
          KILN_BYO_TRAINING_INSTANCE_TYPE: { Ref: 'TrainingInstanceType' },
        }),
      },
    });
    const machines = template.findResources('AWS::StepFunctions::StateMachine');
    const definition = property<{ 'Fn::Join': [string, unknown[]] }>(
      Object.values(machines)[0] as CfnResource | undefined,
      'DefinitionString',
    );
    const text = definition['Fn::Join'][1].filter((part) => typeof part === 'string').join('');
    expect(text).toContain('"InstanceType.$":"$.job.instanceType"');
  });
});
