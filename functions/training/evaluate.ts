import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { evaluateTraining } from '../../lib/training/steps.ts';
import { logger } from '../lib/runtime.ts';

/** Training pipeline, step 3: held-out metrics of challenger and champion with ONNX Runtime; the gate decision. */
export const handler = middy(async (event: unknown) => evaluateTraining(lakeFromEnv(), event)).use(
  injectLambdaContext(logger),
);
