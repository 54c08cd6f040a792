import { afterEach, describe, expect, it, vi } from 'vitest';
import { type KilnEvent, setLocalEventPublisher } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { runMonitorJob } from '../../lib/monitoring/job.ts';
import { RegistryModelSource } from '../../lib/registry/model-source.ts';
import { ModelRegistry } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { postJson, startServer } from '../support/model-fixtures.ts';
import { tempDir } from '../support/temp.ts';
import { churnRows, registerChurnModel, requestRows } from './monitoring-fixtures.ts';

const context = {
  functionName: 'monitor',
  functionVersion: '$LATEST',
  invokedFunctionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:monitor',
  memoryLimitInMB: '2048',
  awsRequestId: 'test-request',
  logGroupName: '/aws/lambda/monitor',
  logStreamName: 'local',
  callbackWaitsForEmptyEventLoop: false,
  getRemainingTimeInMillis: () => 600_000,
};

interface Emf {
  _aws: {
    CloudWatchMetrics: Array<{ Namespace: string; Dimensions: string[][]; Metrics: Array<{ Name: string }> }>;
  };
  [key: string]: unknown;
}

/** Runs `fn` and returns what it wrote to stdout as EMF documents (Powertools writes metrics there). */
async function emfOf<T>(fn: () => Promise<T>): Promise<{ result: T; blobs: Emf[] }> {
  const lines: string[] = [];
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  try {
    const result = await fn();
    const blobs = lines
      .flatMap((text) => text.split('\n'))
      .filter((line) => line.includes('"_aws"'))
      .map((line) => JSON.parse(line) as Emf);
    return { result, blobs };
  } finally {
    spy.mockRestore();
  }
}

afterEach(() => {
  setLocalEventPublisher(undefined);
});

async function servedLake(shift: number) {
  const dir = await tempDir('kiln-monitor-handler-');
  const store = new FileSystemStore(dir);
  const bus = new LocalEventBus();
  const events: KilnEvent[] = [];
  bus.subscribe({ source: ['kiln.monitoring'] }, (event) => {
    events.push(event);
  });
  const registry = new ModelRegistry(store, bus);
  await registerChurnModel(registry);
  const server = await startServer({
    source: new RegistryModelSource(registry),
    capture: { store, flushIntervalMs: 0 },
  });
  const rows = churnRows(600, 71, shift ? { shift, premiumShare: 0.02 } : {});
  const ids: string[] = [];
  try {
    for (let i = 0; i < rows.length; i += 10) {
      const reply = await postJson(`${server.url}/invocations`, {
        instances: requestRows(rows.slice(i, i + 10)),
      });
      ids.push(reply.headers.get('x-kiln-request-id') ?? '');
    }
  } finally {
    await server.close();
  }
  return { dir, store, registry, bus, events, rows, ids };
}

