import { Duration } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import type * as events from 'aws-cdk-lib/aws-events';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct, type IDependable } from 'constructs';
import { LakePrefix } from './data-lake.ts';
import { type KilnHandler, KilnNodeFunction } from './kiln-function.ts';
import type { LogEncryptionKey } from './log-key.ts';
import { acknowledgeGrantActions, acknowledgePrefixGrants, BUCKET_GRANT_ACTIONS } from './nag.ts';
import { type KilnApiAccessProps, KilnRestApi } from './rest-api.ts';

/** Properties of {@link ModelRegistryApi}. */
export interface ModelRegistryApiProps extends KilnApiAccessProps {
  /** The lake bucket (registry/ read-write, models/ read). */
  readonly lakeBucket: s3.IBucket;
  /** The platform bus (registry events: model approved, alias moved). */
  readonly bus: events.IEventBus;
  /** Key for the access-log group. */
  readonly logEncryptionKey: LogEncryptionKey;
  /** Log retention. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** See {@link KilnRestApiProps.accountDependency}. @default - none */
  readonly accountDependency?: IDependable;
}

/**
 * The model registry over HTTPS: a REST API (IAM auth by default) proxying every path to
 * `functions/registry/api.ts`, which routes internally.
 */
export class ModelRegistryApi extends Construct {
  /** The REST API and its stage. */
  public readonly restApi: KilnRestApi;
  /** `functions/registry/api.ts`. */
  public readonly handler: KilnHandler;

  constructor(scope: Construct, id: string, props: ModelRegistryApiProps) {
    super(scope, id);
    this.handler = new KilnNodeFunction(this, 'Handler', {
      handler: 'functions/registry/api.handler',
      lake: props.lakeBucket,
      bus: props.bus,
      serviceName: 'kiln-registry',
      logRetention: props.logRetention,
      timeout: Duration.seconds(29),
      memorySize: 1024,
    });
    props.lakeBucket.grantReadWrite(this.handler, `${LakePrefix.registry}*`);
    props.lakeBucket.grantRead(this.handler, `${LakePrefix.models}*`);
    props.bus.grantPutEventsTo(this.handler);

    this.restApi = new KilnRestApi(this, 'Api', {
      ...props,
      description: 'Kiln model registry',
    });
    const integration = new apigateway.LambdaIntegration(this.handler.function, { allowTestInvoke: false });
    const options = this.restApi.methodOptions();
    this.restApi.api.root.addMethod('ANY', integration, options);
    this.restApi.api.root.addResource('{proxy+}').addMethod('ANY', integration, options);

    acknowledgeGrantActions(this, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
    acknowledgePrefixGrants(this, props.lakeBucket, [LakePrefix.registry, LakePrefix.models]);
  }
}
