import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { IntegrityError, ValidationError } from '../core/errors.ts';
import { FileSystemStore } from '../store/fs-store.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { S3Store, s3ClientFromEnv } from '../store/s3-store.ts';

/**
 * Where the records of an uncompressed text file (CSV, JSON Lines) start, recorded once at ingest so that the
 * plan can cut a big file into byte-range shards without reading it. `pieces` partition the data region
 * `[dataStart, bytes)` at record boundaries (piece i ends where piece i+1 starts, the last at end of file);
 * each carries the number of records before it (DuckDB numbers the lines of its rejects by record, so a
 * range shard can report lines of the whole object) and its sha256 (so that a shard that reads only its
 * range still proves it read the planned bytes).
 */
export const TextLayoutSchema = z.strictObject({
  /** Offset of the first data record (after skipped lines and the header). */
  dataStart: z.number().int().nonnegative(),
  /** Records (newlines outside quotes) before `dataStart`. */
  headerLines: z.number().int().nonnegative(),
  /** sha256 of the header region `[0, dataStart)`, which every range shard prepends to its bytes. */
  headerSha256: z.string().regex(/^[0-9a-f]{64}$/),
  pieces: z.array(
    z.strictObject({
      offset: z.number().int().nonnegative(),
      line: z.number().int().nonnegative(),
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
    }),
  ),
});
export type TextLayout = z.infer<typeof TextLayoutSchema>;

/** A byte range of a raw object, at record boundaries, processed by one shard. */
export const ByteRangeSchema = z.strictObject({
  start: z.number().int().nonnegative(),
  end: z.number().int().positive(),
  /** This range's position among the object's ranges (0-based) and their number. */
  part: z.number().int().nonnegative(),
  parts: z.number().int().positive(),
});
export type ByteRange = z.infer<typeof ByteRangeSchema>;

/** Smallest piece recorded: below it, splitting a file costs more than it saves. */
export const MIN_PIECE_BYTES = 64 * 1024;
/** At most this many pieces per file, so that index entries stay small (≈ 100 bytes per piece). */
export const MAX_PIECES = 1024;

/** How a text file separates records, in bytes. */
export interface RecordSyntax {
  /** The byte that ends a record: `\n` (also for `\r\n`) or `\r`. */
  newline: number;
  /** The quote byte, or -1 when fields are never quoted (JSON Lines: strings cannot hold raw newlines). */
  quote: number;
  /** An escape byte inside quotes other than a doubled quote, or -1. */
  escape: number;
  /** Records before the data: skipped lines plus the header. */
  headerRecords: number;
}

/** The record syntax of a CSV dialect (DuckDB's sniffer spells newlines as `\n`, `\r\n`, `\r`). */
export function csvSyntax(dialect: {
  newline: string;
  quote: string;
  escape: string;
  skip: number;
  header: boolean;
}): RecordSyntax {
  const byte = (value: string) => (value.length === 1 ? value.charCodeAt(0) : -1);
  const quote = byte(dialect.quote);
  const escapeByte = byte(dialect.escape);
  return {
    newline: dialect.newline === '\\r' ? 0x0d : 0x0a,
    quote,
    escape: escapeByte === quote ? -1 : escapeByte,
    headerRecords: dialect.skip + (dialect.header ? 1 : 0),
  };
}

/** JSON Lines: one record per line, no quoting that can hide a newline. */
export const JSON_LINES_SYNTAX: RecordSyntax = { newline: 0x0a, quote: -1, escape: -1, headerRecords: 0 };

/**
 * Hashes a file (sha256) and, in the same single streaming pass, finds record boundaries about every
 * `pieceBytes` bytes, tracking quotes so that a newline inside a quoted field is never taken for one.
 * Chunks without quote or escape bytes take a fast path (native `indexOf` over newlines), so unquoted files
 * cost little more than the hash itself.
 */
