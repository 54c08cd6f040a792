import { resolve } from 'node:path';
import { FileSystemStore } from './fs-store.ts';
import type { ObjectStore } from './object-store.ts';
import { S3Store } from './s3-store.ts';

const cache = new Map<string, ObjectStore>();

/**
 * Opens the lake named by a location: `s3://bucket[/prefix]` → S3, anything else → a local folder.
 * Handlers call this with `KILN_LAKE`; the same code serves Lambda (S3) and the local runtime (folder).
 */
export function openStore(location: string): ObjectStore {
  let store = cache.get(location);
  if (!store) {
    store = location.startsWith('s3://') ? S3Store.fromUri(location) : new FileSystemStore(resolve(location));
    cache.set(location, store);
  }
  return store;
}

/** The lake configured for this process through `KILN_LAKE`; fails loudly when it is not set. */
export function lakeFromEnv(): ObjectStore {
  const location = process.env.KILN_LAKE;
  if (!location) throw new Error('KILN_LAKE is not set: expected s3://bucket or a local folder');
  return openStore(location);
}
