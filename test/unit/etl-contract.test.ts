import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { contractProblems, type SchemaContract } from '../../lib/core/schema.ts';
import { inferContract } from '../../lib/etl/contract.ts';
import { withDuckDB } from '../../lib/etl/duck.ts';
import { datasetVersion } from '../../lib/etl/finalize.ts';
import { openSource } from '../../lib/etl/source.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-etl-contract-'));
});

async function infer(name: string, text: string, format: 'csv' | 'jsonl' = 'csv') {
  const path = join(dir, name);
  await writeFile(path, text);
  return withDuckDB(async (duck) => {
    const source = await openSource(duck, path, { format, compression: 'none' }, name);
    return inferContract(duck, source, 'ds', name);
  });
}

function csv(header: string, rows: string[]): string {
  return `${header}\n${rows.join('\n')}\n`;
}

describe('inferContract', () => {
  it('types a column by what ≥ 98 % of its values parse as, tolerating the rest as future quarantine', async () => {
    const values = Array.from({ length: 100 }, (_, i) => (i === 50 ? 'oops' : String(i * 1.5)));
    const contract = await infer('mostly.csv', csv('v', values));
    expect(contract?.columns[0]).toMatchObject({
      name: 'v',
      type: 'number',
      nullable: false,
      min: 0,
      max: 148.5,
    });
    const tooMany = Array.from({ length: 100 }, (_, i) => (i % 10 === 0 ? 'oops' : String(i)));
    expect((await infer('mixed.csv', csv('v', tooMany)))?.columns[0]?.type).toBe('string');
  });

  it('calls a column integer only when every number in it is integral ("3.0" counts, "3.5" does not)', async () => {
    const ints = await infer(
      'ints.csv',
      csv(
        'a,b',
        Array.from({ length: 20 }, (_, i) => `${i}.0,${i + 0.5}`),
      ),
    );
    expect(ints?.columns.map((c) => c.type)).toEqual(['integer', 'number']);
  });

  it('reads NA-style tokens as missing in typed columns, making them nullable', async () => {
    const rows = Array.from({ length: 20 }, (_, i) => (i % 5 === 0 ? 'NA,x' : `${i},x`));
    const contract = await infer('na.csv', csv('n,s', rows));
    expect(contract?.columns[0]).toMatchObject({ type: 'integer', nullable: true });
    expect(contract?.columns[1]).toMatchObject({ type: 'string', nullable: false });
  });

  it('infers booleans and timestamps', async () => {
    const rows = Array.from(
      { length: 20 },
      (_, i) => `${i % 2 === 0},2024-02-${String(1 + i).padStart(2, '0')} 12:00:00`,
    );
    expect((await infer('bt.csv', csv('flag,at', rows)))?.columns.map((c) => c.type)).toEqual([
      'boolean',
      'timestamp',
    ]);
  });

  it('gives low-cardinality strings a closed category set, but not identifiers', async () => {
    const rows = Array.from({ length: 60 }, (_, i) => `${['red', 'green', 'blue'][i % 3]},id-${i}`);
    const contract = await infer('cats.csv', csv('colour,id', rows));
    expect(contract?.columns[0]?.categories).toEqual(['blue', 'green', 'red']);
    expect(contract?.columns[1]?.categories).toBeUndefined();
  });

  it('infers from JSON Lines keys in order of appearance, and returns undefined without rows', async () => {
    const rows = Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: i, name: `n${i}`, ok: i > 3 }));
    const contract = await infer('j.jsonl', `${rows.join('\n')}\n`, 'jsonl');
    expect(contract?.columns.map((c) => [c.name, c.type])).toEqual([
      ['id', 'integer'],
      ['name', 'string'],
      ['ok', 'boolean'],
    ]);
    expect(await infer('header.csv', 'a,b\n')).toBeUndefined();
  });
});

describe('contract rules', () => {
  const base: SchemaContract = {
    kind: 'kiln.schema',
    version: 1,
    dataset: 'ds',
    columns: [{ name: 'a', type: 'number', nullable: false }],
    createdAt: '2024-01-01T00:00:00Z',
  };

  it('accepts a coherent contract and names every incoherence', () => {
    expect(contractProblems(base)).toEqual([]);
    const bad: SchemaContract = {
      ...base,
      columns: [
        { name: 'a', type: 'number', nullable: false, hardMin: 5, hardMax: 1 },
        { name: 'a', type: 'string', nullable: true, hardMin: 0 },
        { name: 'c', type: 'integer', nullable: true, categories: ['x', 'x'] },
      ],
    };
    expect(contractProblems(bad)).toEqual([
      'column a: hardMin 5 is greater than hardMax 1',
      'column "a" appears more than once',
      'column a: hardMin/hardMax need a number or integer column, not string',
      'column c: categories need a string column, not integer',
      'column c: categories contain duplicates',
    ]);
  });

  it('derives the dataset version from content: order of sources does not matter, anything else does', () => {
    const split = { seed: 42, testFraction: 0.2 };
    const v = datasetVersion(['b'.repeat(64), 'a'.repeat(64)], 'f'.repeat(64), split);
    expect(v).toMatch(/^[0-9a-f]{16}$/);
    expect(datasetVersion(['a'.repeat(64), 'b'.repeat(64)], 'f'.repeat(64), split)).toBe(v);
    expect(datasetVersion(['a'.repeat(64)], 'f'.repeat(64), split)).not.toBe(v);
    expect(datasetVersion(['a'.repeat(64), 'b'.repeat(64)], 'e'.repeat(64), split)).not.toBe(v);
    expect(
      datasetVersion(['a'.repeat(64), 'b'.repeat(64)], 'f'.repeat(64), { seed: 1, testFraction: 0.2 }),
    ).not.toBe(v);
  });
});
