import { createHash, randomUUID } from 'node:crypto';
import {
  copyFile,
  type FileHandle,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConflictError, NotFoundError } from '../core/errors.ts';
import { assertValidKey, type ObjectInfo, type ObjectStore, type PutOptions } from './object-store.ts';

const TEMP_DIR = '.tmp';
const LOCK_SUFFIX = '.kiln-lock';

/** Read and write in 1 MiB pieces: a bigger buffer no longer helps, a smaller one costs system calls. */
const IO_BYTES = 1024 * 1024;

/**
 * ObjectStore on a local folder. Writes go to a temp file and are renamed into place (atomic on POSIX);
 * create-only writes use link(2), which fails if the target exists; compare-and-swap takes a per-key
 * lock file (O_EXCL) so that concurrent writers in several processes serialise.
 *
 * An object's etag is the SHA-256 of its bytes (etags are opaque in S3 too). Not a token from inode, size and
 * mtime: timestamps may tick coarsely and inode numbers are reused, so two quick replacements of a small
 * object could share such a token and let a stale compare-and-swap through. Writes hash the bytes on their
 * way to disk (nothing is read back), and SHA-256 runs in hardware on current x86 and ARM CPUs (2.4 times
 * MD5's speed on the benchmark host); only head() and list() read an object to hash it.
 */
export class FileSystemStore implements ObjectStore {
  readonly url: string;

  constructor(readonly root: string) {
    this.url = pathToFileURL(root).href;
  }

  /** Absolute path of a key; lets DuckDB read local objects in place. */
  pathOf(key: string): string {
    assertValidKey(key);
    return join(this.root, ...key.split('/'));
  }

