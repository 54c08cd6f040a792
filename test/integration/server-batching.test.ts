import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { DirectoryModelSource } from '../../lib/serving/model-source.ts';
import {
  call,
  directPredictions,
  type ModelFixture,
  metricValue,
  postJson,
  sourceOf,
  spambaseFixture,
  startServer,
} from '../support/model-fixtures.ts';
import { tempDir } from '../support/temp.ts';

let v1: ModelFixture;
let v2: ModelFixture;

interface Classified {
  label: string;
  probabilities: Record<string, number>;
}

beforeAll(() => {
  v1 = spambaseFixture({ limit: 1200, version: '1' });
  v2 = spambaseFixture({ limit: 1200, version: '2', algorithm: 'linear', params: {} });
});

async function metrics(url: string): Promise<string> {
  return (await call(`${url}/metrics`)).text;
}

describe('micro-batching', () => {
  it('coalesces concurrent requests into fewer model calls, each answer still its own', async () => {
    const server = await startServer({ source: sourceOf(v1), batching: { maxBatchSize: 64, maxWaitMs: 2 } });
    try {
      const rows = v1.rows.slice(0, 200);
      const replies = await Promise.all(
        rows.map((row) => postJson(`${server.url}/invocations`, { instances: [row] })),
      );
      const direct = await directPredictions(v1, rows);
      replies.forEach((reply, i) => {
        expect(reply.status).toBe(200);
        const p = (reply.json as { predictions: Classified[] }).predictions[0];
        expect(p?.probabilities.spam).toBeCloseTo(direct.probabilities?.[i * 2 + 1] ?? Number.NaN, 6);
      });
      const text = await metrics(server.url);
      const labels = { model: 'spam', version: '1' };
      const calls = metricValue(text, 'kiln_inference_batch_requests_count', labels);
      const requests = metricValue(text, 'kiln_inference_batch_requests_sum', labels);
      const singleRequestCalls = metricValue(text, 'kiln_inference_batch_requests_bucket', {
        ...labels,
        le: '1',
      });
      expect(requests).toBe(200);
      expect(metricValue(text, 'kiln_inference_batch_rows_sum', labels)).toBe(200);
      expect(metricValue(text, 'kiln_inference_rows_total', labels)).toBe(200);
      const ok = { route: '/invocations', ...labels, status: '200' };
      expect(metricValue(text, 'kiln_inference_request_duration_seconds_count', ok)).toBe(200);
      expect(metricValue(text, 'kiln_inference_request_duration_seconds_bucket', { ...ok, le: '+Inf' })).toBe(
        200,
      );
      // A refused request of the same route and model lands in its own series.
      expect((await postJson(`${server.url}/invocations`, { instances: [] })).status).toBe(400);
      const after = await metrics(server.url);
      const refused = { ...ok, status: '400' };
      expect(metricValue(after, 'kiln_inference_request_duration_seconds_count', refused)).toBe(1);
      expect(metricValue(after, 'kiln_inference_request_duration_seconds_count', ok)).toBe(200);
      expect(calls).toBeLessThan(200);
      expect(singleRequestCalls).toBeLessThan(calls);
      // No call carries more than maxBatchSize rows.
      expect(metricValue(text, 'kiln_inference_batch_rows_bucket', { ...labels, le: '64' })).toBe(calls);
    } finally {
      await server.close();
    }
  });

  it('with batching off, every request is its own model call', async () => {
    const server = await startServer({ source: sourceOf(v1), batching: { enabled: false } });
    try {
      const rows = v1.rows.slice(0, 100);
      const replies = await Promise.all(
        rows.map((row) => postJson(`${server.url}/invocations`, { instances: [row] })),
      );
      expect(replies.every((r) => r.status === 200)).toBe(true);
      const text = await metrics(server.url);
      const labels = { model: 'spam', version: '1' };
      expect(metricValue(text, 'kiln_inference_batch_requests_count', labels)).toBe(100);
      expect(metricValue(text, 'kiln_inference_batch_requests_bucket', { ...labels, le: '1' })).toBe(100);
    } finally {
      await server.close();
    }
  });

  it('one invalid request in a coalesced batch does not fail its neighbours', async () => {
    const server = await startServer({ source: sourceOf(v1) });
    try {
      const good = v1.rows
        .slice(0, 60)
        .map((row) => postJson(`${server.url}/invocations`, { instances: [row] }));
      const bad = postJson(`${server.url}/invocations`, {
        instances: [{ ...v1.rows[0], [v1.transform.inputs[0]?.name as string]: 'x' }],
      });
      const replies = await Promise.all(good);
      expect(replies.map((r) => r.status)).toEqual(replies.map(() => 200));
      expect((await bad).status).toBe(400);
    } finally {
      await server.close();
    }
  });
});

