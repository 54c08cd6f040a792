import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { NotFoundError, ValidationError } from '../core/errors.ts';
import type { SchemaContract } from '../core/schema.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { inferContract } from './contract.ts';
import { withDuckDB } from './duck.ts';
import {
  describeRawObject,
  isRejection,
  localPathOf,
  parseRawKey,
  type RawObject,
  type RawRejection,
} from './raw.ts';
import { readSchemaIfExists, storeInferredContract } from './schema-store.ts';
import { openSource } from './source.ts';

/**
 * Input of the Plan step: `{ dataset }` / `{ key }` (CLI, local runtime) or an S3 "Object Created" event as
 * EventBridge delivers it (`detail.object.key`), which starts the ETL when data lands in raw/.
 */
export const PlanInputSchema = z.union([
  z
    .object({ detail: z.object({ object: z.object({ key: z.string().min(1) }) }) })
    .transform((event) => ({ key: decodeKey(event.detail.object.key) })),
  z
    .object({ dataset: z.string().min(1).optional(), key: z.string().min(1).optional() })
    .refine((input) => input.dataset !== undefined || input.key !== undefined, 'give a dataset or a raw key'),
]);
export type PlanInput = z.output<typeof PlanInputSchema>;

/** S3 event notifications URL-encode keys (spaces as '+'); lake keys never contain '%' or '+' unencoded. */
function decodeKey(key: string): string {
  return key.includes('%') ? decodeURIComponent(key.replaceAll('+', ' ')) : key;
}

/** The ETL plan: one shard per readable raw object of the dataset, plus the objects refused and why. */
export interface EtlPlan {
  dataset: string;
  runId: string;
  shards: RawObject[];
  rejected: RawRejection[];
}

/**
 * Plans an ETL run over every raw landing of a dataset (a dataset version is built from all data so far).
 * The dataset comes from `dataset` or from a raw key (the S3 "Object Created" path). When the dataset has
 * no contract yet, it is inferred here from the earliest landing, so every shard enforces the same one.
 */
export async function planEtl(
  store: ObjectStore,
  input: { dataset?: string; key?: string },
  options: { now?: Date } = {},
): Promise<EtlPlan> {
  const fromKey = input.key ? parseRawKey(input.key).dataset : undefined;
  if (input.dataset && fromKey && input.dataset !== fromKey) {
    throw new ValidationError(`dataset ${input.dataset} does not match the raw key's dataset ${fromKey}`);
  }
  const dataset = input.dataset ?? fromKey;
  if (!dataset)
    throw new ValidationError('planEtl needs a dataset or a raw key raw/<dataset>/<ingestId>/<file>');
  assertName('dataset', dataset);
  const listed = await store.list(lake.rawPrefix(dataset));
  if (listed.length === 0)
    throw new NotFoundError(`dataset ${dataset} has no raw data under ${lake.rawPrefix(dataset)}`);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-plan-'));
  try {
    const shards: RawObject[] = [];
    const rejected: RawRejection[] = [];
    const seen = new Map<string, string>();
    for (const info of listed) {
      const described = await describeRawObject(store, info.key, dir);
      if (isRejection(described)) {
        rejected.push(described);
        continue;
      }
      // The same bytes landed twice are the same data: count them once, so re-ingesting changes nothing.
      const first = seen.get(described.sha256);
      if (first) {
        rejected.push({ key: described.key, reason: `duplicate: same content as ${first}` });
        continue;
      }
      seen.set(described.sha256, described.key);
      shards.push(described);
    }
    if (shards.length === 0) {
      throw new ValidationError(
        `dataset ${dataset} has no readable raw data: ${rejected.map((r) => `${r.key}: ${r.reason}`).join('; ')}`,
      );
    }
    for (const shard of shards) {
      if (await ensureContract(store, dataset, shard)) break;
    }
    return { dataset, runId: makeRunId(options.now ?? new Date()), shards, rejected };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Returns the dataset's contract, inferring it from `shard` and storing it create-only when there is none
 * (the loser of a race adopts the winner's). Undefined when the shard has no rows to infer from.
 */
export async function ensureContract(
  store: ObjectStore,
  dataset: string,
  shard: RawObject,
): Promise<SchemaContract | undefined> {
  const existing = await readSchemaIfExists(store, dataset);
  if (existing) return existing.contract;
  const inferred = await withDuckDB(async (duck) => {
    const path = await localPathOf(store, shard.key, duck.dir);
    const source = await openSource(duck, path, shard, shard.key);
    return inferContract(duck, source, dataset, shard.key);
  });
  return inferred ? storeInferredContract(store, inferred) : undefined;
}

/** Sortable, unique run id: UTC timestamp plus 6 random hex digits. */
export function makeRunId(now: Date): string {
  return `${now.toISOString().replace(/[-:]/g, '').replace('.', '')}-${randomBytes(3).toString('hex')}`;
}
