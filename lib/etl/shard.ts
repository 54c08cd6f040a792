import { join } from 'node:path';
import { z } from 'zod';
import { IntegrityError, ValidationError } from '../core/errors.ts';
import type { SchemaContract } from '../core/schema.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { ByteRangeSchema, materializeRange } from './chunks.ts';
import { inferContract } from './contract.ts';
import { sha256File } from './detect.ts';
import { type Duck, etlMemoryLimit, ident, lit, numberOf, withDuckDB } from './duck.ts';
import { EtlOptionsSchema, etlOptions } from './options.ts';
import { ShardItemSchema } from './plan.ts';
import { localFingerprint, localPathOf, readRawFacts, shardName } from './raw.ts';
import { readSchemaIfExists, storeInferredContract } from './schema-store.ts';
import { openSource, type Source } from './source.ts';
import { type SplitSpec, testCondition } from './split.ts';
import { duckTypeOf } from './typing.ts';
import { validationQuery } from './validate.ts';

/** Input of `processShard` (one item of the state machine's Map, with the plan's dataset, run id and options). */
export const ShardInputSchema = z.strictObject({
  dataset: z.string(),
  runId: z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/, 'runId: 1-100 characters of [A-Za-z0-9_.-]'),
  shard: ShardItemSchema,
  /** The run's options (split seed and share); must match Finalize's. Defaults when absent. */
  options: EtlOptionsSchema.optional(),
});
export type ShardInput = z.infer<typeof ShardInputSchema>;

/** What one shard produced. Invariant: `read === accepted + quarantined`. */
export const ShardResultSchema = z.strictObject({
  key: z.string(),
  sha256: z.string(),
  format: z.enum(['csv', 'jsonl', 'parquet']),
  /** The byte range of the object this shard processed; absent when it processed the whole object. */
  range: ByteRangeSchema.optional(),
  read: z.number().int().nonnegative(),
  accepted: z.number().int().nonnegative(),
  quarantined: z.number().int().nonnegative(),
  /** Parquet of the accepted rows of the train split (typed contract columns); absent without a contract. */
  stagedKey: z.string().optional(),
  /** Parquet of the accepted rows of the test split. */
  stagedTestKey: z.string().optional(),
  quarantineKey: z.string().optional(),
  /** Quarantined rows per first reason, e.g. `{ "type:price": 3, "csv:too-many-columns": 1 }`. */
  reasons: z.record(z.string(), z.number()),
  schemaDrift: z.array(z.string()),
  /** The split the shard applied to its accepted rows. */
  split: z.strictObject({ seed: z.number(), testFraction: z.number() }),
});
export type ShardResult = z.infer<typeof ShardResultSchema>;

/** A column is reported as having changed type when at least this share of the shard's rows fail its type. */
const TYPE_DRIFT_SHARE = 0.5;

/**
 * Shards run one at a time per process. In Lambda a process serves one invocation anyway; the local runtime
 * runs the Distributed Map's children in one process, where each DuckDB already uses every core, so running
 * them side by side would only multiply memory (`KILN_ETL_SHARDS_PER_PROCESS` raises the limit).
 */
const slots = {
  free: Math.max(1, Number(process.env.KILN_ETL_SHARDS_PER_PROCESS) || 1),
  waiting: [] as (() => void)[],
};

async function inSlot<T>(work: () => Promise<T>): Promise<T> {
  if (slots.free === 0) await new Promise<void>((resolve) => slots.waiting.push(resolve));
  else slots.free -= 1;
  try {
    return await work();
  } finally {
    const next = slots.waiting.shift();
    if (next) next();
    else slots.free += 1;
  }
}

/**
 * Validates one raw object (or one byte range of it) against the dataset's contract (inferring and storing it
 * first if the dataset has none), writes accepted rows to staging (already split into train and test) and
 * refused rows, each with its reasons, to quarantine — all Parquet, streamed by DuckDB (the file is never
 * loaded into JS).
 */
