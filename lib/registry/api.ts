import { z } from 'zod';
import {
  ConflictError,
  describeError,
  IntegrityError,
  KilnError,
  NotFoundError,
  PolicyError,
  ValidationError,
} from '../core/errors.ts';
import { diffVersions, VersionDiffSchema } from './diff.ts';
import { PolicyDocumentSchema, PolicyUpdateRequestSchema } from './policy.ts';
import {
  AliasesSchema,
  AliasNameSchema,
  AuditEntrySchema,
  ModelNameSchema,
  ReasonSchema,
  StageSchema,
  VersionRecordSchema,
} from './records.ts';
import type { ModelRegistry } from './registry.ts';

/** Request bodies larger than this are refused before parsing (registry requests are small JSON documents). */
export const MAX_REGISTRY_BODY_BYTES = 64 * 1024;

// ---- request schemas (validate input here, in API Gateway, and document it in OpenAPI) ----

export const ReasonRequestSchema = z.strictObject({ reason: ReasonSchema });
export const AliasRequestSchema = z.strictObject({
  version: z.number().int().positive(),
  reason: ReasonSchema,
});
export const RollbackRequestSchema = z.strictObject({
  reason: ReasonSchema,
  /** Only roll back if this is still the champion (guards against rolling back twice). */
  from: z.number().int().positive().optional(),
  /** Roll back to this production version instead of the previous one. */
  to: z.number().int().positive().optional(),
});
export const DiffQuerySchema = z.strictObject({
  a: z.string().min(1).max(130).describe('NAME@VERSION or NAME@ALIAS'),
  b: z.string().min(1).max(130).describe('NAME@VERSION or NAME@ALIAS'),
});

/** Path parameters, by name; every route's `{name}` segments are validated with these. */
const PATH_PARAMS = {
  model: ModelNameSchema,
  version: z.string().regex(/^[1-9]\d{0,8}$/, 'a version number'),
  ref: z.string().regex(/^([1-9]\d{0,8}|[a-z][a-z0-9-]{0,31})$/, 'a version number or an alias'),
  alias: AliasNameSchema,
} as const;
type PathParam = keyof typeof PATH_PARAMS;

// ---- response schemas (OpenAPI components) ----

export const ErrorSchema = z.object({ error: z.string(), code: z.string().optional() });
const ModelListSchema = z.object({ models: z.array(z.string()) });
const ModelSummarySchema = z.object({
  model: z.string(),
  aliases: z.record(z.string(), z.number().int()),
  versions: z.array(
    z.object({
      version: z.number().int(),
      stage: StageSchema,
      createdAt: z.string(),
      metrics: z.record(z.string(), z.unknown()),
    }),
  ),
});
const VerifySchema = z.object({
  model: z.string(),
  version: z.number().int(),
  verified: z.literal(true),
  artifacts: z.array(z.object({ file: z.string(), key: z.string(), sha256: z.string(), size: z.number() })),
});
const PromotionDecisionSchema = z.object({
  allowed: z.boolean(),
  policyRevision: z.number().int(),
  satisfied: z.array(z.string()),
  violations: z.array(z.string()),
});
const PromotionResultSchema = z.object({
  record: VersionRecordSchema,
  previousChampion: z.number().int().nullable(),
  decision: PromotionDecisionSchema,
});
const RollbackResultSchema = z.object({
  from: z.number().int(),
  to: z.number().int(),
  record: VersionRecordSchema,
  archived: VersionRecordSchema,
});
const AuditLogSchema = z.object({ model: z.string(), entries: z.array(AuditEntrySchema) });
const PolicyHistorySchema = z.object({ revisions: z.array(PolicyDocumentSchema) });

/** Named response schemas; OpenAPI refers to them as `#/components/schemas/<name>`. */
export const RESPONSE_SCHEMAS = {
  ModelList: ModelListSchema,
  ModelSummary: ModelSummarySchema,
  VersionRecord: VersionRecordSchema,
  Verification: VerifySchema,
  PromotionDecision: PromotionDecisionSchema,
  PromotionResult: PromotionResultSchema,
  RollbackResult: RollbackResultSchema,
  Aliases: AliasesSchema,
  AuditLog: AuditLogSchema,
  VersionDiff: VersionDiffSchema,
  Policy: PolicyDocumentSchema,
  PolicyHistory: PolicyHistorySchema,
  Error: ErrorSchema,
} as const;
type ResponseName = keyof typeof RESPONSE_SCHEMAS;

