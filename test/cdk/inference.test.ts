import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { describe, expect, it } from 'vitest';
import { InferenceEndpoint } from '../../lib/constructs/inference-endpoint.ts';
import { ValidationError } from '../../lib/core/errors.ts';
import {
  allowStatementsOfRole,
  flatten,
  logicalIdOf,
  property,
  resourcesAllowed,
  synthesize,
} from './support.ts';

const sagemaker = synthesize();
const { stack, template, json } = sagemaker;
const endpoint = stack.inferenceEndpoint;
if (!endpoint) throw new Error('the default serving mode must create a SageMaker endpoint');
const endpointId = logicalIdOf(stack, endpoint.endpoint);
const lakeRef = `<${logicalIdOf(stack, stack.lake.bucket)}>`;
const lakeKeyArn = `<${logicalIdOf(stack, stack.lake.key)}.Arn>`;

describe('InferenceEndpoint (servingMode sagemaker)', () => {
  it('serves containers/inference from the lake model archive on one GPU instance', () => {
    const model = json.Resources[logicalIdOf(stack, endpoint.model)]?.Properties;
    expect(flatten(model?.PrimaryContainer)).toMatchObject({
      ModelDataUrl: `s3://${lakeRef}/models/champion/model.tar.gz`,
      Environment: { SAGEMAKER_BIND_TO_PORT: '8080' },
      Image: expect.stringMatching(/container-assets.*:[0-9a-f]{64}$/),
    });
    template.hasResourceProperties('AWS::SageMaker::EndpointConfig', {
      ProductionVariants: [
        Match.objectLike({
          VariantName: 'AllTraffic',
          InstanceType: 'ml.g5.xlarge',
          InitialInstanceCount: 1,
        }),
      ],
    });
  });

  it('captures requests and responses to capture/ encrypted with the lake key', () => {
    const config = flatten(json.Resources[logicalIdOf(stack, endpoint.endpointConfig)]?.Properties) as Record<
      string,
      unknown
    >;
    expect(config.DataCaptureConfig).toEqual({
      EnableCapture: true,
      InitialSamplingPercentage: 100,
      DestinationS3Uri: `s3://${lakeRef}/capture/endpoint`,
      KmsKeyId: lakeKeyArn,
      CaptureOptions: [{ CaptureMode: 'Input' }, { CaptureMode: 'Output' }],
      CaptureContentTypeHeader: { JsonContentTypes: ['application/json'], CsvContentTypes: ['text/csv'] },
    });
    // ml.g5 has NVMe instance storage: SageMaker rejects a storage KmsKeyId for it.
    expect(config).not.toHaveProperty('KmsKeyId');
  });

  it('updates blue/green with a 10 % canary that rolls back on the 5XX and latency alarms', () => {
    const deployment = json.Resources[endpointId]?.Properties?.DeploymentConfig as {
      BlueGreenUpdatePolicy: unknown;
      AutoRollbackConfiguration: { Alarms: Array<{ AlarmName: string }> };
    };
    expect(deployment.BlueGreenUpdatePolicy).toMatchObject({
      TrafficRoutingConfiguration: {
        Type: 'CANARY',
        CanarySize: { Type: 'CAPACITY_PERCENT', Value: 10 },
        WaitIntervalInSeconds: 600,
      },
    });
    const alarmNames = deployment.AutoRollbackConfiguration.Alarms.map((alarm) => alarm.AlarmName);
    const alarms = Object.values(json.Resources).filter(
      (resource) => resource.Type === 'AWS::CloudWatch::Alarm',
    );
    const watched = alarms
      .filter((alarm) => alarmNames.includes(String(alarm.Properties?.AlarmName)))
      .map((alarm) => ({
        metric: alarm.Properties?.MetricName,
        namespace: alarm.Properties?.Namespace,
        dimensions: flatten(alarm.Properties?.Dimensions),
      }));
    const dimensions = expect.arrayContaining([
      { Name: 'EndpointName', Value: `<${endpointId}.EndpointName>` },
      { Name: 'VariantName', Value: 'AllTraffic' },
    ]);
    expect(watched).toEqual(
      expect.arrayContaining([
        { metric: 'Invocation5XXErrors', namespace: 'AWS/SageMaker', dimensions },
        { metric: 'ModelLatency', namespace: 'AWS/SageMaker', dimensions },
      ]),
    );
    expect(watched).toHaveLength(2);
  });

  it('scales the variant by invocations per instance', () => {
    template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
      ServiceNamespace: 'sagemaker',
      ScalableDimension: 'sagemaker:variant:DesiredInstanceCount',
      MinCapacity: 1,
      MaxCapacity: 4,
      ResourceId: {
        'Fn::Join': [
          '',
          ['endpoint/', { 'Fn::GetAtt': [endpointId, 'EndpointName'] }, '/variant/AllTraffic'],
        ],
      },
    });
    template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      PolicyType: 'TargetTrackingScaling',
      TargetTrackingScalingPolicyConfiguration: {
        PredefinedMetricSpecification: { PredefinedMetricType: 'SageMakerVariantInvocationsPerInstance' },
        TargetValue: 600,
      },
    });
  });

  it('runs the model as a role that reads models/ and writes only capture/', () => {
    const statements = allowStatementsOfRole(json, logicalIdOf(stack, endpoint.role));
    const lakeArn = `<${logicalIdOf(stack, stack.lake.bucket)}.Arn>`;
    expect(resourcesAllowed(statements, 's3:GetObject')).toEqual(
      expect.arrayContaining([`${lakeArn}/models/*`, `${lakeArn}/registry/*`]),
    );
    expect(resourcesAllowed(statements, 's3:PutObject')).toEqual([`${lakeArn}/capture/*`]);
    expect(resourcesAllowed(statements, 'kms:Decrypt')).toEqual([lakeKeyArn]);
  });

  it('lets the proxy invoke this endpoint and nothing else', () => {
    const proxy = stack.inferenceProxy;
    if (!proxy) throw new Error('sagemaker serving mode must create the proxy');
    const statements = allowStatementsOfRole(json, logicalIdOf(stack, proxy.role));
    expect(resourcesAllowed(statements, 'sagemaker:InvokeEndpoint')).toEqual([`<${endpointId}>`]);
    const env = json.Resources[logicalIdOf(stack, proxy.function)]?.Properties?.Environment as {
      Variables: Record<string, unknown>;
    };
    expect(flatten(env.Variables.KILN_ENDPOINT_NAME)).toBe(`<${endpointId}.EndpointName>`);
  });
});

