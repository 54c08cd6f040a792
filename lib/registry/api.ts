import { z } from 'zod';
import {
  ConflictError,
  describeError,
  IntegrityError,
  type KilnError,
  NotFoundError,
  PolicyError,
  ValidationError,
} from '../core/errors.ts';
import { StageSchema } from './records.ts';
import type { ModelRegistry } from './registry.ts';

/** Request bodies larger than this are refused before parsing (registry requests are small JSON documents). */
export const MAX_REGISTRY_BODY_BYTES = 64 * 1024;

export const StageChangeRequestSchema = z.strictObject({
  stage: StageSchema,
  reason: z.string().min(1).max(1000),
});
export const AliasRequestSchema = z.strictObject({
  version: z.number().int().positive(),
  reason: z.string().min(1).max(1000),
});

export interface RegistryRequest {
  method: string;
  path: string;
  body?: string | null;
  /** Who is asking: the IAM principal on AWS, the token's user locally. Recorded in the audit log. */
  actor: string;
}

export interface RegistryResponse {
  status: number;
  body: unknown;
}

type Route = {
  method: string;
  pattern: RegExp;
  run: (registry: ModelRegistry, params: string[], request: RegistryRequest) => Promise<RegistryResponse>;
};

const ok = (body: unknown, status = 200): RegistryResponse => ({ status, body });

/** The registry's HTTP operations; the Lambda behind API Gateway and the local server both call these. */
const ROUTES: Route[] = [
  {
    method: 'GET',
    pattern: /^\/models$/,
    run: async (registry) => ok({ models: await registry.listModels() }),
  },
  {
    method: 'GET',
    pattern: /^\/models\/([^/]+)$/,
    run: async (registry, [model = '']) => {
      const versions = await registry.listVersions(model);
      const { aliases } = await registry.readAliases(model);
      return ok({
        model,
        aliases,
        versions: versions.map(({ version, stage, createdAt, metrics }) => ({
          version,
          stage,
          createdAt,
          metrics,
        })),
      });
    },
  },
  {
    method: 'GET',
    pattern: /^\/models\/([^/]+)\/versions\/([^/]+)$/,
    run: async (registry, [model = '', ref = '']) => ok(await registry.resolve(`${model}@${ref}`)),
  },
  {
    method: 'POST',
    pattern: /^\/models\/([^/]+)\/versions\/(\d+)\/stage$/,
    run: async (registry, [model = '', version = ''], request) => {
      const body = parseBody(StageChangeRequestSchema, request.body);
      return ok(await registry.setStage(model, Number(version), body.stage, request.actor, body.reason));
    },
  },
  {
    method: 'PUT',
    pattern: /^\/models\/([^/]+)\/aliases\/([^/]+)$/,
    run: async (registry, [model = '', alias = ''], request) => {
      const body = parseBody(AliasRequestSchema, request.body);
      return ok(await registry.setAlias(model, alias, body.version, request.actor, body.reason));
    },
  },
];

/** Routes one request; client mistakes become 4xx with a message, anything unexpected a bare 500. */
export async function handleRegistryRequest(
  registry: ModelRegistry,
  request: RegistryRequest,
  onUnexpected: (error: unknown) => void = () => undefined,
): Promise<RegistryResponse> {
  const path = request.path.replace(/\/+$/, '') || '/';
  const matching = ROUTES.filter((route) => route.pattern.test(path));
  if (matching.length === 0) return { status: 404, body: { error: `no such resource: ${path}` } };
  const route = matching.find((candidate) => candidate.method === request.method.toUpperCase());
  if (!route) {
    return {
      status: 405,
      body: {
        error: `${request.method} is not allowed on ${path}; use ${matching.map((r) => r.method).join(', ')}`,
      },
    };
  }
  if (request.body && Buffer.byteLength(request.body) > MAX_REGISTRY_BODY_BYTES) {
    return { status: 413, body: { error: `request body exceeds ${MAX_REGISTRY_BODY_BYTES} bytes` } };
  }
  const params = (route.pattern.exec(path) ?? []).slice(1).map(decodeURIComponent);
  try {
    return await route.run(registry, params, request);
  } catch (error) {
    const status = statusOf(error);
    if (status >= 500) {
      onUnexpected(error);
      return { status: 500, body: { error: 'internal error' } };
    }
    return { status, body: { error: describeError(error), code: (error as KilnError).code } };
  }
}

function statusOf(error: unknown): number {
  if (error instanceof ValidationError) return 400;
  if (error instanceof NotFoundError) return 404;
  if (error instanceof ConflictError) return 409;
  if (error instanceof PolicyError) return 403;
  if (error instanceof IntegrityError) return 422;
  return 500;
}

function parseBody<T>(schema: z.ZodType<T>, body: string | null | undefined): T {
  let json: unknown;
  try {
    json = JSON.parse(body ?? '');
  } catch {
    throw new ValidationError('request body must be JSON');
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    throw new ValidationError(
      result.error.issues.map((issue) => `${issue.path.join('.') || 'body'}: ${issue.message}`).join('; '),
    );
  }
  return result.data;
}

/** OpenAPI 3 document of the registry API, generated from the same zod schemas that validate requests. */
export function registryOpenApi(): Record<string, unknown> {
  const modelParam = {
    name: 'model',
    in: 'path',
    required: true,
    schema: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,63}$' },
  };
  const errors = {
    '400': { description: 'invalid request' },
    '404': { description: 'not found' },
    '403': { description: 'forbidden' },
  };
  return {
    openapi: '3.0.3',
    info: { title: 'Kiln model registry', version: '1' },
    paths: {
      '/models': { get: { operationId: 'listModels', responses: { '200': { description: 'model names' } } } },
      '/models/{model}': {
        get: {
          operationId: 'getModel',
          parameters: [modelParam],
          responses: { '200': { description: 'versions and aliases' }, ...errors },
        },
      },
      '/models/{model}/versions/{version}': {
        get: {
          operationId: 'getVersion',
          parameters: [
            modelParam,
            { name: 'version', in: 'path', required: true, schema: { type: 'string' } },
          ],
          responses: { '200': { description: 'the version record with lineage' }, ...errors },
        },
      },
      '/models/{model}/versions/{version}/stage': {
        post: {
          operationId: 'setStage',
          parameters: [
            modelParam,
            { name: 'version', in: 'path', required: true, schema: { type: 'integer' } },
          ],
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: z.toJSONSchema(StageChangeRequestSchema, { target: 'openapi-3.0' }),
              },
            },
          },
          responses: { '200': { description: 'the updated record' }, ...errors },
        },
      },
      '/models/{model}/aliases/{alias}': {
        put: {
          operationId: 'setAlias',
          parameters: [modelParam, { name: 'alias', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: {
            required: true,
            content: {
              'application/json': { schema: z.toJSONSchema(AliasRequestSchema, { target: 'openapi-3.0' }) },
            },
          },
          responses: { '200': { description: 'the alias document' }, ...errors },
        },
      },
    },
  };
}