// ---- routes ----

export interface RegistryRequest {
  method: string;
  path: string;
  body?: string | null;
  /** Query-string parameters (single values). */
  query?: Record<string, string | undefined> | null;
  /** Who is asking: the IAM principal on AWS, the token's user locally. Recorded in the audit log. */
  actor: string;
}

export interface RegistryResponse {
  status: number;
  body: unknown;
  /** The operation that answered (absent when no route matched). */
  operation?: string;
}

interface RouteContext<B, Q> {
  registry: ModelRegistry;
  params: Record<PathParam, string>;
  body: B;
  query: Q;
  actor: string;
}

/** One registry operation: its HTTP shape, its schemas and what it does. */
export interface RegistryRoute {
  operationId: string;
  method: 'GET' | 'POST' | 'PUT';
  /** Path template, OpenAPI style: `/models/{model}`. */
  path: string;
  summary: string;
  body?: z.ZodType;
  query?: z.ZodObject;
  response: ResponseName;
  /** Whether the operation changes state (for docs and audit). */
  mutates: boolean;
  run(context: RouteContext<unknown, unknown>): Promise<unknown>;
}

function route<B = undefined, Q = undefined>(
  definition: Omit<RegistryRoute, 'run' | 'body' | 'query'> & {
    body?: z.ZodType<B>;
    query?: z.ZodObject & z.ZodType<Q>;
    run(context: RouteContext<B, Q>): Promise<unknown>;
  },
): RegistryRoute {
  return definition as RegistryRoute;
}

const version = (params: Record<PathParam, string>) => Number(params.version);