describe('REST APIs', () => {
  it('require AWS_IAM on every method of both APIs', () => {
    const methods = Object.values(json.Resources).filter(
      (resource) => resource.Type === 'AWS::ApiGateway::Method',
    );
    expect(methods.length).toBeGreaterThanOrEqual(4);
    for (const method of methods) {
      expect(method.Properties?.AuthorizationType).toBe('AWS_IAM');
      expect(method.Properties?.RequestValidatorId).toBeDefined();
    }
  });

  it('throttle, trace and log every stage, JSON access logs to an encrypted group', () => {
    const stages = Object.values(json.Resources).filter(
      (resource) => resource.Type === 'AWS::ApiGateway::Stage',
    );
    expect(stages).toHaveLength(2);
    for (const stage of stages) {
      expect(stage.Properties).toMatchObject({
        TracingEnabled: true,
        MethodSettings: [
          {
            HttpMethod: '*',
            ResourcePath: '/*',
            ThrottlingRateLimit: 50,
            ThrottlingBurstLimit: 100,
            LoggingLevel: 'ERROR',
            DataTraceEnabled: false,
          },
        ],
      });
      const access = stage.Properties?.AccessLogSetting as { DestinationArn: unknown; Format: string };
      const logGroupId = /:log-group:<([^>]+)>$/.exec(String(flatten(access.DestinationArn)))?.[1] ?? '';
      expect(json.Resources[logGroupId]?.Type).toBe('AWS::Logs::LogGroup');
      expect(json.Resources[logGroupId]?.Properties?.KmsKeyId).toEqual({
        'Fn::GetAtt': [logicalIdOf(stack, stack.logKey.key), 'Arn'],
      });
      expect(JSON.parse(access.Format)).toMatchObject({
        requestId: '$context.requestId',
        status: '$context.status',
      });
    }
  });

  it('validates prediction bodies against a model that requires an instances array', () => {
    // Only the inference API's resources: the registry API has request models of its own.
    const inferenceApi = `<${logicalIdOf(stack, stack.inferenceApi.restApi.api)}>`;
    const model = Object.values(json.Resources).find(
      (resource) =>
        resource.Type === 'AWS::ApiGateway::Model' &&
        flatten(resource.Properties?.RestApiId) === inferenceApi,
    );
    expect(model?.Properties?.Schema).toMatchObject({
      type: 'object',
      required: ['instances'],
      properties: { instances: { type: 'array', minItems: 1 } },
    });
    template.hasResourceProperties('AWS::ApiGateway::RequestValidator', {
      ValidateRequestBody: true,
      ValidateRequestParameters: true,
    });
    const predict = Object.values(json.Resources).filter(
      (resource) =>
        resource.Type === 'AWS::ApiGateway::Method' &&
        flatten(resource.Properties?.RestApiId) === inferenceApi &&
        resource.Properties?.HttpMethod === 'POST' &&
        resource.Properties?.RequestModels !== undefined,
    );
    expect(predict).toHaveLength(2);
  });

  it('needs a user pool for Cognito auth and names the problem', () => {
    expect(() => synthesize({ inferenceAuthMode: 'cognito' })).toThrow(ValidationError);
    expect(() => synthesize({ inferenceAuthMode: 'cognito' })).toThrow(/authMode 'cognito' needs a userPool/);
  });
});

