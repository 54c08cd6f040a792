import { Duration } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import type * as events from 'aws-cdk-lib/aws-events';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct, type IDependable } from 'constructs';
import { z } from 'zod';
import { pathParams, REGISTRY_ROUTES } from '../registry/api.ts';
import { LakePrefix } from './data-lake.ts';
import { type KilnHandler, KilnNodeFunction } from './kiln-function.ts';
import type { LogEncryptionKey } from './log-key.ts';
import { acknowledgeGrantActions, acknowledgePrefixGrants, BUCKET_GRANT_ACTIONS } from './nag.ts';
import { type KilnApiAccessProps, KilnRestApi } from './rest-api.ts';

/** Properties of {@link ModelRegistryApi}. */
export interface ModelRegistryApiProps extends KilnApiAccessProps {
  /** The lake bucket (registry/ read and create, models/ read). */
  readonly lakeBucket: s3.IBucket;
  /** The platform bus (registry events: version registered, approved, alias moved, …). */
  readonly bus: events.IEventBus;
  /** Key for the access-log group. */
  readonly logEncryptionKey: LogEncryptionKey;
  /** Log retention. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** See {@link KilnRestApiProps.accountDependency}. @default - none */
  readonly accountDependency?: IDependable;
}

/**
 * The model registry over HTTPS: a REST API (IAM auth by default, throttled) with one method per registry
 * operation, built from the same route table and zod schemas as the handler and the OpenAPI document, so
 * API Gateway rejects unknown paths, missing parameters and malformed bodies before the Lambda runs.
 */
export class ModelRegistryApi extends Construct {
  /** The REST API and its stage. */
  public readonly restApi: KilnRestApi;
  /** `functions/registry/api.ts`. */
  public readonly handler: KilnHandler;
  /** Request models by operation id (the JSON Schema API Gateway validates bodies against). */
  public readonly requestModels: Readonly<Record<string, apigateway.Model>>;

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
    // Read and create, never delete: audit entries and version claims are create-only objects, and without
    // s3:DeleteObject the handler cannot erase history even if its code were wrong.
    props.lakeBucket.grantRead(this.handler, `${LakePrefix.registry}*`);
    props.lakeBucket.grantPut(this.handler, `${LakePrefix.registry}*`);
    // models/ only to re-hash artifacts (verify, promote); training writes them.
    props.lakeBucket.grantRead(this.handler, `${LakePrefix.models}*`);
    props.bus.grantPutEventsTo(this.handler);

    this.restApi = new KilnRestApi(this, 'Api', {
      ...props,
      description: 'Kiln model registry',
    });
    const api = this.restApi.api;
    const integration = new apigateway.LambdaIntegration(this.handler.function, { allowTestInvoke: false });
    const models: Record<string, apigateway.Model> = {};
    for (const route of REGISTRY_ROUTES) {
      const requestParameters: Record<string, boolean> = {};
      for (const name of pathParams(route.path)) requestParameters[`method.request.path.${name}`] = true;
      for (const [name, schema] of Object.entries(route.query?.shape ?? {})) {
        requestParameters[`method.request.querystring.${name}`] = !(schema as z.ZodType).safeParse(undefined)
          .success;
      }
      let requestModels: Record<string, apigateway.IModel> | undefined;
      if (route.body) {
        const modelName = `${route.operationId.charAt(0).toUpperCase()}${route.operationId.slice(1)}Request`;
        models[route.operationId] = api.addModel(modelName, {
          modelName,
          contentType: 'application/json',
          description: route.summary,
          schema: apiGatewaySchema(route.body),
        });
        requestModels = { 'application/json': models[route.operationId] as apigateway.Model };
      }
      api.root.resourceForPath(route.path).addMethod(
        route.method,
        integration,
        this.restApi.methodOptions({
          operationName: route.operationId,
          requestParameters,
          ...(requestModels ? { requestModels } : {}),
        }),
      );
    }
    this.requestModels = models;

    acknowledgeGrantActions(this, BUCKET_GRANT_ACTIONS, 'bucket.grant* helpers');
    acknowledgePrefixGrants(this, props.lakeBucket, [LakePrefix.registry, LakePrefix.models]);
  }
}

/** A zod request schema as the JSON Schema draft 4 document API Gateway models take. */
export function apiGatewaySchema(schema: z.ZodType): apigateway.JsonSchema {
  const draft4 = z.toJSONSchema(schema, { target: 'draft-04', io: 'input', unrepresentable: 'any' });
  const rename = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rename);
    if (value === null || typeof value !== 'object') return value;
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([key, item]) => [
        // CDK's JsonSchema spells the `$` keywords without it and renders them back.
        key === '$schema' ? 'schema' : key === '$ref' ? 'ref' : key === '$id' ? 'id' : key,
        key === '$schema' ? apigateway.JsonSchemaVersion.DRAFT4 : rename(item),
      ]),
    );
  };
  return rename(draft4) as apigateway.JsonSchema;
}
