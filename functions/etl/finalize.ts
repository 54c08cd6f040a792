import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { EventTypes } from '../../lib/core/events.ts';
import { FinalizeInputSchema, finalizeEtl } from '../../lib/etl/finalize.ts';
import { parseInput } from '../../lib/etl/input.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { eventsFromEnv, logger } from '../lib/runtime.ts';

/**
 * ETL step 3: commit the staged shards as a curated dataset version, then announce it. Only a new version
 * is announced: re-running the ETL on unchanged data must not retrain anything.
 */
export const handler = middy(async (event: unknown) => {
  const result = await finalizeEtl(
    lakeFromEnv(),
    parseInput(FinalizeInputSchema, event, 'ETL finalize input'),
  );
  if (result.created) {
    await eventsFromEnv().publish([
      { source: 'kiln.etl', detailType: EventTypes.etlRunSucceeded, detail: { ...result } },
    ]);
  }
  logger.info('etl finalized', { ...result });
  return result;
}).use(injectLambdaContext(logger));
