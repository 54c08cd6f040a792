import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { NotFoundError, ValidationError } from '../core/errors.ts';
import type { SchemaContract } from '../core/schema.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { ByteRangeSchema, planRanges } from './chunks.ts';
import { inferContract } from './contract.ts';
import { etlMemoryLimit, withDuckDB } from './duck.ts';
import { type EtlOptions, EtlOptionsSchema, etlOptions, shardBytesOf } from './options.ts';
import {
  describeRawObject,
  isRejection,
  listKeys,
  localPathOf,
  parseRawKey,
  type RawFacts,
  RawObjectSchema,
  type RawRejection,
} from './raw.ts';
import { readSchemaIfExists, storeInferredContract } from './schema-store.ts';
import { openSource } from './source.ts';

const RunSettingsSchema = EtlOptionsSchema.partial().extend({
  /** Bytes of raw text per shard (a bigger uncompressed CSV / JSON Lines object is split into byte ranges). */
  shardBytes: z
    .number()
    .int()
    .min(64 * 1024)
    .optional(),
});

/**
 * Input of the Plan step: `{ dataset }` / `{ key }` (CLI, local runtime), optionally with run settings, or an
 * S3 "Object Created" event as EventBridge delivers it (`detail.object.key`), which starts the ETL when data
 * lands in raw/.
 */
export const PlanInputSchema = z.union([
  z
    .object({ detail: z.object({ object: z.object({ key: z.string().min(1) }) }) })
    .transform((event) => ({ key: decodeKey(event.detail.object.key) })),
  z
    .object({ dataset: z.string().min(1).optional(), key: z.string().min(1).optional() })
    .extend(RunSettingsSchema.shape)
    .refine((input) => input.dataset !== undefined || input.key !== undefined, 'give a dataset or a raw key'),
]);
/** What the plan needs: a dataset or a raw key, and optional run settings. */
export type PlanRequest = { dataset?: string; key?: string } & z.infer<typeof RunSettingsSchema>;

/** S3 event notifications URL-encode keys (spaces as '+'); lake keys never contain '%' or '+' unencoded. */
function decodeKey(key: string): string {
  return key.includes('%') ? decodeURIComponent(key.replaceAll('+', ' ')) : key;
}

/** One item of the Distributed Map: a raw object, whole or one byte range of it. */
export const ShardItemSchema = RawObjectSchema.extend({ range: ByteRangeSchema.optional() });
export type ShardItem = z.infer<typeof ShardItemSchema>;

/**
 * The ETL plan: the shards of every readable raw object of the dataset (one per object, or one per byte range
 * of a big uncompressed text object), the objects refused and why, and the run's options.
 */
export interface EtlPlan {
  dataset: string;
  runId: string;
  shards: ShardItem[];
  rejected: RawRejection[];
  options: EtlOptions;
}

/**
 * Plans an ETL run over every raw landing of a dataset (a dataset version is built from all data so far).
 * The dataset comes from `dataset` or from a raw key (the S3 "Object Created" path). When the dataset has
 * no contract yet, it is inferred here from the earliest landing, so every shard enforces the same one.
 */
export async function planEtl(
  store: ObjectStore,
  input: PlanRequest,
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
  const keys = await listKeys(store, lake.rawPrefix(dataset));
  if (keys.length === 0)
    throw new NotFoundError(`dataset ${dataset} has no raw data under ${lake.rawPrefix(dataset)}`);
  const shardBytes = shardBytesOf(input.shardBytes);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-plan-'));
  try {
    const objects: RawFacts[] = [];
    const rejected: RawRejection[] = [];
    const seen = new Map<string, string>();
    for (const key of keys) {
      const described = await describeRawObject(store, key, dir);
      if (isRejection(described)) {
        rejected.push(described);
        continue;
      }
      // The same bytes landed twice are the same data: count them once, so re-ingesting changes nothing.
      const first = seen.get(described.object.sha256);
      if (first) {
        rejected.push({ key, reason: `duplicate: same content as ${first}` });
        continue;
      }
      seen.set(described.object.sha256, key);
      objects.push(described);
    }
    if (objects.length === 0) {
      throw new ValidationError(
        `dataset ${dataset} has no readable raw data: ${rejected.map((r) => `${r.key}: ${r.reason}`).join('; ')}`,
      );
    }
    for (const facts of objects) {
      if (await ensureContract(store, dataset, facts)) break;
    }
    const shards = objects.flatMap((facts): ShardItem[] => {
      const ranges = planRanges(facts.layout, facts.object.bytes, shardBytes);
      return ranges.length === 0 ? [facts.object] : ranges.map((range) => ({ ...facts.object, range }));
    });
    return {
      dataset,
      runId: makeRunId(options.now ?? new Date()),
      shards,
      rejected,
      options: etlOptions(input),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Returns the dataset's contract, inferring it from `facts` and storing it create-only when there is none
 * (the loser of a race adopts the winner's). Undefined when the object has no rows to infer from.
 */
export async function ensureContract(
  store: ObjectStore,
  dataset: string,
  facts: RawFacts,
): Promise<SchemaContract | undefined> {
  const existing = await readSchemaIfExists(store, dataset);
  if (existing) return existing.contract;
  const { object } = facts;
  const inferred = await withDuckDB(
    async (duck) => {
      const path = await localPathOf(store, object.key, duck.dir);
      const source = await openSource(duck, path, object, object.key, undefined, facts.csv);
      return inferContract(duck, source, dataset, object.key);
    },
    { memoryLimit: etlMemoryLimit() },
  );
  return inferred ? storeInferredContract(store, inferred) : undefined;
}

/** Sortable, unique run id: UTC timestamp plus 6 random hex digits. */
export function makeRunId(now: Date): string {
  return `${now.toISOString().replace(/[-:]/g, '').replace('.', '')}-${randomBytes(3).toString('hex')}`;
}
