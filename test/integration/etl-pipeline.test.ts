import { createHash } from 'node:crypto';
import { cp, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ConflictError, NotFoundError, ValidationError } from '../../lib/core/errors.ts';
import { lit, withDuckDB } from '../../lib/etl/duck.ts';
import { recordPipelineFailure } from '../../lib/etl/failure.ts';
import { type FinalizeResult, finalizeEtl } from '../../lib/etl/finalize.ts';
import { readManifest } from '../../lib/etl/manifest.ts';
import { type EtlPlan, planEtl } from '../../lib/etl/plan.ts';
import { readRawFacts } from '../../lib/etl/raw.ts';
import { readSchema, readSchemaWithEtag, updateSchema } from '../../lib/etl/schema-store.ts';
import { processShard, type ShardResult } from '../../lib/etl/shard.ts';
import { readCuratedRows, readTableFile } from '../../lib/etl/tables.ts';
import { PipelineFailedError } from '../../lib/local/pipeline-runner.ts';
import { LocalPlatform } from '../../lib/local/platform.ts';
import type { FileSystemStore } from '../../lib/store/fs-store.ts';
import { lake } from '../../lib/store/layout.ts';
import { tempDir } from '../support/temp.ts';

// ---------------------------------------------------------------------------------------------- helpers

/**
 * A fresh local platform: its lake is the folder the handlers use (KILN_LAKE), and ETL runs are executions of
 * the synthesized state machine, exactly as `kiln etl` runs them.
 */
async function newLake(): Promise<{ platform: LocalPlatform; store: FileSystemStore; files: string }> {
  const root = await tempDir('kiln-etl-it-');
  const files = join(root, 'files');
  await mkdir(files);
  const platform = await LocalPlatform.open({ home: join(root, 'home') });
  return { platform, store: platform.store, files };
}

/** What one ETL execution produced: Finalize's result plus the plan and the Map's shard results. */
type EtlRun = FinalizeResult & { plan: EtlPlan; shardResults: ShardResult[] };

/** Runs the ETL state machine (input as Step Functions would get it) and returns its state. */
async function runEtl(platform: LocalPlatform, input: Record<string, unknown>): Promise<EtlRun> {
  // Handlers find their lake through KILN_LAKE, as in Lambda; a test may hold several platforms.
  process.env.KILN_LAKE = platform.home.lakeDir;
  const output = await (await platform.pipelines()).run('etl', 'Plan', input);
  return {
    ...(output.result as FinalizeResult),
    plan: output.plan as EtlPlan,
    shardResults: output.shardResults as ShardResult[],
  };
}

/** The error of a failing ETL execution, as the state machine reports it. */
async function failedEtl(
  platform: LocalPlatform,
  input: Record<string, unknown>,
): Promise<PipelineFailedError> {
  const error = await runEtl(platform, input).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(PipelineFailedError);
  return error as PipelineFailedError;
}

const CUTS = ['Fair', 'Good', 'Ideal'];

/** `n` deterministic rows of a small diamonds-like table (number, category, integer, boolean, timestamp). */
function sampleRows(n: number, offset = 0): Record<string, string | number | boolean>[] {
  return Array.from({ length: n }, (_, k) => {
    const i = k + offset;
    return {
      carat: Number((0.2 + (i % 37) * 0.05).toFixed(2)),
      cut: CUTS[i % CUTS.length] ?? 'Fair',
      price: 300 + ((i * 7919) % 5000),
      certified: i % 2 === 0,
      sold_at: `2024-01-${String(1 + (i % 28)).padStart(2, '0')} ${String(i % 24).padStart(2, '0')}:00:00`,
    };
  });
}

