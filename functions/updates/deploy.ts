import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import middy from '@middy/core';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { handleDeployEvent, sageMakerEnv } from '../../lib/updates/deploy.ts';
import { eventsFromEnv, logger } from '../lib/runtime.ts';

const env = sageMakerEnv();
const sagemaker = new SageMakerClient({});

/**
 * The model-update Lambda: a challenger that passed the gate (AliasMoved challenger) goes to the SageMaker
 * endpoint as a blue/green canary with auto-rollback alarms; SageMaker's endpoint state changes settle it
 * (promote in the registry, or archive the challenger after a rollback). See docs/model-updates.md.
 */
export const handler = middy(async (event: unknown) => {
  const result = await handleDeployEvent(event, {
    store: lakeFromEnv(),
    events: eventsFromEnv(),
    sagemaker,
    env,
  });
  logger.info('model update', { ...result });
  return result;
}).use(injectLambdaContext(logger));
