import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { parseInput } from '../../lib/etl/input.ts';
import { PlanInputSchema, planEtl } from '../../lib/etl/plan.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { logger } from '../lib/runtime.ts';

/**
 * ETL step 1: the dataset's shards (every raw landing so far, big text objects as byte ranges), the refused
 * objects, the run id and options; infers the contract on first data.
 */
export const handler = middy(async (event: unknown) =>
  planEtl(lakeFromEnv(), parseInput(PlanInputSchema, event, 'ETL plan input')),
).use(injectLambdaContext(logger));
