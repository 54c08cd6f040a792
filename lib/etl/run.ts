import type { ObjectStore } from '../store/object-store.ts';
import { recordPipelineFailure } from './failure.ts';
import { type FinalizeResult, finalizeEtl } from './finalize.ts';
import { type EtlPlan, planEtl } from './plan.ts';
import { processShard, type ShardResult } from './shard.ts';

/** Everything one in-process ETL run produced. */
export interface EtlRunResult extends FinalizeResult {
  plan: EtlPlan;
  shardResults: ShardResult[];
}

/**
 * Runs Plan → ProcessShard (for each shard, `concurrency` at a time) → Finalize in this process, recording a
 * failure report like the state machine's RecordFailure state does. Tests and benchmarks use it; the
 * platform runs the synthesized state machine, which calls the same functions.
 */
export async function runEtl(
  store: ObjectStore,
  input: { dataset?: string; key?: string },
  options: { concurrency?: number; quarantineThreshold?: number; seed?: number; testFraction?: number } = {},
): Promise<EtlRunResult> {
  let state: Record<string, unknown> = { ...input };
  try {
    const plan = await planEtl(store, input);
    state = { dataset: plan.dataset, runId: plan.runId };
    const shardResults: ShardResult[] = new Array(plan.shards.length);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < plan.shards.length; i = next++) {
        const shard = plan.shards[i];
        if (shard)
          shardResults[i] = await processShard(store, { dataset: plan.dataset, runId: plan.runId, shard });
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 2) }, worker));
    const finalized = await finalizeEtl(store, {
      dataset: plan.dataset,
      runId: plan.runId,
      shardResults,
      rejected: plan.rejected,
      ...(options.quarantineThreshold !== undefined
        ? { quarantineThreshold: options.quarantineThreshold }
        : {}),
      ...(options.seed !== undefined ? { seed: options.seed } : {}),
      ...(options.testFraction !== undefined ? { testFraction: options.testFraction } : {}),
    });
    return { ...finalized, plan, shardResults };
  } catch (error) {
    const err = error instanceof Error ? error : new Error(String(error));
    await recordPipelineFailure(store, {
      pipeline: 'etl',
      input: state,
      error: { Error: err.name, Cause: JSON.stringify({ errorType: err.name, errorMessage: err.message }) },
    }).catch(() => undefined);
    throw error;
  }
}
