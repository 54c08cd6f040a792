import { join } from 'node:path';
import { z } from 'zod';
import { IntegrityError } from '../core/errors.ts';
import type { SchemaContract } from '../core/schema.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { inferContract } from './contract.ts';
import { sha256File } from './detect.ts';
import { type Duck, ident, lit, numberOf, withDuckDB } from './duck.ts';
import { localPathOf, RawObjectSchema, shardName } from './raw.ts';
import { readSchemaIfExists, storeInferredContract } from './schema-store.ts';
import { openSource, type Source } from './source.ts';
import { DEFAULT_SPLIT, type SplitSpec, splitExpr } from './split.ts';
import { duckTypeOf } from './typing.ts';
import { validationQuery } from './validate.ts';

/** Input of `processShard` (one item of the state machine's Map). */
export const ShardInputSchema = z.strictObject({
  dataset: z.string(),
  runId: z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/, 'runId: 1-100 characters of [A-Za-z0-9_.-]'),
  shard: RawObjectSchema,
  /** Split parameters; must match Finalize's (both default to DEFAULT_SPLIT). */
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .optional(),
  testFraction: z.number().gt(0).lt(1).optional(),
});
export type ShardInput = z.infer<typeof ShardInputSchema>;

/** What one shard produced. Invariant: `read === accepted + quarantined`. */
export const ShardResultSchema = z.strictObject({
  key: z.string(),
  sha256: z.string(),
  format: z.enum(['csv', 'jsonl', 'parquet']),
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
 * Validates one raw object against the dataset's contract (inferring and storing it first if the dataset
 * has none), writes accepted rows to staging (already split into train and test) and refused rows, each
 * with its reasons, to quarantine — all Parquet, streamed by DuckDB (the file is never loaded into JS).
 */
export async function processShard(store: ObjectStore, input: ShardInput): Promise<ShardResult> {
  const { dataset, runId, shard } = input;
  assertName('dataset', dataset);
  return withDuckDB(async (duck) => {
    const path = await localPathOf(store, shard.key, duck.dir);
    // The version is a hash of the planned bytes, so the bytes read must be those. Hashing overlaps DuckDB's
    // work (DuckDB runs on its own threads) and is checked before anything is uploaded.
    const hashing = sha256File(path);
    hashing.catch(() => undefined);
    let contract = (await readSchemaIfExists(store, dataset))?.contract;
    let source = await openSource(duck, path, shard, shard.key, contract);
    if (!contract) {
      const inferred = await inferContract(duck, source, dataset, shard.key);
      if (inferred) {
        contract = await storeInferredContract(store, inferred);
        source = await openSource(duck, path, shard, shard.key, contract);
      }
    }
    const name = shardName(shard.key);
    const split = {
      seed: input.seed ?? DEFAULT_SPLIT.seed,
      testFraction: input.testFraction ?? DEFAULT_SPLIT.testFraction,
    };
    const outputs = await validateToParquet(duck, source, contract, shard.key, split);
    const actual = await hashing;
    if (actual !== shard.sha256) {
      throw new IntegrityError(
        `raw object ${shard.key} has sha256 ${actual}, the plan recorded ${shard.sha256}`,
      );
    }
    const result: ShardResult = {
      key: shard.key,
      sha256: shard.sha256,
      format: shard.format,
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
  });
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

/**
 * One streaming pass: DuckDB reads the source, types and checks every row and writes accepted rows straight
 * into their train/test partition (the split depends on row content only, so a shard can decide it), and
 * refused rows into a third partition that is only counted. When there are refused rows, a second scan
 * collects their reasons and raw text; CSV lines the reader could not split join them from the rejects table.
 */
async function validateToParquet(
  duck: Duck,
  source: Source,
  contract: SchemaContract | undefined,
  rawKey: string,
  split: SplitSpec,
): Promise<ValidatedOutputs> {
  const { rowsSql, quarantineSql, drift } = validationQuery(source, contract);
  const outDir = join(duck.dir, 'validated');
  const part = async (name: string) => {
    const glob = lit(join(outDir, `__part=${name}`, '*.parquet'));
    const files = (await duck.all(`SELECT file FROM glob(${glob})`)).map((row) => String(row.file));
    const rows =
      files.length > 0 ? numberOf(await duck.all(`SELECT count(*) AS n FROM read_parquet(${glob})`), 'n') : 0;
    return { glob, files, rows };
  };
  let parsedRows: number;
  let train = { glob: '', files: [] as string[], rows: 0 };
  let test = train;
  let refused = train;
  if (contract) {
    const copied = await duck.all(
      `COPY (SELECT * EXCLUDE (__ok), CASE WHEN __ok THEN ${splitExpr(contract, split)} ELSE 'refused' END AS __part
         FROM (${rowsSql})) TO ${lit(outDir)} (FORMAT parquet, PARTITION_BY (__part), OVERWRITE true)`,
    );
    parsedRows = numberOf(copied, 'Count');
    train = await part('train');
    test = await part('test');
    refused = await part('refused');
  } else {
    // Nothing to enforce (no rows to infer a contract from): every row the reader produced is refused.
    parsedRows = numberOf(await duck.all(`SELECT count(*) AS n FROM ${source.relation}`), 'n');
    refused = { glob: '', files: [], rows: parsedRows };
  }
  if (train.rows + test.rows + refused.rows !== parsedRows) {
    throw new IntegrityError(
      `shard ${rawKey}: read ${parsedRows} rows but wrote ${train.rows} train + ${test.rows} test + ${refused.rows} refused`,
    );
  }

  const parts: string[] = [];
  if (refused.rows > 0) {
    const bad = join(duck.dir, 'refused.parquet');
    const again = numberOf(
      await duck.all(`COPY (${quarantineSql}) TO ${lit(bad)} (FORMAT parquet)`),
      'Count',
    );
    if (again !== refused.rows) {
      throw new IntegrityError(
        `shard ${rawKey}: ${refused.rows} rows were refused but the re-scan found ${again}`,
      );
    }
    parts.push(`SELECT ${lit(rawKey)} AS source, NULL::BIGINT AS line, reasons[1] AS reason, reasons,
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
      parts.push(`SELECT ${lit(rawKey)} AS source, CAST(line AS BIGINT) AS line, ${code} AS reason, [${code}] AS reasons,
        error_message AS detail, csv_line AS raw FROM ${rejects}`);
    }
  }
  const read = parsedRows + rejected;
  const reasons: Record<string, number> = {};
  let quarantinePath: string | undefined;
  if (parts.length > 0) {
    quarantinePath = join(duck.dir, 'quarantine.parquet');
    await duck.run(
      `COPY (${parts.join(' UNION ALL ')} ORDER BY line NULLS FIRST) TO ${lit(quarantinePath)} (FORMAT parquet)`,
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
    accepted: train.rows + test.rows,
    quarantined: refused.rows + rejected,
    reasons,
    drift,
  };
  if (quarantinePath) outputs.quarantinePath = quarantinePath;
  if (contract) {
    const single = async (name: 'train' | 'test', found: { glob: string; files: string[] }) => {
      const only = found.files.length === 1 ? found.files[0] : undefined;
      if (only) return only;
      // Several partition files (or none): one file per split, with the contract's typed columns.
      const path = join(duck.dir, `${name}.parquet`);
      const empty = contract.columns
        .map((c) => `CAST(NULL AS ${duckTypeOf(c.type)}) AS ${ident(c.name)}`)
        .join(', ');
      const from =
        found.files.length > 0 ? `SELECT * FROM read_parquet(${found.glob})` : `SELECT ${empty} LIMIT 0`;
      await duck.run(`COPY (${from}) TO ${lit(path)} (FORMAT parquet)`);
      return path;
    };
    outputs.trainPath = await single('train', train);
    outputs.testPath = await single('test', test);
  }
  return outputs;
}
