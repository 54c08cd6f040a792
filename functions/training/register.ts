import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { registerTraining } from '../../lib/training/steps.ts';
import { eventsFromEnv, logger } from '../lib/runtime.ts';

/** Training pipeline, step 4: register the version with lineage and move the champion or challenger alias. */
export const handler = middy(async (event: unknown) =>
  registerTraining(lakeFromEnv(), eventsFromEnv(), event),
).use(injectLambdaContext(logger));
