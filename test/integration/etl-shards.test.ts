import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lit, withDuckDB } from '../../lib/etl/duck.ts';
import { type FinalizeResult, finalizeEtl } from '../../lib/etl/finalize.ts';
import { readManifest } from '../../lib/etl/manifest.ts';
import type { EtlPlan } from '../../lib/etl/plan.ts';
import type { ShardResult } from '../../lib/etl/shard.ts';
import { readCuratedRows } from '../../lib/etl/tables.ts';
import { LocalPlatform } from '../../lib/local/platform.ts';
import { tempDir } from '../support/temp.ts';

const ROWS = 9000;
/** Line of each planted bad row as DuckDB numbers them: by record (header = 1), not physical line. */
const planted = new Map<number, string>();

/**
 * ~450 KB of CSV: quoted notes that span lines and hold delimiters and doubled quotes, plus a few bad rows
 * spread over the file (wrong type, too many columns, unknown category) so that several byte ranges meet them.
 */
function bigCsv(): string {
  const lines = ['id,grade,note,score,seen_at'];
  for (let i = 0; i < ROWS; i++) {
    const grade = ['A', 'B', 'C'][i % 3];
    const note = i % 4 === 0 ? `"first, line ""${i}""\nsecond line"` : `note ${i}`;
    let row = `${i},${grade},${note},${(i % 97) * 1.25},2024-03-${String(1 + (i % 28)).padStart(2, '0')} 08:00:00`;
    if (i === 1500) row = `${i},A,broken,not-a-number,2024-03-01 08:00:00`;
    if (i === 4700) row = `${i},B,ragged,1.5,2024-03-01 08:00:00,extra`;
    if (i === 8100) row = `${i},Z,odd,2.5,2024-03-01 08:00:00`;
    if (i === 1500 || i === 4700 || i === 8100) planted.set(i + 2, row);
    lines.push(row);
  }
  return `${lines.join('\n')}\n`;
}

/** A lake whose contract was inferred from a clean first landing, then the big file landed. */
async function lakeWith(clean: string, file: string) {
  const dir = await tempDir('kiln-etl-shards-');
  const platform = await LocalPlatform.open({ home: join(dir, 'home') });
  await platform.ingest([clean], 'notes');
  await run(platform, { dataset: 'notes' });
  await platform.ingest([file], 'notes');
  return platform;
}

async function run(platform: LocalPlatform, input: Record<string, unknown>) {
  process.env.KILN_LAKE = platform.home.lakeDir;
  const output = await (await platform.pipelines()).run('etl', 'Plan', input);
  return {
    result: output.result as FinalizeResult,
    plan: output.plan as EtlPlan,
    shards: output.shardResults as ShardResult[],
  };
}

async function quarantineLines(platform: LocalPlatform, shards: ShardResult[]) {
  const keys = shards.flatMap((s) => (s.quarantineKey ? [platform.store.pathOf(s.quarantineKey)] : []));
  return withDuckDB((duck) =>
    duck.all(
      `SELECT line, reason FROM read_parquet([${keys.map(lit).join(', ')}]) ORDER BY line NULLS LAST, reason`,
    ),
  );
}

