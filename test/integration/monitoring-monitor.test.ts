import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { DriftDetectedDetailSchema } from '../../lib/monitoring/events.ts';
import { type DriftReport, runMonitor } from '../../lib/monitoring/monitor.ts';
import { RegistryModelSource } from '../../lib/registry/model-source.ts';
import type { VersionRecord } from '../../lib/registry/records.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { captureKey } from '../../lib/serving/capture.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { postJson, startServer } from '../support/model-fixtures.ts';
import { tempDir } from '../support/temp.ts';
import { churnRows, registerChurnModel, requestRows } from './monitoring-fixtures.ts';

const sharedDirs: string[] = [];
afterAll(async () => {
  for (const dir of sharedDirs) await rm(dir, { recursive: true, force: true });
});

interface Lake {
  store: FileSystemStore;
  registry: ModelRegistry;
  bus: LocalEventBus;
  events: KilnEvent[];
  record: VersionRecord;
}

/** A lake with the churn model registered; `shared` lakes outlive one test (removed in afterAll). */
async function lake(shared = false): Promise<Lake> {
  const dir = shared ? await mkdtemp(join(tmpdir(), 'kiln-monitor-')) : await tempDir('kiln-monitor-');
  if (shared) sharedDirs.push(dir);
  const store = new FileSystemStore(dir);
  const bus = new LocalEventBus();
  const events: KilnEvent[] = [];
  bus.subscribe({ source: ['kiln.monitoring'] }, (event) => {
    events.push(event);
  });
  const registry = new ModelRegistry(store, bus);
  const record = await registerChurnModel(registry);
  return { store, registry, bus, events, record };
}

/** Sends rows to a real inference server serving the registry, in requests of `perRequest` rows; returns request ids. */
async function serve(target: Lake, rows: Record<string, unknown>[], perRequest = 20): Promise<string[]> {
  const server = await startServer({
    source: new RegistryModelSource(target.registry),
    capture: { store: target.store, flushIntervalMs: 0 },
  });
  const ids: string[] = [];
  try {
    for (let i = 0; i < rows.length; i += perRequest) {
      const reply = await postJson(`${server.url}/invocations`, { instances: rows.slice(i, i + perRequest) });
      expect(reply.status).toBe(200);
      ids.push(reply.headers.get('x-kiln-request-id') ?? '');
    }
  } finally {
    // close() flushes capture to the lake, as the container does on SIGTERM.
    await server.close();
  }
  return ids;
}

describe('runMonitor on traffic captured by the real inference server', () => {
  let quiet: Lake;
  let shifted: Lake;
  let quietReport: DriftReport;
  let shiftedReport: DriftReport;

  beforeAll(async () => {
    quiet = await lake(true);
    shifted = await lake(true);
    await serve(quiet, requestRows(churnRows(1200, 11)));
    await serve(shifted, requestRows(churnRows(1200, 12, { shift: 1, premiumShare: 0.02 })));
    quietReport = await runMonitor(quiet.store, { model: 'churn' }, { events: quiet.bus });
    shiftedReport = await runMonitor(shifted.store, { model: 'churn' }, { events: shifted.bus });
    await quiet.bus.drain();
    await shifted.bus.drain();
  });

  it('finds no drift in traffic like the training data, and says so without an event', () => {
    expect(quietReport.status).toBe('no-drift');
    expect(quietReport.traffic).toMatchObject({ requests: 60, rows: 1200 });
    expect(quietReport.features.map((c) => c.column).sort()).toEqual(['plan', 'visits', 'x']);
    expect(quietReport.features.every((c) => c.status === 'tested' && !c.drifted)).toBe(true);
    expect(quietReport.prediction?.kind).toBe('categorical');
    expect(quietReport.prediction?.drifted).toBe(false);
    expect(quietReport.validation.rowsWithUnknownColumns).toBe(0);
    expect(quietReport.summary).toMatch(/^churn@1: no drift in 3 features/);
    expect(quiet.events).toEqual([]);
  });

  it('flags shifted features and the prediction, and publishes DriftDetected', () => {
    expect(shiftedReport.status).toBe('drift');
    expect([...shiftedReport.drift.driftedFeatures].sort()).toEqual(['plan', 'x']);
    expect(shiftedReport.features.find((c) => c.column === 'visits')?.drifted).toBe(false);
    expect(shiftedReport.drift.predictionDrift).toBe(true);
    expect(shiftedReport.summary).toMatch(
      /DRIFT in 2 of 3 features \((x, plan|plan, x)\) and the prediction/,
    );
    expect(shifted.events).toHaveLength(1);
    const [event] = shifted.events;
    expect(event).toMatchObject({ source: 'kiln.monitoring', detailType: 'DriftDetected' });
    const detail = DriftDetectedDetailSchema.parse(event?.detail);
    expect(detail).toMatchObject({
      model: 'churn',
      version: 1,
      predictionDrift: true,
      driftedFeatureCount: 2,
      reportKey: shiftedReport.keys.json,
      htmlKey: shiftedReport.keys.html,
      rows: 1200,
    });
    expect(Object.keys(detail.scores).sort()).toEqual(['plan', 'x']);
  });

  it('writes the JSON report and a self-contained HTML page with a chart per feature', async () => {
    expect(shiftedReport.keys.json).toMatch(
      /^monitoring\/churn\/1\/drift\/\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z-[0-9a-f]{6}\.json$/,
    );
    const stored = JSON.parse(
      (await shifted.store.get(shiftedReport.keys.json)).toString('utf8'),
    ) as DriftReport;
    expect(stored).toEqual(JSON.parse(JSON.stringify(shiftedReport)));
    const html = (await shifted.store.get(shiftedReport.keys.html)).toString('utf8');
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html.match(/<svg /g)).toHaveLength(4); // three features and the prediction
    expect(html).toContain('DRIFT');
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/);
  });
});