export async function processShard(store: ObjectStore, input: ShardInput): Promise<ShardResult> {
  assertName('dataset', input.dataset);
  return inSlot(() => withDuckDB((duck) => shardIn(duck, store, input), { memoryLimit: etlMemoryLimit() }));
}

async function shardIn(duck: Duck, store: ObjectStore, input: ShardInput): Promise<ShardResult> {
  const { dataset, runId, shard } = input;
  const facts = await readRawFacts(store, shard.key);
  let path: string;
  let lineOffset = 0;
  let hashing: Promise<string> | undefined;
  let unchangedSince: string | undefined;
  if (shard.range) {
    if (!facts?.layout || facts.object.sha256 !== shard.sha256) {
      throw new ValidationError(
        `raw object ${shard.key} has no recorded record layout for the planned range: re-run the ETL`,
      );
    }
    path = join(duck.dir, `range${shard.format === 'csv' ? '.csv' : '.jsonl'}`);
    // The range's pieces are hashed against the layout on the way in.
    ({ lineOffset } = await materializeRange(store, shard.key, shard.bytes, facts.layout, shard.range, path));
  } else {
    path = await localPathOf(store, shard.key, duck.dir);
    // The version is a hash of the planned bytes, so the bytes read must be those. On a folder lake, a raw
    // file that still has the identity recorded when its bytes were proven to be the planned ones holds them
    // (checked again after DuckDB read it). Otherwise the file is hashed: that overlaps DuckDB's work (DuckDB
    // runs on its own threads) and is checked before anything is uploaded.
    const recorded = facts?.object.sha256 === shard.sha256 ? facts.fingerprint : undefined;
    if (recorded !== undefined && recorded === (await localFingerprint(store, shard.key))) {
      unchangedSince = recorded;
    } else {
      hashing = sha256File(path);
      hashing.catch(() => undefined);
    }
  }
  const dialect = facts?.object.sha256 === shard.sha256 ? facts.csv : undefined;
  let contract = (await readSchemaIfExists(store, dataset))?.contract;
  let source = await openSource(duck, path, shard, shard.key, contract, dialect);
  if (!contract) {
    const inferred = await inferContract(duck, source, dataset, shard.key);
    if (inferred) {
      contract = await storeInferredContract(store, inferred);
      source = await openSource(duck, path, shard, shard.key, contract, dialect);
    }
  }
  const name = shard.range ? `${shardName(shard.key)}.p${shard.range.part}` : shardName(shard.key);
  const options = etlOptions(input.options);
  const split = { seed: options.seed, testFraction: options.testFraction };
  const outputs = await validateToParquet(duck, source, contract, shard.key, split, lineOffset);
  if (hashing) {
    const actual = await hashing;
    if (actual !== shard.sha256) {
      throw new IntegrityError(
        `raw object ${shard.key} has sha256 ${actual}, the plan recorded ${shard.sha256}`,
      );
    }
  } else if (unchangedSince !== undefined && unchangedSince !== (await localFingerprint(store, shard.key))) {
    throw new IntegrityError(`raw object ${shard.key} changed while it was read: re-run the ETL`);
  }
  const result: ShardResult = {
    key: shard.key,
    sha256: shard.sha256,
    format: shard.format,
    ...(shard.range ? { range: shard.range } : {}),
    read: outputs.read,
    accepted: outputs.accepted,
    quarantined: outputs.quarantined,
    reasons: outputs.reasons,
    schemaDrift: outputs.drift,
    split,
  };
  if (outputs.trainPath && outputs.testPath) {
    result.stagedKey = lake.stagingFile(dataset, runId, `${name}.train`);
    result.stagedTestKey = lake.stagingFile(dataset, runId, `${name}.test`);
    await store.putFile(result.stagedKey, outputs.trainPath);
    await store.putFile(result.stagedTestKey, outputs.testPath);
  }
  if (outputs.quarantinePath) {
    result.quarantineKey = lake.quarantineFile(dataset, runId, name);
    await store.putFile(result.quarantineKey, outputs.quarantinePath);
  }
  return result;
}