function csvText(
  rows: Record<string, unknown>[],
  options: { delimiter?: string; bom?: boolean; quoteAll?: boolean } = {},
) {
  const d = options.delimiter ?? ',';
  const cell = (value: unknown) => {
    const text = String(value);
    return options.quoteAll || text.includes(d) || text.includes('"')
      ? `"${text.replaceAll('"', '""')}"`
      : text;
  };
  const header = Object.keys(rows[0] ?? {})
    .map(cell)
    .join(d);
  const body = rows.map((row) => Object.values(row).map(cell).join(d)).join('\n');
  return `${options.bom ? '\uFEFF' : ''}${header}\n${body}\n`;
}

async function writeText(path: string, text: string | Buffer): Promise<string> {
  await writeFile(path, text);
  return path;
}

function jsonlText(rows: unknown[]): string {
  return `${rows.map((row) => JSON.stringify(row)).join('\n')}\n`;
}

async function writeParquet(path: string, sql: string): Promise<string> {
  await withDuckDB((duck) => duck.run(`COPY (${sql}) TO ${lit(path)} (FORMAT parquet)`));
  return path;
}

async function parquetRows(path: string): Promise<Record<string, unknown>[]> {
  return withDuckDB((duck) => duck.all(`SELECT * FROM read_parquet(${lit(path)})`));
}

/** A first landing of 200 clean rows (CSV with ';', BOM and quotes) and its ETL run. */
async function seeded(rows = 200) {
  const { platform, store, files } = await newLake();
  const path = await writeText(
    join(files, 'gems.csv'),
    csvText(sampleRows(rows), { delimiter: ';', bom: true, quoteAll: true }),
  );
  await platform.ingest([path], 'gems');
  const first = await runEtl(platform, { dataset: 'gems' });
  return { platform, store, files, first };
}

// ---------------------------------------------------------------------------------------------- tests