describe('runMonitor on bad and missing input', () => {
  it('counts unknown columns, missing features, bad lines and misfiled records instead of failing', async () => {
    const target = await lake();
    const rows = requestRows(churnRows(200, 21));
    const time = new Date('2026-03-01T10:15:00Z');
    const record = (i: number, inputs: unknown[]) =>
      JSON.stringify({
        requestId: `req-${i}`,
        time: time.toISOString(),
        model: 'churn',
        version: '1',
        inputs,
        outputs: inputs.map(() => ({ label: 'no', probabilities: { no: 0.9, yes: 0.1 } })),
      });
    const lines = [
      ...rows.slice(0, 150).map((row, i) => record(i, [row])),
      // An old client: an extra column, and one without `visits`.
      ...rows.slice(150, 170).map((row, i) => record(1000 + i, [{ ...row, colour: 'red' }])),
      ...rows.slice(170, 190).map(({ visits: _v, ...row }, i) => record(2000 + i, [row])),
      // A value of the wrong type, an array row, a record whose outputs do not match.
      record(3000, [{ x: 'fifty', visits: 3, plan: 'basic' }]),
      record(3001, [[1, 2, 3]]),
      JSON.stringify({
        requestId: 'r',
        time: time.toISOString(),
        model: 'churn',
        version: '1',
        inputs: [rows[0]],
        outputs: [],
      }),
      '{"truncated": ',
      JSON.stringify({ requestId: 'no-inputs', time: time.toISOString(), model: 'churn', version: '1' }),
      record(3002, [rows[0]]).replace('"version":"1"', '"version":"7"'),
    ];
    await target.store.put(captureKey('capture', 'churn', '1', time), `${lines.join('\n')}\n`);

    const report = await runMonitor(target.store, { model: 'churn', version: 1 });
    expect(report.status).not.toBe('no-traffic');
    expect(report.traffic.requests).toBe(190 + 3);
    expect(report.validation).toMatchObject({
      files: 1,
      invalidRecords: 2,
      misfiledRecords: 1,
      rowsWithUnknownColumns: 20,
      unknownColumns: { colour: 20 },
      rowsMissingFeatures: 20,
      missingFeatures: { visits: 20 },
      invalidValues: { x: 1 },
      rowsNotObjects: 1,
      outputMismatches: 1,
    });
    expect(report.validation.invalidExamples.map((e) => e.reason)).toEqual(
      expect.arrayContaining([
        'not valid JSON',
        expect.stringMatching(/^not a capture record: inputs/),
        expect.stringMatching(/churn@7 filed under churn@1/),
      ]),
    );
    const visits = report.features.find((c) => c.column === 'visits');
    expect(visits?.missingRate.current).toBeGreaterThan(0.09);
    expect(report.summary).toMatch(
      /input problems: .*20 rows with unknown columns \(colour\).*20 rows missing features \(visits\)/,
    );
    const html = (await target.store.get(report.keys.html)).toString('utf8');
    expect(html).toContain('<code>colour</code> × 20');
  });

  it('a version without traffic gets a report saying so, and no event', async () => {
    const target = await lake();
    const report = await runMonitor(
      target.store,
      { model: 'churn', since: '2026-01-01T00:00:00Z', until: '2026-01-02T00:00:00Z' },
      { events: target.bus },
    );
    await target.bus.drain();
    expect(report.status).toBe('no-traffic');
    expect(report.traffic).toEqual({ files: 0, requests: 0, rows: 0 });
    expect(report.summary).toBe(
      'churn@1: no captured traffic between 2026-01-01T00:00:00.000Z and 2026-01-02T00:00:00.000Z; nothing to compare with the baseline',
    );
    expect(report.features.every((c) => c.status === 'insufficient-data')).toBe(true);
    expect(await target.store.head(report.keys.json)).toBeDefined();
    expect(target.events).toEqual([]);
  });

  it('reads only the window: hour partitions outside it are not even opened', async () => {
    const target = await lake();
    const rows = requestRows(churnRows(100, 31));
    const put = async (iso: string, from: number) => {
      const time = new Date(iso);
      const body = rows
        .slice(from, from + 50)
        .map((row, i) =>
          JSON.stringify({
            requestId: `${iso}-${i}`,
            time: time.toISOString(),
            model: 'churn',
            version: '1',
            inputs: [row],
            outputs: [{ label: 'no' }],
          }),
        )
        .join('\n');
      await target.store.put(captureKey('capture', 'churn', '1', time), body);
    };
    await put('2026-02-01T09:30:00Z', 0);
    await put('2026-02-02T09:30:00Z', 50);
    const report = await runMonitor(target.store, {
      model: 'churn',
      since: '2026-02-02T00:00:00Z',
      until: '2026-02-03T00:00:00Z',
    });
    expect(report.validation.files).toBe(1);
    expect(report.traffic.requests).toBe(50);
    expect(report.window.firstRequest).toBe('2026-02-02T09:30:00.000Z');
  });

  it('names what is wrong with the request', async () => {
    const target = await lake();
    await expect(runMonitor(target.store, { model: 'churn', version: 9 })).rejects.toThrow(
      /does not exist|not found/i,
    );
    await expect(runMonitor(target.store, { model: 'Bad Name' })).rejects.toThrow(/invalid model name/);
    await expect(runMonitor(target.store, { model: 'churn', since: 'yesterday' })).rejects.toThrow(
      /since must be an ISO-8601 date/,
    );
    await expect(runMonitor(target.store, { model: 'churn', settings: { alpha: 5 } })).rejects.toThrow(
      /alpha/,
    );
  });
});
