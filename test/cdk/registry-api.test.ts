import { App, CfnElement, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as cognito from 'aws-cdk-lib/aws-cognito';
import * as events from 'aws-cdk-lib/aws-events';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type { IConstruct } from 'constructs';
import { describe, expect, it } from 'vitest';
import { LogEncryptionKey } from '../../lib/constructs/log-key.ts';
import { ModelRegistryApi, type ModelRegistryApiProps } from '../../lib/constructs/registry-api.ts';
import { pathParams, REGISTRY_ROUTES } from '../../lib/registry/api.ts';
import {
  allowStatementsOfRole,
  type CfnTemplate,
  covers,
  flatten,
  logicalIdOf,
  resourcesAllowed,
  synthesize,
} from './support.ts';

const { stack, template, json } = synthesize();
const apiId = logicalIdOf(stack, stack.registryApi.restApi.api);
const roleId = logicalIdOf(stack, stack.registryApi.handler.role);
const functionId = logicalIdOf(stack, stack.registryApi.handler.function);
const lakeArn = `<${logicalIdOf(stack, stack.lake.bucket)}.Arn>`;

/** Logical id of a construct's CFN resource in a stack that is not the platform stack. */
function idIn(stack: Stack, construct: IConstruct): string {
  const element = construct.node.defaultChild;
  if (!element || !CfnElement.isCfnElement(element))
    throw new Error(`${construct.node.path} has no CFN resource`);
  return stack.getLogicalId(element);
}

interface MethodInfo {
  id: string;
  path: string;
  httpMethod: string;
  properties: Record<string, unknown>;
}

/** The methods of one REST API with their full resource paths, rebuilt from the Resource tree. */
function methodsOf(template: CfnTemplate, restApiId: string): MethodInfo[] {
  const resources = template.Resources;
  const pathOf = (ref: unknown): string => {
    const flat = String(flatten(ref));
    if (flat === `<${restApiId}.RootResourceId>`) return '';
    const id = flat.replace(/^<|>$/g, '');
    const resource = resources[id];
    if (resource?.Type !== 'AWS::ApiGateway::Resource') throw new Error(`unexpected parent ${flat}`);
    return `${pathOf(resource.Properties?.ParentId)}/${String(resource.Properties?.PathPart)}`;
  };
  return Object.entries(resources)
    .filter(
      ([, r]) =>
        r.Type === 'AWS::ApiGateway::Method' && flatten(r.Properties?.RestApiId) === `<${restApiId}>`,
    )
    .map(([id, r]) => ({
      id,
      path: pathOf(r.Properties?.ResourceId) || '/',
      httpMethod: String(r.Properties?.HttpMethod),
      properties: r.Properties ?? {},
    }));
}

const methods = methodsOf(json, apiId);

describe('registry API: routes and request validation', () => {
  it('has exactly one method per registry operation, and nothing else (no catch-all proxy)', () => {
    expect(methods.map((m) => `${m.httpMethod} ${m.path}`).sort()).toEqual(
      REGISTRY_ROUTES.map((route) => `${route.method} ${route.path}`).sort(),
    );
  });

  it('authenticates every method with IAM (SigV4) by default', () => {
    for (const method of methods) {
      expect(method.properties.AuthorizationType, `${method.httpMethod} ${method.path}`).toBe('AWS_IAM');
    }
  });

  it('validates parameters and bodies against the zod schemas before the Lambda runs', () => {
    for (const route of REGISTRY_ROUTES) {
      const method = methods.find((m) => m.path === route.path && m.httpMethod === route.method);
      expect(method, `${route.method} ${route.path}`).toBeDefined();
      expect(method?.properties.RequestValidatorId).toBeDefined();
      const parameters = (method?.properties.RequestParameters ?? {}) as Record<string, boolean>;
      for (const name of pathParams(route.path)) expect(parameters[`method.request.path.${name}`]).toBe(true);
      const models = method?.properties.RequestModels as Record<string, unknown> | undefined;
      expect(models !== undefined, `${route.operationId} request model`).toBe(route.body !== undefined);
    }
    template.hasResourceProperties('AWS::ApiGateway::RequestValidator', {
      RestApiId: { Ref: apiId },
      ValidateRequestBody: true,
      ValidateRequestParameters: true,
    });
    template.hasResourceProperties('AWS::ApiGateway::Model', {
      RestApiId: { Ref: apiId },
      Name: 'ApproveVersionRequest',
      ContentType: 'application/json',
      Schema: {
        $schema: 'http://json-schema.org/draft-04/schema#',
        type: 'object',
        required: ['reason'],
        additionalProperties: false,
        properties: { reason: Match.objectLike({ type: 'string', minLength: 1, maxLength: 1000 }) },
      },
    });
    const diff = methods.find((m) => m.path === '/diff');
    expect(diff?.properties.RequestParameters).toEqual({
      'method.request.querystring.a': true,
      'method.request.querystring.b': true,
    });
  });

  it('throttles the stage and traces it', () => {
    template.hasResourceProperties('AWS::ApiGateway::Stage', {
      RestApiId: { Ref: apiId },
      StageName: 'v1',
      TracingEnabled: true,
      MethodSettings: Match.arrayWith([
        Match.objectLike({
          ThrottlingRateLimit: 50,
          ThrottlingBurstLimit: 100,
          HttpMethod: '*',
          ResourcePath: '/*',
        }),
      ]),
    });
  });

  it('lets API Gateway invoke the function only through these methods', () => {
    const permissions = Object.values(json.Resources).filter(
      (r) =>
        r.Type === 'AWS::Lambda::Permission' && flatten(r.Properties?.FunctionName) === `<${functionId}.Arn>`,
    );
    const sources = permissions.map((permission) => {
      expect(permission.Properties?.Principal).toBe('apigateway.amazonaws.com');
      return String(flatten(permission.Properties?.SourceArn)).replace(/^.*\/<[^>]+Stage[^>]*>/, '');
    });
    // One permission per method, scoped to it (path parameters become `*`), none for the whole API.
    expect(sources.sort()).toEqual(
      REGISTRY_ROUTES.map((route) => `/${route.method}${route.path.replace(/\{[a-z]+\}/g, '*')}`).sort(),
    );
  });
});

describe('registry function: least privilege', () => {
  const statements = allowStatementsOfRole(json, roleId);
  const allowed = (action: string, key: string) =>
    resourcesAllowed(statements, action).some((pattern) => covers(pattern, `${lakeArn}/${key}`));

  it('reads and creates registry/ objects, reads models/, and can delete nothing', () => {
    expect(allowed('s3:GetObject', 'registry/churn/versions/000001.json')).toBe(true);
    expect(allowed('s3:PutObject', 'registry/churn/audit/2026-x.json')).toBe(true);
    expect(allowed('s3:PutObject', 'registry/_policy/current.json')).toBe(true);
    expect(allowed('s3:GetObject', 'models/churn/1/model.onnx')).toBe(true);
    for (const key of ['registry/churn/audit/x.json', 'models/churn/1/model.onnx', 'raw/x', 'curated/x']) {
      expect(allowed('s3:DeleteObject', key), key).toBe(false);
    }
    for (const key of ['models/churn/1/model.onnx', 'raw/x', 'curated/x', 'runs/x', 'capture/x']) {
      expect(allowed('s3:PutObject', key), key).toBe(false);
    }
    for (const key of ['raw/x', 'curated/x', 'capture/x'])
      expect(allowed('s3:GetObject', key), key).toBe(false);
  });

  it('puts events only on the Kiln bus and touches no other service', () => {
    expect(resourcesAllowed(statements, 'events:PutEvents')).toEqual([
      `<${logicalIdOf(stack, stack.bus.bus)}.Arn>`,
    ]);
    const services = new Set(
      statements
        .flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]))
        .map((a) => a.split(':')[0]),
    );
    expect(services.has('s3')).toBe(true);
    for (const service of services)
      expect(['events', 'kms', 'logs', 's3', 'xray'], service).toContain(service);
  });
});

