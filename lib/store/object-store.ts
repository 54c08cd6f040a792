/** Metadata of a stored object; `etag` is the token for compare-and-swap writes. */
export interface ObjectInfo {
  key: string;
  size: number;
  etag: string;
}

/** Conditions for a write: create-only (`ifNoneMatch: '*'`) or compare-and-swap (`ifMatch: etag`). */
export interface PutOptions {
  ifNoneMatch?: '*';
  ifMatch?: string;
  contentType?: string;
}

/**
 * The lake's storage port. Keys are `/`-separated, relative (no leading slash, no `..`).
 * Every write is atomic: a reader sees the old object or the new one, never half of one.
 * A failed condition throws `ConflictError`; a missing key on read throws `NotFoundError`.
 */
export interface ObjectStore {
  /** Human-readable location, e.g. `file:///home/me/.kiln/lake` or `s3://bucket`. */
  readonly url: string;
  get(key: string): Promise<Buffer>;
  head(key: string): Promise<ObjectInfo | undefined>;
  put(key: string, body: Buffer | string, options?: PutOptions): Promise<ObjectInfo>;
  /** Uploads a local file (streamed, not loaded whole into memory). */
  putFile(key: string, path: string, options?: PutOptions): Promise<ObjectInfo>;
  /** Downloads an object to a local file (streamed). */
  getToFile(key: string, path: string): Promise<void>;
  /** Every key under a prefix, sorted ascending. */
  list(prefix: string): Promise<ObjectInfo[]>;
  delete(key: string): Promise<void>;
}

const KEY_PATTERN = /^[A-Za-z0-9!_.*'()@=+-]+(\/[A-Za-z0-9!_.*'()@=+-]+)*$/;

/** Rejects keys that could escape the store root or that S3 and file systems treat differently. */
export function assertValidKey(key: string): void {
  if (!KEY_PATTERN.test(key) || key.split('/').some((part) => part === '.' || part === '..')) {
    throw new TypeError(
      `invalid object key ${JSON.stringify(key)}: use /-separated segments of [A-Za-z0-9!_.*'()@=+-]`,
    );
  }
}

/** Reads and parses a JSON object, or returns undefined when the key does not exist. */
export async function readJsonIfExists<T>(store: ObjectStore, key: string): Promise<T | undefined> {
  const info = await store.head(key);
  if (!info) return undefined;
  return JSON.parse((await store.get(key)).toString('utf8')) as T;
}

/** Serialises a JSON document the same way everywhere, so that content hashes are stable. */
export function toJsonBody(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
