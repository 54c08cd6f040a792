import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { ValidationError } from '../core/errors.ts';
import { FileSystemStore, sha256Etag } from '../store/fs-store.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import {
  type InspectedFile,
  inspectRawFile,
  localFingerprint,
  type RawObject,
  recordRawObject,
} from './raw.ts';

/** Result of `ingestFiles`: the landing's id and the raw objects written. */
export interface IngestResult {
  dataset: string;
  ingestId: string;
  objects: RawObject[];
}

/** Options of `ingestFiles`. */
export interface IngestOptions {
  /** Clock for the ingest id (tests pin it). @default now */
  now?: Date;
}

/**
 * Lands local files in the raw zone as one immutable landing `raw/<dataset>/<ingestId>/<basename>`.
 * Every file is inspected first (format from content, gzip integrity, CSV dialect and headers) so that a
 * bad file is refused with a ValidationError naming it before anything is written; copies are create-only.
 */
export async function ingestFiles(
  store: ObjectStore,
  dataset: string,
  filePaths: string[],
  options: IngestOptions = {},
): Promise<IngestResult> {
  assertName('dataset', dataset);
  if (filePaths.length === 0) throw new ValidationError('no files to ingest: pass at least one path');
  const names = new Map<string, string>();
  const inspected: { path: string; name: string; facts: InspectedFile }[] = [];
  for (const path of filePaths) {
    const info = await stat(path).catch((error: unknown) => {
      throw new ValidationError(`file ${path} cannot be read: ${(error as Error).message}`, { cause: error });
    });
    if (!info.isFile()) throw new ValidationError(`${path} is not a regular file`);
    const name = safeFileName(basename(path));
    const clash = names.get(name);
    if (clash) throw new ValidationError(`files ${clash} and ${path} would both land as ${name}: rename one`);
    names.set(name, path);
    inspected.push({ path, name, facts: await inspectRawFile(path, path) });
  }
  const ingestId = makeIngestId(
    options.now ?? new Date(),
    inspected.map((file) => file.facts.object.sha256),
  );
  const objects: RawObject[] = [];
  for (const file of inspected) {
    const key = lake.raw(dataset, ingestId, file.name);
    const written = await store.putFile(key, file.path, { ifNoneMatch: '*' });
    const object: RawObject = { key, ...file.facts.object };
    let fingerprint: string | undefined;
    if (store instanceof FileSystemStore) {
      // The folder lake's etag is the SHA-256 of the bytes it stored, hashed as they were copied: proof that
      // they are the bytes inspected (the file did not change in between), after which the file's identity
      // stands for its content (see localFingerprint).
      if (written.etag !== sha256Etag(object.sha256)) {
        await store.delete(key);
        throw new ValidationError(`file ${file.path} changed while it was being ingested: ingest it again`);
      }
      fingerprint = await localFingerprint(store, key);
    }
    await recordRawObject(store, { ...file.facts, object, ...(fingerprint ? { fingerprint } : {}) });
    objects.push(object);
  }
  return { dataset, ingestId, objects };
}

/** `YYYYMMDDTHHMMSSmmmZ-<8 hex of the files' hashes>`: sorts by time, differs for different content. */
export function makeIngestId(now: Date, sha256s: string[]): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('.', '');
  const hash = createHash('sha256')
    .update([...sha256s].sort().join('\n'))
    .digest('hex')
    .slice(0, 8);
  return `${stamp}-${hash}`;
}

/** A file name that is a valid key segment on S3 and on disk. */
function safeFileName(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9!_.*'()@=+-]/g, '_');
  return safe === '.' || safe === '..' || safe.length === 0 ? `file${safe}` : safe;
}
