import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConflictError, IntegrityError, NotFoundError } from '../../lib/core/errors.ts';
import {
  csvSyntax,
  JSON_LINES_SYNTAX,
  materializeRange,
  planRanges,
  type RecordSyntax,
  scanText,
} from '../../lib/etl/chunks.ts';
import { lit, withDuckDB } from '../../lib/etl/duck.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import type { ObjectInfo, ObjectStore, PutOptions } from '../../lib/store/object-store.ts';
import { tempDir } from '../support/temp.ts';

const CSV: RecordSyntax = csvSyntax({ newline: '\\n', quote: '"', escape: '"', skip: 0, header: true });

/** A CSV whose notes are quoted, often spanning lines and holding doubled quotes; also returns row starts. */
function quotedCsv(rows: number): { text: string; starts: Set<number> } {
  const header = 'id,note,value\n';
  let text = header;
  const starts = new Set<number>();
  for (let i = 0; i < rows; i++) {
    starts.add(Buffer.byteLength(text));
    const note =
      i % 3 === 0 ? `"line one\nline ""two"" of ${i}\n"` : i % 3 === 1 ? `"a, b ${i}"` : `plain${i}`;
    text += `${i},${note},${(i * 0.5).toFixed(1)}\n`;
  }
  return { text, starts };
}

async function rowsOf(path: string, header = true): Promise<Record<string, unknown>[]> {
  return withDuckDB((duck) =>
    duck.all(
      `SELECT * FROM read_csv(${lit(path)}, header=${header}, auto_detect=false, delim=',', quote='"', escape='"',
         columns={'id': 'VARCHAR', 'note': 'VARCHAR', 'value': 'VARCHAR'})`,
    ),
  );
}

/** An ObjectStore without a local path or range reads: exercises the download fallback. */
class MemoryStore implements ObjectStore {
  readonly url = 'memory://test';
  readonly objects = new Map<string, Buffer>();
  async get(key: string) {
    const body = this.objects.get(key);
    if (!body) throw new NotFoundError(`object ${key} does not exist`);
    return body;
  }
  async head(key: string): Promise<ObjectInfo | undefined> {
    const body = this.objects.get(key);
    return body ? { key, size: body.length, etag: createHash('md5').update(body).digest('hex') } : undefined;
  }
  async put(key: string, body: Buffer | string, options: PutOptions = {}) {
    if (options.ifNoneMatch === '*' && this.objects.has(key)) throw new ConflictError(`${key} exists`);
    this.objects.set(key, Buffer.from(body));
    return (await this.head(key)) as ObjectInfo;
  }
  async putFile(key: string, path: string, options: PutOptions = {}) {
    return this.put(key, await readFile(path), options);
  }
  async getToFile(key: string, path: string) {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, await this.get(key));
  }
  async list(prefix: string) {
    const keys = [...this.objects.keys()].filter((key) => key.startsWith(prefix)).sort();
    return Promise.all(keys.map(async (key) => (await this.head(key)) as ObjectInfo));
  }
  async delete(key: string) {
    this.objects.delete(key);
  }
}