/** The registry's operations; the Lambda behind API Gateway, the local server and the CLI all go through these. */
export const REGISTRY_ROUTES: readonly RegistryRoute[] = [
  route({
    operationId: 'listModels',
    method: 'GET',
    path: '/models',
    summary: 'Every model name',
    response: 'ModelList',
    mutates: false,
    run: async ({ registry }) => ({ models: await registry.listModels() }),
  }),
  route({
    operationId: 'getModel',
    method: 'GET',
    path: '/models/{model}',
    summary: "A model's versions (stage, metrics) and aliases",
    response: 'ModelSummary',
    mutates: false,
    run: async ({ registry, params }) => {
      const versions = await registry.listVersions(params.model);
      const { aliases } = await registry.readAliases(params.model);
      return {
        model: params.model,
        aliases,
        versions: versions.map(({ version, stage, createdAt, metrics }) => ({
          version,
          stage,
          createdAt,
          metrics,
        })),
      };
    },
  }),
  route({
    operationId: 'getVersion',
    method: 'GET',
    path: '/models/{model}/versions/{ref}',
    summary: 'One version with its full lineage, by number or alias',
    response: 'VersionRecord',
    mutates: false,
    run: async ({ registry, params }) => registry.resolve(`${params.model}@${params.ref}`),
  }),
  route({
    operationId: 'verifyVersion',
    method: 'GET',
    path: '/models/{model}/versions/{version}/verify',
    summary: 'Re-hash every artifact of a version against its registration (422 when tampered)',
    response: 'Verification',
    mutates: false,
    run: async ({ registry, params }) => {
      const record = await registry.getVersion(params.model, version(params));
      const artifacts = await registry.verifyArtifacts(record);
      return { model: record.model, version: record.version, verified: true, artifacts };
    },
  }),
  route({
    operationId: 'checkPromotion',
    method: 'GET',
    path: '/models/{model}/versions/{version}/promotion',
    summary: 'What the promotion policy would decide now (changes nothing)',
    response: 'PromotionDecision',
    mutates: false,
    run: async ({ registry, params }) => registry.checkPromotion(params.model, version(params)),
  }),
  route({
    operationId: 'approveVersion',
    method: 'POST',
    path: '/models/{model}/versions/{version}/approve',
    summary: 'Sign off on a version (candidate → approved)',
    body: ReasonRequestSchema,
    response: 'VersionRecord',
    mutates: true,
    run: async ({ registry, params, body, actor }) =>
      registry.approve(params.model, version(params), actor, body.reason),
  }),
  route({
    operationId: 'rejectVersion',
    method: 'POST',
    path: '/models/{model}/versions/{version}/reject',
    summary: 'Turn a candidate or approved version down (→ rejected)',
    body: ReasonRequestSchema,
    response: 'VersionRecord',
    mutates: true,
    run: async ({ registry, params, body, actor }) =>
      registry.reject(params.model, version(params), actor, body.reason),
  }),
  route({
    operationId: 'promoteVersion',
    method: 'POST',
    path: '/models/{model}/versions/{version}/promote',
    summary: 'Promote to production and make it the champion, if the policy allows (403 and audited if not)',
    body: ReasonRequestSchema,
    response: 'PromotionResult',
    mutates: true,
    run: async ({ registry, params, body, actor }) =>
      registry.promote(params.model, version(params), actor, body.reason),
  }),
  route({
    operationId: 'archiveVersion',
    method: 'POST',
    path: '/models/{model}/versions/{version}/archive',
    summary: 'Retire a version that is not the champion (→ archived)',
    body: ReasonRequestSchema,
    response: 'VersionRecord',
    mutates: true,
    run: async ({ registry, params, body, actor }) =>
      registry.archive(params.model, version(params), actor, body.reason),
  }),
  route({
    operationId: 'rollback',
    method: 'POST',
    path: '/models/{model}/rollback',
    summary: 'Move the champion back to the previous production version and archive the current one',
    body: RollbackRequestSchema,
    response: 'RollbackResult',
    mutates: true,
    run: async ({ registry, params, body, actor }) =>
      registry.rollback(params.model, { actor, reason: body.reason, from: body.from, to: body.to }),
  }),
  route({
    operationId: 'setAlias',
    method: 'PUT',
    path: '/models/{model}/aliases/{alias}',
    summary: 'Point an alias (not champion) at a version',
    body: AliasRequestSchema,
    response: 'Aliases',
    mutates: true,
    run: async ({ registry, params, body, actor }) =>
      registry.setAlias(params.model, params.alias, body.version, actor, body.reason),
  }),
  route({
    operationId: 'getAuditLog',
    method: 'GET',
    path: '/models/{model}/audit',
    summary: "A model's append-only audit log: who did what, when and why",
    response: 'AuditLog',
    mutates: false,
    run: async ({ registry, params }) => ({
      model: params.model,
      entries: await registry.readAudit(params.model),
    }),
  }),
  route({
    operationId: 'diffVersions',
    method: 'GET',
    path: '/diff',
    summary: 'Compare two versions: parameters, metrics, data, code, artifact',
    query: DiffQuerySchema,
    response: 'VersionDiff',
    mutates: false,
    run: async ({ registry, query }) =>
      diffVersions(await registry.resolve(query.a), await registry.resolve(query.b)),
  }),
  route({
    operationId: 'getPolicy',
    method: 'GET',
    path: '/policy',
    summary: 'The promotion policy in force',
    response: 'Policy',
    mutates: false,
    run: async ({ registry }) => registry.policies.read(),
  }),
  route({
    operationId: 'putPolicy',
    method: 'PUT',
    path: '/policy',
    summary: 'Store a new policy revision (compare-and-swap on expectedRevision)',
    body: PolicyUpdateRequestSchema,
    response: 'Policy',
    mutates: true,
    run: async ({ registry, body, actor }) =>
      registry.policies.write(body.policy, {
        actor,
        reason: body.reason,
        expectedRevision: body.expectedRevision,
      }),
  }),
  route({
    operationId: 'getPolicyHistory',
    method: 'GET',
    path: '/policy/history',
    summary: 'Every stored policy revision, oldest first',
    response: 'PolicyHistory',
    mutates: false,
    run: async ({ registry }) => ({ revisions: await registry.policies.history() }),
  }),
];

