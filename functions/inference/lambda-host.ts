import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import type { APIGatewayProxyEvent } from 'aws-lambda';
import { RegistryModelSource } from '../../lib/registry/model-source.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { LambdaModelHost } from '../../lib/serving/lambda-host.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { logger } from '../lib/runtime.ts';

// Module scope: a warm function keeps its loaded model between invocations.
const host = new LambdaModelHost(new RegistryModelSource(new ModelRegistry(lakeFromEnv())));

/** Serverless inference for small CPU models: the registry's champion, loaded on first use. */
export const handler = middy(async (event: APIGatewayProxyEvent) => host.handle(event)).use(
  injectLambdaContext(logger),
);