describe('servingMode lambda', () => {
  const lambdaMode = synthesize({ servingMode: 'lambda' });

  it('creates no SageMaker endpoint and serves through a container-image ONNX function', () => {
    lambdaMode.template.resourceCountIs('AWS::SageMaker::Endpoint', 0);
    lambdaMode.template.resourceCountIs('AWS::SageMaker::EndpointConfig', 0);
    lambdaMode.template.resourceCountIs('AWS::SageMaker::Model', 0);
    lambdaMode.template.hasResourceProperties('AWS::Lambda::Function', {
      PackageType: 'Image',
      ImageConfig: { Command: ['dist/functions/inference/lambda-host.handler'] },
      Environment: {
        Variables: Match.objectLike({ KILN_HANDLER: 'functions/inference/lambda-host.handler' }),
      },
    });
  });

  it('puts the same validated, IAM-authenticated API in front of it', () => {
    const host = lambdaMode.stack.lambdaModelHost;
    if (!host) throw new Error('lambda serving mode must create the model host');
    const hostArn = `<${logicalIdOf(lambdaMode.stack, host.function)}.Arn>`;
    const inferenceApi = `<${logicalIdOf(lambdaMode.stack, lambdaMode.stack.inferenceApi.restApi.api)}>`;
    const predictMethods = Object.values(lambdaMode.json.Resources).filter(
      (resource) =>
        resource.Type === 'AWS::ApiGateway::Method' &&
        flatten(resource.Properties?.RestApiId) === inferenceApi &&
        resource.Properties?.RequestModels !== undefined,
    );
    expect(predictMethods).toHaveLength(2);
    for (const method of predictMethods) {
      expect(method.Properties?.AuthorizationType).toBe('AWS_IAM');
      expect(String(flatten(property<{ Uri: unknown }>(method, 'Integration').Uri))).toContain(hostArn);
    }
  });
});

describe('InferenceEndpoint props', () => {
  const lake = () => {
    const stack = new Stack(new App({ builtinCloudFormationValidation: false }), 'Props');
    return { stack, bucket: new s3.Bucket(stack, 'Lake', { encryption: s3.BucketEncryption.KMS }) };
  };

  it('encrypts the instance storage with the lake key on EBS-backed instance types', () => {
    const { stack, bucket } = lake();
    new InferenceEndpoint(stack, 'Endpoint', { lakeBucket: bucket, instanceType: 'ml.m5.xlarge' });
    const config = Template.fromStack(stack).findResources('AWS::SageMaker::EndpointConfig');
    expect(Object.values(config)[0]?.Properties?.KmsKeyId).toBeDefined();
  });

  it('rejects invalid settings, naming the value and the allowed range', () => {
    const { stack, bucket } = lake();
    expect(
      () => new InferenceEndpoint(stack, 'A', { lakeBucket: bucket, instanceType: 'g5.xlarge' }),
    ).toThrow(/instanceType must be 'ml.<family>.<size>', got 'g5.xlarge'/);
    expect(() => new InferenceEndpoint(stack, 'B', { lakeBucket: bucket, canaryPercentage: 80 })).toThrow(
      /canaryPercentage must be an integer between 1 and 50, got 80/,
    );
    expect(
      () => new InferenceEndpoint(stack, 'C', { lakeBucket: bucket, modelDataKey: 'raw/x.tar.gz' }),
    ).toThrow(/modelDataKey must be a key under 'models\/' ending in .tar.gz, got 'raw\/x.tar.gz'/);
    expect(
      () => new InferenceEndpoint(stack, 'D', { lakeBucket: bucket, minCapacity: 3, maxCapacity: 2 }),
    ).toThrow(/maxCapacity must be an integer between 3 and 100, got 2/);
  });
});
