import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { parseInput } from '../../lib/etl/input.ts';
import { processShard, ShardInputSchema } from '../../lib/etl/shard.ts';
import { lakeFromEnv } from '../../lib/store/from-env.ts';
import { logger } from '../lib/runtime.ts';

/** ETL step 2 (one Map item): validate one raw object, or one byte range of it, into staged Parquet and quarantine. */
export const handler = middy(async (event: unknown) =>
  processShard(lakeFromEnv(), parseInput(ShardInputSchema, event, 'ETL shard input')),
).use(injectLambdaContext(logger));
