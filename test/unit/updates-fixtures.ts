import type { ColumnContract } from '../../lib/core/schema.ts';
import { rng as mulberry32 } from '../../lib/ml/split.ts';
import type { VersionRecord } from '../../lib/registry/records.ts';
import type { ModelRegistry } from '../../lib/registry/registry.ts';
import { trainOnRows } from '../../lib/training/contract.ts';
import { churnRows, type Row, type TrafficShape } from '../integration/monitoring-fixtures.ts';

/**
 * Real models for the model-update tests: trained with the built-in trainer on seeded churn-like rows and
 * registered with model.onnx, transform.json and baseline.json, as the training pipeline registers them.
 */

const COLUMNS: ColumnContract[] = [
  { name: 'x', type: 'number', nullable: true },
  { name: 'visits', type: 'integer', nullable: true },
  { name: 'plan', type: 'string', nullable: true, categories: ['basic', 'standard', 'premium'] },
  { name: 'churned', type: 'string', nullable: false, categories: ['no', 'yes'] },
];

/** Churn rows without the regression target. */
export function labelledRows(n: number, seed: number, shape: TrafficShape = {}): Row[] {
  return churnRows(n, seed, shape).map(({ spend: _spend, ...row }) => row);
}

/** Options of {@link registerChurn}. */
export interface ChurnVersionOptions {
  /** Rows trained on. @default labelledRows(2000, 1) */
  trainRows?: Row[];
  /** Shuffle the labels: a model that learnt nothing (it still "passes" a forged gate). */
  shuffleLabels?: boolean;
  datasetVersion?: string;
  /** The evaluation gate recorded on the version. @default none */
  gate?: Record<string, unknown>;
}

/** Trains and registers a `churn` version (stage candidate); the caller promotes or aliases it. */
export async function registerChurn(
  registry: ModelRegistry,
  options: ChurnVersionOptions = {},
): Promise<VersionRecord> {
  let trainRows = options.trainRows ?? labelledRows(2000, 1);
  if (options.shuffleLabels) {
    const random = mulberry32(99);
    const labels = trainRows.map((row) => row.churned);
    for (let i = labels.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [labels[i], labels[j]] = [labels[j], labels[i]];
    }
    trainRows = trainRows.map((row, i) => ({ ...row, churned: labels[i] }));
  }
  const result = trainOnRows({
    trainRows,
    testRows: labelledRows(500, 2),
    columns: COLUMNS,
    target: 'churned',
    algorithm: 'gbdt',
    params: { max_iter: 20 },
    seed: 0,
  });
  return registry.register({
    model: 'churn',
    task: result.task,
    classes: result.classes,
    target: 'churned',
    inputs: result.fitted.inputs.map((input) => ({ name: input.name, type: input.type })),
    metrics: result.metrics,
    artifacts: {
      'model.onnx': Buffer.from(result.model.toOnnx()),
      'transform.json': Buffer.from(JSON.stringify(result.fitted)),
      'baseline.json': Buffer.from(JSON.stringify(result.baseline)),
    },
    ...(options.gate ? { gate: options.gate } : {}),
    actor: 'updates-test',
    lineage: {
      dataset: 'churn',
      datasetVersion: options.datasetVersion ?? 'synthetic-1',
      transformHash: result.fitted.hash,
      codeVersion: 'kiln@test',
      algorithm: 'gbdt',
      hyperparameters: { max_iter: 20 },
      seed: 0,
      metrics: result.metrics,
      trainingJob: 'updates-test',
      startedAt: '2026-01-01T00:00:00Z',
      endedAt: '2026-01-01T00:01:00Z',
    },
  });
}

/** A gate that passed against `champion` (null: the first version), as the training pipeline records it. */
export function passedGate(champion: number | null, improvement = 0.02): Record<string, unknown> {
  return {
    passed: true,
    metric: 'accuracy',
    higherIsBetter: true,
    margin: 0,
    championVersion: champion,
    improvement: champion === null ? null : improvement,
    reason: champion === null ? 'no champion yet' : `accuracy beats champion v${champion} by ${improvement}`,
  };
}

/** Registers a first version with a passed gate and makes it the champion. */
export async function registerChampion(registry: ModelRegistry, options: ChurnVersionOptions = {}) {
  const record = await registerChurn(registry, { gate: passedGate(null), ...options });
  await registry.promote('churn', record.version, 'updates-test', 'first version');
  return record;
}

/** The request rows (features only) of labelled rows. */
export function features(rows: Row[]): Row[] {
  return rows.map(({ churned: _churned, ...row }) => row);
}