export async function scanText(
  path: string,
  bytes: number,
  syntax: RecordSyntax,
): Promise<{ sha256: string; layout: TextLayout }> {
  const pieceBytes = Math.max(MIN_PIECE_BYTES, Math.ceil(bytes / MAX_PIECES));
  const whole = createHash('sha256');
  const pieces: { offset: number; line: number; sha256: string }[] = [];
  let piece: Hash | undefined;
  let dataStart: number | undefined;
  let headerLines = 0;
  let recordsToSkip = syntax.headerRecords;
  let nextTarget = Number.POSITIVE_INFINITY;
  // Records ended so far: newlines outside quotes.
  let records = 0;
  let inQuote = false;
  let skipNext = false;
  let fed = 0;

  const startData = (offset: number) => {
    dataStart = offset;
    headerLines = records;
    fed = offset;
    piece = createHash('sha256');
    pieces.push({ offset, line: records, sha256: '' });
    nextTarget = offset + pieceBytes;
  };
  if (recordsToSkip === 0) startData(0);

  let buf: Buffer = Buffer.alloc(0);
  let bufPos = 0;
  const feed = (until: number) => {
    const from = Math.max(fed, bufPos);
    if (piece && until > from) piece.update(buf.subarray(from - bufPos, until - bufPos));
    fed = Math.max(fed, until);
  };
  // Called for the newline that ends a record; `end` is the offset just past it.
  const recordEnd = (end: number) => {
    records += 1;
    if (dataStart === undefined) {
      recordsToSkip -= 1;
      if (recordsToSkip === 0) startData(end);
      return;
    }
    if (end >= nextTarget && end < bytes) {
      feed(end);
      const last = pieces[pieces.length - 1];
      if (last && piece) last.sha256 = piece.digest('hex');
      piece = createHash('sha256');
      pieces.push({ offset: end, line: records, sha256: '' });
      nextTarget = end + pieceBytes;
    }
  };

  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    buf = chunk as Buffer;
    whole.update(buf);
    const n = buf.length;
    const quoted =
      syntax.quote >= 0 &&
      (inQuote ||
        skipNext ||
        buf.indexOf(syntax.quote) !== -1 ||
        (syntax.escape >= 0 && buf.indexOf(syntax.escape) !== -1));
    if (!quoted) {
      // No quote can open or close here: every newline ends a record.
      for (let j = buf.indexOf(syntax.newline); j !== -1; j = buf.indexOf(syntax.newline, j + 1)) {
        if (dataStart === undefined || bufPos + j + 1 >= nextTarget) recordEnd(bufPos + j + 1);
        else records += 1;
      }
    } else {
      const { newline, quote, escape: escapeByte } = syntax;
      for (let j = 0; j < n; j++) {
        const c = buf[j];
        if (skipNext) {
          skipNext = false;
          continue;
        }
        if (c === newline) {
          if (inQuote) continue;
          if (dataStart === undefined || bufPos + j + 1 >= nextTarget) recordEnd(bufPos + j + 1);
          else records += 1;
        } else if (c === quote) {
          inQuote = !inQuote;
        } else if (inQuote && c === escapeByte) {
          skipNext = true;
        }
      }
    }
    feed(bufPos + n);
    bufPos += n;
  }
  const sha256 = whole.digest('hex');
  if (dataStart === undefined) {
    // Only header records (or not even those): no data region.
    const headerSha256 = await hashRange(path, 0, bytes);
    return { sha256, layout: { dataStart: bytes, headerLines: records, headerSha256, pieces: [] } };
  }
  const last = pieces[pieces.length - 1];
  if (last && piece) last.sha256 = piece.digest('hex');
  // An empty data region (header-only file) has no piece worth planning.
  const kept = pieces.filter((p) => p.offset < bytes);
  const headerSha256 = await hashRange(path, 0, dataStart);
  return { sha256, layout: { dataStart, headerLines, headerSha256, pieces: kept } };
}

