import { ValidationError } from '../core/errors.ts';
import { parseS3Uri } from './layout.ts';
import type { ObjectStore } from './object-store.ts';

/** Bucket name that stands for the local lake folder in s3:// URIs, so pipelines pass the same shapes locally. */
export const LOCAL_LAKE_BUCKET = 'kiln-local-lake';

/** The s3:// URI of a lake key: the real bucket on AWS, a placeholder bucket for the local folder. */
export function lakeUri(store: ObjectStore, key: string): string {
  if (store.url.startsWith('s3://')) return `${store.url.replace(/\/$/, '')}/${key}`;
  return `s3://${LOCAL_LAKE_BUCKET}/${key}`;
}

/** The lake key behind an s3:// URI produced by `lakeUri`; rejects URIs of other buckets. */
export function lakeKeyOf(store: ObjectStore, uri: string): string {
  const { bucket, key } = parseS3Uri(uri);
  if (store.url.startsWith('s3://')) {
    const base = parseS3Uri(store.url);
    if (bucket !== base.bucket) throw new ValidationError(`${uri} is outside the lake ${store.url}`);
    return base.key ? key.slice(base.key.replace(/\/$/, '').length + 1) : key;
  }
  if (bucket !== LOCAL_LAKE_BUCKET) throw new ValidationError(`${uri} is outside the local lake`);
  return key;
}
