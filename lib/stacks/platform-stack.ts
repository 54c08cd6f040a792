import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import type * as cognito from 'aws-cdk-lib/aws-cognito';
import type * as ecr from 'aws-cdk-lib/aws-ecr';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { DataLake, LakePrefix } from '../constructs/data-lake.ts';
import { KilnBus } from '../constructs/event-bus.ts';
import { InferenceApi } from '../constructs/inference-api.ts';
import { InferenceEndpoint } from '../constructs/inference-endpoint.ts';
import { KilnContainerFunction, type KilnHandler, KilnNodeFunction } from '../constructs/kiln-function.ts';
import { LogEncryptionKey } from '../constructs/log-key.ts';
import { ModelUpdates } from '../constructs/model-updates.ts';
import { Monitoring } from '../constructs/monitoring.ts';
import { acknowledgeGrantActions, acknowledgePrefixGrants, BUCKET_GRANT_ACTIONS } from '../constructs/nag.ts';
import { ModelRegistryApi } from '../constructs/registry-api.ts';
import { type ApiAuthMode, ApiGatewayAccount } from '../constructs/rest-api.ts';
import { assertOneOf } from '../constructs/validate.ts';
import { EtlPipeline } from '../pipelines/etl-pipeline.ts';
import { TrainingPipeline } from '../pipelines/training-pipeline.ts';

/** Where online predictions run. */
export type ServingMode = 'sagemaker' | 'lambda';

/** Properties of {@link KilnPlatformStack}. */
export interface KilnPlatformStackProps extends StackProps {
  /** SageMaker endpoint instance type (sagemaker serving mode). @default 'ml.g5.xlarge' */
  readonly inferenceInstanceType?: string;
  /** SageMaker training instance type. @default 'ml.m5.xlarge' */
  readonly trainingInstanceType?: string;
  /** Instance type for bring-your-own training images (often a GPU type). @default trainingInstanceType */
  readonly byoTrainingInstanceType?: string;
  /** ECR repositories of bring-your-own training images the pipeline may pull. @default none */
  readonly byoImageRepositories?: readonly ecr.IRepository[];
  /**
   * `sagemaker`: a GPU SageMaker endpoint behind the inference API; `lambda`: a container-image Lambda
   * running ONNX Runtime on CPU behind the same API, and no endpoint.
   * @default 'sagemaker'
   */
  readonly servingMode?: ServingMode;
  /** Model archive the endpoint starts with (sagemaker serving mode). @default 'models/champion/model.tar.gz' */
  readonly modelDataKey?: string;
  /** Endpoint autoscaling ceiling. @default 4 */
  readonly inferenceMaxCapacity?: number;
  /** Auth of the inference API. @default 'iam' */
  readonly inferenceAuthMode?: ApiAuthMode;
  /** Auth of the registry API. @default 'iam' */
  readonly registryAuthMode?: ApiAuthMode;
  /** User pool for APIs in `cognito` auth mode. @default - none */
  readonly userPool?: cognito.IUserPool;
  /** Distributed Map concurrency of the ETL pipeline. @default 40 */
  readonly etlMaxConcurrency?: number;
  /** Removal policy of the lake and the keys. @default RemovalPolicy.RETAIN */
  readonly dataRemovalPolicy?: RemovalPolicy;
  /** Retention of every Kiln log group. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /**
   * Set the account's API Gateway CloudWatch role (needed for stage execution logs). Turn off when another
   * stack in the account and region already manages it.
   * @default true
   */
  readonly configureApiGatewayAccount?: boolean;
}

/**
 * Kiln on AWS: data lake, event bus, ETL and training pipelines, model registry API, and online
 * inference (SageMaker GPU endpoint or Lambda-hosted ONNX) behind an authenticated HTTPS API.
 */
