import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { type S3WriteSemanticsShim, startS3WriteSemanticsShim } from './s3-write-semantics-shim.ts';

/** The slice of s3rver's API used here; s3rver ships no type declarations. */
interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string }[];
}) => S3rverInstance;

/** s3rver's built-in account; it verifies SigV4 signatures made with these. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

/** A real s3rver on 127.0.0.1, reached through the write-semantics shim. */
export interface RunningS3rver {
  /** Where S3 clients connect: the shim, which forwards to s3rver. */
  readonly endpoint: string;
  /** s3rver itself, without the shim (for demonstrating what the shim adds). */
  readonly rawEndpoint: string;
  readonly bucket: string;
  stop(): Promise<void>;
}

/** Starts s3rver on an ephemeral port with a fresh temp directory and one bucket, plus the shim in front of it. */
export async function startS3rver(bucket = 'kiln-test'): Promise<RunningS3rver> {
  const require = createRequire(import.meta.url);
  const S3rver = require('s3rver') as S3rverConstructor;
  const directory = await mkdtemp(join(tmpdir(), 'kiln-s3rver-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: [{ name: bucket }],
  });
  let shim: S3WriteSemanticsShim | undefined;
  try {
    const address = await server.run();
    shim = await startS3WriteSemanticsShim({ host: '127.0.0.1', port: address.port });
    const running = shim;
    return {
      endpoint: running.endpoint,
      rawEndpoint: `http://127.0.0.1:${address.port}`,
      bucket,
      async stop() {
        await running.close();
        await server.close();
        await rm(directory, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await shim?.close();
    await server.close().catch(() => undefined);
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Starts s3rver for the enclosing `describe` and points S3 clients at it through the environment, the way a
 * deployment configures the S3 store; returns an accessor that throws if the server did not start.
 */
export function useS3rver(bucket: string): () => RunningS3rver {
  let s3: RunningS3rver | undefined;
  const savedEnv = { ...process.env };
  beforeAll(async () => {
    s3 = await startS3rver(bucket);
    process.env.KILN_S3_ENDPOINT = s3.endpoint;
    process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
    process.env.AWS_REGION = 'us-east-1';
  });
  afterAll(async () => {
    process.env = savedEnv;
    await s3?.stop();
  });
  return () => {
    if (!s3) throw new Error('s3rver did not start');
    return s3;
  };
}