describe('functions/monitoring/monitor.ts', () => {
  it('on the schedule event monitors every champion, emits EMF metrics and DriftDetected', async () => {
    const lake = await servedLake(1);
    vi.stubEnv('KILN_LAKE', lake.dir);
    setLocalEventPublisher(lake.bus);
    const { handler } = await import('../../functions/monitoring/monitor.ts');
    const schedule = {
      version: '0',
      id: 'e1',
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: '123456789012',
      time: new Date().toISOString(),
      region: 'eu-west-1',
      resources: ['arn:aws:events:eu-west-1:123456789012:rule/monitor'],
      detail: {},
    };
    const { result, blobs } = await emfOf(() => handler(schedule, context as never));
    await lake.bus.drain();
    vi.unstubAllEnvs();

    expect(result.models).toHaveLength(1);
    expect(result.models[0]).toMatchObject({ model: 'churn', version: 1, status: 'drift' });
    expect(result.models[0]?.report).toMatch(/^monitoring\/churn\/1\/drift\//);
    expect(lake.events.map((e) => e.detailType)).toEqual(['DriftDetected']);

    const metric = (name: string, dims: string[]) =>
      blobs.filter((blob) =>
        blob._aws.CloudWatchMetrics.some(
          (m) =>
            m.Namespace === 'Kiln/Monitoring' &&
            m.Metrics.some((x) => x.Name === name) &&
            m.Dimensions.some((d) => d.join(',') === dims.join(',')),
        ),
      );
    // The aggregate the alarms watch: only the service dimension.
    const aggregate = metric('DriftDetected', ['service']);
    expect(aggregate).toHaveLength(1);
    expect(aggregate[0]?.DriftDetected).toBe(1);
    expect(aggregate[0]?.service).toBe('kiln-monitoring');
    expect(aggregate[0]?.MonitorFailures).toBe(0);
    // Per model version, and per feature.
    const perVersion = metric('DriftedFeatures', ['service', 'model', 'version']);
    expect(perVersion[0]).toMatchObject({
      model: 'churn',
      version: '1',
      DriftedFeatures: 2,
      PredictionDrift: 1,
    });
    const perFeature = metric('FeatureDriftScore', ['service', 'model', 'version', 'feature']);
    expect(perFeature.map((blob) => blob.feature).sort()).toEqual(['plan', 'visits', 'x']);
    expect(Number(perFeature.find((blob) => blob.feature === 'x')?.FeatureDriftScore)).toBeGreaterThan(0.1);
  });

  it('a model that cannot be monitored is reported and the others still run', async () => {
    const lake = await servedLake(0);
    // A second model registered without a baseline profile.
    const broken = await lake.registry.register({
      model: 'nobaseline',
      task: 'binary',
      classes: ['no', 'yes'],
      target: 'y',
      inputs: [{ name: 'x', type: 'number' }],
      metrics: { accuracy: 0.9 },
      artifacts: { 'model.onnx': Buffer.from('onnx'), 'transform.json': Buffer.from('{}') },
      actor: 'test',
      lineage: {
        dataset: 'd',
        datasetVersion: 'v',
        transformHash: 'a'.repeat(64),
        codeVersion: 'kiln@test',
        algorithm: 'gbdt',
        hyperparameters: {},
        seed: 0,
        metrics: { accuracy: 0.9 },
        trainingJob: 'job',
        startedAt: '2026-01-01T00:00:00Z',
        endedAt: '2026-01-01T00:01:00Z',
      },
    });
    expect(broken.version).toBe(1);
    const result = await runMonitorJob(lake.store, {}, { events: lake.bus });
    const byModel = Object.fromEntries(result.entries.map((entry) => [entry.model, entry]));
    expect(byModel.churn?.drift?.status).toBe('no-drift');
    expect(byModel.nobaseline?.error).toMatch(/nobaseline@1 has no baseline.json artifact/);
    await expect(runMonitorJob(lake.store, { model: 'churn', colour: 'red' })).rejects.toThrow(
      /monitor input must be/,
    );
  });
});

describe('functions/monitoring/labels.ts', () => {
  it('ingests a landed label file and emits quality metrics', async () => {
    const lake = await servedLake(0);
    const lines = ['requestId,row,label'];
    lake.ids.forEach((id, request) => {
      for (let row = 0; row < 10; row++) lines.push(`${id},${row},${lake.rows[request * 10 + row]?.churned}`);
    });
    await lake.store.put('labels/churn/batch-1.csv', `${lines.join('\n')}\n`);
    vi.stubEnv('KILN_LAKE', lake.dir);
    setLocalEventPublisher(lake.bus);
    const { handler } = await import('../../functions/monitoring/labels.ts');
    const event = {
      source: 'aws.s3',
      'detail-type': 'Object Created',
      detail: { bucket: { name: 'lake' }, object: { key: 'labels/churn/batch-1.csv', size: 1000 } },
    };
    const { result, blobs } = await emfOf(() => handler(event, context as never));
    await lake.bus.drain();
    vi.unstubAllEnvs();
    expect(result.ingest).toMatchObject({
      model: 'churn',
      accepted: 600,
      matched: 600,
      unknownRequestIds: 0,
    });
    expect(result.quality.dropped).toEqual([]);
    const accuracy = blobs.find((blob) => 'ModelAccuracy' in blob);
    expect(accuracy).toMatchObject({ model: 'churn', version: '1', LabelledRows: 600, QualityDropped: 0 });
    expect(lake.events.map((e) => e.detailType)).toEqual(['LabelsIngested']);
  });
});