describe('scanText', () => {
  it('hashes the file and cuts it only where a record starts, never inside a quoted field', async () => {
    const { text, starts } = quotedCsv(12_000);
    const path = join(await tempDir(), 'q.csv');
    await writeFile(path, text);
    const bytes = Buffer.byteLength(text);
    const { sha256, layout } = await scanText(path, bytes, CSV);
    expect(sha256).toBe(createHash('sha256').update(text).digest('hex'));
    expect(layout.dataStart).toBe(Buffer.byteLength('id,note,value\n'));
    expect(layout.headerLines).toBe(1);
    expect(layout.pieces.length).toBeGreaterThan(4);
    const body = Buffer.from(text);
    layout.pieces.forEach((piece, i) => {
      expect(starts.has(piece.offset)).toBe(true);
      // Records before the piece (newlines inside quotes do not count), as DuckDB numbers lines.
      expect(piece.line).toBe([...starts].filter((start) => start < piece.offset).length + 1);
      const end = layout.pieces[i + 1]?.offset ?? bytes;
      expect(piece.sha256).toBe(createHash('sha256').update(body.subarray(piece.offset, end)).digest('hex'));
    });
  });

  it('honours an escape character other than the quote, and JSON Lines needs no quote tracking', async () => {
    const dir = await tempDir();
    const rows = Array.from({ length: 6000 }, (_, i) => `${i},"say \\"hi\\"\n${i}",x\n`);
    const text = `a,b,c\n${rows.join('')}`;
    const path = join(dir, 'esc.csv');
    await writeFile(path, text);
    const syntax = csvSyntax({ newline: '\\n', quote: '"', escape: '\\', skip: 0, header: true });
    const { layout } = await scanText(path, Buffer.byteLength(text), syntax);
    expect(layout.pieces.length).toBeGreaterThan(1);
    for (const piece of layout.pieces) expect(text.slice(piece.offset)).toMatch(/^\d+,"say/);

    const jsonl = Array.from({ length: 5000 }, (_, i) => JSON.stringify({ i, s: `"quoted" ${i}` })).join(
      '\n',
    );
    const jpath = join(dir, 'j.jsonl');
    await writeFile(jpath, jsonl);
    const scanned = await scanText(jpath, Buffer.byteLength(jsonl), JSON_LINES_SYNTAX);
    expect(scanned.layout.dataStart).toBe(0);
    expect(scanned.layout.pieces.length).toBeGreaterThan(1);
    for (const piece of scanned.layout.pieces) expect(jsonl.slice(piece.offset)).toMatch(/^\{"i":/);
  });

  it('gives a header-only file an empty data region', async () => {
    const path = join(await tempDir(), 'h.csv');
    await writeFile(path, 'a,b\n');
    expect((await scanText(path, 4, CSV)).layout).toMatchObject({ dataStart: 4, pieces: [] });
  });
});

describe('planRanges and materializeRange', () => {
  it('splits into contiguous ranges whose parts, each with the header, hold exactly the rows of the whole', async () => {
    const dir = await tempDir();
    const { text } = quotedCsv(12_000);
    const bytes = Buffer.byteLength(text);
    const store = new FileSystemStore(join(dir, 'lake'));
    const key = 'raw/d/i-1/q.csv';
    await store.put(key, text);
    const { layout } = await scanText(store.pathOf(key), bytes, CSV);

    expect(planRanges(layout, bytes, bytes)).toEqual([]);
    const ranges = planRanges(layout, bytes, 100_000);
    expect(ranges.length).toBeGreaterThan(2);
    expect(ranges[0]?.start).toBe(layout.dataStart);
    expect(ranges.at(-1)?.end).toBe(bytes);
    ranges.forEach((range, i) => {
      expect(range).toMatchObject({ part: i, parts: ranges.length });
      if (i > 0) expect(range.start).toBe(ranges[i - 1]?.end);
    });

    const whole = await rowsOf(store.pathOf(key));
    const parts: Record<string, unknown>[] = [];
    for (const range of ranges) {
      const dest = join(dir, `part-${range.part}.csv`);
      const { lineOffset } = await materializeRange(store, key, bytes, layout, range, dest);
      // Rows before the range: its first row, line 2 of the part file (after the header), is this row + 2.
      const rowsBefore = whole.findIndex((row) => text.startsWith(`${row.id},`, range.start));
      expect(lineOffset).toBe(rowsBefore);
      parts.push(...(await rowsOf(dest)));
    }
    expect(parts).toEqual(whole);
    expect(parts).toHaveLength(12_000);
  });

  it('reads ranges from a store without local paths, and refuses bytes that changed since ingest', async () => {
    const dir = await tempDir();
    const { text } = quotedCsv(8000);
    const bytes = Buffer.byteLength(text);
    const local = join(dir, 'q.csv');
    await writeFile(local, text);
    const { layout } = await scanText(local, bytes, CSV);
    const [first, second] = planRanges(layout, bytes, 80_000);
    if (!first || !second) throw new Error('expected at least two ranges');

    const memory = new MemoryStore();
    await memory.put('raw/d/i-1/q.csv', text);
    await materializeRange(memory, 'raw/d/i-1/q.csv', bytes, layout, second, join(dir, 'm.csv'));
    expect((await rowsOf(join(dir, 'm.csv'))).length).toBeGreaterThan(0);

    // Same size, one byte changed inside the second range.
    const tampered = Buffer.from(text);
    const at = second.start + 10;
    tampered[at] = tampered[at] === 0x31 ? 0x32 : 0x31;
    await memory.put('raw/d/i-1/q.csv', tampered);
    await expect(
      materializeRange(memory, 'raw/d/i-1/q.csv', bytes, layout, second, join(dir, 't.csv')),
    ).rejects.toBeInstanceOf(IntegrityError);
    await expect(
      materializeRange(
        memory,
        'raw/d/i-1/q.csv',
        bytes,
        layout,
        { ...second, start: second.start + 1 },
        join(dir, 'x.csv'),
      ),
    ).rejects.toThrow(/record boundaries/);
  });
});
