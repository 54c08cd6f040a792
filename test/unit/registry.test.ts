import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { ConflictError, IntegrityError, NotFoundError, ValidationError } from '../../lib/core/errors.ts';
import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { ModelRegistry, parseModelReference, type RegisterRequest } from '../../lib/registry/registry.ts';
import { FileSystemStore } from '../../lib/store/fs-store.ts';
import { tempDir } from '../support/temp.ts';

function request(model: string, onnx = Buffer.from(`onnx-${Math.random()}`)): RegisterRequest {
  return {
    model,
    task: 'binary',
    classes: ['no', 'yes'],
    target: 'churn',
    inputs: [{ name: 'x', type: 'number' }],
    metrics: { accuracy: 0.9 },
    artifacts: { 'model.onnx': onnx, 'transform.json': Buffer.from('{}') },
    actor: 'test',
    lineage: {
      dataset: 'churn',
      datasetVersion: 'abc123',
      transformHash: 'a'.repeat(64),
      codeVersion: 'kiln@test',
      algorithm: 'gbdt',
      hyperparameters: { max_iter: 10 },
      seed: 0,
      metrics: { accuracy: 0.9 },
      trainingJob: 'job-1',
      startedAt: '2026-01-01T00:00:00Z',
      endedAt: '2026-01-01T00:01:00Z',
    },
  };
}

async function setup() {
  const store = new FileSystemStore(await tempDir());
  const events: KilnEvent[] = [];
  const bus = new LocalEventBus();
  bus.subscribe({}, (event) => {
    events.push(event);
  });
  return { store, registry: new ModelRegistry(store, bus), bus, events };
}

describe('ModelRegistry', () => {
  it('numbers versions, records lineage with the artifact hash, and emits events', async () => {
    const { registry, bus, events } = await setup();
    const onnx = Buffer.from('model-bytes');
    const first = await registry.register(request('churn', onnx));
    const second = await registry.register(request('churn'));
    expect([first.version, second.version]).toEqual([1, 2]);
    expect(first.lineage.artifactSha256).toBe(createHash('sha256').update(onnx).digest('hex'));
    expect(first.stage).toBe('candidate');
    await bus.drain();
    expect(events.filter((e) => e.detailType === 'ModelVersionRegistered')).toHaveLength(2);
  });

  it('refuses a version without complete lineage and leaves the registry unchanged', async () => {
    const { registry, store } = await setup();
    const incomplete = request('churn');
    (incomplete.lineage as Partial<RegisterRequest['lineage']>).datasetVersion = undefined;
    await expect(registry.register(incomplete)).rejects.toThrow(/lineage.*datasetVersion/);
    expect(await store.list('')).toEqual([]);
  });

  it('gives every concurrent writer its own version number', async () => {
    const { registry } = await setup();
    const records = await Promise.all(Array.from({ length: 12 }, () => registry.register(request('race'))));
    expect(records.map((r) => r.version).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
    expect((await registry.listVersions('race')).map((r) => r.version)).toHaveLength(12);
  });

  it('moves aliases with compare-and-swap and resolves NAME, NAME@N and NAME@ALIAS', async () => {
    const { registry } = await setup();
    await registry.register(request('m'));
    await registry.register(request('m'));
    expect((await registry.resolve('m')).version).toBe(2);
    await registry.setAlias('m', 'champion', 1, 'test', 'first');
    expect((await registry.resolve('m')).version).toBe(1);
    expect((await registry.resolve('m@2')).version).toBe(2);
    expect((await registry.resolve('m@champion')).version).toBe(1);
    await Promise.all([1, 2, 1, 2].map((v) => registry.setAlias('m', `a${v}`, v, 'test', 'race')));
    expect((await registry.readAliases('m')).aliases).toMatchObject({ champion: 1, a1: 1, a2: 2 });
  });

  it('detects a tampered artifact when it is read', async () => {
    const { registry, store } = await setup();
    const record = await registry.register(request('t'));
    await writeFile(store.pathOf(record.artifacts['model.onnx']?.key ?? ''), 'tampered');
    await expect(registry.readArtifact(record, 'model.onnx')).rejects.toBeInstanceOf(IntegrityError);
  });

  it('rejects unknown models, bad references and aliases to archived versions', async () => {
    const { registry } = await setup();
    await expect(registry.resolve('nope')).rejects.toBeInstanceOf(NotFoundError);
    expect(() => parseModelReference('Bad Name')).toThrow(ValidationError);
    expect(() => parseModelReference('m@1@2')).toThrow(ValidationError);
    await registry.register(request('a'));
    await expect(registry.resolve('a@9')).rejects.toBeInstanceOf(NotFoundError);
    await registry.setStage('a', 1, 'archived', 'test', 'old');
    await expect(registry.setAlias('a', 'champion', 1, 'test', 'x')).rejects.toThrow(/archived/);
  });

  it('keeps create-only artifacts immutable', async () => {
    const { registry, store } = await setup();
    const record = await registry.register(request('i'));
    await expect(
      store.put(record.artifacts['model.onnx']?.key ?? '', Buffer.from('x'), { ifNoneMatch: '*' }),
    ).rejects.toBeInstanceOf(ConflictError);
  });
});