interface ValidatedOutputs {
  read: number;
  accepted: number;
  quarantined: number;
  reasons: Record<string, number>;
  drift: string[];
  trainPath?: string;
  testPath?: string;
  quarantinePath?: string;
}

interface Partition {
  files: string[];
  rows: number;
}

/** The validating COPY's partitions, by the number it writes them under. */
const PARTITIONS = ['train', 'test', 'refused'] as const;

/**
 * One streaming pass: DuckDB reads the source, types and checks every row and writes accepted rows straight
 * into their train/test partition (the split depends on row content only, so a shard can decide it), and
 * refused rows into a third partition that is only counted (COPY's own per-file statistics give the counts).
 * When there are refused rows, a second scan collects their reasons and raw text; CSV lines the reader could
 * not split join them from the rejects table, their line numbers shifted by `lineOffset` (a byte-range part
 * reports lines of the whole object).
 */
async function validateToParquet(
  duck: Duck,
  source: Source,
  contract: SchemaContract | undefined,
  rawKey: string,
  split: SplitSpec,
  lineOffset: number,
): Promise<ValidatedOutputs> {
  const { rowsSql, quarantineSql, drift } = validationQuery(source, contract);
  const outDir = join(duck.dir, 'validated');
  const parts: Record<'train' | 'test' | 'refused', Partition> = {
    train: { files: [], rows: 0 },
    test: { files: [], rows: 0 },
    refused: { files: [], rows: 0 },
  };
  let parsedRows: number;
  if (contract) {
    // A small-integer partition key partitions measurably cheaper than a string one (5 % of the COPY).
    const written = await duck.all(
      `COPY (SELECT * EXCLUDE (__ok),
           (CASE WHEN NOT __ok THEN ${PARTITIONS.indexOf('refused')} WHEN ${testCondition(contract, split)} THEN ${PARTITIONS.indexOf('test')} ELSE ${PARTITIONS.indexOf('train')} END)::UTINYINT AS __part
         FROM (${rowsSql})) TO ${lit(outDir)} (FORMAT parquet, PARTITION_BY (__part), OVERWRITE true, RETURN_STATS true)`,
    );
    parsedRows = 0;
    for (const file of written) {
      const rows = Number(file.count ?? 0);
      parsedRows += rows;
      const name = PARTITIONS[Number(partitionOf(file.partition_keys))];
      const target = name ? parts[name] : undefined;
      if (!target) throw new IntegrityError(`shard ${rawKey}: COPY wrote an unknown partition ${name}`);
      target.files.push(String(file.filename));
      target.rows += rows;
    }
  } else {
    // Nothing to enforce (no rows to infer a contract from): every row the reader produced is refused.
    parsedRows = numberOf(await duck.all(`SELECT count(*) AS n FROM ${source.relation}`), 'n');
    parts.refused.rows = parsedRows;
  }

  const quarantineParts: string[] = [];
  if (parts.refused.rows > 0) {
    const bad = join(duck.dir, 'refused.parquet');
    const again = numberOf(
      await duck.all(`COPY (${quarantineSql}) TO ${lit(bad)} (FORMAT parquet)`),
      'Count',
    );
    if (again !== parts.refused.rows) {
      throw new IntegrityError(
        `shard ${rawKey}: ${parts.refused.rows} rows were refused but the re-scan found ${again}`,
      );
    }
    quarantineParts.push(`SELECT ${lit(rawKey)} AS source, NULL::BIGINT AS line, reasons[1] AS reason, reasons,
      array_to_string(details, '; ') AS detail, raw FROM read_parquet(${lit(bad)})`);
  }
  let rejected = 0;
  if (source.rejectsTable) {
    // A line can carry several reader errors; it is one row, counted once, with its first error.
    const rejects = `(SELECT line, arg_min(error_type, column_idx) AS error_type, arg_min(error_message, column_idx) AS error_message,
        arg_min(csv_line, column_idx) AS csv_line FROM ${source.rejectsTable} GROUP BY line)`;
    rejected = numberOf(await duck.all(`SELECT count(*) AS n FROM ${rejects}`), 'n');
    if (rejected > 0) {
      const code = `'csv:' || replace(lower(error_type), ' ', '-')`;
      quarantineParts.push(`SELECT ${lit(rawKey)} AS source, CAST(line AS BIGINT) + ${lineOffset} AS line, ${code} AS reason,
        [${code}] AS reasons, error_message AS detail, csv_line AS raw FROM ${rejects}`);
    }
  }
  const read = parsedRows + rejected;
  const reasons: Record<string, number> = {};
  let quarantinePath: string | undefined;
  if (quarantineParts.length > 0) {
    quarantinePath = join(duck.dir, 'quarantine.parquet');
    await duck.run(
      `COPY (${quarantineParts.join(' UNION ALL ')} ORDER BY line NULLS FIRST) TO ${lit(quarantinePath)} (FORMAT parquet)`,
    );
    const counted = await duck.all(
      `SELECT reason, count(*) AS n FROM read_parquet(${lit(quarantinePath)}) GROUP BY reason ORDER BY reason`,
    );
    for (const row of counted) reasons[String(row.reason)] = Number(row.n);
    const typeFailures = await duck.all(
      `SELECT r, count(*) AS n FROM (SELECT unnest(reasons) AS r FROM read_parquet(${lit(quarantinePath)}))
       WHERE starts_with(r, 'type:') GROUP BY r ORDER BY r`,
    );
    for (const row of typeFailures) {
      const failures = Number(row.n);
      if (failures >= TYPE_DRIFT_SHARE * read) {
        const column = String(row.r).slice('type:'.length);
        const expected = contract?.columns.find((c) => c.name === column)?.type ?? 'its type';
        drift.push(
          `type of column ${JSON.stringify(column)} looks changed: ${failures} of ${read} values are not ${expected}`,
        );
      }
    }
  }

  const outputs: ValidatedOutputs = {
    read,
    accepted: parts.train.rows + parts.test.rows,
    quarantined: parts.refused.rows + rejected,
    reasons,
    drift,
  };
  if (quarantinePath) outputs.quarantinePath = quarantinePath;
  if (contract) {
    const single = async (name: 'train' | 'test', found: Partition) => {
      const only = found.files.length === 1 ? found.files[0] : undefined;
      if (only) return only;
      // Several partition files (or none): one file per split, with the contract's typed columns.
      const path = join(duck.dir, `${name}.parquet`);
      const empty = contract.columns
        .map((c) => `CAST(NULL AS ${duckTypeOf(c.type)}) AS ${ident(c.name)}`)
        .join(', ');
      const from =
        found.files.length > 0
          ? `SELECT * FROM read_parquet([${found.files.map(lit).join(', ')}], hive_partitioning=false)`
          : `SELECT ${empty} LIMIT 0`;
      await duck.run(`COPY (${from}) TO ${lit(path)} (FORMAT parquet)`);
      return path;
    };
    outputs.trainPath = await single('train', parts.train);
    outputs.testPath = await single('test', parts.test);
  }
  return outputs;
}

/** The `__part` value of a RETURN_STATS row (DuckDB returns the partition keys as a MAP). */
function partitionOf(keys: unknown): string {
  if (Array.isArray(keys)) {
    for (const entry of keys as { key?: unknown; value?: unknown }[]) {
      if (entry?.key === '__part') return String(entry.value);
    }
  } else if (keys !== null && typeof keys === 'object') {
    const value = (keys as Record<string, unknown>).__part;
    if (value !== undefined) return String(value);
  }
  return String(keys);
}
