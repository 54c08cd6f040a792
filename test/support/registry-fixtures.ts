import type { KilnEvent } from '../../lib/core/events.ts';
import { LocalEventBus } from '../../lib/local/event-bus.ts';
import { ModelRegistry, type RegisterRequest } from '../../lib/registry/registry.ts';
import type { ObjectStore } from '../../lib/store/object-store.ts';

/** A registration with complete lineage; `gate` mimics what the training pipeline records. */
export function registration(
  model: string,
  options: {
    onnx?: Buffer;
    metrics?: Record<string, unknown>;
    gate?: Record<string, unknown>;
    actor?: string;
    hyperparameters?: Record<string, unknown>;
    datasetVersion?: string;
  } = {},
): RegisterRequest {
  const metrics = options.metrics ?? { accuracy: 0.9 };
  return {
    model,
    task: 'binary',
    classes: ['no', 'yes'],
    target: 'churn',
    inputs: [{ name: 'x', type: 'number' }],
    metrics,
    artifacts: {
      'model.onnx': options.onnx ?? Buffer.from(`onnx-${model}-${Math.random()}`),
      'transform.json': Buffer.from('{}'),
    },
    actor: options.actor ?? 'training-pipeline',
    ...(options.gate ? { gate: options.gate } : {}),
    lineage: {
      dataset: 'churn',
      datasetVersion: options.datasetVersion ?? 'abc123',
      transformHash: 'a'.repeat(64),
      codeVersion: 'kiln@test',
      algorithm: 'gbdt',
      hyperparameters: options.hyperparameters ?? { max_iter: 10 },
      seed: 0,
      metrics,
      trainingJob: 'job-1',
      startedAt: '2026-01-01T00:00:00Z',
      endedAt: '2026-01-01T00:01:00Z',
    },
  };
}

/** A gate result as `evaluateTraining` writes it. */
export function gate(passed: boolean, championVersion: number | null, improvement: number | null) {
  return {
    passed,
    metric: 'roc_auc',
    higherIsBetter: true,
    margin: 0,
    challenger: 0.9,
    champion: championVersion === null ? null : 0.9 - (improvement ?? 0),
    championVersion,
    improvement,
    reason: passed ? 'challenger wins' : 'champion stays',
  };
}

/** A registry on `store` whose events are collected in `events` (call `bus.drain()` before reading). */
export function registryWithEvents(store: ObjectStore) {
  const events: KilnEvent[] = [];
  const bus = new LocalEventBus();
  bus.subscribe({}, (event) => {
    events.push(event);
  });
  return { registry: new ModelRegistry(store, bus), bus, events };
}
