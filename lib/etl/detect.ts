import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { ValidationError } from '../core/errors.ts';

/** Formats the ETL reads. */
export type RawFormat = 'csv' | 'jsonl' | 'parquet';
/** Compressions the ETL reads. */
export type Compression = 'gzip' | 'none';

/** What `inspectFile` learnt about a file. */
export interface FileFacts {
  format: RawFormat;
  compression: Compression;
  bytes: number;
  sha256: string;
}

const SNIFF_BYTES = 64 * 1024;
const PARQUET_MAGIC = Buffer.from('PAR1');

/**
 * Detects format and compression from content (extension only as a cross-check), hashes the file and,
 * for gzip, decompresses it once end to end: DuckDB reads a truncated gzip silently up to the cut, so a
 * broken archive must be caught here, before any row is counted. Throws ValidationError naming `label`.
 */
export async function inspectFile(path: string, label: string = path): Promise<FileFacts> {
  const detected = await detectFile(path, label);
  return { ...detected, sha256: detected.sha256 ?? (await sha256File(path)) };
}

/**
 * `inspectFile` without the hash of uncompressed text, which the caller computes in its own pass over the
 * bytes (see `scanText`); gzip is still inflated end to end (and hashed on the way) to catch truncation.
 */
export async function detectFile(
  path: string,
  label: string = path,
): Promise<Omit<FileFacts, 'sha256'> & { sha256?: string }> {
  const bytes = (await stat(path)).size;
  if (bytes === 0) throw new ValidationError(`file ${label} is empty (0 bytes): nothing to ingest`);
  const head = await readRange(path, 0, Math.min(bytes, SNIFF_BYTES));
  const ext = extname(label.replace(/\.gz$/i, '')).toLowerCase();

  if (head.subarray(0, 4).equals(PARQUET_MAGIC)) {
    const tail = await readRange(path, Math.max(0, bytes - 4), 4);
    if (bytes < 12 || !tail.equals(PARQUET_MAGIC)) {
      throw new ValidationError(
        `file ${label} starts like Parquet but has no footer: it is truncated or corrupt`,
      );
    }
    return { format: 'parquet', compression: 'none', bytes };
  }

  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  let sha256: string | undefined;
  let sample: Buffer;
  if (gzip) {
    ({ sha256, sample } = await hashAndGunzip(path, label));
    if (sample.length === 0) throw new ValidationError(`file ${label} is an empty gzip: nothing to ingest`);
    if (sample.subarray(0, 4).equals(PARQUET_MAGIC)) {
      throw new ValidationError(`file ${label} is gzip-compressed Parquet: upload the .parquet file itself`);
    }
  } else {
    sample = head;
  }
  if (ext === '.parquet') {
    throw new ValidationError(`file ${label} is named .parquet but has no Parquet magic bytes (PAR1)`);
  }
  const format = sniffText(sample, label);
  if ((ext === '.jsonl' || ext === '.ndjson' || ext === '.json') && format !== 'jsonl') {
    throw new ValidationError(`file ${label} is named ${ext} but its first line is not a JSON object`);
  }
  return { format, compression: gzip ? 'gzip' : 'none', bytes, ...(sha256 ? { sha256 } : {}) };
}

/** Tells JSON Lines from CSV by the first non-blank line; refuses binary and UTF-16 content. */
function sniffText(sample: Buffer, label: string): RawFormat {
  if ((sample[0] === 0xff && sample[1] === 0xfe) || (sample[0] === 0xfe && sample[1] === 0xff)) {
    throw new ValidationError(`file ${label} is UTF-16 encoded: convert it to UTF-8`);
  }
  if (sample.includes(0)) {
    throw new ValidationError(
      `file ${label} is binary and not a known format: use CSV, JSON Lines or Parquet (optionally gzip)`,
    );
  }
  let text = sample.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const trimmed = text.trimStart();
  if (trimmed.length === 0)
    throw new ValidationError(`file ${label} holds only whitespace: nothing to ingest`);
  if (trimmed.startsWith('[')) {
    throw new ValidationError(`file ${label} is a JSON array document: use JSON Lines (one object per line)`);
  }
  if (trimmed.startsWith('{')) {
    const firstLine = trimmed.split('\n', 1)[0] ?? '';
    // A line cut by the sniff window cannot be parsed; its leading brace is evidence enough.
    if (firstLine.length === trimmed.length && sample.length >= SNIFF_BYTES) return 'jsonl';
    try {
      const parsed: unknown = JSON.parse(firstLine);
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) return 'jsonl';
    } catch {
      // Not JSON: fall through to CSV, whose reader reports what is wrong per line.
    }
  }
  return 'csv';
}

/** SHA-256 (hex) of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function readRange(path: string, position: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, position);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** Hashes the compressed bytes and inflates them fully (discarding all but a sample) in one read. */
async function hashAndGunzip(path: string, label: string): Promise<{ sha256: string; sample: Buffer }> {
  const hash = createHash('sha256');
  const chunks: Buffer[] = [];
  let sampled = 0;
  try {
    await pipeline(
      createReadStream(path),
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          yield chunk;
        }
      },
      createGunzip(),
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          if (sampled < SNIFF_BYTES) {
            chunks.push(chunk);
            sampled += chunk.length;
          }
          callback();
        },
      }),
    );
  } catch (error) {
    throw new ValidationError(`file ${label} is a truncated or corrupt gzip: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return { sha256: hash.digest('hex'), sample: Buffer.concat(chunks).subarray(0, SNIFF_BYTES) };
}

/**
 * Quick format detection from the first bytes only (no hash, no full gzip check), for reading files that
 * are not landings, e.g. batch-scoring input.
 */
export async function sniffFormat(
  path: string,
  label: string = path,
): Promise<{ format: RawFormat; compression: Compression }> {
  const bytes = (await stat(path)).size;
  if (bytes === 0) throw new ValidationError(`file ${label} is empty (0 bytes)`);
  const head = await readRange(path, 0, Math.min(bytes, SNIFF_BYTES));
  if (head.subarray(0, 4).equals(PARQUET_MAGIC)) return { format: 'parquet', compression: 'none' };
  if (head[0] === 0x1f && head[1] === 0x8b) {
    const chunks: Buffer[] = [];
    let total = 0;
    const gunzip = createReadStream(path).pipe(createGunzip());
    try {
      for await (const chunk of gunzip) {
        chunks.push(chunk as Buffer);
        total += (chunk as Buffer).length;
        if (total >= SNIFF_BYTES) break;
      }
    } catch (error) {
      if (total === 0) throw new ValidationError(`file ${label} is a corrupt gzip`, { cause: error });
    } finally {
      gunzip.destroy();
    }
    return { format: sniffText(Buffer.concat(chunks), label), compression: 'gzip' };
  }
  return { format: sniffText(head, label), compression: 'none' };
}
