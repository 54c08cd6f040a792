import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { recordRetraining } from '../../lib/updates/retraining.ts';
import { eventsFromEnv, logger } from '../lib/runtime.ts';

/** Retraining step Record: the run record (which events caused it, what it did) and RetrainingRunCompleted. */
export const handler = middy(async (event: unknown) => {
  const result = await recordRetraining(lakeFromEnv(), event, { events: eventsFromEnv() });
  logger.info('retraining recorded', { runId: result.runId, status: result.status, reason: result.reason });
  return { status: result.status, reason: result.reason, runId: result.runId };
}).use(injectLambdaContext(logger));
