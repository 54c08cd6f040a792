import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { coerceRowValues } from '../../lib/core/transform.ts';
import type { CaptureSink } from '../../lib/serving/capture.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import {
  call,
  type ModelFixture,
  metricValue,
  postJson,
  sourceOf,
  spambaseFixture,
  startServer,
} from '../support/model-fixtures.ts';
import { tempDir } from '../support/temp.ts';

let spam: ModelFixture;

const KEY = /^capture\/spam\/1\/\d{4}\/\d{2}\/\d{2}\/\d{2}\/[0-9a-f-]{36}\.jsonl$/;

beforeAll(() => {
  spam = spambaseFixture({ limit: 1000 });
});

function memorySink(): CaptureSink & { files: Map<string, string> } {
  const files = new Map<string, string>();
  return {
    files,
    async write(key, body) {
      files.set(key, body);
    },
  };
}

describe('request/response capture', () => {
  it('writes one JSONL line per request with its request id, rows and predictions', async () => {
    const sink = memorySink();
    const server = await startServer({ source: sourceOf(spam), capture: { sink, flushIntervalMs: 0 } });
    try {
      const replies = await Promise.all(
        [0, 1, 2, 3, 4].map((i) =>
          postJson(`${server.url}/invocations`, { instances: spam.rows.slice(i * 2, i * 2 + 2) }),
        ),
      );
      const csv = await call(`${server.url}/invocations`, {
        method: 'POST',
        body: Object.values(spam.rows[20] ?? {}).join(','),
        headers: { 'content-type': 'text/csv' },
      });
      const failed = await postJson(`${server.url}/invocations`, { instances: [[1, 2]] });
      expect(failed.status).toBe(400);
      await server.inference.capture?.flush();

      expect([...sink.files.keys()].every((k) => KEY.test(k))).toBe(true);
      const lines = [...sink.files.values()].flatMap((body) => body.trimEnd().split('\n'));
      const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(records).toHaveLength(6);
      const byId = new Map(records.map((r) => [r.requestId, r]));
      replies.forEach((reply, i) => {
        const record = byId.get(reply.headers.get('x-kiln-request-id'));
        expect(record).toMatchObject({ model: 'spam', version: '1' });
        expect(Number.isNaN(Date.parse(String(record?.time)))).toBe(false);
        expect(record?.inputs).toEqual(
          spam.rows.slice(i * 2, i * 2 + 2).map((r) => coerceRowValues(spam.transform, r)),
        );
        expect(record?.outputs).toEqual((reply.json as { predictions: unknown[] }).predictions);
      });
      // CSV rows are captured typed, not as the strings that were sent.
      const csvRecord = byId.get(csv.headers.get('x-kiln-request-id'));
      expect(csvRecord?.inputs).toEqual([coerceRowValues(spam.transform, spam.rows[20] ?? {})]);
      // Rejected requests are not captured.
      expect(byId.has(failed.headers.get('x-kiln-request-id'))).toBe(false);
    } finally {
      await server.close();
    }
  });

  it('captures V2 inference too, and writes to the lake through an ObjectStore', async () => {
    const dir = await tempDir();
    const server = await startServer({
      source: sourceOf(spam),
      capture: { store: new FileSystemStore(dir) },
    });
    const inputs = spam.transform.inputs.map((c) => ({
      name: c.name,
      datatype: 'FP64',
      shape: [1],
      data: [spam.rows[5]?.[c.name]],
    }));
    const reply = await postJson(`${server.url}/v2/models/spam/infer`, { inputs });
    expect(reply.status).toBe(200);
    // close() flushes capture, as SIGTERM does in the container.
    await server.close();
    const files = (await readdir(dir, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile() && e.name.endsWith('.jsonl'))
      .map((e) => join(e.parentPath, e.name));
    expect(files).toHaveLength(1);
    expect(relative(dir, files[0] ?? '')).toMatch(KEY);
    const record = JSON.parse(await readFile(files[0] ?? '', 'utf8')) as Record<string, unknown>;
    expect(record.requestId).toBe(reply.headers.get('x-kiln-request-id'));
  });

  it('samples at the configured rate', async () => {
    const sink = memorySink();
    const server = await startServer({ source: sourceOf(spam), capture: { sink, sampleRate: 0 } });
    try {
      for (let i = 0; i < 5; i++) {
        expect((await postJson(`${server.url}/invocations`, { instances: [spam.rows[i]] })).status).toBe(200);
      }
      await server.inference.capture?.flush();
      expect(sink.files.size).toBe(0);
    } finally {
      await server.close();
    }
  });

  it('a failing sink never fails or blocks a request', async () => {
    let attempts = 0;
    const sink: CaptureSink = {
      async write() {
        attempts++;
        throw new Error('the lake is down');
      },
    };
    const server = await startServer({
      source: sourceOf(spam),
      capture: { sink, maxRecords: 2, flushIntervalMs: 0 },
    });
    try {
      const replies = await Promise.all(
        spam.rows.slice(0, 10).map((row) => postJson(`${server.url}/invocations`, { instances: [row] })),
      );
      expect(replies.map((r) => r.status)).toEqual(replies.map(() => 200));
      await server.inference.capture?.flush();
      expect(attempts).toBeGreaterThan(0);
      const text = (await call(`${server.url}/metrics`)).text;
      expect(metricValue(text, 'kiln_capture_records_total', { outcome: 'failed' })).toBe(10);
    } finally {
      await server.close();
    }
  });
});