describe('a big raw object split into byte ranges', () => {
  it('fans out over the Distributed Map and curates exactly what one whole-file shard curates', async () => {
    const dir = await tempDir();
    await mkdir(dir, { recursive: true });
    const file = join(dir, 'notes.csv');
    const text = bigCsv();
    await writeFile(file, text);
    // The contract comes from a clean first landing (the big file's first rows), so planted rows break it.
    const clean = join(dir, 'clean.csv');
    const records = text.split(/\n(?=\d+,)/);
    await writeFile(clean, `${records.slice(0, 201).join('\n')}\n`);

    const whole = await lakeWith(clean, file);
    const split = await lakeWith(clean, file);
    const one = await run(whole, { dataset: 'notes' });
    const many = await run(split, { dataset: 'notes', shardBytes: 64 * 1024 });
    const big = (shards: ShardResult[]) => shards.filter((s) => s.key.endsWith('/notes.csv'));
    const bigItems = (plan: EtlPlan) => plan.shards.filter((s) => s.key.endsWith('/notes.csv'));

    expect(bigItems(one.plan)).toHaveLength(1);
    expect(bigItems(one.plan)[0]?.range).toBeUndefined();
    const ranges = bigItems(many.plan);
    expect(ranges.length).toBeGreaterThanOrEqual(5);
    expect(ranges.every((s) => s.range?.parts === ranges.length)).toBe(true);
    expect(big(many.shards).map((s) => s.range?.part)).toEqual(ranges.map((_, i) => i));

    // Same counts, same version (the shard size is not content), same curated rows.
    const counts = (r: FinalizeResult) => [r.read, r.accepted, r.quarantined, r.trainRows, r.testRows];
    expect(one.result.read).toBe(ROWS + 200);
    expect(one.result.quarantined).toBe(3);
    expect(counts(many.result)).toEqual(counts(one.result));
    expect(many.result.version).toBe(one.result.version);
    const sorted = (rows: Record<string, unknown>[]) => rows.map((r) => JSON.stringify(r)).sort();
    for (const part of ['train', 'test'] as const) {
      expect(sorted(await readCuratedRows(split.store, 'notes', many.result.version, part))).toEqual(
        sorted(await readCuratedRows(whole.store, 'notes', one.result.version, part)),
      );
    }
    // Quarantined rows keep their reasons and their line in the original file, whichever range read them.
    const expected = await quarantineLines(whole, big(one.shards));
    expect(await quarantineLines(split, big(many.shards))).toEqual(expected);
    const csvLines = expected.filter((q) => q.line !== null).map((q) => Number(q.line));
    expect(csvLines.length).toBeGreaterThan(0);
    for (const line of csvLines) expect(planted.has(line)).toBe(true);
    expect(expected.map((q) => q.reason).sort()).toEqual([
      'category:grade',
      'csv:too-many-columns',
      'type:score',
    ]);

    // Finalize proves every planned range came back exactly once: a lost or repeated range fails the run.
    const lost = many.shards.filter((s) => s.range?.part !== 1);
    const repeated = [...many.shards, ...big(many.shards).filter((s) => s.range?.part === 1)];
    for (const shardResults of [lost, repeated]) {
      await expect(
        finalizeEtl(split.store, { dataset: 'notes', runId: many.plan.runId, shardResults }),
      ).rejects.toThrow(/notes\.csv was not processed exactly once/);
    }

    const manifest = await readManifest(split.store, 'notes');
    expect(manifest.sources.find((s) => s.key.endsWith('/notes.csv'))).toMatchObject({
      read: ROWS,
      quarantined: 3,
      shards: ranges.length,
    });
    expect(manifest.profile.find((p) => p.name === 'score')).toMatchObject({
      count: ROWS + 200 - 3,
      nulls: 0,
    });
  });
});

describe('a big JSON Lines object split into byte ranges', () => {
  it('reads every line once, malformed ones included, and gets the version of the unsplit run', async () => {
    const dir = await tempDir();
    const lines = Array.from({ length: 6000 }, (_, i) =>
      i === 3333
        ? '{"id": 3333, "grade": "A", "note": "cut'
        : JSON.stringify({ id: i, grade: 'ABC'[i % 3], note: `n ${i}` }),
    );
    const file = join(dir, 'events.jsonl');
    await writeFile(file, `${lines.join('\n')}\n`);
    const results = [];
    for (const shardBytes of [undefined, 64 * 1024]) {
      const platform = await LocalPlatform.open({ home: join(dir, `home-${shardBytes ?? 'whole'}`) });
      await platform.ingest([file], 'events');
      results.push(await run(platform, { dataset: 'events', ...(shardBytes ? { shardBytes } : {}) }));
    }
    const [whole, split] = results;
    expect(whole?.plan.shards).toHaveLength(1);
    expect(split?.plan.shards.length).toBeGreaterThanOrEqual(3);
    for (const r of results) {
      expect(r.result).toMatchObject({ read: 6000, accepted: 5999, quarantined: 1 });
      expect(r.shards.reduce((n, s) => n + (s.reasons['json:malformed'] ?? 0), 0)).toBe(1);
    }
    expect(split?.result.version).toBe(whole?.result.version);
  });
});
