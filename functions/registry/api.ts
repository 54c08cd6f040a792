import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import middy from '@middy/core';
import type { APIGatewayProxyResult } from 'aws-lambda';
import { handleApiGatewayEvent } from '../../lib/registry/api-gateway.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { eventsFromEnv, logger } from '../lib/runtime.ts';

const registry = new ModelRegistry(lakeFromEnv(), eventsFromEnv());
const metrics = new Metrics({
  namespace: 'Kiln',
  serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'kiln-registry',
});
const tracer = new Tracer({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'kiln-registry' });

/**
 * The registry API behind API Gateway (IAM auth by default): the authenticated caller is the audit log's
 * "who"; the event is validated and the body size-limited before any work (lib/registry/api-gateway.ts).
 */
export const handler = middy(async (event: unknown): Promise<APIGatewayProxyResult> => {
  const { operation, ...result } = await handleApiGatewayEvent(registry, event, (error) =>
    logger.error('registry request failed', { error: error as Error }),
  );
  metrics.addDimension('operation', operation ?? 'none');
  metrics.addMetric('RegistryRequests', MetricUnit.Count, 1);
  if (result.statusCode >= 500) metrics.addMetric('RegistryServerErrors', MetricUnit.Count, 1);
  else if (result.statusCode >= 400) metrics.addMetric('RegistryClientErrors', MetricUnit.Count, 1);
  if (operation === 'promoteVersion' && result.statusCode === 403) {
    metrics.addMetric('PromotionsRefused', MetricUnit.Count, 1);
  }
  return result;
})
  .use(injectLambdaContext(logger))
  .use(captureLambdaHandler(tracer))
  .use(logMetrics(metrics));
