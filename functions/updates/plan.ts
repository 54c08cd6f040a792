import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { planRetraining } from '../../lib/updates/retraining.ts';
import { logger } from '../lib/runtime.ts';

/** Retraining step Plan: train on the latest curated version, or skip with the reason (nothing new, claimed). */
export const handler = middy(async (event: unknown) => {
  const result = await planRetraining(lakeFromEnv(), event);
  logger.info('retraining planned', { train: result.train, reason: result.reason });
  return result;
}).use(injectLambdaContext(logger));
