import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { z } from 'zod';
import { ConflictError, ValidationError } from '../core/errors.ts';
import { FileSystemStore } from '../store/fs-store.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, readJsonIfExists, toJsonBody } from '../store/object-store.ts';
import { csvSyntax, JSON_LINES_SYNTAX, scanText, type TextLayout, TextLayoutSchema } from './chunks.ts';
import { detectFile, sha256File } from './detect.ts';
import { etlMemoryLimit, withDuckDB } from './duck.ts';
import { type CsvDialect, CsvDialectSchema, openSource, sniffCsv } from './source.ts';

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

/**
 * Everything learnt about a readable raw object in one inspection: its identity, its CSV dialect (so that no
 * later reader sniffs again, and every part of a split file is read alike) and, for uncompressed text, where
 * its records start (so that the plan can split it into byte ranges without reading it).
 */
export interface RawFacts {
  object: RawObject;
  csv?: CsvDialect;
  layout?: TextLayout;
  /**
   * On a folder lake, the file's identity (see `localFingerprint`) when its bytes were the ones hashed into
   * `object.sha256`: while the file still has it, a shard need not hash the file again to know its bytes.
   */
  fingerprint?: string;
}

/** `RawFacts` of a file that has no key yet (ingest inspects before it writes). */
export type InspectedFile = Omit<RawFacts, 'object' | 'fingerprint'> & { object: Omit<RawObject, 'key'> };

const IndexEntrySchema = z.union([
  z.strictObject({
    status: z.literal('ok'),
    object: RawObjectSchema,
    csv: CsvDialectSchema.optional(),
    layout: TextLayoutSchema.optional(),
    fingerprint: z.string().optional(),
  }),
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
 * The identity of an object's file on a folder lake, undefined on other stores: device, inode, size and the
 * modification and status-change times in nanoseconds. Raw objects are written once (create-only, through a
 * temp file and link(2)) and never rewritten by the lake, so while a raw file keeps this identity it holds
 * the bytes it held when it was recorded: writing to the file moves its mtime and ctime (which no user can
 * set back), replacing it makes a new file. Recorded only after the recorded bytes were proven to be these
 * (see `recordRawObject` and `describeRawObject`); anything that breaks it (a restored copy of the lake, a
 * file system without these times) only makes the ETL hash the file again.
 */
export async function localFingerprint(store: ObjectStore, key: string): Promise<string | undefined> {
  if (!(store instanceof FileSystemStore)) return undefined;
  const info = await stat(store.pathOf(key), { bigint: true });
  return `${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
}

/**
 * The keys under a prefix, sorted. The folder adapter's `list` computes the etag (a content hash) of every
 * object, a full read of each raw file on every plan; the plan needs only the keys, so on a folder they come
 * from the directory itself.
 */
export async function listKeys(store: ObjectStore, prefix: string): Promise<string[]> {
  if (!(store instanceof FileSystemStore)) return (await store.list(prefix)).map((info) => info.key);
  const root = store.pathOf(prefix.replace(/\/$/, ''));
  const keys: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let entries: import('node:fs').Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if ((error as { code?: unknown }).code === 'ENOENT') return;
      throw error;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      // Lock files of compare-and-swap writes are the adapter's, not objects.
      else if (entry.isFile() && !entry.name.endsWith('.kiln-lock'))
        keys.push(relative(store.root, path).split(sep).join('/'));
    }
  };
  await walk(root);
  return keys.sort();
}

/**
 * Inspects a local file the way the ETL will read it: content-based format detection, full gzip check, a
 * dialect sniff and duplicate-header check (CSV) and a footer read (Parquet), then one pass over the bytes
 * that hashes them and, for uncompressed text, records where records start. Throws ValidationError naming
 * `label` for anything the ETL would not read correctly.
 */
export async function inspectRawFile(path: string, label: string): Promise<InspectedFile> {
  const detected = await detectFile(path, label);
  const csv = await withDuckDB(
    async (duck) => {
      const dialect =
        detected.format === 'csv' ? await sniffCsv(duck, path, detected.compression, label) : undefined;
      await openSource(duck, path, detected, label, undefined, dialect);
      return dialect;
    },
    { memoryLimit: etlMemoryLimit() },
  );
  let sha256 = detected.sha256;
  let layout: TextLayout | undefined;
  if (detected.compression === 'none' && detected.format !== 'parquet') {
    const syntax = csv ? csvSyntax(csv) : JSON_LINES_SYNTAX;
    ({ sha256, layout } = await scanText(path, detected.bytes, syntax));
  }
  sha256 ??= await sha256File(path);
  const object = {
    format: detected.format,
    compression: detected.compression,
    bytes: detected.bytes,
    sha256,
  };
  return { object, ...(csv ? { csv } : {}), ...(layout ? { layout } : {}) };
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
): Promise<RawFacts | RawRejection> {
  const known = await readIndexEntry(store, key);
  if (known) return known.status === 'ok' ? factsOf(known) : { key: known.key, reason: known.reason };

  // On a folder, head() would hash the whole file for an etag that is not needed here.
  const size =
    store instanceof FileSystemStore
      ? await stat(store.pathOf(key)).then(
          (found) => (found.isFile() ? found.size : undefined),
          () => undefined,
        )
      : (await store.head(key))?.size;
  if (size === undefined) throw new ValidationError(`raw object ${key} does not exist`);
  let entry: IndexEntry;
  try {
    const path = await localPathOf(store, key, dir);
    const before = await localFingerprint(store, key);
    const facts = await inspectRawFile(path, key);
    // The hash is of these very bytes only if the file did not change while it was read.
    const fingerprint =
      before !== undefined && before === (await localFingerprint(store, key)) ? before : undefined;
    entry = {
      status: 'ok',
      ...facts,
      object: { key, ...facts.object },
      ...(fingerprint ? { fingerprint } : {}),
    };
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    entry = { status: 'rejected', key, bytes: size, reason: error.message };
  }
  await recordIndexEntry(store, lake.rawIndex(key), entry);
  return entry.status === 'ok' ? factsOf(entry) : { key: entry.key, reason: entry.reason };
}

/** The index entry of a raw object, when one was recorded (and is readable). */
export async function readIndexEntry(store: ObjectStore, key: string): Promise<IndexEntry | undefined> {
  const known = await readJsonIfExists<unknown>(store, lake.rawIndex(key));
  const parsed = known === undefined ? undefined : IndexEntrySchema.safeParse(known);
  return parsed?.success ? parsed.data : undefined;
}

/** What the index knows about a readable raw object (undefined for unknown or rejected ones). */
export async function readRawFacts(store: ObjectStore, key: string): Promise<RawFacts | undefined> {
  const entry = await readIndexEntry(store, key);
  return entry?.status === 'ok' ? factsOf(entry) : undefined;
}

function factsOf(entry: Extract<IndexEntry, { status: 'ok' }>): RawFacts {
  return {
    object: entry.object,
    ...(entry.csv ? { csv: entry.csv } : {}),
    ...(entry.layout ? { layout: entry.layout } : {}),
    ...(entry.fingerprint ? { fingerprint: entry.fingerprint } : {}),
  };
}

/**
 * Records what ingest already learnt about a raw object, so the ETL does not inspect it again. A
 * `fingerprint` must be one taken after the stored bytes were proven to hash to `object.sha256`.
 */
export async function recordRawObject(store: ObjectStore, facts: RawFacts): Promise<void> {
  await recordIndexEntry(store, lake.rawIndex(facts.object.key), { status: 'ok', ...facts });
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
export function isRejection(value: RawFacts | RawRejection): value is RawRejection {
  return 'reason' in value;
}
