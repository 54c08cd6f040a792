import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { LabelsIngestedDetailSchema, QualityDroppedDetailSchema } from '../../lib/monitoring/events.ts';
import { ingestLabels, ingestLandedLabels } from '../../lib/monitoring/labels.ts';
import { computeQuality } from '../../lib/monitoring/quality.ts';
import { RegistryModelSource } from '../../lib/registry/model-source.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { postJson, startServer } from '../support/model-fixtures.ts';
import { tempDir } from '../support/temp.ts';
import { churnRows, type Row, registerChurnModel, requestRows } from './monitoring-fixtures.ts';

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});
async function sharedDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-labels-'));
  dirs.push(dir);
  return dir;
}

interface Served {
  store: FileSystemStore;
  registry: ModelRegistry;
  bus: LocalEventBus;
  events: KilnEvent[];
  /** One entry per request: its id and the ground truth of each of its rows. */
  requests: Array<{ id: string; truth: unknown[] }>;
}

/** Registers the model, then sends `rows` through the real server, `perRequest` rows per request. */
async function serveModel(target: 'churned' | 'spend', rows: Row[], perRequest: number): Promise<Served> {
  const store = new FileSystemStore(await sharedDir());
  const bus = new LocalEventBus();
  const events: KilnEvent[] = [];
  bus.subscribe({ source: ['kiln.monitoring'] }, (event) => {
    events.push(event);
  });
  const registry = new ModelRegistry(store, bus);
  await registerChurnModel(registry, target);
  const server = await startServer({
    source: new RegistryModelSource(registry),
    capture: { store, flushIntervalMs: 0 },
  });
  const requests: Served['requests'] = [];
  try {
    for (let i = 0; i < rows.length; i += perRequest) {
      const batch = rows.slice(i, i + perRequest);
      const reply = await postJson(`${server.url}/invocations`, { instances: requestRows(batch) });
      expect(reply.status).toBe(200);
      requests.push({
        id: reply.headers.get('x-kiln-request-id') ?? '',
        truth: batch.map((row) => row[target]),
      });
    }
  } finally {
    await server.close();
  }
  return { store, registry, bus, events, requests };
}

async function csvFile(lines: string[]): Promise<string> {
  const path = join(await tempDir('kiln-label-file-'), 'labels.csv');
  await writeFile(path, `${lines.join('\n')}\n`);
  return path;
}