interface CompiledRoute {
  route: RegistryRoute;
  pattern: RegExp;
  names: PathParam[];
}

const COMPILED: CompiledRoute[] = REGISTRY_ROUTES.map((entry) => {
  const names = pathParams(entry.path);
  const pattern = new RegExp(`^${entry.path.replace(/\{[a-z]+\}/g, '([^/]+)')}$`);
  return { route: entry, pattern, names };
});

/** The `{name}` segments of a path template. */
export function pathParams(path: string): PathParam[] {
  return [...path.matchAll(/\{([a-z]+)\}/g)].map((match) => {
    const name = match[1] ?? '';
    if (!(name in PATH_PARAMS)) throw new Error(`route ${path}: no schema for path parameter ${name}`);
    return name as PathParam;
  });
}

/** Routes one request; client mistakes become 4xx with a message, anything unexpected a bare 500. */
export async function handleRegistryRequest(
  registry: ModelRegistry,
  request: RegistryRequest,
  onUnexpected: (error: unknown) => void = () => undefined,
): Promise<RegistryResponse> {
  if (request.body && Buffer.byteLength(request.body) > MAX_REGISTRY_BODY_BYTES) {
    return { status: 413, body: { error: `request body exceeds ${MAX_REGISTRY_BODY_BYTES} bytes` } };
  }
  const path = request.path.replace(/\/+$/, '') || '/';
  const matching = COMPILED.filter((candidate) => candidate.pattern.test(path));
  if (matching.length === 0) return { status: 404, body: { error: `no such resource: ${path}` } };
  const compiled = matching.find((candidate) => candidate.route.method === request.method.toUpperCase());
  if (!compiled) {
    return {
      status: 405,
      body: {
        error: `${request.method} is not allowed on ${path}; use ${matching.map((c) => c.route.method).join(', ')}`,
      },
    };
  }
  const operation = compiled.route.operationId;
  try {
    const values = (compiled.pattern.exec(path) ?? []).slice(1);
    const params = {} as Record<PathParam, string>;
    compiled.names.forEach((name, index) => {
      params[name] = parsePathParam(name, values[index] ?? '');
    });
    const body = compiled.route.body ? parseJson(compiled.route.body, request.body, 'body') : undefined;
    const query = compiled.route.query
      ? parseValue(compiled.route.query, definedEntries(request.query), 'query')
      : undefined;
    const result = await compiled.route.run({ registry, params, body, query, actor: request.actor });
    return { status: 200, body: result, operation };
  } catch (error) {
    const status = statusOf(error);
    if (status >= 500) {
      onUnexpected(error);
      return { status: 500, body: { error: 'internal error' }, operation };
    }
    return {
      status,
      body: { error: describeError(error), code: error instanceof KilnError ? error.code : undefined },
      operation,
    };
  }
}

/** Maps Kiln's named errors to HTTP, once, at the edge. */
export function statusOf(error: unknown): number {
  if (error instanceof ValidationError) return 400;
  if (error instanceof PolicyError) return 403;
  if (error instanceof NotFoundError) return 404;
  if (error instanceof ConflictError) return 409;
  if (error instanceof IntegrityError) return 422;
  return 500;
}

function parsePathParam(name: PathParam, raw: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new ValidationError(`path parameter ${name}: ${JSON.stringify(raw)} is not valid URL encoding`);
  }
  const result = PATH_PARAMS[name].safeParse(value);
  if (!result.success) {
    throw new ValidationError(
      `invalid ${name} ${JSON.stringify(value)}: expected ${result.error.issues[0]?.message ?? 'a valid value'}`,
    );
  }
  return result.data;
}

function definedEntries(query: RegistryRequest['query']): Record<string, string> {
  return Object.fromEntries(
    Object.entries(query ?? {}).filter((entry): entry is [string, string] => entry[1] !== undefined),
  );
}

function parseJson<T>(schema: z.ZodType<T>, body: string | null | undefined, what: string): T {
  let json: unknown;
  try {
    json = JSON.parse(body ?? '');
  } catch {
    throw new ValidationError('request body must be a JSON object');
  }
  return parseValue(schema, json, what);
}

