import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { prepareTraining } from '../../lib/training/steps.ts';
import { logger, requireEnv } from '../lib/runtime.ts';

// The deployment's choices (the built-in image's URI, the default instance type), set by TrainingPipeline.
const defaults = {
  trainingImage: requireEnv('KILN_TRAINING_IMAGE'),
  instanceType: requireEnv('KILN_TRAINING_INSTANCE_TYPE'),
  byoInstanceType: process.env.KILN_BYO_TRAINING_INSTANCE_TYPE,
  // Set (maybe empty) on AWS: the repositories BYO images may come from. Unset locally, where images map to commands.
  byoImageRepositories: process.env.KILN_BYO_IMAGE_REPOSITORIES?.split(',').filter(Boolean),
};

/** Training pipeline, step 1: resolve the dataset version and build the SageMaker training job request. */
export const handler = middy(async (event: unknown) => prepareTraining(lakeFromEnv(), event, defaults)).use(
  injectLambdaContext(logger),
);