describe('late labels for a classification model', () => {
  let served: Served;

  beforeAll(async () => {
    served = await serveModel('churned', churnRows(800, 41), 4);
  });

  it('ingests a CSV, reports unknown request ids and bad rows, and stores it once', async () => {
    const lines = ['requestId,row,label'];
    for (const request of served.requests.slice(0, 100)) {
      request.truth.forEach((truth, row) => {
        lines.push(`${request.id},${row},${truth}`);
      });
    }
    lines.push('00000000-0000-4000-8000-000000000001,0,yes'); // never served
    lines.push('00000000-0000-4000-8000-000000000002,0,no'); // never served
    lines.push(`${served.requests[0]?.id},9,yes`); // that request had 4 rows
    lines.push(',0,yes'); // no request id
    lines.push(`${served.requests[1]?.id},0,`); // no label
    lines.push(`${served.requests[2]?.id},-1,no`); // bad row
    const file = await csvFile(lines);

    const result = await ingestLabels(served.store, 'churn', file, { events: served.bus });
    expect(result).toMatchObject({
      model: 'churn',
      task: 'binary',
      labelColumn: 'label',
      rows: 406,
      accepted: 403,
      invalid: 3,
      matched: 400,
      unknownRequestIds: 3,
      alreadyIngested: false,
    });
    expect(result.unknownExamples).toEqual([
      '00000000-0000-4000-8000-000000000001',
      '00000000-0000-4000-8000-000000000002',
      `${served.requests[0]?.id}#9 (the request had 4 rows)`,
    ]);
    expect(result.invalidExamples.map((e) => e.row)).toEqual([404, 405, 406]);
    expect(result.invalidExamples[0]?.reason).toMatch(/missing or invalid request id/);
    expect(result.key).toMatch(/^monitoring\/churn\/labels\/.+-[0-9a-f]{16}\.jsonl$/);
    const stored = (await served.store.get(result.key ?? '')).toString('utf8').trim().split('\n');
    expect(stored).toHaveLength(403);
    expect(JSON.parse(stored[0] ?? '{}')).toEqual({ requestId: served.requests[0]?.id, row: 0, label: 'no' });

    // The same file again: recognised, nothing new written.
    const again = await ingestLabels(served.store, 'churn', file, { events: served.bus });
    expect(again.alreadyIngested).toBe(true);
    expect(again.key).toBe(result.key);
    expect(
      (await served.store.list('monitoring/churn/labels/')).filter((i) => i.key.endsWith('.jsonl')),
    ).toHaveLength(1);
    await served.bus.drain();
    const ingested = served.events.filter((e) => e.detailType === 'LabelsIngested');
    expect(ingested).toHaveLength(2);
    expect(LabelsIngestedDetailSchema.parse(ingested[0]?.detail)).toMatchObject({
      unknownRequestIds: 3,
      accepted: 403,
    });
  });

  it('joins labels to captured predictions: accuracy per version and per hour, no drop', async () => {
    const report = await computeQuality(
      served.store,
      { model: 'churn', bucket: 'hour' },
      { events: served.bus },
    );
    await served.bus.drain();
    expect(report.labels).toMatchObject({ labels: 403, matched: 400, unmatched: 3 });
    expect(report.versions).toHaveLength(1);
    const [v1] = report.versions;
    expect(v1).toMatchObject({ version: 1, metric: 'accuracy', labelled: 400, dropped: false });
    // The model scores about as well live as on held-out rows (same distribution).
    expect(Math.abs((v1?.value ?? 0) - (v1?.heldOut ?? 0))).toBeLessThan(0.08);
    expect(v1?.buckets.reduce((n, b) => n + b.labelled, 0)).toBe(400);
    expect(v1?.buckets[0]?.start).toMatch(/T\d\d:00:00\.000Z$/);
    expect(report.key).toMatch(/^monitoring\/churn\/quality\/.+\.json$/);
    expect(report.summary).toMatch(
      /churn@1: accuracy 0\.\d{4} on 400 labelled rows \(held-out 0\.\d{4}\); 3 of 403 labels match no captured request/,
    );
    expect(served.events.filter((e) => e.detailType === 'QualityDropped')).toHaveLength(0);
  });

  it('publishes QualityDropped when live labels disagree with the predictions', async () => {
    // Ground truth for the remaining requests says the opposite of the truth: accuracy collapses.
    const lines = ['request_id,row,churned'];
    for (const request of served.requests.slice(100)) {
      request.truth.forEach((truth, row) => {
        lines.push(`${request.id},${row},${truth === 'yes' ? 'no' : 'yes'}`);
      });
    }
    const result = await ingestLabels(served.store, 'churn', await csvFile(lines));
    expect(result).toMatchObject({
      labelColumn: 'churned',
      accepted: 400,
      matched: 400,
      unknownRequestIds: 0,
    });
    const report = await computeQuality(served.store, { model: 'churn', version: 1 }, { events: served.bus });
    await served.bus.drain();
    const [v1] = report.versions;
    expect(v1?.labelled).toBe(800);
    expect(v1?.dropped).toBe(true);
    expect(v1?.reason).toMatch(/^accuracy 0\.\d+ \(upper 95% bound 0\.\d+\) is below 0\.\d+ = held-out/);
    const dropped = served.events.filter((e) => e.detailType === 'QualityDropped');
    expect(dropped).toHaveLength(1);
    const detail = QualityDroppedDetailSchema.parse(dropped[0]?.detail);
    expect(detail).toMatchObject({ model: 'churn', version: 1, metric: 'accuracy', labelled: 800 });
    expect(detail.bound).toBeLessThan(detail.threshold);
    expect(detail.reportKey).toBe(report.key);
  });

  it('a few wrong labels are not yet a drop (too few to judge)', async () => {
    const fresh = await serveModel('churned', churnRows(40, 43), 4);
    const lines = ['requestId,row,label'];
    for (const request of fresh.requests.slice(0, 5)) {
      request.truth.forEach((truth, row) => {
        lines.push(`${request.id},${row},${truth === 'yes' ? 'no' : 'yes'}`);
      });
    }
    await ingestLabels(fresh.store, 'churn', await csvFile(lines));
    const report = await computeQuality(fresh.store, { model: 'churn' }, { events: fresh.bus });
    await fresh.bus.drain();
    expect(report.versions[0]).toMatchObject({ labelled: 20, dropped: false });
    expect(report.versions[0]?.reason).toBe('20 labelled rows; at least 30 are needed to judge');
    expect(fresh.events.filter((e) => e.detailType === 'QualityDropped')).toHaveLength(0);
  });

  it('refuses a file that is not a label file, naming the columns it has', async () => {
    const file = await csvFile(['id,outcome', 'a,yes']);
    await expect(ingestLabels(served.store, 'churn', file)).rejects.toThrow(
      /needs a request id column \(requestId or request_id\); it has id, outcome/,
    );
    const noLabel = await csvFile(['requestId,outcome', 'a,yes']);
    await expect(ingestLabels(served.store, 'churn', noLabel)).rejects.toThrow(
      /needs a label column \(label, value, churned\)/,
    );
  });
});

