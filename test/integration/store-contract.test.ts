import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConflictError, NotFoundError, ValidationError } from '../../lib/core/errors.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { type ObjectStore, toJsonBody } from '../../lib/store/object-store.ts';
import { S3Store } from '../../lib/store/s3-store.ts';
import { S3RVER_CREDENTIALS, useS3rver } from '../support/s3rver.ts';

const MiB = 1024 * 1024;
const WRITERS = 20;
const INCREMENTS_PER_WRITER = 5;
const INVALID_KEYS = ['../x', '/abs', '', 'a//b', 'a/./b', 'a/../../b', 'trailing/'];

/**
 * The behaviour every ObjectStore adapter owes the lake. `makeStore` returns a fresh, empty store each call.
 */
function describeObjectStoreContract(name: string, makeStore: () => Promise<ObjectStore>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let scratch: string;

    beforeAll(async () => {
      scratch = await mkdtemp(join(tmpdir(), 'kiln-contract-files-'));
    });
    afterAll(async () => {
      await rm(scratch, { recursive: true, force: true });
    });

    it('round-trips bytes and reports size and etag consistently', async () => {
      const store = await makeStore();
      const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const written = await store.put('models/iris/v1/model.onnx', binary);
      expect(written).toEqual({ key: 'models/iris/v1/model.onnx', size: 256, etag: expect.any(String) });
      expect((await store.get('models/iris/v1/model.onnx')).equals(binary)).toBe(true);
      expect(await store.head('models/iris/v1/model.onnx')).toEqual(written);

      const text = await store.put('notes/hello.txt', 'héllo');
      expect(text.size).toBe(Buffer.byteLength('héllo'));
      expect((await store.get('notes/hello.txt')).toString('utf8')).toBe('héllo');
    });

    it('overwrites unconditionally and changes the etag with the content', async () => {
      const store = await makeStore();
      const first = await store.put('a.json', '{"v":1}');
      const second = await store.put('a.json', '{"v":2}');
      expect(second.etag).not.toBe(first.etag);
      expect((await store.get('a.json')).toString()).toBe('{"v":2}');
      expect((await store.head('a.json'))?.etag).toBe(second.etag);
    });

    it('keeps the etag while an object is unchanged and changes it with any byte of it', async () => {
      const store = await makeStore();
      const body = randomBytes(MiB + 3);
      const first = await store.put('curated/iris/v1/train.parquet', body);
      expect((await store.head('curated/iris/v1/train.parquet'))?.etag).toBe(first.etag);
      expect((await store.head('curated/iris/v1/train.parquet'))?.etag).toBe(first.etag);
      expect((await store.list('curated/iris/'))[0]?.etag).toBe(first.etag);
      // The same bytes written again: same etag (a content hash on both adapters).
      expect((await store.put('curated/iris/v1/train.parquet', body)).etag).toBe(first.etag);
      // One byte in the middle changed, size unchanged: a different etag, at once.
      const changed = Buffer.from(body);
      changed[MiB / 2] = (changed[MiB / 2] ?? 0) ^ 0xff;
      const second = await store.put('curated/iris/v1/train.parquet', changed);
      expect(second.etag).not.toBe(first.etag);
      expect((await store.head('curated/iris/v1/train.parquet'))?.etag).toBe(second.etag);
      await expect(store.put('curated/iris/v1/train.parquet', body, { ifMatch: first.etag })).rejects.toThrow(
        ConflictError,
      );
    });

    it('lists every key under a prefix, nested, sorted, with sizes and etags', async () => {
      const store = await makeStore();
      const keys = [
        'raw/iris/b.csv',
        'raw/iris/sub/c.csv',
        'raw/iris/a.csv',
        'raw/irises/x.csv',
        'raw/B.csv',
        'raw/a.csv',
        'curated/iris/v1/manifest.json',
      ];
      const written = new Map<string, string>();
      for (const [index, key] of keys.entries()) {
        written.set(key, (await store.put(key, `row ${index}\n`)).etag);
      }

      const iris = await store.list('raw/iris/');
      expect(iris.map((info) => info.key)).toEqual([
        'raw/iris/a.csv',
        'raw/iris/b.csv',
        'raw/iris/sub/c.csv',
      ]);
      for (const info of iris) {
        expect(info.size).toBe(Buffer.byteLength(`row ${keys.indexOf(info.key)}\n`));
        expect(info.etag).toBe(written.get(info.key));
      }
      // A prefix can end inside a segment, and code-unit order puts upper case before lower case.
      expect((await store.list('raw/ir')).map((info) => info.key)).toEqual([
        'raw/iris/a.csv',
        'raw/iris/b.csv',
        'raw/iris/sub/c.csv',
        'raw/irises/x.csv',
      ]);
      expect((await store.list('raw/')).map((info) => info.key)).toEqual([
        'raw/B.csv',
        'raw/a.csv',
        'raw/iris/a.csv',
        'raw/iris/b.csv',
        'raw/iris/sub/c.csv',
        'raw/irises/x.csv',
      ]);
      expect((await store.list('')).map((info) => info.key)).toEqual([...keys].sort());
      expect(await store.list('quarantine/')).toEqual([]);
    });

    it('deletes objects, and deleting a missing key is a no-op', async () => {
      const store = await makeStore();
      await store.put('capture/1.jsonl', '{}\n');
      await store.put('capture/2.jsonl', '{}\n');
      await store.delete('capture/1.jsonl');
      expect(await store.head('capture/1.jsonl')).toBeUndefined();
      await expect(store.get('capture/1.jsonl')).rejects.toThrow(NotFoundError);
      expect((await store.list('capture/')).map((info) => info.key)).toEqual(['capture/2.jsonl']);
      await expect(store.delete('capture/never-written.jsonl')).resolves.toBeUndefined();
    });

    it('reports a missing key as NotFoundError on read and undefined on head', async () => {
      const store = await makeStore();
      await expect(store.get('models/none/model.onnx')).rejects.toThrow(NotFoundError);
      expect(await store.head('models/none/model.onnx')).toBeUndefined();
      const target = join(scratch, 'missing', 'model.onnx');
      await expect(store.getToFile('models/none/model.onnx', target)).rejects.toThrow(NotFoundError);
      await expect(access(target)).rejects.toThrow();
    });

    it('streams a multi-MB file up and down unchanged', async () => {
      const store = await makeStore();
      const source = join(scratch, `upload-${randomBytes(4).toString('hex')}.bin`);
      // Not a multiple of any part size, and large enough that S3 uses a multipart upload.
      const content = randomBytes(18 * MiB + 12_345);
      await writeFile(source, content);

      const written = await store.putFile('curated/big/v1/data.parquet', source);
      expect(written.size).toBe(content.length);
      expect(await store.head('curated/big/v1/data.parquet')).toEqual(written);

      const target = join(scratch, 'download', 'nested', 'data.parquet');
      await store.getToFile('curated/big/v1/data.parquet', target);
      expect(await sha256OfFile(target)).toBe(createHash('sha256').update(content).digest('hex'));

      // Conditions hold for streamed writes too (on S3 a multipart upload checks them on completion).
      const other = join(scratch, `other-${randomBytes(4).toString('hex')}.bin`);
      await writeFile(other, randomBytes(9 * MiB));
      await expect(store.putFile('curated/big/v1/data.parquet', other, { ifNoneMatch: '*' })).rejects.toThrow(
        ConflictError,
      );
      await expect(
        store.putFile('curated/big/v1/data.parquet', other, { ifMatch: '"0123456789abcdef"' }),
      ).rejects.toThrow(ConflictError);
      expect((await store.head('curated/big/v1/data.parquet'))?.etag).toBe(written.etag);
      const replaced = await store.putFile('curated/big/v1/data.parquet', other, { ifMatch: written.etag });
      expect(replaced.size).toBe(9 * MiB);
      expect((await store.head('curated/big/v1/data.parquet'))?.etag).toBe(replaced.etag);
    });

    it('create-only refuses an existing key and keeps the first content', async () => {
      const store = await makeStore();
      const first = await store.put('registry/iris/1.json', 'first', { ifNoneMatch: '*' });
      await expect(store.put('registry/iris/1.json', 'second', { ifNoneMatch: '*' })).rejects.toThrow(
        ConflictError,
      );
      expect((await store.get('registry/iris/1.json')).toString()).toBe('first');
      expect((await store.head('registry/iris/1.json'))?.etag).toBe(first.etag);
    });

    it('compare-and-swap refuses a stale or unknown etag and accepts the current one', async () => {
      const store = await makeStore();
      const v1 = await store.put('aliases/iris.json', 'v1');
      const v2 = await store.put('aliases/iris.json', 'v2');
      await expect(store.put('aliases/iris.json', 'v3', { ifMatch: v1.etag })).rejects.toThrow(ConflictError);
      expect((await store.get('aliases/iris.json')).toString()).toBe('v2');
      const v3 = await store.put('aliases/iris.json', 'v3', { ifMatch: v2.etag });
      expect((await store.get('aliases/iris.json')).toString()).toBe('v3');
      expect(v3.etag).not.toBe(v2.etag);
      // An etag cannot match a key that does not exist.
      await expect(store.put('aliases/none.json', 'x', { ifMatch: v3.etag })).rejects.toThrow(ConflictError);
      expect(await store.head('aliases/none.json')).toBeUndefined();
    });

    it('rejects keys that could escape the store root, and writes nothing for them', async () => {
      const store = await makeStore();
      const file = join(scratch, `valid-${randomBytes(4).toString('hex')}.txt`);
      await writeFile(file, 'x');
      for (const key of INVALID_KEYS) {
        await expect(store.put(key, 'x'), key).rejects.toThrow(TypeError);
        await expect(store.putFile(key, file), key).rejects.toThrow(TypeError);
        await expect(store.get(key), key).rejects.toThrow(TypeError);
        await expect(store.head(key), key).rejects.toThrow(TypeError);
        await expect(store.getToFile(key, join(scratch, 'never.txt')), key).rejects.toThrow(TypeError);
        await expect(store.delete(key), key).rejects.toThrow(TypeError);
      }
      await expect(store.list('../')).rejects.toThrow(TypeError);
      await expect(store.list('/abs')).rejects.toThrow(TypeError);
      expect(await store.list('')).toEqual([]);
    });

    it(`loses no update when ${WRITERS} writers run compare-and-swap loops on one counter`, async () => {
      const store = await makeStore();
      const key = 'monitoring/counter.json';
      await store.put(key, toJsonBody({ count: 0 }), { ifNoneMatch: '*' });

      const writer = async (): Promise<{ wrote: number[]; conflicts: number }> => {
        const wrote: number[] = [];
        let conflicts = 0;
        let state = await readCounter(store, key);
        while (wrote.length < INCREMENTS_PER_WRITER) {
          const next = state.count + 1;
          try {
            // The etag put() returns must describe what this writer wrote, so the loop can continue from it.
            const info = await store.put(key, toJsonBody({ count: next }), { ifMatch: state.etag });
            wrote.push(next);
            state = { count: next, etag: info.etag };
          } catch (error) {
            if (!(error instanceof ConflictError)) throw error;
            conflicts++;
            state = await readCounter(store, key);
          }
        }
        return { wrote, conflicts };
      };

      const results = await Promise.all(Array.from({ length: WRITERS }, writer));
      const total = WRITERS * INCREMENTS_PER_WRITER;
      expect(JSON.parse((await store.get(key)).toString('utf8'))).toEqual({ count: total });
      // Every value 1..total was written by exactly one successful swap.
      const wrote = results.flatMap((result) => result.wrote).sort((a, b) => a - b);
      expect(wrote).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      // With 20 writers racing, the conditions must actually have refused someone.
      expect(results.reduce((sum, result) => sum + result.conflicts, 0)).toBeGreaterThan(0);
    });

    it(`lets exactly one of ${WRITERS} concurrent create-only writers win`, async () => {
      const store = await makeStore();
      const key = 'registry/iris/versions/7.json';
      const outcomes = await Promise.allSettled(
        Array.from({ length: WRITERS }, (_, writer) =>
          store.put(key, `writer ${writer}`, { ifNoneMatch: '*' }),
        ),
      );
      const winners = outcomes.flatMap((outcome, writer) => (outcome.status === 'fulfilled' ? [writer] : []));
      expect(winners).toHaveLength(1);
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(ConflictError);
      }
      expect((await store.get(key)).toString()).toBe(`writer ${winners[0]}`);
    });

    it('returns the etag of what each call wrote while others overwrite the same key', async () => {
      const store = await makeStore();
      const key = 'aliases/busy.json';
      const bodies = Array.from({ length: WRITERS }, (_, writer) => `{"writer":${writer}}`);
      const written = await Promise.all(bodies.map((body) => store.put(key, body)));
      // Distinct bodies have distinct etags, so a call that reported another writer's object shows up as a duplicate.
      expect(new Set(written.map((info) => info.etag)).size).toBe(WRITERS);
      const final = await store.head(key);
      const winner = written.findIndex((info) => info.etag === final?.etag);
      expect(winner).toBeGreaterThanOrEqual(0);
      expect((await store.get(key)).toString()).toBe(bodies[winner]);
    });

    it('never shows a reader a partial object while the object is overwritten', async () => {
      const store = await makeStore();
      const key = 'curated/iris/v9/data.parquet';
      const versions = Array.from({ length: 3 }, () => randomBytes(3 * MiB));
      const versionOf = (body: Buffer): number => versions.findIndex((version) => version.equals(body));
      await store.put(key, versions[0] ?? Buffer.alloc(0));

      let writing = true;
      const writer = async (): Promise<void> => {
        try {
          for (let round = 1; round <= 12; round++)
            await store.put(key, versions[round % versions.length] ?? Buffer.alloc(0));
        } finally {
          writing = false;
        }
      };
      const reader = async (): Promise<number[]> => {
        const seen: number[] = [];
        do seen.push(versionOf(await store.get(key)));
        while (writing);
        return seen;
      };
      const fileReader = async (): Promise<number[]> => {
        const seen: number[] = [];
        const target = join(scratch, `read-${randomBytes(4).toString('hex')}.bin`);
        do {
          await store.getToFile(key, target);
          seen.push(versionOf(await readFile(target)));
        } while (writing);
        return seen;
      };

      const [, ...reads] = await Promise.all([writer(), reader(), reader(), fileReader()]);
      const seen = reads.flat();
      expect(seen.length).toBeGreaterThanOrEqual(3);
      expect(seen.filter((version) => version === -1)).toEqual([]);
    });
  });
}

