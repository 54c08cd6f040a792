import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { SchemaContract } from '../../lib/core/schema.ts';
import { lit, withDuckDB } from '../../lib/etl/duck.ts';
import { type CliResult, runKiln } from '../support/cli.ts';
import { tempDir } from '../support/temp.ts';

/** A failed command prints exactly one `kiln:` line on stderr, names the problem, exits non-zero, no stack. */
function expectOneLineError(result: CliResult, code: number, pattern: RegExp) {
  expect(result.code, result.stderr).toBe(code);
  const lines = result.stderr.split('\n').filter((line) => line.startsWith('kiln:'));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

function csv(rows: string[]): string {
  return `price,cut,carat\n${rows.join('\n')}\n`;
}

const goodRows = (n: number, offset = 0) =>
  Array.from(
    { length: n },
    (_, i) => `${300 + ((i * 7 + offset) % 700)},${['Fair', 'Good', 'Ideal'][i % 3]},${0.2 + (i % 9) / 10}`,
  );

async function setup() {
  const dir = await tempDir('kiln-etl-cli-');
  const home = join(dir, 'home');
  const kiln = (...args: string[]) => runKiln([...args, '--home', home]);
  const file = async (name: string, body: string | Buffer) => {
    const path = join(dir, name);
    await writeFile(path, body);
    return path;
  };
  return { dir, kiln, file };
}

interface EtlJson {
  version: string;
  created: boolean;
  read: number;
  accepted: number;
  quarantined: number;
}

describe('kiln schema show / edit', () => {
  it('round-trips the contract, validates edits, refuses stale ones, and the next ETL enforces the edit', async () => {
    const { kiln, file } = await setup();
    expect((await kiln('ingest', await file('gems.csv', csv(goodRows(200))), '--dataset', 'gems')).code).toBe(
      0,
    );
    const first = await kiln('etl', '--dataset', 'gems', '--json');
    expect(first.code, first.stderr).toBe(0);
    const firstRun = JSON.parse(first.stdout) as EtlJson;

    const shown = await kiln('schema', 'show', 'gems');
    expect(shown.stdout).toMatch(/^price\s+integer\s+required \[300, 993\]/m);
    expect(shown.stdout).toMatch(/^etag "/m);
    const contract = JSON.parse((await kiln('schema', 'show', 'gems', '--json')).stdout) as SchemaContract;
    expect(contract.columns.map((c) => c.name)).toEqual(['price', 'cut', 'carat']);

    // Invalid edits: refused with the reason, nothing written.
    const bad = await file(
      'bad.json',
      JSON.stringify({
        ...contract,
        columns: contract.columns.map((c) => (c.name === 'price' ? { ...c, hardMin: 10, hardMax: 1 } : c)),
      }),
    );
    expectOneLineError(
      await kiln('schema', 'edit', 'gems', '--file', bad),
      2,
      /hardMin 10 is greater than hardMax 1/,
    );
    expectOneLineError(
      await kiln('schema', 'edit', 'gems', '--file', await file('typo.json', '{"kind": ')),
      2,
      /typo\.json is not valid JSON/,
    );
    expectOneLineError(
      await kiln(
        'schema',
        'edit',
        'gems',
        '--file',
        await file('unknown.json', JSON.stringify({ ...contract, colour: 1 })),
      ),
      2,
      /invalid schema contract for gems/,
    );

    // A valid edit: dry run first (nothing written), then for real.
    const limited = {
      ...contract,
      columns: contract.columns.map((c) => (c.name === 'price' ? { ...c, hardMax: 980 } : c)),
    };
    const edit = await file('edit.json', JSON.stringify(limited, null, 2));
    const dry = await kiln('schema', 'edit', 'gems', '--file', edit, '--dry-run');
    expect(dry.stdout).toContain('~ price.hardMax: unset → 980');
    expect((await kiln('schema', 'show', 'gems', '--json')).stdout).not.toContain('hardMax');
    const applied = await kiln('schema', 'edit', 'gems', '--file', edit, '--json');
    expect(applied.code, applied.stderr).toBe(0);
    expect(JSON.parse(applied.stdout)).toMatchObject({
      updated: true,
      changes: ['~ price.hardMax: unset → 980'],
    });

    // The same file again is stale now (the stored contract was edited since it was taken): a conflict.
    expectOneLineError(
      await kiln('schema', 'edit', 'gems', '--file', edit),
      1,
      /changed since .*edit\.json was taken/,
    );
    expectOneLineError(
      await kiln('schema', 'edit', 'gems', '--file', edit, '--if-match', '"0"'),
      1,
      /changed \(etag/,
    );

    // The next ETL run enforces the limit (rows above 980 are quarantined) and is a new version.
    const second = await kiln('etl', '--dataset', 'gems', '--json');
    expect(second.code, second.stderr).toBe(0);
    const secondRun = JSON.parse(second.stdout) as EtlJson;
    expect(secondRun.version).not.toBe(firstRun.version);
    expect(secondRun.read).toBe(secondRun.accepted + secondRun.quarantined);
    expect(secondRun.quarantined).toBeGreaterThan(0);
    expectOneLineError(await kiln('schema', 'show', 'nothing'), 1, /dataset nothing has no schema contract/);
  });
});

describe('kiln ingest / etl with bad input', () => {
  it('refuses unreadable files at ingest with one line naming the file', async () => {
    const { kiln, file } = await setup();
    const full = gzipSync(csv(goodRows(5000)));
    expectOneLineError(
      await kiln('ingest', await file('cut.csv.gz', full.subarray(0, full.length - 64)), '--dataset', 'g'),
      2,
      /cut\.csv\.gz is a truncated or corrupt gzip/,
    );
    expectOneLineError(
      await kiln('ingest', await file('dup.csv', 'a,b,a\n1,2,3\n'), '--dataset', 'g'),
      2,
      /dup\.csv has duplicate column names "a"/,
    );
    expectOneLineError(
      await kiln('ingest', await file('blank.csv', '\n\n  \n'), '--dataset', 'g'),
      2,
      /blank\.csv holds only whitespace/,
    );
    expectOneLineError(await kiln('etl', '--dataset', 'g'), 1, /dataset g has no raw data/);
  });

  it('counts every row of ragged, mistyped and badly encoded input, and fails loudly without touching the last version', async () => {
    const { dir, kiln, file } = await setup();
    // Only a header: no contract can be inferred, so the run fails with that reason.
    await kiln('ingest', await file('header.csv', 'price,cut,carat\n'), '--dataset', 'gems');
    expectOneLineError(await kiln('etl', '--dataset', 'gems'), 1, /no schema contract could be inferred/);

    await kiln('ingest', await file('gems.csv', csv(goodRows(400))), '--dataset', 'gems');
    const clean = JSON.parse((await kiln('etl', '--dataset', 'gems', '--json')).stdout) as EtlJson;
    expect(clean).toMatchObject({ read: 400, accepted: 400, quarantined: 0 });

    const messy = Buffer.from(
      csv([
        ...goodRows(96, 7),
        '500,Good,0.5,extra', // too many columns
        '500,Good', // too few
        'abc,Good,0.5', // wrong type
        '510,Go\xffod,0.5', // invalid UTF-8 (latin1 byte)
      ]),
      'latin1',
    );
    await kiln('ingest', await file('messy.csv', messy), '--dataset', 'gems');
    const run = await kiln('etl', '--dataset', 'gems', '--json');
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ read: 500, accepted: 496, quarantined: 4, created: true });

    // A Parquet file of another schema: every row quarantined, above the threshold, so the run fails.
    const other = join(dir, 'other.parquet');
    await withDuckDB((duck) =>
      duck.run(
        `COPY (SELECT i AS id, i * 2 AS score FROM range(300) t(i)) TO ${lit(other)} (FORMAT parquet)`,
      ),
    );
    await kiln('ingest', other, '--dataset', 'gems');
    expectOneLineError(
      await kiln('etl', '--dataset', 'gems'),
      1,
      /PolicyError: dataset gems: 304 of 800 rows \(38\.00 %\) were quarantined/,
    );
    const home = join(dir, 'home');
    const latest = JSON.parse(await readFile(join(home, 'lake', 'curated', 'gems', 'latest.json'), 'utf8'));
    expect(latest.version).toBe((JSON.parse(run.stdout) as EtlJson).version);
  });
});
