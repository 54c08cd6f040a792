import { Aws, Duration, Fn, IgnoreMode, Size, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as ecr from 'aws-cdk-lib/aws-ecr';
import { DockerImageAsset, Platform } from 'aws-cdk-lib/aws-ecr-assets';
import type * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { LakePrefix } from '../constructs/data-lake.ts';
import { KilnContainerFunction, type KilnHandler } from '../constructs/kiln-function.ts';
import { LogEncryptionKey } from '../constructs/log-key.ts';
import {
  acknowledgeGrantActions,
  acknowledgeInvokeVersions,
  acknowledgePrefixGrants,
  BUCKET_GRANT_ACTIONS,
} from '../constructs/nag.ts';
import { DOCKER_CONTEXT_EXCLUDES, REPO_ROOT } from '../constructs/paths.ts';
import { assertIntegerInRange, assertMatches, SAGEMAKER_INSTANCE_TYPE } from '../constructs/validate.ts';
import { ValidationError } from '../core/errors.ts';
import { CATCH_ALL, failureBranch, invokeLambda } from './lambda-task.ts';

/** State names of the training state machine; the local runtime and tests key on them. */
export const TrainingStates = {
  prepare: 'Prepare',
  train: 'Train',
  evaluate: 'Evaluate',
  gate: 'Gate',
  registerChampion: 'RegisterChampion',
  registerCandidate: 'RegisterCandidate',
  succeeded: 'TrainingSucceeded',
  recordFailure: 'RecordTrainingFailure',
  failed: 'TrainingFailed',
} as const;

/** The Dockerfile of the training image (SageMaker training contract). */
export const TRAINING_DOCKERFILE = 'containers/training/Dockerfile';

/** Properties of {@link TrainingPipeline}. */
export interface TrainingPipelineProps {
  /** The lake bucket (curated/ in, models-staging/ out, registry/ and models/ on registration). */
  readonly lakeBucket: s3.IBucket;
  /** The platform bus. */
  readonly bus: events.IEventBus;
  /** Handler recording pipeline failures (shared by all pipelines). */
  readonly failureFunction: lambda.IFunction;
  /**
   * SageMaker instance type (`ml.<family>.<size>`) of built-in training jobs; a request's `instanceType`
   * overrides it per job.
   * @default 'ml.m5.xlarge' — the built-in tabular trainers are CPU-bound
   */
  readonly trainingInstanceType?: string;
  /**
   * Instance type of bring-your-own training jobs (requests with an `image`), e.g. a GPU type such as
   * `ml.g5.xlarge` for deep-learning images; a request's `instanceType` overrides it per job.
   * @default - trainingInstanceType
   */
  readonly byoTrainingInstanceType?: string;
  /**
   * ECR repositories of bring-your-own training images; the training role may pull from these (and from the
   * built-in image's repository) only.
   * @default - none: only the built-in image can run
   */
  readonly byoImageRepositories?: readonly ecr.IRepository[];
  /** Training volume size in GiB (1–16384). @default 30 */
  readonly trainingVolumeSizeGiB?: number;
  /** Longest a training job may run (at most 28 days). @default Duration.hours(4) */
  readonly maxTrainingRuntime?: Duration;
  /**
   * Run training containers without network access (they only need `/opt/ml`). Turn off for
   * bring-your-own images that download at run time.
   * @default true
   */
  readonly trainingNetworkIsolation?: boolean;
  /**
   * Key encrypting the training volume and the model output.
   * @default - the lake bucket's key; required if the bucket has none
   */
  readonly encryptionKey?: kms.IKey;
  /** Upper bound of one training execution. @default maxTrainingRuntime + 2 hours */
  readonly timeout?: Duration;
  /** Key for the execution-log group. @default - a new {@link LogEncryptionKey} */
  readonly logEncryptionKey?: LogEncryptionKey;
  /** Retention of execution and handler logs. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * Train → evaluate → register: `Prepare` builds the job spec from a curated version, `Train` runs a
 * SageMaker training job on `containers/training` or on a bring-your-own image named by the request,
 * `Evaluate` scores it on held-out data against the champion, and `Gate` registers it as the new champion
 * or as a candidate.
 */
export class TrainingPipeline extends Construct {
  /** The training state machine. */
  public readonly stateMachine: sfn.StateMachine;
  /** Role SageMaker training jobs run as. */
  public readonly trainingRole: iam.Role;
  /** `functions/training/prepare.ts` (container image: lib/training/steps.ts loads DuckDB and ONNX Runtime). */
  public readonly prepareFunction: KilnHandler;
  /** `functions/training/evaluate.ts` (container image: ONNX Runtime, DuckDB). */
  public readonly evaluateFunction: KilnHandler;
  /** `functions/training/register.ts` (container image, same reason as prepare). */
  public readonly registerFunction: KilnHandler;
  /** Execution-log group of the state machine. */
  public readonly logGroup: logs.LogGroup;
  /** The built-in training image, built from `containers/training/Dockerfile`. */
  public readonly trainingImage: DockerImageAsset;

  constructor(scope: Construct, id: string, props: TrainingPipelineProps) {
    super(scope, id);
    const instanceType = props.trainingInstanceType ?? 'ml.m5.xlarge';
    assertMatches('trainingInstanceType', instanceType, SAGEMAKER_INSTANCE_TYPE, "'ml.<family>.<size>'");
    const byoInstanceType = props.byoTrainingInstanceType ?? instanceType;
    assertMatches(
      'byoTrainingInstanceType',
      byoInstanceType,
      SAGEMAKER_INSTANCE_TYPE,
      "'ml.<family>.<size>'",
    );
    const volumeSize = props.trainingVolumeSizeGiB ?? 30;
    assertIntegerInRange('trainingVolumeSizeGiB', volumeSize, 1, 16384);
    const maxRuntime = props.maxTrainingRuntime ?? Duration.hours(4);
    assertIntegerInRange('maxTrainingRuntime (seconds)', maxRuntime.toSeconds(), 1, 28 * 24 * 3600);
    const key = props.encryptionKey ?? props.lakeBucket.encryptionKey;
    if (!key) {
      throw new ValidationError(
        'TrainingPipeline needs an encryptionKey: the lake bucket has no KMS key, got encryptionKey undefined',
      );
    }
    const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const byoRepositories = props.byoImageRepositories ?? [];
    // The built-in training image (`containers/training`), the default of every job.
    this.trainingImage = new DockerImageAsset(this, 'TrainingImage', {
      directory: REPO_ROOT,
      file: TRAINING_DOCKERFILE,
      platform: Platform.LINUX_AMD64,
      ignoreMode: IgnoreMode.DOCKER,
      exclude: [...DOCKER_CONTEXT_EXCLUDES],
    });
    const logKey = props.logEncryptionKey ?? new LogEncryptionKey(this, 'LogKey');
    const lake = props.lakeBucket;
    const common = { lake, bus: props.bus, logRetention, serviceName: 'kiln-training' };

    this.prepareFunction = new KilnContainerFunction(this, 'PrepareHandler', {
      ...common,
      handler: 'functions/training/prepare.handler',
      timeout: Duration.minutes(5),
      // Prepare picks the image and instance type of each job: the request's, else these defaults.
      environment: {
        KILN_TRAINING_IMAGE: this.trainingImage.imageUri,
        KILN_TRAINING_INSTANCE_TYPE: instanceType,
        KILN_BYO_TRAINING_INSTANCE_TYPE: byoInstanceType,
        // Prepare refuses other images up front, rather than SageMaker failing to pull them minutes later.
        KILN_BYO_IMAGE_REPOSITORIES: byoRepositories.length
          ? Fn.join(
              ',',
              byoRepositories.map((repository) => repository.repositoryUri),
            )
          : '',
      },
    });
    this.evaluateFunction = new KilnContainerFunction(this, 'EvaluateHandler', {
      ...common,
      handler: 'functions/training/evaluate.handler',
    });
    this.registerFunction = new KilnContainerFunction(this, 'RegisterHandler', {
      ...common,
      handler: 'functions/training/register.handler',
      timeout: Duration.minutes(5),
    });

    // prepare: resolve the curated version and the registry's view of the model; it writes nothing.
    lake.grantRead(this.prepareFunction, `${LakePrefix.curated}*`);
    lake.grantRead(this.prepareFunction, `${LakePrefix.schemas}*`);
    lake.grantRead(this.prepareFunction, `${LakePrefix.registry}*`);
    lake.grantRead(this.prepareFunction, `${LakePrefix.holdout}*`);
    // evaluate: score the staged model and the champion on held-out curated data.
    lake.grantRead(this.evaluateFunction, `${LakePrefix.modelsStaging}*`);
    lake.grantRead(this.evaluateFunction, `${LakePrefix.curated}*`);
    lake.grantRead(this.evaluateFunction, `${LakePrefix.holdout}*`);
    lake.grantRead(this.evaluateFunction, `${LakePrefix.registry}*`);
    lake.grantRead(this.evaluateFunction, `${LakePrefix.models}*`);
    // register: copy staged artifacts into models/, record the version in registry/, report the run. It reads
    // curated and held-out rows to complete bring-your-own models (fitted transform, baseline profile).
    lake.grantRead(this.registerFunction, `${LakePrefix.modelsStaging}*`);
    lake.grantRead(this.registerFunction, `${LakePrefix.curated}*`);
    lake.grantRead(this.registerFunction, `${LakePrefix.holdout}*`);
    lake.grantReadWrite(this.registerFunction, `${LakePrefix.models}*`);
    lake.grantReadWrite(this.registerFunction, `${LakePrefix.registry}*`);
    lake.grantReadWrite(this.registerFunction, `${LakePrefix.runs}*`);
    // Only register publishes (model registered / promoted).
    props.bus.grantPutEventsTo(this.registerFunction);

    this.trainingRole = new iam.Role(this, 'TrainingRole', {
      assumedBy: new iam.ServicePrincipal('sagemaker.amazonaws.com'),
      description: 'Role of Kiln SageMaker training jobs: curated/ in, models-staging/ out',
    });
    lake.grantRead(this.trainingRole, `${LakePrefix.curated}*`);
    // A user's own held-out file (`kiln train --test-data`) is the test channel.
    lake.grantRead(this.trainingRole, `${LakePrefix.holdout}*`);
    lake.grantPut(this.trainingRole, `${LakePrefix.modelsStaging}*`);
    // Images come from the built-in repository and the listed BYO repositories, never from any ECR repository.
    this.trainingImage.repository.grantPull(this.trainingRole);
    for (const repository of byoRepositories) repository.grantPull(this.trainingRole);
    // Passing our own role means the task adds none of its defaults: logs and metrics are granted here,
    // limited to what SageMaker writes for training jobs.
    this.trainingRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [
          'logs:CreateLogGroup',
          'logs:CreateLogStream',
          'logs:PutLogEvents',
          'logs:DescribeLogStreams',
        ],
        resources: [
          `arn:${Aws.PARTITION}:logs:${Aws.REGION}:${Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/TrainingJobs*`,
        ],
      }),
    );
    this.trainingRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['cloudwatch:PutMetricData'],
        resources: ['*'],
        conditions: { StringLike: { 'cloudwatch:namespace': '/aws/sagemaker/TrainingJobs' } },
      }),
    );

    const recordFailure = failureBranch(this, {
      pipeline: 'training',
      failureFunction: props.failureFunction,
      recordStateName: TrainingStates.recordFailure,
      failStateName: TrainingStates.failed,
    });

    const prepare = invokeLambda(this, TrainingStates.prepare, {
      lambdaFunction: this.prepareFunction.function,
      resultPath: '$.job',
      comment: 'Resolve the curated version and build the training job spec',
    });

    const train = new tasks.SageMakerCreateTrainingJob(this, TrainingStates.train, {
      integrationPattern: sfn.IntegrationPattern.RUN_JOB,
      trainingJobName: sfn.JsonPath.stringAt('$.job.trainingJobName'),
      role: this.trainingRole,
      enableNetworkIsolation: props.trainingNetworkIsolation ?? true,
      algorithmSpecification: {
        // Prepare chose it: the request's BYO image or the built-in one. Pull rights are the role's grants above.
        trainingImage: tasks.DockerImage.fromJsonExpression(
          sfn.JsonPath.stringAt('$.job.trainingImage'),
          false,
        ),
        trainingInputMode: tasks.InputMode.FILE,
      },
      inputDataConfig: [channel('train', '$.job.channels.train'), channel('test', '$.job.channels.test')],
      outputDataConfig: {
        s3OutputLocation: new StateS3Location('$.job.outputUri'),
        encryptionKey: key,
      },
      resourceConfig: {
        instanceCount: 1,
        // A JSONPath is passed through as is (`InstanceType.$`): Prepare wrote the full `ml.` type.
        instanceType: new ec2.InstanceType(sfn.JsonPath.stringAt('$.job.instanceType')),
        volumeSize: Size.gibibytes(volumeSize),
        volumeEncryptionKey: key,
      },
      stoppingCondition: { maxRuntime },
      // A JSONPath (not an object) so the spec's string map passes through as `HyperParameters.$`.
      hyperparameters: sfn.TaskInput.fromJsonPathAt('$.job.hyperparameters').value,
      resultSelector: {
        modelArtifacts: sfn.JsonPath.stringAt('$.ModelArtifacts.S3ModelArtifacts'),
        trainingJobName: sfn.JsonPath.stringAt('$.TrainingJobName'),
        // Lineage of bring-your-own models: when the job ran (a built-in trainer records its own times).
        startedAt: sfn.JsonPath.stringAt('$.TrainingStartTime'),
        endedAt: sfn.JsonPath.stringAt('$.TrainingEndTime'),
      },
      resultPath: '$.training',
      comment: 'SageMaker training job (built-in containers/training or a BYO image) — waits for completion',
    });

    const evaluate = invokeLambda(this, TrainingStates.evaluate, {
      lambdaFunction: this.evaluateFunction.function,
      resultPath: '$.evaluation',
      comment: 'Score the trained model (and the champion) on held-out data; decide the gate',
    });

    const register = (stateName: string, promote: boolean) =>
      invokeLambda(this, stateName, {
        lambdaFunction: this.registerFunction.function,
        payload: sfn.TaskInput.fromObject({ input: sfn.JsonPath.entirePayload, promote }),
        resultPath: '$.registration',
        comment: promote
          ? 'Register the model and promote it to champion'
          : 'Register the model as a candidate',
      });
    const registerChampion = register(TrainingStates.registerChampion, true);
    const registerCandidate = register(TrainingStates.registerCandidate, false);
    const succeeded = new sfn.Succeed(this, TrainingStates.succeeded);

    for (const step of [prepare, train, evaluate, registerChampion, registerCandidate]) {
      step.addCatch(recordFailure, CATCH_ALL);
    }

    const gate = new sfn.Choice(this, TrainingStates.gate, {
      comment: 'Promote only when the evaluation gate passed',
    })
      .when(
        sfn.Condition.and(
          sfn.Condition.isPresent('$.evaluation.gate.passed'),
          sfn.Condition.booleanEquals('$.evaluation.gate.passed', true),
        ),
        registerChampion.next(succeeded),
      )
      .otherwise(registerCandidate.next(succeeded));

    const definition = prepare.next(train).next(evaluate).next(gate);

    this.logGroup = logKey.logGroup(this, 'ExecutionLogs', logRetention);
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      stateMachineType: sfn.StateMachineType.STANDARD,
      timeout: props.timeout ?? maxRuntime.plus(Duration.hours(2)),
      tracingEnabled: true,
      logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
      comment: 'Kiln training: prepare, SageMaker training job, evaluate, gate, register',
    });

    acknowledgeGrantActions(this, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
    acknowledgePrefixGrants(this, lake, [
      LakePrefix.curated,
      LakePrefix.holdout,
      LakePrefix.schemas,
      LakePrefix.registry,
      LakePrefix.models,
      LakePrefix.modelsStaging,
      LakePrefix.runs,
    ]);
    acknowledgeInvokeVersions(this.stateMachine, [
      this.prepareFunction.function,
      this.evaluateFunction.function,
      this.registerFunction.function,
      props.failureFunction,
    ]);
    Validations.of(this.stateMachine).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'Execution logging, X-Ray tracing and sagemaker:ListTags do not support resource-level permissions.',
    });
    Validations.of(this.stateMachine).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:training-job/*]',
      reason:
        'Training job names are generated per run by Prepare ($.job.trainingJobName), so create/describe/stop cannot name one job in advance.',
    });
    Validations.of(this.trainingRole).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'ecr:GetAuthorizationToken (pulling the training image) and cloudwatch:PutMetricData (limited by a namespace condition) have no resource-level permissions.',
    });
    Validations.of(this.trainingRole).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/TrainingJobs*]',
      reason:
        'SageMaker creates the training-job log group and per-job streams at run time; limited to that group.',
    });
  }
}

/**
 * An S3 location read from the state at run time that grants nothing. `S3Location.fromJsonExpression`
 * cannot know the bucket, so it grants s3:GetObject/ListBucket/PutObject on `*` (every bucket); the
 * training role gets prefix-scoped lake grants instead.
 */
class StateS3Location extends tasks.S3Location {
  constructor(private readonly path: string) {
    super();
  }

  public bind(): tasks.S3LocationConfig {
    return { uri: sfn.JsonPath.stringAt(this.path) };
  }
}

function channel(channelName: string, uriPath: string): tasks.Channel {
  return {
    channelName,
    dataSource: {
      s3DataSource: {
        s3Location: new StateS3Location(uriPath),
        s3DataType: tasks.S3DataType.S3_PREFIX,
        s3DataDistributionType: tasks.S3DataDistributionType.FULLY_REPLICATED,
      },
    },
  };
}