describe('ETL end to end', () => {
  it('ingests CSV (;, BOM, quotes), JSON Lines, Parquet and gzip, infers a contract and curates them', async () => {
    const { platform, store, files, first } = await seeded();
    expect(first).toMatchObject({ read: 200, accepted: 200, quarantined: 0, created: true });
    expect(first.trainRows + first.testRows).toBe(200);

    const contract = await readSchema(store, 'gems');
    expect(contract.columns).toEqual([
      { name: 'carat', type: 'number', nullable: false, min: 0.2, max: 2 },
      { name: 'cut', type: 'string', nullable: false, categories: ['Fair', 'Good', 'Ideal'] },
      { name: 'price', type: 'integer', nullable: false, min: expect.any(Number), max: expect.any(Number) },
      { name: 'certified', type: 'boolean', nullable: false },
      { name: 'sold_at', type: 'timestamp', nullable: false },
    ]);

    const jsonl = await writeText(join(files, 'more.jsonl'), jsonlText(sampleRows(100, 200)));
    const parquet = await writeParquet(
      join(files, 'more.parquet'),
      `SELECT (0.2 + (i % 37) * 0.05)::DOUBLE AS carat, 'Good' AS cut, (300 + i)::INTEGER AS price,
              (i % 3 = 0) AS certified, TIMESTAMP '2024-02-01 00:00:00' + INTERVAL (i) MINUTE AS sold_at
       FROM range(50) t(i)`,
    );
    const gz = await writeText(join(files, 'more.csv.gz'), gzipSync(csvText(sampleRows(50, 300))));
    const landing = await platform.ingest([jsonl, parquet, gz], 'gems');
    expect(landing.objects.map((o) => [o.format, o.compression])).toEqual([
      ['jsonl', 'none'],
      ['parquet', 'none'],
      ['csv', 'gzip'],
    ]);
    // The S3 "Object Created" event shape: the run starts from the landed key.
    const second = await runEtl(platform, { detail: { object: { key: landing.objects[0]?.key ?? '' } } });
    expect(second).toMatchObject({ read: 400, accepted: 400, quarantined: 0, created: true });
    expect(second.version).not.toBe(first.version);
    for (const shard of second.shardResults) expect(shard.schemaDrift).toEqual([]);

    const train = await readCuratedRows(store, 'gems', second.version, 'train');
    const test = await readCuratedRows(store, 'gems', second.version, 'test');
    expect(train.length + test.length).toBe(400);
    const row = train[0] ?? {};
    expect(Object.keys(row)).toEqual(['carat', 'cut', 'price', 'certified', 'sold_at']);
    expect(typeof row.carat).toBe('number');
    expect(typeof row.price).toBe('number');
    expect(typeof row.certified).toBe('boolean');
    expect(row.sold_at).toMatch(/^2024-\d\d-\d\dT\d\d:\d\d:00\.000Z$/);

    const manifest = await readManifest(store, 'gems');
    expect(manifest.version).toBe(second.version);
    expect(manifest.rows).toEqual({
      read: 400,
      accepted: 400,
      quarantined: 0,
      train: train.length,
      test: test.length,
    });
    expect(manifest.sources.map((s) => s.sha256).sort()).toEqual(
      [...first.plan.shards, ...landing.objects].map((o) => o.sha256).sort(),
    );
    const price = manifest.profile.find((p) => p.name === 'price');
    expect(price).toMatchObject({ count: 400, nulls: 0 });
    expect(price?.deciles).toHaveLength(11);
    expect(price?.std).toBeGreaterThan(0);
    const cut = manifest.profile.find((p) => p.name === 'cut');
    expect(cut?.top?.reduce((sum, t) => sum + t.count, 0)).toBe(400);
    expect(manifest.split).toMatchObject({ method: 'row-hash', seed: 42, testFraction: 0.2 });
    for (const file of [manifest.files.train, manifest.files.test]) {
      const bytes = await readFile(store.pathOf(file.key));
      expect(file.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      expect(file.bytes).toBe(bytes.length);
    }
    // Staging is cleaned up once the version is committed.
    expect(await store.list(`curated-staging/gems/${second.plan.runId}/`)).toEqual([]);
    const report = JSON.parse((await store.get(lake.runReport('etl', second.plan.runId))).toString());
    expect(report).toMatchObject({ status: 'succeeded', read: 400, accepted: 400, quarantined: 0 });
  });

  it('gives the same input the same version and writes nothing new', async () => {
    const { platform, store, first } = await seeded();
    const manifestKey = first.manifestKey;
    const before = await store.list('curated/gems/');
    const mtime = (await stat(store.pathOf(manifestKey))).mtimeMs;
    const again = await runEtl(platform, { dataset: 'gems' });
    expect(again.version).toBe(first.version);
    expect(again.created).toBe(false);
    expect(await store.list('curated/gems/')).toEqual(before);
    expect((await stat(store.pathOf(manifestKey))).mtimeMs).toBe(mtime);
  });

  it('splits reproducibly by row content and seed: another lake with the same file gets the same split', async () => {
    const a = await seeded(500);
    const b = await seeded(500);
    expect(b.first.version).toBe(a.first.version);
    const key = (rows: Record<string, unknown>[]) => rows.map((r) => JSON.stringify(r)).sort();
    const testA = await readCuratedRows(a.store, 'gems', a.first.version, 'test');
    const testB = await readCuratedRows(b.store, 'gems', b.first.version, 'test');
    expect(key(testB)).toEqual(key(testA));
    expect(testA.length / 500).toBeGreaterThan(0.12);
    expect(testA.length / 500).toBeLessThan(0.28);

    const reseeded = await runEtl(a.platform, { dataset: 'gems', seed: 7 });
    expect(reseeded.version).not.toBe(a.first.version);
    const testSeed7 = await readCuratedRows(a.store, 'gems', reseeded.version, 'test');
    expect(key(testSeed7)).not.toEqual(key(testA));
  });
});

describe('raw landings the ETL reads', () => {
  it('fails the run when a landed file was edited in place, however small the edit', async () => {
    const { platform, store, files, first } = await seeded();
    const landing = await platform.ingest(
      [await writeText(join(files, 'more.csv'), csvText(sampleRows(50, 300)))],
      'gems',
    );
    const key = landing.objects[0]?.key ?? '';
    // Ingest proved the stored bytes are the ones it hashed and recorded the file's identity.
    expect((await readRawFacts(store, key))?.fingerprint).toMatch(/^\d+:\d+:\d+:\d+:\d+$/);
    // Same size, one digit changed: only the content differs from what ingest recorded.
    const path = store.pathOf(key);
    const text = await readFile(path, 'utf8');
    const at = text.lastIndexOf('300');
    await writeFile(path, `${text.slice(0, at)}301${text.slice(at + 3)}`);
    const error = await failedEtl(platform, { dataset: 'gems' });
    expect(error.error).toBe('IntegrityError');
    expect(error.message).toMatch(/more\.csv has sha256 [0-9a-f]{64}, the plan recorded/);
    expect((await readManifest(store, 'gems')).version).toBe(first.version);
  });

  it('hashes raw files again where their recorded identity no longer holds (a copied lake), same version', async () => {
    const { platform, first } = await seeded();
    const copy = join(await tempDir('kiln-etl-copy-'), 'home');
    await cp(platform.home.dir, copy, { recursive: true });
    const moved = await LocalPlatform.open({ home: copy });
    const again = await runEtl(moved, { dataset: 'gems' });
    expect(again).toMatchObject({ version: first.version, created: false, read: 200, accepted: 200 });
  });
});

describe('schema enforcement and quarantine', () => {
  it('quarantines each bad row with its reason and keeps read = accepted + quarantined', async () => {
    const { platform, store, files } = await seeded();
    const good = sampleRows(194, 1000);
    const header = 'carat,cut,price,certified,sold_at';
    const lines = [
      header,
      ...good.map((r) => Object.values(r).join(',')),
      '0.5,Good,abc,true,2024-01-01 00:00:00', // wrong type
      ',Good,500,true,2024-01-01 00:00:00', // null in a non-nullable column
      '0.5,Superb,500,true,2024-01-01 00:00:00', // unknown category
      '0.5,Good,500,true,2024-01-01 00:00:00,extra', // ragged: too many columns
      '0.5,Good,500', // ragged: too few columns
      '0.5,Go\xffod,500,true,2024-01-01 00:00:00', // invalid UTF-8 (written as latin1 below)
    ];
    const path = join(files, 'bad.csv');
    await writeFile(path, Buffer.from(`${lines.join('\n')}\n`, 'latin1'));
    await platform.ingest([path], 'gems');
    const run = await runEtl(platform, { dataset: 'gems' });
    const shard = run.shardResults.find((s) => s.key.endsWith('bad.csv'));
    expect(shard).toMatchObject({ read: 200, accepted: 194, quarantined: 6 });
    expect(shard?.reasons).toEqual({
      'type:price': 1,
      'null:carat': 1,
      'category:cut': 1,
      'csv:too-many-columns': 1,
      'csv:missing-columns': 1,
      'csv:invalid-encoding': 1,
    });
    expect(run).toMatchObject({ read: 400, accepted: 394, quarantined: 6 });
    const quarantined = await parquetRows(store.pathOf(shard?.quarantineKey ?? ''));
    expect(quarantined).toHaveLength(6);
    const typeRow = quarantined.find((q) => q.reason === 'type:price');
    expect(typeRow?.detail).toBe('price: "abc" is not a valid integer');
    expect(JSON.parse(String(typeRow?.raw))).toMatchObject({ price: 'abc', cut: 'Good' });
    expect(quarantined.find((q) => q.reason === 'csv:too-many-columns')?.raw).toContain('extra');
    expect(quarantined.find((q) => q.reason === 'category:cut')?.detail).toContain(
      '"Superb" is not an allowed category',
    );
  });

  it('enforces hard limits a human put into the contract, with CAS on the schema', async () => {
    const { platform, store, files } = await seeded();
    const { contract, etag } = await readSchemaWithEtag(store, 'gems');
    const edited = {
      ...contract,
      columns: contract.columns.map((c) => (c.name === 'price' ? { ...c, hardMin: 0, hardMax: 10_000 } : c)),
    };
    await updateSchema(store, 'gems', edited, { expectedEtag: etag });
    await expect(updateSchema(store, 'gems', edited, { expectedEtag: etag })).rejects.toBeInstanceOf(
      ConflictError,
    );
    await expect(
      updateSchema(store, 'gems', {
        ...edited,
        columns: [{ name: 'cut', type: 'integer', nullable: false, categories: ['x'] }],
      }),
    ).rejects.toThrow(/categories need a string column/);
    await expect(updateSchema(store, 'gems', { ...edited, kind: 'nope' })).rejects.toBeInstanceOf(
      ValidationError,
    );

    const rows = [...sampleRows(99, 50), { ...sampleRows(1)[0], price: 20_000 }];
    const path = await writeText(join(files, 'pricey.csv'), csvText(rows));
    await platform.ingest([path], 'gems');
    const run = await runEtl(platform, { dataset: 'gems' });
    const shard = run.shardResults.find((s) => s.key.endsWith('pricey.csv'));
    expect(shard?.reasons).toEqual({ 'range:price': 1 });
    const quarantined = await parquetRows(store.pathOf(shard?.quarantineKey ?? ''));
    expect(quarantined[0]?.detail).toBe('price: 20000 is outside the allowed range [0, 10000]');
  });

  it('fails loudly above the quarantine threshold, records the failure, and leaves the dataset untouched', async () => {
    const { platform, store, files, first } = await seeded();
    const bad = sampleRows(300).map((r) => ({ ...r, price: 'n/a-ish' }));
    await platform.ingest([await writeText(join(files, 'junk.csv'), csvText(bad))], 'gems');
    const error = await failedEtl(platform, { dataset: 'gems' });
    expect(error.error).toBe('PolicyError');
    expect(error.message).toMatch(
      /300 of 500 rows \(60\.00 %\) were quarantined, above the threshold of 5\.00 %/,
    );
    const reports = await store.list('runs/etl/');
    const failed = reports.filter((r) => r.key.endsWith('-failed.json'));
    expect(failed).toHaveLength(1);
    const failure = JSON.parse((await store.get(failed[0]?.key ?? '')).toString());
    expect(failure.error).toMatchObject({ type: 'PolicyError' });
    const runReport = JSON.parse((await store.get(failed[0]?.key.replace('-failed', '') ?? '')).toString());
    expect(runReport).toMatchObject({
      status: 'failed',
      read: 500,
      quarantined: 300,
      reasons: { 'type:price': 300 },
    });
    expect((await readManifest(store, 'gems')).version).toBe(first.version);

    const tolerant = await runEtl(platform, { dataset: 'gems', quarantineThreshold: 0.7 });
    expect(tolerant).toMatchObject({ created: true, read: 500, accepted: 200, quarantined: 300 });
    expect(tolerant.shardResults.find((s) => s.key.endsWith('junk.csv'))?.schemaDrift).toContain(
      'type of column "price" looks changed: 300 of 300 values are not integer',
    );
  });

  it('reports new columns, missing columns and changed types as drift instead of coercing silently', async () => {
    const { platform, files } = await seeded();
    const extra = sampleRows(40, 500).map((r) => ({ ...r, color: 'D' }));
    const jsonl = await writeText(join(files, 'extra.jsonl'), jsonlText(extra));
    const parquet = await writeParquet(
      join(files, 'typed.parquet'),
      `SELECT 0.5::DOUBLE AS carat, 'Good' AS cut, CAST(300 + i AS VARCHAR) AS price, true AS certified,
              TIMESTAMP '2024-03-01 00:00:00' AS sold_at FROM range(10) t(i)`,
    );
    await platform.ingest([jsonl, parquet], 'gems');
    const run = await runEtl(platform, { dataset: 'gems' });
    const byName = (suffix: string) => run.shardResults.find((s) => s.key.endsWith(suffix));
    expect(byName('extra.jsonl')?.schemaDrift).toEqual([
      'new column "color" (not in the contract: dropped until the schema is edited)',
    ]);
    expect(byName('extra.jsonl')?.accepted).toBe(40);
    expect(byName('typed.parquet')?.schemaDrift).toEqual([
      'type of column "price" changed: contract says integer, file has VARCHAR (values that do not convert are quarantined)',
    ]);
    expect(byName('typed.parquet')).toMatchObject({ read: 10, accepted: 10 });
  });
});

describe('bad input', () => {
  it('refuses empty files, truncated gzip and duplicate column names at ingest, naming the file, writing nothing', async () => {
    const { platform, store, files } = await newLake();
    const empty = await writeText(join(files, 'empty.csv'), '');
    const dup = await writeText(join(files, 'dup.csv'), 'a,b,a\n1,2,3\n4,5,6\n');
    const full = gzipSync(csvText(sampleRows(5000)));
    const cut = await writeText(join(files, 'cut.csv.gz'), full.subarray(0, full.length - 100));
    const ok = await writeText(join(files, 'ok.csv'), csvText(sampleRows(10)));
    await expect(platform.ingest([ok, empty], 'gems')).rejects.toThrow(/empty\.csv is empty/);
    await expect(platform.ingest([dup], 'gems')).rejects.toThrow(/dup\.csv has duplicate column names "a"/);
    await expect(platform.ingest([cut], 'gems')).rejects.toThrow(
      /cut\.csv\.gz is a truncated or corrupt gzip/,
    );
    await expect(platform.ingest([ok], 'Gems!')).rejects.toThrow(/invalid dataset name/);
    expect(await store.list('raw/')).toEqual([]);
  });

  it('skips unreadable objects that landed without ingest (S3 path) and says why', async () => {
    const { platform, store, files } = await seeded();
    const full = gzipSync(csvText(sampleRows(5000)));
    await store.put('raw/gems/20300101T000000000Z-deadbeef/cut.csv.gz', full.subarray(0, full.length - 50));
    await store.put('raw/gems/20300101T000000000Z-deadbeef/empty.csv', '');
    await store.putFile(
      'raw/gems/20300101T000000000Z-deadbeef/ok.csv',
      await writeText(join(files, 'ok.csv'), csvText(sampleRows(20, 900))),
    );
    const plan = await planEtl(store, { key: 'raw/gems/20300101T000000000Z-deadbeef/ok.csv' });
    expect(plan.shards).toHaveLength(2);
    expect(plan.rejected.map((r) => [r.key.split('/').pop(), r.reason])).toEqual([
      ['cut.csv.gz', expect.stringMatching(/truncated or corrupt gzip/)],
      ['empty.csv', expect.stringMatching(/is empty/)],
    ]);
    const run = await runEtl(platform, { dataset: 'gems' });
    expect(run).toMatchObject({ read: 220, accepted: 220 });
    const report = JSON.parse((await store.get(run.reportKey)).toString());
    expect(report.rejected).toHaveLength(2);
  });

  it('accepts a header-only file as zero rows, and refuses a dataset whose only landing has no rows', async () => {
    const { platform, files } = await seeded();
    await platform.ingest(
      [await writeText(join(files, 'header.csv'), 'carat,cut,price,certified,sold_at\n')],
      'gems',
    );
    const run = await runEtl(platform, { dataset: 'gems' });
    expect(run.shardResults.find((s) => s.key.endsWith('header.csv'))).toMatchObject({
      read: 0,
      accepted: 0,
      quarantined: 0,
    });
    expect(run).toMatchObject({ read: 200, accepted: 200 });

    const fresh = await newLake();
    await fresh.platform.ingest([await writeText(join(fresh.files, 'h.csv'), 'a,b\n')], 'lonely');
    const error = await failedEtl(fresh.platform, { dataset: 'lonely' });
    expect(error.message).toMatch(/no schema contract could be inferred/);
    expect(await fresh.store.list('curated/')).toEqual([]);
  });

  it('quarantines malformed JSON lines and non-object lines instead of dropping them', async () => {
    const { platform, files } = await seeded();
    const rows = sampleRows(98, 700).map((r) => JSON.stringify(r));
    const text = `${[...rows, '{"carat": 0.5, "cut": "Go', '[1, 2, 3]'].join('\n')}\n`;
    await platform.ingest([await writeText(join(files, 'broken.jsonl'), text)], 'gems');
    const run = await runEtl(platform, { dataset: 'gems' });
    const shard = run.shardResults.find((s) => s.key.endsWith('broken.jsonl'));
    expect(shard).toMatchObject({ read: 100, accepted: 98, quarantined: 2 });
    expect(shard?.reasons).toEqual({ 'json:malformed': 1, 'json:not-an-object': 1 });
  });

  it('quarantines every row of a Parquet file with a different schema, so the run fails loudly', async () => {
    const { platform, store, files } = await seeded();
    const other = await writeParquet(
      join(files, 'other.parquet'),
      'SELECT i AS id, i * 2 AS score FROM range(100) t(i)',
    );
    await platform.ingest([other], 'gems');
    const error = await failedEtl(platform, { dataset: 'gems' });
    expect(error.error).toBe('PolicyError');
    expect(error.message).toMatch(/100 of 300 rows \(33\.33 %\) were quarantined/);
    // The failed run's report keeps every shard's result: nothing was lost, all of it is accounted for.
    const reports = (await store.list('runs/etl/')).filter((r) => !r.key.endsWith('-failed.json'));
    const report = JSON.parse((await store.get(reports.at(-1)?.key ?? '')).toString()) as {
      status: string;
      shards: ShardResult[];
    };
    expect(report.status).toBe('failed');
    const shard = report.shards.find((s) => s.key.endsWith('other.parquet'));
    expect(shard).toMatchObject({
      read: 100,
      accepted: 0,
      quarantined: 100,
      reasons: { 'missing:carat': 100 },
    });
    expect(shard?.schemaDrift).toEqual(
      expect.arrayContaining(['missing column "carat"', expect.stringMatching(/new column "id"/)]),
    );
    // The curated version from before is untouched.
    expect((await readManifest(store, 'gems')).rows.read).toBe(200);
  });

  it('infers one contract when shards of a new dataset race, and every shard enforces it', async () => {
    const { platform, store, files } = await newLake();
    const a = await writeText(join(files, 'a.csv'), csvText(sampleRows(100)));
    const b = await writeText(join(files, 'b.jsonl'), jsonlText(sampleRows(100, 100)));
    const landing = await platform.ingest([a, b], 'race');
    const [shardA, shardB] = landing.objects;
    if (!shardA || !shardB) throw new Error('expected two objects');
    const results = await Promise.all([
      processShard(store, { dataset: 'race', runId: 'r1', shard: shardA }),
      processShard(store, { dataset: 'race', runId: 'r1', shard: shardB }),
    ]);
    expect(results.map((r) => r.accepted)).toEqual([100, 100]);
    const final = await finalizeEtl(store, { dataset: 'race', runId: 'r1', shardResults: results });
    expect(final).toMatchObject({ created: true, read: 200, accepted: 200 });
  });
});

describe('helpers and handlers', () => {
  it('readTableFile reads CSV, gzip JSON Lines and Parquet into plain values', async () => {
    const dir = await tempDir();
    const csv = await writeText(join(dir, 't.csv'), 'x;when;name\n1;2024-01-01 10:00:00;"a;b"\n');
    expect(await readTableFile(csv)).toEqual([{ x: 1, when: '2024-01-01T10:00:00.000Z', name: 'a;b' }]);
    const jgz = await writeText(join(dir, 't.jsonl.gz'), gzipSync('{"x": 2, "ok": true}\n'));
    expect(await readTableFile(jgz)).toEqual([{ x: 2, ok: true }]);
    const pq = await writeParquet(
      join(dir, 't.parquet'),
      'SELECT 9007199254740991::BIGINT AS big, 1.5::DECIMAL(4,2) AS d',
    );
    expect(await readTableFile(pq)).toEqual([{ big: 9007199254740991, d: 1.5 }]);
  });

  it('readManifest resolves latest and refuses unknown versions', async () => {
    const { store, first } = await seeded();
    expect((await readManifest(store, 'gems')).version).toBe(first.version);
    expect((await readManifest(store, 'gems', first.version)).rows.accepted).toBe(200);
    await expect(readManifest(store, 'gems', '0000000000000000')).rejects.toBeInstanceOf(NotFoundError);
    await expect(readManifest(store, 'nothing')).rejects.toBeInstanceOf(NotFoundError);
    await expect(readCuratedRows(store, 'gems', '0000000000000000', 'train')).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });

  it('records pipeline failures under the run id found in the state', async () => {
    const { store } = await newLake();
    const failure = await recordPipelineFailure(store, {
      pipeline: 'etl',
      input: { plan: { runId: 'run-123' }, dataset: 'gems' },
      error: {
        Error: 'PolicyError',
        Cause: JSON.stringify({ errorType: 'PolicyError', errorMessage: 'too many bad rows', trace: ['x'] }),
      },
    });
    expect(failure.key).toBe('runs/etl/run-123-failed.json');
    const stored = JSON.parse((await store.get(failure.key)).toString());
    expect(stored.error).toEqual({ type: 'PolicyError', message: 'too many bad rows' });
    const anonymous = await recordPipelineFailure(store, {
      pipeline: 'training',
      input: {},
      error: { Error: 'States.Timeout' },
    });
    expect(anonymous.key).toMatch(/^runs\/training\/\d{8}T\d{9}Z-[0-9a-f]{6}-failed\.json$/);
  });

  it('handlers validate their input with a clear ValidationError and run the same logic', async () => {
    const { platform, store, files } = await newLake();
    process.env.KILN_LAKE = store.root;
    const context = {
      functionName: 'test',
      awsRequestId: 'req-1',
      invokedFunctionArn: 'arn:test',
      memoryLimitInMB: '128',
      functionVersion: '1',
      getRemainingTimeInMillis: () => 1000,
    };
    const plan = await import('../../functions/etl/plan.ts');
    const shard = await import('../../functions/etl/shard.ts');
    const finalize = await import('../../functions/etl/finalize.ts');
    const failure = await import('../../functions/pipeline/failure.ts');
    await expect(plan.handler({ nothing: true }, context as never)).rejects.toThrow(/invalid ETL plan input/);
    await expect(shard.handler({ dataset: 'gems' }, context as never)).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(
      finalize.handler({ dataset: 'gems', runId: '../x', shardResults: [] }, context as never),
    ).rejects.toThrow(/runId/);

    await platform.ingest([await writeText(join(files, 'g.csv'), csvText(sampleRows(50)))], 'gems');
    const key = (await store.list('raw/gems/'))[0]?.key ?? '';
    const event = {
      'detail-type': 'Object Created',
      source: 'aws.s3',
      detail: { bucket: { name: 'b' }, object: { key } },
    };
    const planned = await plan.handler(event, context as never);
    expect(planned.dataset).toBe('gems');
    const results = [];
    for (const s of planned.shards)
      results.push(
        await shard.handler({ dataset: 'gems', runId: planned.runId, shard: s }, context as never),
      );
    const done = await finalize.handler(
      { dataset: 'gems', runId: planned.runId, shardResults: results },
      context as never,
    );
    expect(done).toMatchObject({ created: true, read: 50, accepted: 50 });
    const recorded = await failure.handler(
      {
        pipeline: 'etl',
        input: { plan: { runId: planned.runId } },
        error: { Error: 'Boom', Cause: 'plain text' },
      },
      context as never,
    );
    expect(recorded.key).toBe(`runs/etl/${planned.runId}-failed.json`);
  });
});