  async get(key: string): Promise<Buffer> {
    try {
      return await readFile(this.pathOf(key));
    } catch (error) {
      throw notFoundOr(error, key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const path = this.pathOf(key);
    try {
      const info = await stat(path);
      if (!info.isFile()) return undefined;
      return { key, size: info.size, etag: await etagOf(path) };
    } catch (error) {
      if (isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR')) return undefined;
      throw error;
    }
  }

  async put(key: string, body: Buffer | string, options: PutOptions = {}): Promise<ObjectInfo> {
    return this.writeVia(key, options, async (temp) => {
      await writeFile(temp, body, { flush: true });
      return etagOfBytes(body);
    });
  }

  async putFile(key: string, path: string, options: PutOptions = {}): Promise<ObjectInfo> {
    return this.writeVia(key, options, (temp) => copyHashing(path, temp));
  }

  async getToFile(key: string, path: string): Promise<void> {
    try {
      await mkdir(dirname(path), { recursive: true });
      await copyFile(this.pathOf(key), path);
    } catch (error) {
      throw notFoundOr(error, key);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    // Without this, `../` walks the folder above the root.
    if (prefix !== '') assertValidKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
    // A prefix may end inside a segment ("raw/ir" matches "raw/iris/…"), so walk from its last full folder.
    const folders = prefix.split('/').slice(0, -1).filter(Boolean);
    const start = join(this.root, ...folders);
    const found: ObjectInfo[] = [];
    await this.walk(start, async (path, size) => {
      const key = relative(this.root, path).split(sep).join('/');
      if (key.startsWith(prefix) && !key.endsWith(LOCK_SUFFIX)) found.push({ key, size, etag: '' });
    });
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const info of found) info.etag = await etagOf(this.pathOf(info.key));
    return found;
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }

  /** Writes `fill`'s temp file (`fill` returns the etag of what it wrote) and commits it under `options`. */
  private async writeVia(
    key: string,
    options: PutOptions,
    fill: (temp: string) => Promise<string>,
  ): Promise<ObjectInfo> {
    const target = this.pathOf(key);
    const tempDir = join(this.root, TEMP_DIR);
    await mkdir(tempDir, { recursive: true });
    await mkdir(dirname(target), { recursive: true });
    const temp = join(tempDir, `${randomUUID()}.part`);
    let written: ObjectInfo;
    try {
      const etag = await fill(temp);
      // Describe what this call writes before committing it: a head() afterwards could see a later writer's object.
      written = { key, size: (await stat(temp)).size, etag };
      if (options.ifNoneMatch === '*') {
        try {
          await link(temp, target);
        } catch (error) {
          if (isCode(error, 'EEXIST'))
            throw new ConflictError(`object ${key} already exists`, { cause: error });
          throw error;
        }
      } else if (options.ifMatch !== undefined) {
        await this.withKeyLock(target, async () => {
          const current = await this.head(key);
          if (!current || current.etag !== options.ifMatch) {
            throw new ConflictError(
              `object ${key} changed since it was read (expected etag ${options.ifMatch})`,
            );
          }
          await rename(temp, target);
        });
      } else {
        await rename(temp, target);
      }
    } finally {
      await rm(temp, { force: true });
    }
    return written;
  }

  private async withKeyLock<T>(target: string, action: () => Promise<T>): Promise<T> {
    const lockPath = `${target}${LOCK_SUFFIX}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const handle = await open(lockPath, 'wx');
        await handle.close();
        break;
      } catch (error) {
        if (!isCode(error, 'EEXIST')) throw error;
        if (attempt > 2000) throw new ConflictError(`timed out waiting for the lock on ${target}`);
        await new Promise((resolve) => setTimeout(resolve, 2 + Math.random() * 8));
      }
    }
    try {
      return await action();
    } finally {
      await unlink(lockPath).catch(() => undefined);
    }
  }

  private async walk(dir: string, visit: (path: string, size: number) => Promise<void>): Promise<void> {
    let entries: import('node:fs').Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if (isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR')) return;
      throw error;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (dir === this.root && entry.name === TEMP_DIR) continue;
        await this.walk(path, visit);
      } else if (entry.isFile()) {
        await visit(path, (await stat(path)).size);
      }
    }
  }
}

/** The etag of a local object: the SHA-256 of its bytes, quoted like S3's. */
async function etagOf(path: string): Promise<string> {
  const hash = createHash('sha256');
  const handle = await open(path, 'r');
  try {
    await forEachChunk(handle, (chunk) => {
      hash.update(chunk);
    });
  } finally {
    await handle.close();
  }
  return sha256Etag(hash.digest('hex'));
}

/** Reads `handle` to its end, IO_BYTES at a time; each chunk is a view that the next read overwrites. */
async function forEachChunk(handle: FileHandle, use: (chunk: Buffer) => void | Promise<void>): Promise<void> {
  const buffer = Buffer.allocUnsafe(IO_BYTES);
  for (;;) {
    const { bytesRead } = await handle.read(buffer, 0, IO_BYTES, null);
    if (bytesRead === 0) return;
    await use(buffer.subarray(0, bytesRead));
  }
}

function etagOfBytes(body: Buffer | string): string {
  return sha256Etag(createHash('sha256').update(body).digest('hex'));
}

/** The etag a FileSystemStore gives an object whose bytes have this SHA-256 (hex). */
export function sha256Etag(sha256: string): string {
  return `"${sha256}"`;
}

/** The SHA-256 (hex) of the bytes behind a FileSystemStore etag. */
export function sha256OfEtag(etag: string): string | undefined {
  return /^"([0-9a-f]{64})"$/.exec(etag)?.[1];
}

/** Copies `from` to `to`, hashing the bytes on the way: one read of the source, none of the copy. */
async function copyHashing(from: string, to: string): Promise<string> {
  const hash = createHash('sha256');
  const source = await open(from, 'r');
  try {
    const target = await open(to, 'wx');
    try {
      await forEachChunk(source, async (chunk) => {
        hash.update(chunk);
        let written = 0;
        while (written < chunk.length) {
          written += (await target.write(chunk, written, chunk.length - written)).bytesWritten;
        }
      });
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
  return sha256Etag(hash.digest('hex'));
}

function isCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

function notFoundOr(error: unknown, key: string): unknown {
  if (isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR') || isCode(error, 'EISDIR')) {
    return new NotFoundError(`object ${key} does not exist`, { cause: error });
  }
  return error;
}
