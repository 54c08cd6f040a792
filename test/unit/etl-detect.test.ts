import { createHash } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../lib/core/errors.ts';
import { inspectFile, sniffFormat } from '../../lib/etl/detect.ts';
import { lit, withDuckDB } from '../../lib/etl/duck.ts';
import { makeIngestId } from '../../lib/etl/ingest.ts';
import { parseRawKey, shardName } from '../../lib/etl/raw.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-etl-detect-'));
});

async function file(name: string, body: string | Buffer): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, body);
  return path;
}

describe('inspectFile', () => {
  it('detects CSV, JSON Lines and Parquet from content, whatever the extension', async () => {
    expect(await inspectFile(await file('a.txt', 'a;b\n1;2\n'))).toMatchObject({
      format: 'csv',
      compression: 'none',
    });
    expect(await inspectFile(await file('b.data', '{"a":1}\n{"a":2}\n'))).toMatchObject({ format: 'jsonl' });
    const parquet = join(dir, 'c.bin');
    await withDuckDB((duck) => duck.run(`COPY (SELECT 1 AS a) TO ${lit(parquet)} (FORMAT parquet)`));
    expect(await inspectFile(parquet)).toMatchObject({ format: 'parquet', compression: 'none' });
  });

  it('sees through gzip and through a UTF-8 byte order mark', async () => {
    const gz = await file('d.csv.gz', gzipSync('\uFEFFa,b\n1,2\n'));
    expect(await inspectFile(gz)).toMatchObject({ format: 'csv', compression: 'gzip' });
    const jgz = await file('e', gzipSync('{"a":1}\n'));
    expect(await inspectFile(jgz)).toMatchObject({ format: 'jsonl', compression: 'gzip' });
  });

  it('hashes the stored bytes with sha256', async () => {
    const path = await file('f.csv', 'a\n1\n');
    const facts = await inspectFile(path);
    expect(facts.sha256).toBe(createHash('sha256').update('a\n1\n').digest('hex'));
    expect(facts.bytes).toBe(4);
  });

  it.each([
    ['empty.csv', '', /is empty/],
    ['blank.csv', '  \n\n ', /only whitespace/],
    ['array.json', '[{"a":1}]', /JSON array document/],
    ['binary.bin', Buffer.from([0x00, 0x01, 0x02, 0x03, 0x04]), /binary and not a known format/],
    ['utf16.csv', Buffer.from([0xff, 0xfe, 0x61, 0x00]), /UTF-16/],
    ['fake.parquet', 'a,b\n1,2\n', /no Parquet magic/],
    ['fake.jsonl', 'a,b\n1,2\n', /not a JSON object/],
    ['cut.parquet', Buffer.concat([Buffer.from('PAR1'), Buffer.alloc(20)]), /truncated or corrupt/],
  ])('rejects %s with a ValidationError naming the file', async (name, body, message) => {
    const path = await file(name, body);
    const error = await inspectFile(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toContain(name);
  });

  it('rejects a truncated gzip (DuckDB alone would read it silently up to the cut)', async () => {
    const rows = Array.from({ length: 20000 }, (_, i) => `${i},${i * 2},row-${i}`).join('\n');
    const full = gzipSync(`a,b,c\n${rows}\n`);
    const path = await file('cut.csv.gz', full.subarray(0, Math.floor(full.length / 2)));
    await expect(inspectFile(path)).rejects.toThrow(/truncated or corrupt gzip/);
  });

  it('sniffFormat only looks at the head', async () => {
    expect(await sniffFormat(await file('g.csv.gz', gzipSync('a,b\n1,2\n')))).toEqual({
      format: 'csv',
      compression: 'gzip',
    });
    expect(await sniffFormat(await file('h.jsonl', '{"x":true}\n'))).toEqual({
      format: 'jsonl',
      compression: 'none',
    });
  });
});

describe('keys and ids', () => {
  it('makes sortable ingest ids that differ with content', () => {
    const a = makeIngestId(new Date('2024-05-01T10:00:00.123Z'), ['aa']);
    const b = makeIngestId(new Date('2024-05-01T10:00:00.123Z'), ['bb']);
    expect(a).toMatch(/^20240501T100000123Z-[0-9a-f]{8}$/);
    expect(a).not.toBe(b);
    expect(makeIngestId(new Date('2024-05-01T10:00:01Z'), ['aa']) > a).toBe(true);
  });

  it('parses raw keys and refuses anything else', () => {
    expect(parseRawKey('raw/iris/20240101T000000000Z-abcd0123/x.csv')).toEqual({
      dataset: 'iris',
      ingestId: '20240101T000000000Z-abcd0123',
      file: 'x.csv',
    });
    expect(() => parseRawKey('curated/iris/v/x.csv')).toThrow(ValidationError);
    expect(() => parseRawKey('raw/Bad Name/i/x.csv')).toThrow(ValidationError);
    expect(() => parseRawKey('raw/iris/only-two')).toThrow(ValidationError);
    expect(shardName('raw/iris/i1/x.csv')).not.toBe(shardName('raw/iris/i2/x.csv'));
  });
});
