import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { ConflictError, ValidationError } from '../core/errors.ts';
import { FileSystemStore } from '../store/fs-store.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, readJsonIfExists, toJsonBody } from '../store/object-store.ts';
import { inspectFile } from './detect.ts';
import { withDuckDB } from './duck.ts';
import { openSource } from './source.ts';

/** A raw object the ETL can read: where it is, what it is, and its content hash. */
export const RawObjectSchema = z.strictObject({
  key: z.string().min(1),
  format: z.enum(['csv', 'jsonl', 'parquet']),
  compression: z.enum(['gzip', 'none']),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type RawObject = z.infer<typeof RawObjectSchema>;

/** A raw object the ETL refuses, with the reason (empty, truncated gzip, duplicate headers, …). */
export interface RawRejection {
  key: string;
  reason: string;
}

const IndexEntrySchema = z.union([
  z.strictObject({ status: z.literal('ok'), object: RawObjectSchema }),
  z.strictObject({ status: z.literal('rejected'), key: z.string(), bytes: z.number(), reason: z.string() }),
]);
type IndexEntry = z.infer<typeof IndexEntrySchema>;

/** Splits `raw/<dataset>/<ingestId>/<file>` (the event path of a landing); throws ValidationError otherwise. */
export function parseRawKey(key: string): { dataset: string; ingestId: string; file: string } {
  const parts = key.split('/');
  if (parts.length < 4 || parts[0] !== 'raw' || parts.slice(3).some((part) => part.length === 0)) {
    throw new ValidationError(
      `not a raw landing key ${JSON.stringify(key)}: expected raw/<dataset>/<ingestId>/<file>`,
    );
  }
  const dataset = assertName('dataset', parts[1] ?? '');
  return { dataset, ingestId: parts[2] ?? '', file: parts.slice(3).join('/') };
}

/** A short, key-safe name for a shard derived from its raw key (ingest id + file + hash of the key). */
export function shardName(key: string): string {
  const { ingestId, file } = parseRawKey(key);
  const safe = `${ingestId}-${file}`.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 120);
  return `${safe}-${createHash('sha256').update(key).digest('hex').slice(0, 8)}`;
}

/**
 * Local path of an object for DuckDB: the object itself on a FileSystemStore, otherwise a download into
 * `dir` (streamed, never held in memory).
 */
export async function localPathOf(store: ObjectStore, key: string, dir: string): Promise<string> {
  if (store instanceof FileSystemStore) return store.pathOf(key);
  const path = join(dir, 'download', key.split('/').join('__'));
  await store.getToFile(key, path);
  return path;
}

/**
 * Inspects a local file the way the ETL will read it: content-based format detection, full gzip check,
 * and (through DuckDB) a dialect sniff, duplicate-header check and Parquet footer read.
 * Throws ValidationError naming `label` for anything the ETL would not read correctly.
 */
export async function inspectRawFile(path: string, label: string): Promise<Omit<RawObject, 'key'>> {
  const facts = await inspectFile(path, label);
  await withDuckDB(async (duck) => {
    await openSource(duck, path, facts, label);
  });
  return facts;
}

/**
 * What a raw object is, from the index when known (raw objects are immutable, so it never goes stale),
 * else by inspecting it once and recording the result create-only. Unreadable objects come back as
 * rejections, so one bad landing cannot block every later ETL run of its dataset.
 */
export async function describeRawObject(
  store: ObjectStore,
  key: string,
  dir: string,
): Promise<RawObject | RawRejection> {
  const indexKey = lake.rawIndex(key);
  const known = await readJsonIfExists<unknown>(store, indexKey);
  const parsed = known === undefined ? undefined : IndexEntrySchema.safeParse(known);
  if (parsed?.success) return parsed.data.status === 'ok' ? parsed.data.object : parsed.data;

  const info = await store.head(key);
  if (!info) throw new ValidationError(`raw object ${key} does not exist`);
  let entry: IndexEntry;
  try {
    const path = await localPathOf(store, key, dir);
    const facts = await inspectRawFile(path, key);
    entry = { status: 'ok', object: { key, ...facts } };
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    entry = { status: 'rejected', key, bytes: info.size, reason: error.message };
  }
  await recordIndexEntry(store, indexKey, entry);
  return entry.status === 'ok' ? entry.object : { key: entry.key, reason: entry.reason };
}

/** Records what ingest already learnt about a raw object, so the ETL does not inspect it again. */
export async function recordRawObject(store: ObjectStore, object: RawObject): Promise<void> {
  await recordIndexEntry(store, lake.rawIndex(object.key), { status: 'ok', object });
}

async function recordIndexEntry(store: ObjectStore, indexKey: string, entry: IndexEntry): Promise<void> {
  try {
    await store.put(indexKey, toJsonBody(entry), { ifNoneMatch: '*', contentType: 'application/json' });
  } catch (error) {
    // Another run indexed the same immutable object first: its answer is the same as ours.
    if (!(error instanceof ConflictError)) throw error;
  }
}

/** Type guard separating readable raw objects from rejections. */
export function isRejection(value: RawObject | RawRejection): value is RawRejection {
  return 'reason' in value;
}
