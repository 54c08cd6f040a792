import { App, type CfnElement, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as events from 'aws-cdk-lib/aws-events';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as cxapi from 'aws-cdk-lib/cx-api';
import type { IConstruct } from 'constructs';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../lib/core/errors.ts';
import { TrainingPipeline, type TrainingPipelineProps } from '../../lib/pipelines/training-pipeline.ts';
import {
  allowStatementsOfRole,
  type CfnTemplate,
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
const lakeArn = `<${logicalIdOf(stack, stack.lake.bucket)}.Arn>`;
const canRead = (roleId: string, key: string) =>
  resourcesAllowed(allowStatementsOfRole(json, roleId), 's3:GetObject').some((pattern) =>
    covers(pattern, `${lakeArn}/${key}`),
  );

/** A stack holding only a TrainingPipeline, for construct props the platform stack does not expose. */
function pipelineStack(props: (repository: ecr.IRepository) => Partial<TrainingPipelineProps> = () => ({})) {
  const app = new App({ context: { [cxapi.BUNDLING_STACKS]: [] } });
  const scope = new Stack(app, 'Training');
  const repository = new ecr.Repository(scope, 'ByoRepo');
  const pipeline = new TrainingPipeline(scope, 'Pipeline', {
    lakeBucket: new s3.Bucket(scope, 'Lake', { encryption: s3.BucketEncryption.KMS }),
    bus: new events.EventBus(scope, 'Bus'),
    failureFunction: lambda.Function.fromFunctionName(scope, 'Failure', 'failure'),
    ...props(repository),
  });
  const template = Template.fromStack(scope);
  const id = (construct: IConstruct) => scope.getLogicalId(construct.node.defaultChild as CfnElement);
  return { template, json: template.toJSON() as CfnTemplate, pipeline, repository, id };
}

describe('TrainingPipeline: bring your own training', () => {
  it('takes the image and instance type of each job from $.job, as Prepare chose them', () => {
    const training = definitionOf(json, logicalIdOf(stack, stack.training.stateMachine));
    const parameters = stateNamed(training, 'Train').Parameters as Record<string, Record<string, unknown>>;
    expect(parameters.AlgorithmSpecification).toEqual({
      TrainingInputMode: 'File',
      'TrainingImage.$': '$.job.trainingImage',
    });
    expect(parameters.ResourceConfig).toMatchObject({ 'InstanceType.$': '$.job.instanceType' });
    const prepare = json.Resources[logicalIdOf(stack, stack.training.prepareFunction.function)];
    const variables = property<{ Variables: Record<string, unknown> }>(prepare, 'Environment').Variables;
    expect(variables).toMatchObject({
      KILN_TRAINING_INSTANCE_TYPE: 'ml.m5.xlarge',
      KILN_BYO_TRAINING_INSTANCE_TYPE: 'ml.m5.xlarge',
    });
    expect(String(flatten(variables.KILN_TRAINING_IMAGE))).toContain('container-assets');
  });

  it('sets a GPU default for BYO jobs apart from the CPU default of built-in ones', () => {
    const { template } = pipelineStack(() => ({ byoTrainingInstanceType: 'ml.g5.xlarge' }));
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          KILN_HANDLER: 'functions/training/prepare.handler',
          KILN_TRAINING_INSTANCE_TYPE: 'ml.m5.xlarge',
          KILN_BYO_TRAINING_INSTANCE_TYPE: 'ml.g5.xlarge',
        }),
      },
    });
  });

  it('rejects a malformed BYO instance type, naming it and the expected form', () => {
    const build = () => pipelineStack(() => ({ byoTrainingInstanceType: 'g5.xlarge' }));
    expect(build).toThrow(ValidationError);
    expect(build).toThrow(/byoTrainingInstanceType must be 'ml.<family>.<size>', got 'g5.xlarge'/);
  });

  it('lets the training role pull only from the built-in repository and the listed BYO repositories', () => {
    const pulls = (built: ReturnType<typeof pipelineStack>) =>
      resourcesAllowed(
        allowStatementsOfRole(built.json, built.id(built.pipeline.trainingRole)),
        'ecr:BatchGetImage',
      );
    const builtinOnly = pulls(pipelineStack());
    expect(builtinOnly).toHaveLength(1);
    expect(builtinOnly[0]).toContain('container-assets');
    const withByo = pipelineStack((repository) => ({ byoImageRepositories: [repository] }));
    const allowed = pulls(withByo);
    expect(allowed).toEqual([builtinOnly[0], `<${withByo.id(withByo.repository)}.Arn>`]);
    expect(allowed).not.toContain('*');
    // Prepare knows the same list, so it refuses other images before a job is started.
    withByo.template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          KILN_HANDLER: 'functions/training/prepare.handler',
          KILN_BYO_IMAGE_REPOSITORIES: Match.objectLike({ 'Fn::Join': Match.anyValue() }),
        }),
      },
    });
  });
});

describe('TrainingPipeline: data access', () => {
  it('the training role reads a user held-out file (holdout/) as the test channel', () => {
    const role = logicalIdOf(stack, stack.training.trainingRole);
    expect(canRead(role, 'holdout/churn/0123abcd/test.csv')).toBe(true);
  });

  it('register reads curated and held-out rows to complete BYO models (fitted transform, baseline)', () => {
    const role = logicalIdOf(stack, stack.training.registerFunction.role);
    expect(canRead(role, 'curated/churn/0123456789abcdef/train.parquet')).toBe(true);
    expect(canRead(role, 'holdout/churn/0123abcd/test.csv')).toBe(true);
    expect(canRead(role, 'raw/churn/i-1/part-0.csv')).toBe(false);
  });
});
