import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { ConflictError, IntegrityError, PolicyError, ValidationError } from '../core/errors.ts';
import { DEFAULT_QUARANTINE_THRESHOLD, type SchemaContract } from '../core/schema.ts';
import { FileSystemStore, sha256OfEtag } from '../store/fs-store.ts';
import { assertName, lake } from '../store/layout.ts';
import { type ObjectStore, readJsonIfExists, toJsonBody } from '../store/object-store.ts';
import { sha256File } from './detect.ts';
import { type Duck, etlMemoryLimit, ident, lit, numberOf, withDuckDB } from './duck.ts';
import type { DatasetManifest } from './manifest.ts';
import { EtlOptionsSchema, etlOptions } from './options.ts';
import { profileColumns } from './profile.ts';
import { localPathOf } from './raw.ts';
import { readSchemaIfExists, schemaHash } from './schema-store.ts';
import { type ShardResult, ShardResultSchema } from './shard.ts';
import { SPLIT_HASH_ID, type SplitSpec, splitExpr } from './split.ts';

/** Bumped whenever the curated output for the same input would change; part of every dataset version. */
export const ETL_FORMAT_VERSION = 1;

/** Input of `finalizeEtl` (the state machine passes the plan's fields and the Map's results). */
export const FinalizeInputSchema = z.strictObject({
  dataset: z.string(),
  runId: z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/, 'runId: 1-100 characters of [A-Za-z0-9_.-]'),
  shardResults: z.array(ShardResultSchema),
  /** Raw objects the plan refused (reported, not curated). */
  rejected: z.array(z.object({ key: z.string(), reason: z.string() })).optional(),
  /** The run's options (split, quarantine threshold override), as the plan passed them to every shard. */
  options: EtlOptionsSchema.optional(),
});
export type FinalizeInput = z.infer<typeof FinalizeInputSchema>;

/** What `finalizeEtl` did: the dataset version (created now or already there) and the counts. */
export interface FinalizeResult {
  dataset: string;
  version: string;
  created: boolean;
  read: number;
  accepted: number;
  quarantined: number;
  trainRows: number;
  testRows: number;
  manifestKey: string;
  reportKey: string;
}

/**
 * Turns a run's staged shards into a curated dataset version, or fails loudly (PolicyError) when the
 * quarantined share exceeds the threshold. The version is a content hash of the inputs, so re-running on
 * the same data writes nothing new. Data files go first and the manifest last, create-only: a version
 * without a manifest does not exist for readers.
 */