describe('registry API: other auth modes and props', () => {
  function standalone(
    props: Partial<ModelRegistryApiProps> = {},
    more: (scope: Stack) => Partial<ModelRegistryApiProps> = () => ({}),
  ) {
    // No bundling: these stacks are only inspected.
    const stack = new Stack(new App({ context: { 'aws:cdk:bundling-stacks': [] } }), 'Standalone');
    const api = new ModelRegistryApi(stack, 'Registry', {
      lakeBucket: s3.Bucket.fromBucketName(stack, 'Lake', 'lake'),
      bus: events.EventBus.fromEventBusName(stack, 'Bus', 'bus'),
      logEncryptionKey: new LogEncryptionKey(stack, 'LogKey'),
      ...props,
      ...more(stack),
    });
    return { stack, api, template: Template.fromStack(stack) };
  }

  it('requires an API key on every method in apiKey mode, with a throttled usage plan', () => {
    const { template, api, stack } = standalone({
      authMode: 'apiKey',
      throttlingRateLimit: 10,
      throttlingBurstLimit: 20,
    });
    const all = methodsOf(template.toJSON() as CfnTemplate, idIn(stack, api.restApi.api));
    expect(all.length).toBe(REGISTRY_ROUTES.length);
    for (const method of all)
      expect(method.properties).toMatchObject({ AuthorizationType: 'NONE', ApiKeyRequired: true });
    template.hasResourceProperties('AWS::ApiGateway::UsagePlan', {
      Throttle: { RateLimit: 10, BurstLimit: 20 },
    });
  });

  it('uses the Cognito authorizer in cognito mode', () => {
    const { template, api, stack } = standalone({ authMode: 'cognito' }, (scope) => ({
      userPool: cognito.UserPool.fromUserPoolId(scope, 'Pool', 'us-east-1_example'),
    }));
    const all = methodsOf(template.toJSON() as CfnTemplate, idIn(stack, api.restApi.api));
    expect(all.length).toBe(REGISTRY_ROUTES.length);
    for (const method of all) expect(method.properties.AuthorizationType).toBe('COGNITO_USER_POOLS');
  });

  it('rejects throttling outside API Gateway limits, naming the value', () => {
    expect(() => standalone({ throttlingRateLimit: 0 })).toThrow(/throttlingRateLimit.*0/);
  });
});
