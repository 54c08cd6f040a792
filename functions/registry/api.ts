import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { handleRegistryRequest } from '../../lib/registry/api.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { eventsFromEnv, logger } from '../lib/runtime.ts';

const registry = new ModelRegistry(lakeFromEnv(), eventsFromEnv());

/** The registry API behind API Gateway (IAM auth): the caller's IAM identity is the audit log's "who". */
export const handler = middy(async (event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> => {
  const identity = event.requestContext?.identity;
  const actor = identity?.userArn ?? identity?.caller ?? 'unknown';
  const response = await handleRegistryRequest(
    registry,
    {
      method: event.httpMethod,
      path: event.path,
      body:
        event.isBase64Encoded && event.body ? Buffer.from(event.body, 'base64').toString('utf8') : event.body,
      actor,
    },
    (error) => logger.error('registry request failed', { error: error as Error }),
  );
  return {
    statusCode: response.status,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(response.body),
  };
}).use(injectLambdaContext(logger));