export async function finalizeEtl(store: ObjectStore, input: FinalizeInput): Promise<FinalizeResult> {
  const { dataset, runId } = input;
  assertName('dataset', dataset);
  const shards = input.shardResults;
  const options = etlOptions(input.options);
  for (const shard of shards) {
    if (shard.read !== shard.accepted + shard.quarantined) {
      throw new IntegrityError(
        `shard ${shard.key} read ${shard.read} rows but accounts for ${shard.accepted} accepted + ${shard.quarantined} quarantined`,
      );
    }
  }
  const objects = groupByObject(shards);
  const read = sum(shards.map((s) => s.read));
  const accepted = sum(shards.map((s) => s.accepted));
  const quarantined = sum(shards.map((s) => s.quarantined));
  const reportKey = lake.runReport('etl', runId);
  const contract = (await readSchemaIfExists(store, dataset))?.contract;
  if (!contract) {
    throw new ValidationError(
      `dataset ${dataset}: no schema contract could be inferred, its landings hold no readable rows (read ${read})`,
    );
  }
  const threshold =
    options.quarantineThreshold ?? contract.quarantineThreshold ?? DEFAULT_QUARANTINE_THRESHOLD;
  const share = read === 0 ? 0 : quarantined / read;
  const report = {
    kind: 'kiln.etl-run',
    runId,
    dataset,
    read,
    accepted,
    quarantined,
    quarantineShare: share,
    quarantineThreshold: threshold,
    reasons: mergeReasons(shards),
    schemaDrift: objects
      .map((o) => ({ key: o.key, drift: [...new Set(o.parts.flatMap((s) => s.schemaDrift))] }))
      .filter((o) => o.drift.length > 0),
    shards,
    rejected: input.rejected ?? [],
  };
  const fail = async (error: Error): Promise<never> => {
    await store.put(
      reportKey,
      toJsonBody({ ...report, status: 'failed', error: error.message, finishedAt: now() }),
    );
    throw error;
  };
  if (share > threshold) {
    await fail(
      new PolicyError(
        `dataset ${dataset}: ${quarantined} of ${read} rows (${percent(share)}) were quarantined, above the threshold of ${percent(threshold)}; see ${reportKey}`,
      ),
    );
  }
  if (accepted === 0)
    await fail(new ValidationError(`dataset ${dataset}: no accepted rows to curate (read ${read})`));

  const split = { seed: options.seed, testFraction: options.testFraction };
  const hash = schemaHash(contract);
  // One hash per object, however many byte ranges it was processed in: the shard size is not content.
  const version = datasetVersion(
    objects.map((o) => o.sha256),
    hash,
    split,
  );
  const manifestKey = lake.curatedFile(dataset, version, 'manifest.json');
  const existing = await readJsonIfExists<DatasetManifest>(store, manifestKey);
  let manifest: DatasetManifest;
  let created = false;
  if (existing) {
    manifest = existing;
  } else {
    const built = await buildVersion(store, {
      dataset,
      runId,
      version,
      contract,
      schemaHash: hash,
      shards,
      objects,
      split,
    });
    try {
      await store.put(manifestKey, toJsonBody(built), { ifNoneMatch: '*', contentType: 'application/json' });
      manifest = built;
      created = true;
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      manifest = (await readJsonIfExists<DatasetManifest>(store, manifestKey)) ?? built;
    }
  }
  // The version is committed: staged shards have served their purpose (quarantine stays, it is evidence).
  for (const shard of shards) {
    for (const key of [shard.stagedKey, shard.stagedTestKey]) if (key) await store.delete(key);
  }
  const head = await readJsonIfExists<{ version?: string }>(store, lake.datasetHead(dataset));
  if (head?.version !== version) {
    await store.put(lake.datasetHead(dataset), toJsonBody({ version, updatedAt: now(), runId }), {
      contentType: 'application/json',
    });
  }
  const result: FinalizeResult = {
    dataset,
    version,
    created,
    read,
    accepted,
    quarantined,
    trainRows: manifest.split.trainRows,
    testRows: manifest.split.testRows,
    manifestKey,
    reportKey,
  };
  await store.put(reportKey, toJsonBody({ ...report, status: 'succeeded', ...result, finishedAt: now() }), {
    contentType: 'application/json',
  });
  return result;
}

/**
 * The dataset version: first 16 hex of sha256 over the sorted source hashes, the schema hash, the ETL
 * format version, the split and the split's hash function.
 */
export function datasetVersion(sourceSha256s: string[], schemaHashHex: string, split: SplitSpec): string {
  const material = JSON.stringify({
    etl: ETL_FORMAT_VERSION,
    schema: schemaHashHex,
    sources: [...sourceSha256s].sort(),
    split: { seed: split.seed, testFraction: split.testFraction, hash: SPLIT_HASH_ID },
  });
  return createHash('sha256').update(material).digest('hex').slice(0, 16);
}

/** The shards of one raw object: the whole object, or every byte range of it in order. */
interface ObjectShards {
  key: string;
  sha256: string;
  format: ShardResult['format'];
  parts: ShardResult[];
}

/**
 * Groups shard results by raw object and proves that each object was processed completely: once whole, or
 * as every one of its planned byte ranges, contiguous and each exactly once. A missing range would lose rows
 * without any count noticing, so it fails the run (IntegrityError).
 */
function groupByObject(shards: ShardResult[]): ObjectShards[] {
  const byKey = new Map<string, ObjectShards>();
  for (const shard of shards) {
    const found = byKey.get(shard.key);
    if (found) {
      if (found.sha256 !== shard.sha256)
        throw new IntegrityError(`shards of ${shard.key} disagree on its sha256`);
      found.parts.push(shard);
    } else {
      byKey.set(shard.key, { key: shard.key, sha256: shard.sha256, format: shard.format, parts: [shard] });
    }
  }
  for (const object of byKey.values()) {
    const { parts, key } = object;
    if (parts.length === 1 && !parts[0]?.range) continue;
    parts.sort((a, b) => (a.range?.part ?? -1) - (b.range?.part ?? -1));
    const expected = parts[0]?.range?.parts;
    parts.forEach((part, i) => {
      const previous = parts[i - 1]?.range;
      if (
        !part.range ||
        part.range.part !== i ||
        part.range.parts !== expected ||
        (previous && previous.end !== part.range.start)
      ) {
        throw new IntegrityError(
          `raw object ${key} was not processed exactly once: got ${parts.length} shard result(s) for ${expected ?? 1} planned range(s)`,
        );
      }
    });
    if (parts.length !== expected) {
      throw new IntegrityError(
        `raw object ${key} was not processed exactly once: got ${parts.length} shard result(s) for ${expected} planned range(s)`,
      );
    }
  }
  return [...byKey.values()];
}

