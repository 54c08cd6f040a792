import { z } from 'zod';
import { DEFAULT_SPLIT } from './split.ts';

/** Bytes of raw text one shard processes, unless the run or `KILN_ETL_SHARD_BYTES` says otherwise. */
export const DEFAULT_SHARD_BYTES = 256 * 1024 * 1024;

/** Per-run settings, given in the ETL input and carried by the plan to every shard and to Finalize. */
export const EtlOptionsSchema = z.strictObject({
  /** Seed of the train/test split (row-content hash). */
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1),
  /** Share of rows that go to the test split. */
  testFraction: z.number().gt(0).lt(1),
  /** Overrides the contract's quarantine threshold for this run. */
  quarantineThreshold: z.number().min(0).max(1).optional(),
});
export type EtlOptions = z.infer<typeof EtlOptionsSchema>;

/** The options of a run, defaults filled in. */
export function etlOptions(input: Partial<EtlOptions> = {}): EtlOptions {
  return {
    seed: input.seed ?? DEFAULT_SPLIT.seed,
    testFraction: input.testFraction ?? DEFAULT_SPLIT.testFraction,
    ...(input.quarantineThreshold !== undefined ? { quarantineThreshold: input.quarantineThreshold } : {}),
  };
}

/** The shard size of a run: the input's, else `KILN_ETL_SHARD_BYTES`, else DEFAULT_SHARD_BYTES. */
export function shardBytesOf(requested?: number): number {
  if (requested !== undefined) return requested;
  const fromEnv = Number(process.env.KILN_ETL_SHARD_BYTES);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : DEFAULT_SHARD_BYTES;
}
