import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { handleTriggerEvent, windowMsOf } from '../../lib/updates/retraining.ts';
import { AwsStepFunctions } from '../../lib/updates/sfn-aws.ts';
import { logger, requireEnv } from '../lib/runtime.ts';

const stateMachineArn = requireEnv('KILN_RETRAINING_STATE_MACHINE');
const windowMs = windowMsOf(process.env.KILN_RETRAINING_WINDOW_MS);
const sfn = new AwsStepFunctions();

/**
 * The debouncing retraining trigger: EtlRunSucceeded, DriftDetected, QualityDropped and the schedule arrive
 * here; each model concerned gets its event recorded under runs/triggers/ and its windowed retraining run
 * started under a deterministic name, so Step Functions itself turns a burst into one execution.
 */
export const handler = middy(async (event: unknown) => {
  const result = await handleTriggerEvent(event, { store: lakeFromEnv(), sfn, stateMachineArn, windowMs });
  logger.info('retraining trigger', {
    cause: result.cause?.cause ?? null,
    eventId: result.cause?.eventId ?? null,
    ignored: result.ignored,
    runs: result.runs.map((run) => ({ model: run.model, execution: run.executionName, start: run.start })),
    skipped: result.skipped,
  });
  return result;
}).use(injectLambdaContext(logger));