export class KilnPlatformStack extends Stack {
  /** The data lake. */
  public readonly lake: DataLake;
  /** The platform event bus. */
  public readonly bus: KilnBus;
  /** Key for every log group carrying execution data. */
  public readonly logKey: LogEncryptionKey;
  /** `functions/pipeline/failure.ts`, shared by the pipelines' failure branches. */
  public readonly failureFunction: KilnHandler;
  /** The ETL pipeline. */
  public readonly etl: EtlPipeline;
  /** The training pipeline. */
  public readonly training: TrainingPipeline;
  /** The model registry API. */
  public readonly registryApi: ModelRegistryApi;
  /** The inference API. */
  public readonly inferenceApi: InferenceApi;
  /** The SageMaker endpoint (sagemaker serving mode only). */
  public readonly inferenceEndpoint?: InferenceEndpoint;
  /** `functions/inference/proxy.ts` (sagemaker serving mode only). */
  public readonly inferenceProxy?: KilnHandler;
  /** The Lambda-hosted model (lambda serving mode only). */
  public readonly lambdaModelHost?: KilnHandler;
  /** Effective serving mode. */
  public readonly servingMode: ServingMode;
  /** Event-triggered retraining and safe model updates (docs/model-updates.md). */
  public readonly updates: ModelUpdates;
  /** Drift and quality monitoring: scheduled monitor, labels ingest, dashboard and rollback alarms. */
  public readonly monitoring: Monitoring;

