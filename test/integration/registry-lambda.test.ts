import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type KilnEvent, setLocalEventPublisher } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { MAX_REGISTRY_BODY_BYTES } from '../../lib/registry/api.ts';
import { RegistryEventSchema } from '../../lib/registry/events.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { gate, registration } from '../support/registry-fixtures.ts';

type Handler = (event: unknown, context: Context) => Promise<APIGatewayProxyResult>;

const CALLER = 'arn:aws:sts::123456789012:assumed-role/MlReviewer/alice';

/** An API Gateway REST proxy event as API Gateway sends it for an IAM-authenticated call. */
function apiEvent(
  method: string,
  path: string,
  options: {
    body?: unknown;
    base64?: boolean;
    query?: Record<string, string>;
    identity?: Partial<APIGatewayProxyEvent['requestContext']['identity']> | null;
    claims?: Record<string, string>;
  } = {},
): APIGatewayProxyEvent {
  const text =
    options.body === undefined
      ? null
      : typeof options.body === 'string'
        ? options.body
        : JSON.stringify(options.body);
  const identity = {
    accessKey: 'ASIAEXAMPLE',
    accountId: '123456789012',
    apiKey: null,
    apiKeyId: null,
    caller: 'AROAEXAMPLE:alice',
    clientCert: null,
    cognitoAuthenticationProvider: null,
    cognitoAuthenticationType: null,
    cognitoIdentityId: null,
    cognitoIdentityPoolId: null,
    principalOrgId: null,
    sourceIp: '203.0.113.7',
    user: 'AROAEXAMPLE:alice',
    userAgent: 'aws-sdk-js',
    userArn: CALLER,
    ...options.identity,
  };
  return {
    resource: '/{proxy+}',
    path,
    httpMethod: method,
    headers: { 'content-type': 'application/json' },
    multiValueHeaders: {},
    queryStringParameters: options.query ?? null,
    multiValueQueryStringParameters: null,
    pathParameters: null,
    stageVariables: null,
    body: text === null ? null : options.base64 ? Buffer.from(text).toString('base64') : text,
    isBase64Encoded: options.base64 ?? false,
    requestContext: {
      accountId: '123456789012',
      apiId: 'abc123',
      authorizer: options.claims ? { claims: options.claims } : null,
      protocol: 'HTTP/1.1',
      httpMethod: method,
      identity: (options.identity === null
        ? null
        : identity) as APIGatewayProxyEvent['requestContext']['identity'],
      path: `/v1${path}`,
      stage: 'v1',
      requestId: 'req-1',
      requestTimeEpoch: 0,
      resourceId: 'res',
      resourcePath: '/{proxy+}',
    },
  };
}

const context = {
  callbackWaitsForEmptyEventLoop: false,
  functionName: 'kiln-registry',
  functionVersion: '$LATEST',
  invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:kiln-registry',
  memoryLimitInMB: '1024',
  awsRequestId: 'request-1',
  logGroupName: '/aws/lambda/kiln-registry',
  logStreamName: 'stream',
  getRemainingTimeInMillis: () => 29_000,
  done: () => undefined,
  fail: () => undefined,
  succeed: () => undefined,
} as Context;

