import type { ColumnContract } from '../../lib/core/schema.ts';
import { rng as mulberry32 } from '../../lib/ml/split.ts';
import type { VersionRecord } from '../../lib/registry/records.ts';
import type { ModelRegistry } from '../../lib/registry/registry.ts';
import { trainOnRows } from '../../lib/training/contract.ts';

/**
 * A real model for the monitoring tests: trained with the built-in trainer on seeded synthetic data,
 * registered with model.onnx, transform.json and baseline.json exactly as the training pipeline does.
 */

export type Row = Record<string, unknown>;

/** How live traffic differs from training: shift `x` by `shift` and tilt `plan` towards `premium`. */
export interface TrafficShape {
  shift?: number;
  premiumShare?: number;
}

const PLANS = ['basic', 'standard', 'premium'];

/** Raw rows of the churn-like data set (features and the `churned` target), seeded. */
export function churnRows(n: number, seed: number, shape: TrafficShape = {}): Row[] {
  const random = mulberry32(seed);
  const normal = () => {
    let u = 0;
    while (u === 0) u = random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  };
  const premium = shape.premiumShare ?? 0.2;
  return Array.from({ length: n }, () => {
    const x = 50 + 10 * normal() + (shape.shift ?? 0) * 10;
    const visits = Math.floor(random() * 20);
    const r = random();
    const plan = r < premium ? 'premium' : r < premium + (1 - premium) / 2 ? 'standard' : 'basic';
    const score =
      0.08 * (x - 50) - 0.15 * visits + (plan === 'premium' ? -1 : plan === 'basic' ? 0.8 : 0) + normal();
    const spend =
      2 * x + 3 * visits + (plan === 'premium' ? 40 : plan === 'standard' ? 15 : 0) + 5 * normal();
    return { x, visits, plan, churned: score > 0 ? 'yes' : 'no', spend };
  });
}

/** The same rows without the targets: what a client sends. */
export function requestRows(rows: Row[]): Row[] {
  return rows.map(({ churned: _churned, spend: _spend, ...features }) => features);
}

const COLUMNS: ColumnContract[] = [
  { name: 'x', type: 'number', nullable: true },
  { name: 'visits', type: 'integer', nullable: true },
  { name: 'plan', type: 'string', nullable: true, categories: PLANS },
];
const TARGETS: Record<'churned' | 'spend', ColumnContract> = {
  churned: { name: 'churned', type: 'string', nullable: false, categories: ['no', 'yes'] },
  spend: { name: 'spend', type: 'number', nullable: false },
};

/**
 * Trains on seeded rows and registers the version: `churned` (binary classification, model `churn`) or
 * `spend` (regression, model `spend`); the other target is left out of the features.
 */
export async function registerChurnModel(
  registry: ModelRegistry,
  target: 'churned' | 'spend' = 'churned',
): Promise<VersionRecord> {
  const other = target === 'churned' ? 'spend' : 'churned';
  const drop = (rows: Row[]) => rows.map(({ [other]: _other, ...row }) => row);
  const trainRows = drop(churnRows(2000, 1));
  const testRows = drop(churnRows(500, 2));
  const model = target === 'churned' ? 'churn' : 'spend';
  const result = trainOnRows({
    trainRows,
    testRows,
    columns: [...COLUMNS, TARGETS[target]],
    target,
    algorithm: 'gbdt',
    params: { max_iter: 20 },
    seed: 0,
  });
  return registry.register({
    model,
    task: result.task,
    classes: result.classes,
    target,
    inputs: result.fitted.inputs.map((input) => ({ name: input.name, type: input.type })),
    metrics: result.metrics,
    artifacts: {
      'model.onnx': Buffer.from(result.model.toOnnx()),
      'transform.json': Buffer.from(JSON.stringify(result.fitted)),
      'baseline.json': Buffer.from(JSON.stringify(result.baseline)),
    },
    actor: 'monitoring-test',
    lineage: {
      dataset: model,
      datasetVersion: 'synthetic-1',
      transformHash: result.fitted.hash,
      codeVersion: 'kiln@test',
      algorithm: 'gbdt',
      hyperparameters: { max_iter: 20 },
      seed: 0,
      metrics: result.metrics,
      trainingJob: 'monitoring-test',
      startedAt: '2026-01-01T00:00:00Z',
      endedAt: '2026-01-01T00:01:00Z',
    },
  });
}