async function readCounter(store: ObjectStore, key: string): Promise<{ count: number; etag: string }> {
  // head before get: the etag is never newer than the body, so a swap built on a newer body just fails.
  const info = await store.head(key);
  if (!info) throw new Error(`counter ${key} vanished`);
  const { count } = JSON.parse((await store.get(key)).toString('utf8')) as { count: number };
  return { count, etag: info.etag };
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

const fsRoots: string[] = [];
afterAll(async () => {
  await Promise.all(fsRoots.map((root) => rm(root, { recursive: true, force: true })));
});

describeObjectStoreContract('FileSystemStore', async () => {
  const root = await mkdtemp(join(tmpdir(), 'kiln-fs-store-'));
  fsRoots.push(root);
  return new FileSystemStore(root);
});

describe('FileSystemStore etags', () => {
  it('are the SHA-256 of the bytes on disk, so an edit in place changes them even within one clock tick', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kiln-fs-etag-'));
    fsRoots.push(root);
    const store = new FileSystemStore(root);
    const body = Buffer.from('{"count":1}\n');
    const written = await store.put('monitoring/counter.json', body);
    expect(written.etag).toBe(`"${createHash('sha256').update(body).digest('hex')}"`);
    const file = join(root, 'monitoring', 'counter.json');
    const source = join(root, 'upload.bin');
    await writeFile(source, randomBytes(3 * MiB + 7));
    const uploaded = await store.putFile('curated/big/v1/data.parquet', source);
    expect(uploaded.etag).toBe(`"${await sha256OfFile(source)}"`);
    // Same size, same inode, written at once: only the content tells the two apart.
    for (let round = 2; round <= 9; round++) {
      const next = Buffer.from(`{"count":${round}}\n`);
      await writeFile(file, next);
      expect((await store.head('monitoring/counter.json'))?.etag).toBe(
        `"${createHash('sha256').update(next).digest('hex')}"`,
      );
    }
    await expect(store.put('monitoring/counter.json', 'x', { ifMatch: written.etag })).rejects.toThrow(
      ConflictError,
    );
  });
});

