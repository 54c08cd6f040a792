import { z } from 'zod';
import { handleRegistryRequest, MAX_REGISTRY_BODY_BYTES, type RegistryResponse } from './api.ts';
import type { ModelRegistry } from './registry.ts';

/**
 * The slice of an API Gateway REST (v1) proxy event the registry reads, validated at the boundary. Who is
 * calling comes from what API Gateway authenticated: the IAM principal (SigV4), the Cognito user, or the
 * API key's id; the body is never trusted for it.
 */
export const ApiGatewayEventSchema = z.looseObject({
  httpMethod: z.string().min(1),
  path: z.string().min(1),
  body: z.string().nullable().optional(),
  isBase64Encoded: z.boolean().optional(),
  queryStringParameters: z.record(z.string(), z.string().optional()).nullable().optional(),
  requestContext: z
    .looseObject({
      identity: z
        .looseObject({
          userArn: z.string().nullable().optional(),
          caller: z.string().nullable().optional(),
          apiKeyId: z.string().nullable().optional(),
        })
        .nullable()
        .optional(),
      authorizer: z
        .looseObject({ claims: z.record(z.string(), z.unknown()).nullable().optional() })
        .nullable()
        .optional(),
    })
    .optional(),
});
export type ApiGatewayEvent = z.infer<typeof ApiGatewayEventSchema>;

/** What the Lambda returns to API Gateway. */
export interface ApiGatewayResult {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
}

/** The authenticated caller of an API Gateway request, for the audit log; undefined when there is none. */
export function callerOf(event: ApiGatewayEvent): string | undefined {
  const identity = event.requestContext?.identity;
  const claims = event.requestContext?.authorizer?.claims;
  const cognito = claims?.['cognito:username'] ?? claims?.email ?? claims?.sub;
  if (identity?.userArn) return identity.userArn;
  if (typeof cognito === 'string' && cognito) return `cognito:${cognito}`;
  if (identity?.apiKeyId) return `api-key:${identity.apiKeyId}`;
  if (identity?.caller) return identity.caller;
  return undefined;
}

/** Handles one API Gateway event with the registry: validation, size limit, caller identity, JSON out. */
export async function handleApiGatewayEvent(
  registry: ModelRegistry,
  raw: unknown,
  onUnexpected: (error: unknown) => void = () => undefined,
): Promise<ApiGatewayResult & { operation?: string }> {
  const parsed = ApiGatewayEventSchema.safeParse(raw);
  if (!parsed.success) return json({ status: 400, body: { error: 'not an API Gateway proxy request' } });
  const event = parsed.data;
  // Base64 inflates by 4/3: compare the encoded length first so a huge body is never decoded.
  const encodedLimit = event.isBase64Encoded
    ? Math.ceil((MAX_REGISTRY_BODY_BYTES * 4) / 3) + 4
    : MAX_REGISTRY_BODY_BYTES;
  if (event.body && Buffer.byteLength(event.body) > encodedLimit) {
    return json({ status: 413, body: { error: `request body exceeds ${MAX_REGISTRY_BODY_BYTES} bytes` } });
  }
  const actor = callerOf(event);
  if (!actor) {
    return json({ status: 403, body: { error: 'the request carries no authenticated caller identity' } });
  }
  const body =
    event.isBase64Encoded && event.body ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
  const response = await handleRegistryRequest(
    registry,
    { method: event.httpMethod, path: event.path, body, query: event.queryStringParameters, actor },
    onUnexpected,
  );
  return { ...json(response), ...(response.operation ? { operation: response.operation } : {}) };
}

function json(response: RegistryResponse): ApiGatewayResult {
  return {
    statusCode: response.status,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
    body: JSON.stringify(response.body),
  };
}