async function hashRange(path: string, start: number, end: number): Promise<string> {
  const hash = createHash('sha256');
  if (end > start)
    for await (const chunk of createReadStream(path, { start, end: end - 1, highWaterMark: 1024 * 1024 }))
      hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Cuts a file's data region into ranges of about `shardBytes` (whole pieces each). A file that fits in one
 * shard, or has fewer than two pieces, yields no ranges: it is processed whole.
 */
export function planRanges(layout: TextLayout | undefined, bytes: number, shardBytes: number): ByteRange[] {
  if (!layout || layout.pieces.length < 2 || bytes - layout.dataStart <= shardBytes) return [];
  const starts: number[] = [];
  let current: number | undefined;
  for (const piece of layout.pieces) {
    if (current === undefined || piece.offset - current >= shardBytes) {
      starts.push(piece.offset);
      current = piece.offset;
    }
  }
  if (starts.length < 2) return [];
  return starts.map((start, part) => ({
    start,
    end: starts[part + 1] ?? bytes,
    part,
    parts: starts.length,
  }));
}

/**
 * Writes a self-contained file for one range: the object's header region (skipped lines and header) followed
 * by the range's bytes, streamed from the store (a range request on S3, the file itself on disk). Every piece
 * of the range is hashed on the way and compared to the layout: a changed object fails with IntegrityError
 * before a single row is counted. Returns the number of records between the header region and the range, to
 * turn a line number DuckDB reports in the written file into one of the original object.
 */
export async function materializeRange(
  store: ObjectStore,
  key: string,
  bytes: number,
  layout: TextLayout,
  range: ByteRange,
  dest: string,
): Promise<{ lineOffset: number }> {
  const first = layout.pieces.findIndex((p) => p.offset === range.start);
  const after =
    range.end === bytes ? layout.pieces.length : layout.pieces.findIndex((p) => p.offset === range.end);
  const firstPiece = layout.pieces[first];
  if (!firstPiece || after <= first) {
    throw new ValidationError(
      `range [${range.start}, ${range.end}) of ${key} does not fall on the record boundaries recorded at ingest`,
    );
  }
  const reader = await RangeReader.open(store, key, dest);
  const out = createWriteStream(dest);
  const write = async (chunk: Buffer) => {
    if (!out.write(chunk)) await new Promise<void>((resolve) => out.once('drain', resolve));
  };
  try {
    const header = createHash('sha256');
    for await (const chunk of reader.read(0, layout.dataStart)) {
      header.update(chunk);
      await write(chunk);
    }
    if (header.digest('hex') !== layout.headerSha256) {
      throw new IntegrityError(`raw object ${key} changed since it was planned: its header region differs`);
    }
    let index = first;
    let hash = createHash('sha256');
    let pieceEnd = layout.pieces[index + 1]?.offset ?? bytes;
    let position = range.start;
    const close = () => {
      const expected = layout.pieces[index]?.sha256;
      const actual = hash.digest('hex');
      if (actual !== expected) {
        throw new IntegrityError(
          `raw object ${key} changed since it was planned: bytes [${layout.pieces[index]?.offset}, ${pieceEnd}) hash to ${actual}, ingest recorded ${expected}`,
        );
      }
      index += 1;
      hash = createHash('sha256');
      pieceEnd = layout.pieces[index + 1]?.offset ?? bytes;
    };
    for await (const chunk of reader.read(range.start, range.end)) {
      let offset = 0;
      while (offset < chunk.length) {
        const take = Math.min(chunk.length - offset, pieceEnd - position);
        hash.update(chunk.subarray(offset, offset + take));
        offset += take;
        position += take;
        if (position === pieceEnd) close();
      }
      await write(chunk);
    }
    if (position !== range.end || index !== after) {
      throw new IntegrityError(`raw object ${key} ended at byte ${position}, the plan expected ${range.end}`);
    }
  } finally {
    out.end();
    await finished(out).catch(() => undefined);
    await reader.close();
  }
  return { lineOffset: firstPiece.line - layout.headerLines };
}

let s3Client: S3Client | undefined;

/** Streams byte ranges of one stored object without downloading the rest (where the store allows it). */
class RangeReader {
  private constructor(
    readonly read: (start: number, end: number) => AsyncIterable<Buffer>,
    readonly close: () => Promise<void>,
  ) {}

  static async open(store: ObjectStore, key: string, scratch: string): Promise<RangeReader> {
    const fromFile = (path: string) => (start: number, end: number) =>
      end > start
        ? (createReadStream(path, {
            start,
            end: end - 1,
            highWaterMark: 1024 * 1024,
          }) as AsyncIterable<Buffer>)
        : empty();
    if (store instanceof FileSystemStore) return new RangeReader(fromFile(store.pathOf(key)), async () => {});
    if (store instanceof S3Store) {
      // The port has no range read; the adapter's own client configuration (KILN_S3_ENDPOINT…) is reused.
      s3Client ??= s3ClientFromEnv();
      const client = s3Client;
      return new RangeReader(
        (start, end) => (end > start ? s3Range(client, store, key, start, end) : empty()),
        async () => {},
      );
    }
    // Any other store: one download, then ranges of the local copy.
    const whole = `${scratch}.whole`;
    await store.getToFile(key, whole);
    return new RangeReader(fromFile(whole), () => rm(whole, { force: true }));
  }
}

async function* s3Range(
  client: S3Client,
  store: S3Store,
  key: string,
  start: number,
  end: number,
): AsyncIterable<Buffer> {
  const response = await client.send(
    new GetObjectCommand({
      Bucket: store.bucket,
      Key: `${store.prefix}${key}`,
      Range: `bytes=${start}-${end - 1}`,
    }),
  );
  if (!(response.Body instanceof Readable))
    throw new IntegrityError(`range of ${key} came back without a body`);
  for await (const chunk of response.Body) yield chunk as Buffer;
}

async function* empty(): AsyncIterable<Buffer> {}
