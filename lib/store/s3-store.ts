import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { z } from 'zod';
import { ConflictError, IntegrityError, NotFoundError, ValidationError } from '../core/errors.ts';
import { assertValidKey, type ObjectInfo, type ObjectStore, type PutOptions } from './object-store.ts';

/** S3's rules for general-purpose bucket names (3–63 chars, lowercase letters, digits, dots, hyphens). */
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

const optionsSchema = z.object({
  bucket: z
    .string()
    .regex(BUCKET_NAME, 'must be 3-63 characters of [a-z0-9.-], starting and ending alphanumeric'),
  prefix: z.string().optional(),
  client: z.instanceof(S3Client).optional(),
});

/** Options of an `S3Store`; without `client`, one is built from the environment (see `s3ClientFromEnv`). */
export interface S3StoreOptions {
  bucket: string;
  /** Folder inside the bucket that acts as the store root, e.g. `lake` (a trailing `/` is optional). */
  prefix?: string;
  client?: S3Client;
}

/** Parts above this size go through a multipart upload; 8 MiB keeps at most ~32 MiB in flight per upload. */
const PART_SIZE = 8 * 1024 * 1024;
const UPLOAD_QUEUE_SIZE = 4;

/**
 * ObjectStore on an S3 bucket (or any S3-compatible endpoint via `KILN_S3_ENDPOINT`).
 * S3 makes every PUT atomic and reads strongly consistent, so writes need no temp objects; conditional
 * writes map to S3's `If-None-Match: *` (create-only) and `If-Match: <etag>` (compare-and-swap).
 */
export class S3Store implements ObjectStore {
  readonly url: string;
  readonly bucket: string;
  /** Normalised root inside the bucket: `''` or a key prefix ending in `/`. */
  readonly prefix: string;
  private readonly client: S3Client;

  constructor(options: S3StoreOptions) {
    const parsed = optionsSchema.safeParse(options);
    if (!parsed.success) {
      const problems = z.prettifyError(parsed.error);
      throw new ValidationError(
        `invalid S3Store options for bucket ${JSON.stringify(options.bucket)}: ${problems}`,
        { cause: parsed.error },
      );
    }
    this.bucket = parsed.data.bucket;
    this.prefix = normalisePrefix(parsed.data.prefix ?? '');
    this.client = parsed.data.client ?? s3ClientFromEnv();
    this.url = `s3://${this.bucket}${this.prefix ? `/${this.prefix.slice(0, -1)}` : ''}`;
  }

  /** Opens `s3://bucket[/prefix]`, configuring the client from the environment. */
  static fromUri(uri: string): S3Store {
    const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(uri);
    if (!match?.[1]) {
      throw new ValidationError(
        `invalid S3 location ${JSON.stringify(uri)}: expected s3://bucket or s3://bucket/prefix`,
      );
    }
    return new S3Store({ bucket: match[1], prefix: match[2] ?? '' });
  }