async function buildVersion(
  store: ObjectStore,
  args: {
    dataset: string;
    runId: string;
    version: string;
    contract: SchemaContract;
    schemaHash: string;
    shards: ShardResult[];
    objects: ObjectShards[];
    split: SplitSpec;
  },
): Promise<DatasetManifest> {
  const { dataset, version, contract, shards, split } = args;
  return withDuckDB(
    async (duck: Duck) => {
      const columns = contract.columns.map((c) => ident(c.name)).join(', ');
      const withRows = shards.filter((s) => s.accepted > 0 && s.stagedKey && s.stagedTestKey);
      const sameSplit = withRows.every(
        (s) => s.split.seed === split.seed && s.split.testFraction === split.testFraction,
      );
      const staged: Record<'train' | 'test', string[]> = { train: [], test: [] };
      for (const shard of withRows) {
        if (shard.stagedKey) staged.train.push(await localPathOf(store, shard.stagedKey, duck.dir));
        if (shard.stagedTestKey) staged.test.push(await localPathOf(store, shard.stagedTestKey, duck.dir));
      }
      const files = {} as DatasetManifest['files'];
      const locals: string[] = [];
      for (const part of ['train', 'test'] as const) {
        let local: string;
        const only = staged[part][0];
        if (sameSplit && staged[part].length === 1 && only) {
          // One shard: its staged file already is this split, byte for byte.
          local = only;
        } else {
          local = join(duck.dir, `${part}.parquet`);
          const all = [...staged.train, ...staged.test].map(lit).join(', ');
          const from = sameSplit
            ? `SELECT ${columns} FROM read_parquet([${staged[part].map(lit).join(', ')}], union_by_name=true)`
            : `SELECT ${columns} FROM read_parquet([${all}], union_by_name=true) WHERE ${splitExpr(contract, split)} = ${lit(part)}`;
          await duck.run(`COPY (${from}) TO ${lit(local)} (FORMAT parquet)`);
        }
        const rows = numberOf(
          await duck.all(`SELECT num_rows AS n FROM parquet_file_metadata(${lit(local)})`),
          'n',
        );
        const key = lake.curatedFile(dataset, version, `${part}.parquet`);
        const info = await store.putFile(key, local);
        // A folder lake hashed the bytes with SHA-256 as it stored them (its etag); S3's etag is no SHA-256.
        const sha256 =
          (store instanceof FileSystemStore ? sha256OfEtag(info.etag) : undefined) ??
          (await sha256File(local));
        files[part] = { key, sha256, bytes: info.size, rows };
        locals.push(local);
      }
      const profile = await profileColumns(duck, locals, contract);
      const read = sum(shards.map((s) => s.read));
      const accepted = sum(shards.map((s) => s.accepted));
      return {
        kind: 'kiln.dataset',
        etlFormatVersion: ETL_FORMAT_VERSION,
        dataset,
        version,
        createdAt: now(),
        runId: args.runId,
        schema: contract,
        schemaHash: args.schemaHash,
        rows: {
          read,
          accepted,
          quarantined: read - accepted,
          train: files.train.rows,
          test: files.test.rows,
        },
        sources: args.objects.map((o) => ({
          key: o.key,
          sha256: o.sha256,
          format: o.format,
          read: sum(o.parts.map((s) => s.read)),
          accepted: sum(o.parts.map((s) => s.accepted)),
          quarantined: sum(o.parts.map((s) => s.quarantined)),
          ...(o.parts.length > 1 ? { shards: o.parts.length } : {}),
        })),
        split: { method: 'row-hash', ...split, trainRows: files.train.rows, testRows: files.test.rows },
        files,
        profile,
        quarantine: shards.flatMap((s) =>
          s.quarantineKey ? [{ key: s.quarantineKey, rows: s.quarantined }] : [],
        ),
      };
    },
    { memoryLimit: etlMemoryLimit() },
  );
}

function mergeReasons(shards: ShardResult[]): Record<string, number> {
  const merged: Record<string, number> = {};
  for (const shard of shards) {
    for (const [reason, count] of Object.entries(shard.reasons))
      merged[reason] = (merged[reason] ?? 0) + count;
  }
  return merged;
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function percent(share: number): string {
  return `${(share * 100).toFixed(2)} %`;
}

function now(): string {
  return new Date().toISOString();
}
