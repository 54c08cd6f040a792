import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';

/** SageMaker real-time endpoints accept at most 6 MB per invocation; refuse bigger bodies before calling. */
export const MAX_BODY_BYTES = 6 * 1024 * 1024;
const ALLOWED_TYPES = ['application/json', 'text/csv'];

function json(statusCode: number, body: unknown): APIGatewayProxyResult {
  return { statusCode, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

/**
 * API Gateway → SageMaker endpoint: passes the request body through to `InvokeEndpoint` (the server behind it
 * speaks the SageMaker contract), keeps client errors as 4xx with the server's JSON message, and turns
 * anything else into a 502 without internals.
 */
export async function proxyToEndpoint(
  client: SageMakerRuntimeClient,
  endpointName: string,
  event: Pick<APIGatewayProxyEvent, 'body' | 'headers' | 'isBase64Encoded' | 'queryStringParameters'>,
): Promise<APIGatewayProxyResult> {
  const headers = Object.fromEntries(
    Object.entries(event.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
  );
  const contentType = (headers['content-type'] ?? 'application/json').split(';')[0]?.trim() ?? '';
  if (!ALLOWED_TYPES.includes(contentType)) {
    return json(415, { error: `unsupported content type ${contentType}; use ${ALLOWED_TYPES.join(' or ')}` });
  }
  if (!event.body) return json(400, { error: 'empty request body' });
  const body = Buffer.from(event.body, event.isBase64Encoded ? 'base64' : 'utf8');
  if (body.length > MAX_BODY_BYTES)
    return json(413, { error: `body is ${body.length} bytes; the limit is ${MAX_BODY_BYTES}` });
  try {
    const response = await client.send(
      new InvokeEndpointCommand({
        EndpointName: endpointName,
        ContentType: contentType,
        Accept: headers.accept ?? 'application/json',
        Body: body,
        TargetModel: event.queryStringParameters?.model,
      }),
    );
    return {
      statusCode: 200,
      headers: { 'content-type': response.ContentType ?? 'application/json' },
      body: Buffer.from(response.Body ?? new Uint8Array()).toString('utf8'),
    };
  } catch (error) {
    // InvokeEndpoint reports the container's 4xx as ModelError with OriginalStatusCode and OriginalMessage.
    const modelError = error as { name?: string; OriginalStatusCode?: number; OriginalMessage?: string };
    if (
      modelError.name === 'ModelError' &&
      modelError.OriginalStatusCode &&
      modelError.OriginalStatusCode < 500
    ) {
      return {
        statusCode: modelError.OriginalStatusCode,
        headers: { 'content-type': 'application/json' },
        body: modelError.OriginalMessage ?? JSON.stringify({ error: 'rejected by the model server' }),
      };
    }
    if (modelError.name === 'ValidationError')
      return json(400, { error: 'the endpoint rejected the request' });
    throw error;
  }
}
