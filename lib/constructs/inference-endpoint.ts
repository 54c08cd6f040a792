import { Aws, Duration, IgnoreMode, Names, Token, Validations } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { DockerImageAsset, Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sagemaker from 'aws-cdk-lib/aws-sagemaker';
import { Construct } from 'constructs';
import { LakePrefix } from './data-lake.ts';
import { acknowledgeGrantActions, acknowledgePrefixGrants, BUCKET_GRANT_ACTIONS } from './nag.ts';
import { DOCKER_CONTEXT_EXCLUDES, REPO_ROOT } from './paths.ts';
import {
  assertIntegerInRange,
  assertMatches,
  assertNumberInRange,
  SAGEMAKER_INSTANCE_TYPE,
} from './validate.ts';

/** The Dockerfile of the inference server image (SageMaker hosting contract + Open Inference Protocol). */
export const INFERENCE_DOCKERFILE = 'containers/inference/Dockerfile';

/** The only production variant; blue/green updates require the name to stay the same. */
export const INFERENCE_VARIANT_NAME = 'AllTraffic';

/**
 * Instance families with local NVMe instance storage. SageMaker rejects an endpoint-config `KmsKeyId` for
 * them (their storage is encrypted by the hardware), so the key is only set for other families.
 */
const INSTANCE_STORAGE_FAMILY =
  /^ml\.(g4dn|g5|g6|g6e|gr6|p3dn|p4d|p4de|p5|p5e|m5d|c5d|r5d|c6id|m6id|r6id|trn1)\./;

/** Properties of {@link InferenceEndpoint}. */
export interface InferenceEndpointProps {
  /** The lake bucket: models/ is read, capture/ receives data capture. */
  readonly lakeBucket: s3.IBucket;
  /**
   * Key of the model archive under `models/` that the endpoint starts with: a `model.tar.gz` holding
   * `model.onnx` and `transform.json`, which SageMaker unpacks to `/opt/ml/model`. The object must exist
   * before the endpoint is created (a model update writes it; until then use servingMode 'lambda').
   * @default 'models/champion/model.tar.gz'
   */
  readonly modelDataKey?: string;
  /** Instance type (`ml.<family>.<size>`). @default 'ml.g5.xlarge' (one NVIDIA A10G) */
  readonly instanceType?: string;
  /** Instances at creation (1–100). @default 1 */
  readonly initialInstanceCount?: number;
  /** Autoscaling floor (1–100). @default initialInstanceCount */
  readonly minCapacity?: number;
  /** Autoscaling ceiling (≥ minCapacity, ≤ 100). @default 4 */
  readonly maxCapacity?: number;
  /** Target of `SageMakerVariantInvocationsPerInstance` (invocations per instance per minute). @default 600 */
  readonly invocationsPerInstanceTarget?: number;
  /** Share of requests captured to capture/ (1–100). @default 100 */
  readonly captureSamplingPercentage?: number;
  /** Share of capacity that takes traffic first during a blue/green update (1–50). @default 10 */
  readonly canaryPercentage?: number;
  /** Baking time between the canary step and full traffic (0–3600 s). @default Duration.minutes(10) */
  readonly canaryWaitTime?: Duration;
  /** Average `ModelLatency` above which the rollback alarm fires. @default Duration.seconds(1) */
  readonly latencyAlarmThreshold?: Duration;
  /** `Invocation5XXErrors` per minute at or above which the rollback alarm fires. @default 5 */
  readonly errorAlarmThreshold?: number;
  /** Extra container environment (e.g. `KILN_MODEL_NAME`, see containers/inference/README.md). @default - none */
  readonly environment?: Readonly<Record<string, string>>;
}

/**
 * A SageMaker real-time endpoint running `containers/inference` on GPU: data capture to capture/ (KMS),
 * blue/green canary updates that roll back on 5XX or latency alarms, and target-tracking autoscaling.
 */
export class InferenceEndpoint extends Construct {
  /** The model container image. */
  public readonly image: DockerImageAsset;
  /** Role the model container runs as. */
  public readonly role: iam.Role;
  /** The SageMaker model. */
  public readonly model: sagemaker.CfnModel;
  /** The endpoint configuration. */
  public readonly endpointConfig: sagemaker.CfnEndpointConfig;
  /** The endpoint. */
  public readonly endpoint: sagemaker.CfnEndpoint;
  /** Endpoint name (a token resolved at deploy time). */
  public readonly endpointName: string;
  /** Endpoint ARN. */
  public readonly endpointArn: string;
  /** Alarm on `Invocation5XXErrors`; trips auto-rollback during updates. */
  public readonly errorAlarm: cloudwatch.Alarm;
  /** Alarm on `ModelLatency`; trips auto-rollback during updates. */
  public readonly latencyAlarm: cloudwatch.Alarm;
  /** Autoscaling target of the variant. */
  public readonly scalableTarget: appscaling.ScalableTarget;

  constructor(scope: Construct, id: string, props: InferenceEndpointProps) {
    super(scope, id);
    const modelDataKey = props.modelDataKey ?? `${LakePrefix.models}champion/model.tar.gz`;
    assertMatches(
      'modelDataKey',
      modelDataKey,
      /^models\/.+\.tar\.gz$/,
      "a key under 'models/' ending in .tar.gz",
    );
    const instanceType = props.instanceType ?? 'ml.g5.xlarge';
    assertMatches('instanceType', instanceType, SAGEMAKER_INSTANCE_TYPE, "'ml.<family>.<size>'");
    const initialInstanceCount = props.initialInstanceCount ?? 1;
    assertIntegerInRange('initialInstanceCount', initialInstanceCount, 1, 100);
    const minCapacity = props.minCapacity ?? initialInstanceCount;
    assertIntegerInRange('minCapacity', minCapacity, 1, 100);
    const maxCapacity = props.maxCapacity ?? Math.max(4, minCapacity);
    assertIntegerInRange('maxCapacity', maxCapacity, minCapacity, 100);
    const invocationsTarget = props.invocationsPerInstanceTarget ?? 600;
    assertNumberInRange('invocationsPerInstanceTarget', invocationsTarget, 1, 1_000_000);
    const sampling = props.captureSamplingPercentage ?? 100;
    assertIntegerInRange('captureSamplingPercentage', sampling, 1, 100);
    const canary = props.canaryPercentage ?? 10;
    assertIntegerInRange('canaryPercentage', canary, 1, 50);
    const canaryWait = props.canaryWaitTime ?? Duration.minutes(10);
    assertIntegerInRange('canaryWaitTime (seconds)', canaryWait.toSeconds(), 0, 3600);
    const latencyThreshold = props.latencyAlarmThreshold ?? Duration.seconds(1);
    assertIntegerInRange('latencyAlarmThreshold (ms)', latencyThreshold.toMilliseconds(), 1, 600_000);
    const errorThreshold = props.errorAlarmThreshold ?? 5;
    assertIntegerInRange('errorAlarmThreshold', errorThreshold, 1, 1_000_000);
    const lakeKey = props.lakeBucket.encryptionKey;

    this.image = new DockerImageAsset(this, 'Image', {
      directory: REPO_ROOT,
      file: INFERENCE_DOCKERFILE,
      // GPU instances are x86_64.
      platform: Platform.LINUX_AMD64,
      ignoreMode: IgnoreMode.DOCKER,
      exclude: [...DOCKER_CONTEXT_EXCLUDES],
    });

    this.role = new iam.Role(this, 'ExecutionRole', {
      assumedBy: new iam.ServicePrincipal('sagemaker.amazonaws.com'),
      description: 'Role of the Kiln inference containers: models/ and registry/ read, capture/ write',
    });
    this.image.repository.grantPull(this.role);
    props.lakeBucket.grantRead(this.role, `${LakePrefix.models}*`);
    props.lakeBucket.grantRead(this.role, `${LakePrefix.registry}*`);
    props.lakeBucket.grantPut(this.role, `${LakePrefix.capture}*`);
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [
          'logs:CreateLogGroup',
          'logs:CreateLogStream',
          'logs:PutLogEvents',
          'logs:DescribeLogStreams',
        ],
        resources: [
          `arn:${Aws.PARTITION}:logs:${Aws.REGION}:${Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/*`,
        ],
      }),
    );
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['cloudwatch:PutMetricData'],
        resources: ['*'],
        conditions: { StringEquals: { 'cloudwatch:namespace': ['/aws/sagemaker/Endpoints', 'Kiln'] } },
      }),
    );

    this.model = new sagemaker.CfnModel(this, 'Model', {
      executionRoleArn: this.role.roleArn,
      primaryContainer: {
        image: this.image.imageUri,
        modelDataUrl: `s3://${props.lakeBucket.bucketName}/${modelDataKey}`,
        environment: { SAGEMAKER_BIND_TO_PORT: '8080', ...props.environment },
      },
    });
    // The model may only be created once the role can pull the image and read the archive.
    this.model.node.addDependency(this.role);

    const storageBacked = !Token.isUnresolved(instanceType) && INSTANCE_STORAGE_FAMILY.test(instanceType);
    this.endpointConfig = new sagemaker.CfnEndpointConfig(this, 'Config', {
      productionVariants: [
        {
          variantName: INFERENCE_VARIANT_NAME,
          modelName: this.model.attrModelName,
          instanceType,
          initialInstanceCount,
          initialVariantWeight: 1,
        },
      ],
      kmsKeyId: storageBacked ? undefined : lakeKey?.keyArn,
      dataCaptureConfig: {
        enableCapture: true,
        initialSamplingPercentage: sampling,
        destinationS3Uri: `s3://${props.lakeBucket.bucketName}/${LakePrefix.capture}endpoint`,
        kmsKeyId: lakeKey?.keyArn,
        captureOptions: [{ captureMode: 'Input' }, { captureMode: 'Output' }],
        captureContentTypeHeader: {
          jsonContentTypes: ['application/json'],
          csvContentTypes: ['text/csv'],
        },
      },
    });
    if (storageBacked) {
      Validations.of(this.endpointConfig).acknowledge({
        id: 'AwsSolutions-SM2',
        reason: `${instanceType} has local NVMe instance storage, which is hardware-encrypted; SageMaker rejects a KmsKeyId for such instance types.`,
      });
    }

    // Alarm names are plain strings derived from the construct path, so the endpoint's rollback
    // configuration can name the alarms while the alarms' dimensions reference the endpoint — no cycle.
    const errorAlarmName = `${Names.uniqueResourceName(this, { maxLength: 200 })}-invocation-5xx`;
    const latencyAlarmName = `${Names.uniqueResourceName(this, { maxLength: 200 })}-model-latency`;

    this.endpoint = new sagemaker.CfnEndpoint(this, 'Endpoint', {
      endpointConfigName: this.endpointConfig.attrEndpointConfigName,
      deploymentConfig: {
        blueGreenUpdatePolicy: {
          trafficRoutingConfiguration: {
            type: 'CANARY',
            canarySize: { type: 'CAPACITY_PERCENT', value: canary },
            waitIntervalInSeconds: canaryWait.toSeconds(),
          },
          terminationWaitInSeconds: 600,
          maximumExecutionTimeoutInSeconds: 3600,
        },
        autoRollbackConfiguration: {
          alarms: [{ alarmName: errorAlarmName }, { alarmName: latencyAlarmName }],
        },
      },
    });
    this.endpointName = this.endpoint.attrEndpointName;
    // The endpoint's Ref is its ARN, in the lowercase form IAM evaluates InvokeEndpoint against (a
    // formatArn from the generated, mixed-case name would never match).
    this.endpointArn = this.endpoint.ref;

    const dimensionsMap = { EndpointName: this.endpointName, VariantName: INFERENCE_VARIANT_NAME };
    this.errorAlarm = new cloudwatch.Alarm(this, 'ErrorAlarm', {
      alarmName: errorAlarmName,
      alarmDescription: 'Kiln inference endpoint returns 5XX; rolls back a blue/green update',
      metric: new cloudwatch.Metric({
        namespace: 'AWS/SageMaker',
        metricName: 'Invocation5XXErrors',
        dimensionsMap,
        statistic: cloudwatch.Stats.SUM,
        period: Duration.minutes(1),
      }),
      threshold: errorThreshold,
      evaluationPeriods: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.latencyAlarm = new cloudwatch.Alarm(this, 'LatencyAlarm', {
      alarmName: latencyAlarmName,
      alarmDescription: 'Kiln inference model latency too high; rolls back a blue/green update',
      metric: new cloudwatch.Metric({
        namespace: 'AWS/SageMaker',
        // ModelLatency is reported in microseconds.
        metricName: 'ModelLatency',
        dimensionsMap,
        statistic: cloudwatch.Stats.AVERAGE,
        period: Duration.minutes(1),
      }),
      threshold: latencyThreshold.toMilliseconds() * 1000,
      evaluationPeriods: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    this.scalableTarget = new appscaling.ScalableTarget(this, 'Scaling', {
      serviceNamespace: appscaling.ServiceNamespace.SAGEMAKER,
      resourceId: `endpoint/${this.endpointName}/variant/${INFERENCE_VARIANT_NAME}`,
      scalableDimension: 'sagemaker:variant:DesiredInstanceCount',
      minCapacity,
      maxCapacity,
    });
    // SageMaker scaling runs under Application Auto Scaling's service-linked role, which ignores RoleARN;
    // drop the unused role the L2 creates by default.
    (this.scalableTarget.node.defaultChild as appscaling.CfnScalableTarget).roleArn = undefined;
    this.scalableTarget.node.tryRemoveChild('Role');
    this.scalableTarget.scaleToTrackMetric('InvocationsPerInstance', {
      predefinedMetric: appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
      targetValue: invocationsTarget,
      scaleOutCooldown: Duration.minutes(2),
      // GPU instances take minutes to come back; scale in slowly.
      scaleInCooldown: Duration.minutes(10),
    });

    acknowledgeGrantActions(this, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
    acknowledgePrefixGrants(this, props.lakeBucket, [
      LakePrefix.models,
      LakePrefix.registry,
      LakePrefix.capture,
    ]);
    Validations.of(this.role).acknowledge(
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'cloudwatch:PutMetricData has no resource-level permissions (limited by namespace condition); ecr:GetAuthorizationToken likewise.',
      },
      {
        id: 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/Endpoints/*]',
        reason:
          'SageMaker names endpoint log groups after the endpoint at run time; limited to /aws/sagemaker/Endpoints/.',
      },
    );
  }

  /** Allow `grantee` to call `sagemaker:InvokeEndpoint` on this endpoint only. */
  public grantInvoke(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['sagemaker:InvokeEndpoint'],
      resourceArns: [this.endpointArn],
    });
  }
}