  constructor(scope: Construct, id: string, props: KilnPlatformStackProps = {}) {
    super(scope, id, {
      description: 'Kiln MLOps platform: lake, pipelines, registry and inference',
      ...props,
    });
    const servingMode = props.servingMode ?? 'sagemaker';
    assertOneOf('servingMode', servingMode, ['sagemaker', 'lambda']);
    this.servingMode = servingMode;
    const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const removalPolicy = props.dataRemovalPolicy ?? RemovalPolicy.RETAIN;

    this.logKey = new LogEncryptionKey(this, 'LogKey', { removalPolicy });
    this.lake = new DataLake(this, 'Lake', { removalPolicy });
    this.bus = new KilnBus(this, 'Bus');
    const lakeBucket = this.lake.bucket;
    const bus = this.bus.bus;

    // Container image: lib/etl/failure.ts reaches DuckDB through lib/etl/plan.ts.
    this.failureFunction = new KilnContainerFunction(this, 'FailureHandler', {
      handler: 'functions/pipeline/failure.handler',
      timeout: Duration.minutes(2),
      lake: lakeBucket,
      bus,
      serviceName: 'kiln-pipeline',
      logRetention,
    });
    // Failure records go next to the run reports: runs/<pipeline>/<runId>-failed.json.
    lakeBucket.grantPut(this.failureFunction, `${LakePrefix.runs}*`);
    acknowledgeGrantActions(this.failureFunction, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
    acknowledgePrefixGrants(this.failureFunction, lakeBucket, [LakePrefix.runs]);

    this.etl = new EtlPipeline(this, 'Etl', {
      lakeBucket,
      bus,
      failureFunction: this.failureFunction.function,
      maxConcurrency: props.etlMaxConcurrency,
      logEncryptionKey: this.logKey,
      logRetention,
    });
    this.lake.onRawObjectCreated('RawObjectCreated', {
      description: 'Start the Kiln ETL pipeline when a raw object lands',
      target: new targets.SfnStateMachine(this.etl.stateMachine, {
        // EventBridge cannot split a key, so the plan handler derives the dataset from
        // raw/<dataset>/<ingestId>/<file> itself.
        input: events.RuleTargetInput.fromObject({
          key: events.EventField.fromPath('$.detail.object.key'),
          trigger: { source: 's3', detailType: 'Object Created' },
        }),
        retryAttempts: 3,
        maxEventAge: Duration.hours(2),
      }),
    });

    this.training = new TrainingPipeline(this, 'Training', {
      lakeBucket,
      bus,
      failureFunction: this.failureFunction.function,
      trainingInstanceType: props.trainingInstanceType,
      byoTrainingInstanceType: props.byoTrainingInstanceType,
      byoImageRepositories: props.byoImageRepositories,
      logEncryptionKey: this.logKey,
      logRetention,
    });

    const account =
      (props.configureApiGatewayAccount ?? true)
        ? new ApiGatewayAccount(this, 'ApiGatewayAccount')
        : undefined;
    this.registryApi = new ModelRegistryApi(this, 'Registry', {
      lakeBucket,
      bus,
      logEncryptionKey: this.logKey,
      logRetention,
      authMode: props.registryAuthMode,
      userPool: props.userPool,
      accountDependency: account?.account,
    });

    let backend: KilnHandler;
    if (servingMode === 'sagemaker') {
      this.inferenceEndpoint = new InferenceEndpoint(this, 'Inference', {
        lakeBucket,
        instanceType: props.inferenceInstanceType,
        modelDataKey: props.modelDataKey,
        maxCapacity: props.inferenceMaxCapacity,
      });
      this.inferenceProxy = new KilnNodeFunction(this, 'InferenceProxy', {
        handler: 'functions/inference/proxy.handler',
        lake: lakeBucket,
        bus,
        serviceName: 'kiln-inference',
        logRetention,
        timeout: Duration.seconds(30),
        environment: {
          KILN_SERVING_MODE: 'sagemaker',
          KILN_ENDPOINT_NAME: this.inferenceEndpoint.endpointName,
        },
      });
      this.inferenceEndpoint.grantInvoke(this.inferenceProxy);
      backend = this.inferenceProxy;
    } else {
      this.lambdaModelHost = new KilnContainerFunction(this, 'LambdaModelHost', {
        handler: 'functions/inference/lambda-host.handler',
        lake: lakeBucket,
        bus,
        serviceName: 'kiln-inference',
        logRetention,
        timeout: Duration.seconds(30),
        environment: { KILN_SERVING_MODE: 'lambda' },
      });
      lakeBucket.grantRead(this.lambdaModelHost, `${LakePrefix.models}*`);
      lakeBucket.grantRead(this.lambdaModelHost, `${LakePrefix.registry}*`);
      lakeBucket.grantPut(this.lambdaModelHost, `${LakePrefix.capture}*`);
      acknowledgeGrantActions(this.lambdaModelHost, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
      acknowledgePrefixGrants(this.lambdaModelHost, lakeBucket, [
        LakePrefix.models,
        LakePrefix.registry,
        LakePrefix.capture,
      ]);
      backend = this.lambdaModelHost;
    }
    this.inferenceApi = new InferenceApi(this, 'InferenceApi', {
      backend: backend.function,
      logEncryptionKey: this.logKey,
      logRetention,
      authMode: props.inferenceAuthMode,
      userPool: props.userPool,
      accountDependency: account?.account,
    });

    this.monitoring = new Monitoring(this, 'Monitoring', {
      lakeBucket,
      bus,
      endpoint: this.inferenceEndpoint,
      modelHost: this.lambdaModelHost?.function,
      logRetention,
    });
    this.updates = new ModelUpdates(this, 'Updates', {
      lakeBucket,
      bus,
      etlStateMachine: this.etl.stateMachine,
      trainingStateMachine: this.training.stateMachine,
      endpoint: this.inferenceEndpoint,
      rollbackAlarms: this.monitoring.rollbackAlarms,
      logEncryptionKey: this.logKey,
      logRetention,
    });

    new CfnOutput(this, 'LakeBucketName', { value: lakeBucket.bucketName });
    new CfnOutput(this, 'EventBusName', { value: bus.eventBusName });
    new CfnOutput(this, 'EtlStateMachineArn', { value: this.etl.stateMachine.stateMachineArn });
    new CfnOutput(this, 'TrainingStateMachineArn', { value: this.training.stateMachine.stateMachineArn });
    new CfnOutput(this, 'RetrainingStateMachineArn', { value: this.updates.stateMachine.stateMachineArn });
    new CfnOutput(this, 'RegistryApiUrl', { value: this.registryApi.restApi.api.url });
    new CfnOutput(this, 'InferenceApiUrl', { value: this.inferenceApi.restApi.api.url });
    if (this.inferenceEndpoint) {
      new CfnOutput(this, 'InferenceEndpointName', { value: this.inferenceEndpoint.endpointName });
    }
  }
}