describe('registry Lambda handler (API Gateway events)', () => {
  let handler: Handler;
  let registry: ModelRegistry;
  const events: KilnEvent[] = [];
  const bus = new LocalEventBus();
  const savedEnv = { ...process.env };
  const emf: string[] = [];
  let root = '';

  beforeAll(async () => {
    // Not tempDir(): that one is removed after each test, and this lake lives for the whole file.
    root = await mkdtemp(join(tmpdir(), 'kiln-registry-lambda-'));
    const lakeDir = join(root, 'lake');
    process.env.KILN_LAKE = lakeDir;
    process.env.POWERTOOLS_LOG_LEVEL = 'SILENT';
    bus.subscribe({}, (event) => {
      events.push(event);
    });
    setLocalEventPublisher(bus);
    registry = new ModelRegistry(new FileSystemStore(lakeDir));
    await registry.register(registration('churn', { gate: gate(true, null, null) }));
    await registry.register(registration('churn', { gate: gate(false, 1, -0.1) }));
    // Powertools writes embedded-metric-format lines to stdout; keep them for the metrics assertion.
    const write = process.stdout.write.bind(process.stdout);
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const text = String(chunk);
      if (text.includes('"_aws"')) {
        emf.push(text);
        return true;
      }
      return write(chunk, ...(rest as []));
    });
    handler = ((await import('../../functions/registry/api.ts')) as { handler: Handler }).handler;
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    setLocalEventPublisher(undefined);
    process.env = savedEnv;
    await rm(root, { recursive: true, force: true });
  });

  const invoke = async (event: unknown) => {
    const result = await handler(event, context);
    return {
      status: result.statusCode,
      body: JSON.parse(result.body) as Record<string, unknown>,
      headers: result.headers,
    };
  };

  it('answers reads as JSON and records the IAM caller as the actor of changes', async () => {
    const list = await invoke(apiEvent('GET', '/models'));
    expect(list).toMatchObject({ status: 200, body: { models: ['churn'] } });
    expect(list.headers).toMatchObject({ 'content-type': 'application/json' });

    const promoted = await invoke(
      apiEvent('POST', '/models/churn/versions/1/promote', { body: { reason: 'first model' } }),
    );
    expect(promoted.status).toBe(200);
    const approved = await invoke(
      apiEvent('POST', '/models/churn/versions/2/approve', { body: { reason: 'reviewed' }, base64: true }),
    );
    expect(approved).toMatchObject({ status: 200, body: { approvals: [{ by: CALLER }] } });
    const viaCognito = await invoke(
      apiEvent('POST', '/models/churn/versions/2/approve', {
        body: { reason: 'second reviewer' },
        identity: { userArn: null, caller: null },
        claims: { 'cognito:username': 'bob' },
      }),
    );
    expect(viaCognito).toMatchObject({
      status: 200,
      body: { approvals: [{ by: CALLER }, { by: 'cognito:bob' }] },
    });

    const diff = await invoke(apiEvent('GET', '/diff', { query: { a: 'churn@1', b: 'churn@2' } }));
    expect(diff).toMatchObject({ status: 200, body: { a: 'churn@1', b: 'churn@2' } });

    const audit = await registry.readAudit('churn');
    expect(audit.slice(-3).map((entry) => [entry.action, entry.actor])).toEqual([
      ['promote', CALLER],
      ['approve', CALLER],
      ['approve', 'cognito:bob'],
    ]);
    await bus.drain();
    expect(events.length).toBeGreaterThan(0);
    for (const event of events)
      expect(RegistryEventSchema.safeParse(event).success, event.detailType).toBe(true);
    expect(events.find((event) => event.detailType === 'ModelVersionApproved')?.detail.actor).toBe(CALLER);
  });

  it('refuses what is malformed, oversized, unauthenticated or against policy', async () => {
    const champion = (await registry.readAliases('churn')).aliases.champion;
    const notApi = await invoke({ hello: 'world' });
    expect(notApi).toMatchObject({ status: 400, body: { error: 'not an API Gateway proxy request' } });
    const anonymous = await invoke(apiEvent('GET', '/models', { identity: null }));
    expect(anonymous.status).toBe(403);
    const huge = await invoke(
      apiEvent('POST', '/models/churn/versions/2/approve', {
        body: { reason: 'x'.repeat(MAX_REGISTRY_BODY_BYTES) },
      }),
    );
    expect(huge).toMatchObject({ status: 413 });
    const hugeEncoded = await invoke(
      apiEvent('POST', '/models/churn/versions/2/approve', {
        body: { reason: 'x'.repeat(MAX_REGISTRY_BODY_BYTES) },
        base64: true,
      }),
    );
    expect(hugeEncoded.status).toBe(413);
    const badName = await invoke(apiEvent('GET', '/models/DROP%20TABLE'));
    expect(badName).toMatchObject({ status: 400, body: { code: 'ValidationError' } });
    const missing = await invoke(apiEvent('GET', '/models/churn/versions/42'));
    expect(missing).toMatchObject({ status: 404, body: { code: 'NotFound' } });
    // The champion cannot be archived; a rejected version cannot be promoted, and the refusal is audited.
    const archiveChampion = await invoke(
      apiEvent('POST', `/models/churn/versions/${champion}/archive`, { body: { reason: 'tidy' } }),
    );
    expect(archiveChampion).toMatchObject({ status: 409, body: { code: 'Conflict' } });
    const rejected = await invoke(
      apiEvent('POST', '/models/churn/versions/2/reject', { body: { reason: 'leak' } }),
    );
    expect(rejected).toMatchObject({ status: 200, body: { stage: 'rejected' } });
    const refused = await invoke(
      apiEvent('POST', '/models/churn/versions/2/promote', { body: { reason: 'anyway' } }),
    );
    expect(refused).toMatchObject({ status: 403, body: { code: 'PolicyViolation' } });
    expect(String(refused.body.error)).toContain('churn@2 is rejected');
    expect((await registry.readAliases('churn')).aliases.champion).toBe(champion);
    expect((await registry.readAudit('churn')).at(-1)).toMatchObject({
      action: 'promotion-refused',
      actor: CALLER,
    });
  });

  it('publishes request metrics in embedded metric format', () => {
    const documents = emf.flatMap((line) => line.split('\n').filter(Boolean)).map((line) => JSON.parse(line));
    const names = documents.flatMap(
      (doc: { _aws: { CloudWatchMetrics: Array<{ Metrics: Array<{ Name: string }> }> } }) =>
        doc._aws.CloudWatchMetrics.flatMap((set) => set.Metrics.map((metric) => metric.Name)),
    );
    expect(names).toEqual(
      expect.arrayContaining(['RegistryRequests', 'RegistryClientErrors', 'PromotionsRefused']),
    );
    expect(documents.some((doc: Record<string, unknown>) => doc.operation === 'promoteVersion')).toBe(true);
  });

  it('hides internal failures behind a bare 500', async () => {
    vi.resetModules();
    process.env.KILN_LAKE = 's3://kiln-unreachable-lake';
    process.env.KILN_S3_ENDPOINT = 'http://127.0.0.1:9';
    process.env.AWS_ACCESS_KEY_ID = 'x';
    process.env.AWS_SECRET_ACCESS_KEY = 'x';
    process.env.AWS_REGION = 'us-east-1';
    process.env.AWS_MAX_ATTEMPTS = '1';
    const broken = ((await import('../../functions/registry/api.ts')) as { handler: Handler }).handler;
    const result = await broken(apiEvent('GET', '/models'), context);
    expect(result.statusCode).toBe(500);
    expect(JSON.parse(result.body)).toEqual({ error: 'internal error' });
  });
});