describe('late labels for a regression model', () => {
  it('RMSE per version from JSON Lines labels, and a drop when errors grow', async () => {
    const rows = churnRows(400, 51);
    const served = await serveModel('spend', rows, 1);
    const path = join(await tempDir('kiln-label-file-'), 'labels.jsonl');
    const good = served.requests
      .slice(0, 200)
      .map((r) => JSON.stringify({ requestId: r.id, value: r.truth[0] }));
    await writeFile(path, `${good.join('\n')}\n`);
    const first = await ingestLabels(served.store, 'spend', path);
    expect(first).toMatchObject({ task: 'regression', labelColumn: 'value', accepted: 200, matched: 200 });
    const ok = await computeQuality(served.store, { model: 'spend' });
    const [v1] = ok.versions;
    expect(v1?.metric).toBe('rmse');
    expect(v1?.heldOut).toBeGreaterThan(0);
    expect(v1?.dropped).toBe(false);
    expect(v1?.value).toBeLessThan((v1?.heldOut ?? 0) * 1.3);
    expect(v1?.mae).toBeGreaterThan(0);

    // Later labels 50 units off: RMSE far above held-out.
    const bad = served.requests
      .slice(200)
      .map((r) => JSON.stringify({ requestId: r.id, value: Number(r.truth[0]) + 50 }));
    const badPath = join(await tempDir('kiln-label-file-'), 'late.jsonl');
    await writeFile(badPath, `${bad.join('\n')}\n`);
    await ingestLabels(served.store, 'spend', badPath);
    const dropped = await computeQuality(served.store, { model: 'spend' }, { events: served.bus });
    await served.bus.drain();
    expect(dropped.versions[0]?.dropped).toBe(true);
    expect(dropped.versions[0]?.reason).toMatch(/^RMSE .* is above/);
    expect(served.events.filter((e) => e.detailType === 'QualityDropped')).toHaveLength(1);

    const wrong = join(await tempDir('kiln-label-file-'), 'wrong.jsonl');
    await writeFile(wrong, `${JSON.stringify({ requestId: served.requests[0]?.id, value: 'lots' })}\n`);
    const refused = await ingestLabels(served.store, 'spend', wrong);
    expect(refused).toMatchObject({ accepted: 0, invalid: 1, key: null });
    expect(refused.invalidExamples[0]?.reason).toMatch(/must be a number for a regression model/);
  });
});

describe('labels landing in the lake (what the labels Lambda runs)', () => {
  it('ingests labels/<model>/<file> from an S3 Object Created event and recomputes quality', async () => {
    const served = await serveModel('churned', churnRows(120, 61), 2);
    const lines = ['requestId,row,label'];
    for (const request of served.requests) {
      request.truth.forEach((truth, row) => {
        lines.push(`${request.id},${row},${truth}`);
      });
    }
    await served.store.put('labels/churn/day=2026-03-01.csv', `${lines.join('\n')}\n`);
    // EventBridge delivers S3 keys URL-encoded.
    const event = {
      source: 'aws.s3',
      'detail-type': 'Object Created',
      detail: { bucket: { name: 'lake' }, object: { key: 'labels/churn/day%3D2026-03-01.csv', size: 100 } },
    };
    const { ingest, quality } = await ingestLandedLabels(served.store, event, { events: served.bus });
    expect(ingest).toMatchObject({
      model: 'churn',
      source: 'labels/churn/day=2026-03-01.csv',
      accepted: 120,
      matched: 120,
    });
    expect(quality.versions[0]?.labelled).toBe(120);
    await expect(ingestLandedLabels(served.store, { key: 'raw/churn/x.csv' })).rejects.toThrow(
      /label files land as labels\/<model>\/<file>/,
    );
    await expect(ingestLandedLabels(served.store, { nothing: true })).rejects.toThrow(/Object Created/);
    await expect(ingestLandedLabels(served.store, { key: 'labels/churn/my batch.csv' })).rejects.toThrow(
      /characters the lake does not use/,
    );
  });
});
