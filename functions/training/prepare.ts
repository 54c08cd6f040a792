import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { prepareTraining } from '../../lib/training/steps.ts';
import { logger } from '../lib/runtime.ts';

/** Training pipeline, step 1: resolve the dataset version and build the SageMaker training job request. */
export const handler = middy(async (event: unknown) => prepareTraining(lakeFromEnv(), event)).use(
  injectLambdaContext(logger),
);