  async get(key: string): Promise<Buffer> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      if (!response.Body) throw new IntegrityError(`GetObject for ${this.describe(key)} returned no body`);
      return Buffer.from(await response.Body.transformToByteArray());
    } catch (error) {
      throw this.readError(error, key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return { key, size: response.ContentLength ?? 0, etag: this.requireEtag(response.ETag, key) };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async put(key: string, body: Buffer | string, options: PutOptions = {}): Promise<ObjectInfo> {
    const objectKey = this.objectKey(key);
    const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    try {
      const response = await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: objectKey,
          Body: bytes,
          ...conditionParams(options),
        }),
      );
      return { key, size: bytes.length, etag: this.requireEtag(response.ETag, key) };
    } catch (error) {
      throw this.writeError(error, key, options);
    }
  }

  async putFile(key: string, path: string, options: PutOptions = {}): Promise<ObjectInfo> {
    const objectKey = this.objectKey(key);
    const { size } = await stat(path);
    // Upload sends one PutObject below PART_SIZE and a multipart upload above it; it forwards the
    // conditions to CompleteMultipartUpload, which is where S3 evaluates them for multipart objects.
    const upload = new Upload({
      client: this.client,
      partSize: PART_SIZE,
      queueSize: UPLOAD_QUEUE_SIZE,
      params: {
        Bucket: this.bucket,
        Key: objectKey,
        Body: createReadStream(path),
        ContentLength: size,
        ...conditionParams(options),
      },
    });
    try {
      const response = await upload.done();
      return { key, size, etag: this.requireEtag(response.ETag, key) };
    } catch (error) {
      throw this.writeError(error, key, options);
    }
  }

  async getToFile(key: string, path: string): Promise<void> {
    const objectKey = this.objectKey(key);
    await mkdir(dirname(path), { recursive: true });
    // Download next to the target and rename, so a failed transfer never leaves a truncated file at `path`.
    const temp = `${path}.${randomUUID()}.part`;
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      if (!(response.Body instanceof Readable)) {
        throw new IntegrityError(`GetObject for ${this.describe(key)} returned no readable stream`);
      }
      let received = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          received += chunk.length;
          callback(null, chunk);
        },
      });
      await pipeline(response.Body, counter, createWriteStream(temp));
      if (response.ContentLength !== undefined && received !== response.ContentLength) {
        throw new IntegrityError(
          `download of ${this.describe(key)} stopped at ${received} of ${response.ContentLength} bytes`,
        );
      }
      await rename(temp, path);
    } catch (error) {
      await rm(temp, { force: true });
      throw this.readError(error, key);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    // A list prefix may end inside a segment (`raw/ir`) or at a folder (`raw/`); whatever precedes that must be a valid key.
    if (prefix !== '') assertValidKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
    const found: ObjectInfo[] = [];
    let continuationToken: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: this.prefix + prefix,
          ContinuationToken: continuationToken,
        }),
      );
      for (const entry of page.Contents ?? []) {
        if (entry.Key === undefined) continue;
        const key = entry.Key.slice(this.prefix.length);
        // Consoles create zero-byte `folder/` markers; they are not objects of the lake.
        if (key === '' || key.endsWith('/')) continue;
        found.push({ key, size: entry.Size ?? 0, etag: this.requireEtag(entry.ETag, key) });
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (continuationToken);
    // S3 already orders by UTF-8 bytes; sort anyway so the order is the same code-unit order as every other store.
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return found;
  }

  async delete(key: string): Promise<void> {
    const objectKey = this.objectKey(key);
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }));
  }

  private objectKey(key: string): string {
    assertValidKey(key);
    return this.prefix + key;
  }

  private describe(key: string): string {
    return `s3://${this.bucket}/${this.prefix}${key}`;
  }

  private requireEtag(etag: string | undefined, key: string): string {
    if (!etag) throw new IntegrityError(`S3 returned no ETag for ${this.describe(key)}`);
    return etag;
  }

  private readError(error: unknown, key: string): unknown {
    if (isNotFound(error))
      return new NotFoundError(`object ${key} does not exist in ${this.url}`, { cause: error });
    return error;
  }

  private writeError(error: unknown, key: string, options: PutOptions): unknown {
    const status = httpStatus(error);
    const name = errorName(error);
    if (status === 412 || name === 'PreconditionFailed') {
      const condition = options.ifMatch !== undefined ? `etag ${options.ifMatch}` : 'the key to be absent';
      return new ConflictError(
        `object ${key} in ${this.url} failed the write condition (expected ${condition})`,
        {
          cause: error,
        },
      );
    }
    if (status === 409 || name === 'ConditionalRequestConflict') {
      return new ConflictError(`object ${key} in ${this.url} was written concurrently; re-read and retry`, {
        cause: error,
      });
    }
    // S3 answers If-Match on a missing key with 404; for the port that is a failed condition, as it is on disk.
    if (options.ifMatch !== undefined && isNotFound(error)) {
      return new ConflictError(
        `object ${key} in ${this.url} no longer exists (expected etag ${options.ifMatch})`,
        {
          cause: error,
        },
      );
    }
    return error;
  }
}

/**
 * Builds the S3 client for the running process. With `KILN_S3_ENDPOINT` set (MinIO, s3rver, LocalStack…)
 * it uses path-style addressing and only the checksums those servers understand.
 */
export function s3ClientFromEnv(env: NodeJS.ProcessEnv = process.env): S3Client {
  const endpoint = env.KILN_S3_ENDPOINT;
  if (!endpoint) return new S3Client({});
  const parsed = z.url({ protocol: /^https?$/ }).safeParse(endpoint);
  if (!parsed.success) {
    throw new ValidationError(`KILN_S3_ENDPOINT ${JSON.stringify(endpoint)} is not an http(s) URL`, {
      cause: parsed.error,
    });
  }
  const config: S3ClientConfig = {
    endpoint: parsed.data,
    forcePathStyle: true,
    // S3-compatible servers ignore the region but the SDK insists on one.
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    // The SDK's default sends streamed bodies as aws-chunked with a trailing CRC; servers that do not
    // decode that framing store it verbatim as the object's content.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
  return new S3Client(config);
}

function normalisePrefix(prefix: string): string {
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (trimmed === '') return '';
  try {
    assertValidKey(trimmed);
  } catch (error) {
    throw new ValidationError(`invalid S3 prefix ${JSON.stringify(prefix)}: use /-separated key segments`, {
      cause: error,
    });
  }
  return `${trimmed}/`;
}

function conditionParams(options: PutOptions): {
  IfNoneMatch?: string;
  IfMatch?: string;
  ContentType?: string;
} {
  return {
    ...(options.ifNoneMatch !== undefined && { IfNoneMatch: options.ifNoneMatch }),
    ...(options.ifMatch !== undefined && { IfMatch: options.ifMatch }),
    ...(options.contentType !== undefined && { ContentType: options.contentType }),
  };
}

function httpStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const metadata = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata;
  return typeof metadata?.httpStatusCode === 'number' ? metadata.httpStatusCode : undefined;
}

function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

function isNotFound(error: unknown): boolean {
  const name = errorName(error);
  // HEAD responses carry no body, so a missing key there surfaces only as `NotFound` / 404.
  return (
    name === 'NoSuchKey' || name === 'NotFound' || (httpStatus(error) === 404 && name !== 'NoSuchBucket')
  );
}