describe('reloading', () => {
  it('swaps versions under load without dropping or mixing up a request', async () => {
    const source = sourceOf(v1);
    const server = await startServer({ source });
    const rows = v1.rows.slice(0, 8);
    const [expected1, expected2] = await Promise.all([
      directPredictions(v1, rows),
      directPredictions(v2, rows),
    ]);
    const results: Array<{ status: number; version: string | null; row: number; spam: number | undefined }> =
      [];
    let stop = false;
    const worker = async (w: number) => {
      let i = 0;
      while (!stop) {
        const row = (w + i++) % rows.length;
        const reply = await postJson(`${server.url}/invocations`, { instances: [rows[row]] });
        results.push({
          status: reply.status,
          version: reply.headers.get('x-kiln-model-version'),
          row,
          spam: (reply.json as { predictions?: Classified[] }).predictions?.[0]?.probabilities.spam,
        });
      }
    };
    try {
      const workers = Array.from({ length: 8 }, (_, w) => worker(w));
      while (results.length < 200) await new Promise((r) => setTimeout(r, 5));
      source.publish(v2.bundle);
      const reload = await server.inference.reload('spam');
      expect(reload).toMatchObject({ changed: true, version: '2', previous: '1' });
      const atSwap = results.length;
      while (results.length < atSwap + 200) await new Promise((r) => setTimeout(r, 5));
      stop = true;
      await Promise.all(workers);

      expect(results.filter((r) => r.status !== 200)).toEqual([]);
      const served = new Set(results.map((r) => r.version));
      expect(served).toEqual(new Set(['1', '2']));
      for (const r of results) {
        const expected = r.version === '1' ? expected1 : expected2;
        expect(r.spam).toBeCloseTo(expected.probabilities?.[r.row * 2 + 1] ?? Number.NaN, 6);
      }
      // Everything that started after the swap resolved was answered by the new version.
      expect(results.slice(atSwap + 16).every((r) => r.version === '2')).toBe(true);
      const text = await metrics(server.url);
      expect(metricValue(text, 'kiln_inference_model_loaded', { model: 'spam', version: '2' })).toBe(1);
      expect(text).not.toMatch(/kiln_inference_model_loaded\{model="spam",version="1"/);
    } finally {
      stop = true;
      await server.close();
    }
  });

  it('follows AliasMoved events and polling, and keeps serving when a new version cannot load', async () => {
    const source = sourceOf(v1);
    const server = await startServer({ source, pollIntervalMs: 20 });
    try {
      const versionOf = async () =>
        ((await call(`${server.url}/v2/models/spam`)).json as { versions: string[] }).versions;
      source.publish(v2.bundle);
      const moved = await server.inference.onAliasMoved({
        detailType: 'AliasMoved',
        detail: { model: 'spam', alias: 'production', version: 2 },
      });
      expect(moved).toMatchObject({ version: '2' });
      expect(await versionOf()).toEqual(['2']);

      // Polling notices a move nobody announced.
      source.publish({ ...v1.bundle, version: '3' });
      while ((await versionOf())[0] !== '3') await new Promise((r) => setTimeout(r, 10));

      // Events for other models are ignored.
      expect(await server.inference.onAliasMoved({ model: 'other' })).toBeUndefined();

      // A broken artifact leaves version 3 in service.
      source.publish({ ...v1.bundle, version: '4', onnx: new Uint8Array([1, 2, 3, 4]) });
      await expect(server.inference.reload('spam')).rejects.toThrow();
      expect(await versionOf()).toEqual(['3']);
      const reply = await postJson(`${server.url}/invocations`, { instances: [v1.rows[0]] });
      expect(reply.status).toBe(200);
      expect(reply.headers.get('x-kiln-model-version')).toBe('3');
      const text = await metrics(server.url);
      expect(
        metricValue(text, 'kiln_inference_model_reloads_total', { model: 'spam', outcome: 'failure' }),
      ).toBeGreaterThan(0);
    } finally {
      await server.close();
    }
  });

  it('DirectoryModelSource: versions are content hashes, and replacing the files in place is picked up by polling', async () => {
    const dir = await tempDir();
    const write = async (f: ModelFixture) => {
      await writeFile(join(dir, 'model.onnx'), f.bundle.onnx);
      await writeFile(join(dir, 'transform.json'), JSON.stringify(f.transform));
    };
    await write(v1);
    const source = new DirectoryModelSource({ dir, name: 'spam' });
    const first = await source.current('spam');
    expect(first).toMatch(/^[0-9a-f]{16}$/);
    await expect(source.load('spam', 'deadbeefdeadbeef')).rejects.toThrow(/no version/);
    await expect(source.load('other')).rejects.toThrow(/unknown model/);
    const server = await startServer({ source, pollIntervalMs: 20 });
    try {
      const version = async () =>
        (await postJson(`${server.url}/invocations`, { instances: [v1.rows[0]] })).headers.get(
          'x-kiln-model-version',
        );
      expect(await version()).toBe(first);
      await write(v2);
      const second = await source.current('spam');
      expect(second).not.toBe(first);
      while ((await version()) !== second) await new Promise((r) => setTimeout(r, 10));
      const reply = await postJson(`${server.url}/invocations`, { instances: [v1.rows[0]] });
      const direct = await directPredictions(v2, [v1.rows[0] ?? {}]);
      expect((reply.json as { predictions: Classified[] }).predictions[0]?.probabilities.spam).toBe(
        direct.probabilities?.[1],
      );
    } finally {
      await server.close();
    }
  });
});
