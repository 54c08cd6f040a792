import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import middy from '@middy/core';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { proxyToEndpoint } from '../../lib/serving/endpoint-proxy.ts';
import { logger, requireEnv } from '../lib/runtime.ts';

const client = new SageMakerRuntimeClient({});
const endpointName = requireEnv('KILN_ENDPOINT_NAME');

/** HTTPS API → SageMaker endpoint. Unexpected failures become a bare 502; the detail goes to the log only. */
export const handler = middy(async (event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> => {
  try {
    return await proxyToEndpoint(client, endpointName, event);
  } catch (error) {
    logger.error('endpoint invocation failed', { error: error as Error });
    return {
      statusCode: 502,
      headers: { 'content-type': 'application/json' },
      body: '{"error":"upstream model server failed"}',
    };
  }
}).use(injectLambdaContext(logger));
