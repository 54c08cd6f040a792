import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { PipelineFailureInputSchema, recordPipelineFailure } from '../../lib/etl/failure.ts';
import { parseInput } from '../../lib/etl/input.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { logger } from '../lib/runtime.ts';

/** Catch path of every pipeline: records the failure in `runs/<pipeline>/<runId>-failed.json`. */
export const handler = middy(async (event: unknown) => {
  const failure = await recordPipelineFailure(
    lakeFromEnv(),
    parseInput(PipelineFailureInputSchema, event, 'failure input'),
  );
  logger.error('pipeline failed', { pipeline: failure.pipeline, runId: failure.runId, error: failure.error });
  return failure;
}).use(injectLambdaContext(logger));