describe('S3Store on s3rver', () => {
  const running = useS3rver('kiln-contract');
  let storeCount = 0;

  describeObjectStoreContract('S3Store', async () =>
    S3Store.fromUri(`s3://${running().bucket}/contract-${++storeCount}`),
  );

  describe('S3-specific configuration', () => {
    it('parses s3:// locations into bucket, prefix and url', () => {
      const rooted = S3Store.fromUri('s3://kiln-lake');
      expect([rooted.bucket, rooted.prefix, rooted.url]).toEqual(['kiln-lake', '', 's3://kiln-lake']);
      const nested = S3Store.fromUri('s3://kiln-lake/teams/ml/');
      expect([nested.bucket, nested.prefix, nested.url]).toEqual([
        'kiln-lake',
        'teams/ml/',
        's3://kiln-lake/teams/ml',
      ]);
      for (const bad of ['s3://', 'kiln-lake', 's3://UPPER', 's3://kiln-lake/../x', 's3://kiln-lake//x']) {
        expect(() => S3Store.fromUri(bad), bad).toThrow(ValidationError);
      }
    });

    it('keeps stores whose prefixes share leading characters apart', async () => {
      const { bucket } = running();
      const short = S3Store.fromUri(`s3://${bucket}/isolation/p`);
      const longer = S3Store.fromUri(`s3://${bucket}/isolation/p2`);
      await short.put('a.txt', 'short');
      await longer.put('a.txt', 'longer');
      expect((await short.list('')).map((info) => info.key)).toEqual(['a.txt']);
      expect((await short.get('a.txt')).toString()).toBe('short');
      expect((await longer.get('a.txt')).toString()).toBe('longer');
    });

    it('still needs the shim: s3rver itself ignores If-None-Match on PUT', async () => {
      // Delete this test and test/support/s3-write-semantics-shim.ts once s3rver honours conditional writes.
      const { bucket, rawEndpoint } = running();
      const raw = new S3Client({
        endpoint: rawEndpoint,
        forcePathStyle: true,
        region: 'us-east-1',
        credentials: S3RVER_CREDENTIALS,
      });
      try {
        const key = 'shim-evidence/once.txt';
        await raw.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'first', IfNoneMatch: '*' }));
        await raw.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'second', IfNoneMatch: '*' }));
        expect((await S3Store.fromUri(`s3://${bucket}`).get(key)).toString()).toBe('second');
      } finally {
        raw.destroy();
      }
    });
  });
});