function parseValue<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new ValidationError(
      result.error.issues.map((issue) => `${[what, ...issue.path].join('.')}: ${issue.message}`).join('; '),
    );
  }
  return result.data;
}

// ---- OpenAPI ----

const openApiSchema = (schema: z.ZodType, io: 'input' | 'output') => {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, {
    target: 'openapi-3.0',
    io,
    unrepresentable: 'any',
  }) as Record<string, unknown>;
  return rest;
};

/** The named response schemas, each once; schemas nested in others (VersionRecord) become `$ref`s. */
function componentSchemas(): Record<string, unknown> {
  const named = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(RESPONSE_SCHEMAS)) named.add(schema, { id });
  const { schemas } = z.toJSONSchema(named, {
    target: 'openapi-3.0',
    io: 'output',
    unrepresentable: 'any',
    uri: (id) => `#/components/schemas/${id}`,
  }) as { schemas: Record<string, Record<string, unknown>> };
  // OpenAPI 3.0 schema objects have no $id (the component name is the id).
  return Object.fromEntries(
    Object.entries(schemas).map(([id, { $id: _id, $schema: _dialect, ...schema }]) => [id, schema]),
  );
}

const ERROR_RESPONSES: Record<string, string> = {
  '400': 'invalid request (bad name, version, alias or body)',
  '401': 'missing or wrong credentials (local server: bearer token)',
  '403': 'refused by IAM or by the promotion policy',
  '404': 'unknown model, version or alias',
  '409': 'conflicts with the current state (e.g. archiving the champion, a stale policy revision)',
  '413': `body larger than ${MAX_REGISTRY_BODY_BYTES} bytes`,
  '422': 'an artifact no longer matches the SHA-256 recorded at registration',
};

/** OpenAPI 3 document of the registry API, generated from the same zod schemas that validate requests. */
export function registryOpenApi(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const entry of REGISTRY_ROUTES) {
    const parameters = [
      ...pathParams(entry.path).map((name) => ({
        name,
        in: 'path',
        required: true,
        schema: openApiSchema(PATH_PARAMS[name], 'input'),
      })),
      ...Object.entries(entry.query?.shape ?? {}).map(([name, schema]) => ({
        name,
        in: 'query',
        required: !(schema as z.ZodType).safeParse(undefined).success,
        ...((schema as z.ZodType).description ? { description: (schema as z.ZodType).description } : {}),
        schema: openApiSchema(schema as z.ZodType, 'input'),
      })),
    ];
    const errors = Object.fromEntries(
      Object.entries(ERROR_RESPONSES)
        .filter(([status]) => entry.mutates || (status !== '409' && status !== '413'))
        .map(([status, description]) => [
          status,
          {
            description,
            content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
          },
        ]),
    );
    paths[entry.path] ??= {};
    const operations = paths[entry.path] as Record<string, unknown>;
    operations[entry.method.toLowerCase()] = {
      operationId: entry.operationId,
      summary: entry.summary,
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(entry.body
        ? {
            requestBody: {
              required: true,
              content: { 'application/json': { schema: openApiSchema(entry.body, 'input') } },
            },
          }
        : {}),
      responses: {
        '200': {
          description: entry.summary,
          content: { 'application/json': { schema: { $ref: `#/components/schemas/${entry.response}` } } },
        },
        ...errors,
      },
    };
  }
  return {
    openapi: '3.0.3',
    info: {
      title: 'Kiln model registry',
      version: '1',
      description:
        'Versions, aliases, approval and lineage. On AWS behind API Gateway with IAM (SigV4) auth; locally on 127.0.0.1 with a bearer token. Generated from lib/registry/api.ts; do not edit by hand.',
    },
    security: [{ sigv4: [] }, { bearer: [] }],
    paths,
    components: {
      securitySchemes: {
        sigv4: {
          type: 'apiKey',
          name: 'Authorization',
          in: 'header',
          'x-amazon-apigateway-authtype': 'awsSigv4',
        },
        bearer: { type: 'http', scheme: 'bearer', description: 'the local token (kiln serve / kiln up)' },
      },
      schemas: componentSchemas(),
    },
  };
}
