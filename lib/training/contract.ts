import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError, ValidationError } from '../core/errors.ts';
import { type ColumnProfile, profileColumn } from '../core/profile.ts';
import type { ColumnContract } from '../core/schema.ts';
import { defaultTransformSpec, fitTransform, parseTransformSpec } from '../core/transform.ts';
import { readTableFile } from '../etl/tables.ts';
import { ALGORITHMS, type Algorithm, parseHyperparameters, type Task, trainModel } from '../ml/train.ts';
import { codeVersion } from './code-version.ts';
import { buildTrainingSet, classesOf, inferTask } from './dataset.ts';
import { scorePredictions } from './evaluation.ts';

type Row = Record<string, unknown>;

/** Hyperparameters that steer Kiln itself; every other key goes to the algorithm and is validated there. */
const KILN_KEYS = [
  'target',
  'algorithm',
  'seed',
  'task',
  'transform_spec',
  'kiln_model',
  'kiln_dataset',
  'kiln_dataset_version',
];

/** What the built-in trainer writes next to model.onnx as training.json. */
export interface TrainingSummary {
  task: Task;
  classes: string[];
  target: string;
  inputs: Array<{ name: string; type: string }>;
  algorithm: Algorithm;
  hyperparameters: Record<string, unknown>;
  seed: number;
  metrics: Record<string, unknown>;
  trainRows: number;
  testRows: number;
  model?: string;
  dataset?: string;
  datasetVersion?: string;
  transformHash: string;
  codeVersion: string;
  startedAt: string;
  endedAt: string;
  summary: Record<string, number>;
}

/** Trains on raw rows: fits the transform, trains, scores the held-out rows, profiles the baseline. */
export function trainOnRows(options: {
  trainRows: Row[];
  testRows: Row[];
  columns: ColumnContract[];
  target: string;
  algorithm: Algorithm;
  params: Record<string, unknown>;
  seed: number;
  task?: Task;
  transformSpec?: unknown;
}) {
  const { trainRows, testRows, columns, target } = options;
  const targetColumn = columns.find((column) => column.name === target);
  if (!targetColumn) {
    throw new ValidationError(
      `target column ${JSON.stringify(target)} does not exist; columns are ${columns.map((c) => c.name).join(', ')}`,
    );
  }
  if (trainRows.length === 0) throw new ValidationError('the training split has no rows');
  if (testRows.length === 0) throw new ValidationError('the held-out split has no rows');
  parseHyperparameters(options.algorithm, options.params);
  const task = options.task ?? inferTask(targetColumn, trainRows);
  const classes = task === 'regression' ? [] : classesOf(trainRows, target);
  if (task !== 'regression' && classes.length < 2) {
    throw new ValidationError(`target ${target} has a single class (${classes[0]}): nothing to learn`);
  }
  const spec =
    options.transformSpec === undefined
      ? defaultTransformSpec(columns, target)
      : parseTransformSpec(options.transformSpec);
  const fitted = fitTransform(spec, trainRows);
  const data = buildTrainingSet(fitted, trainRows, target, task, classes);
  const model = trainModel(options.algorithm, data, options.params, options.seed);
  const test = buildTrainingSet(fitted, testRows, target, task, classes);
  const output = model.predict(test.X, test.nRows);
  const metrics = scorePredictions(output, testRows, target, task, classes);
  const baseline = baselineProfile(fitted.inputs, trainRows, output, task, classes);
  return { model, fitted, task, classes, metrics, baseline };
}

/** Profiles of every raw input column plus the held-out prediction distribution. */
function baselineProfile(
  inputs: Array<{ name: string; type: string }>,
  rows: Row[],
  output: { probabilities?: Float32Array; labels?: Int32Array; values?: Float32Array },
  task: Task,
  classes: string[],
): { features: Record<string, ColumnProfile>; prediction: ColumnProfile } {
  const features: Record<string, ColumnProfile> = {};
  for (const input of inputs) {
    const kind = input.type === 'number' || input.type === 'integer' ? 'numeric' : 'categorical';
    features[input.name] = profileColumn(
      rows.map((row) => row[input.name]),
      kind,
    );
  }
  const prediction =
    task === 'regression'
      ? profileColumn(Array.from(output.values ?? []), 'numeric')
      : profileColumn(
          Array.from(output.labels ?? [], (label) => classes[label]),
          'categorical',
        );
  return { features, prediction };
}

/**
 * The SageMaker training contract: hyperparameters from /opt/ml/input/config/hyperparameters.json (strings),
 * data from /opt/ml/input/data/<channel>, everything the model needs into /opt/ml/model, and on failure the
 * reason into /opt/ml/output/failure. `root` is /opt/ml in a container, a job folder locally.
 */
export async function runTrainingContract(root: string): Promise<TrainingSummary> {
  const startedAt = new Date().toISOString();
  try {
    const hyperparameters = JSON.parse(
      await readFile(join(root, 'input', 'config', 'hyperparameters.json'), 'utf8'),
    ) as Record<string, string>;
    const target = hyperparameters.target;
    if (!target) throw new ValidationError('hyperparameter "target" is required');
    const algorithm = (hyperparameters.algorithm ?? 'gbdt') as Algorithm;
    if (!ALGORITHMS.includes(algorithm)) {
      throw new ValidationError(
        `unknown algorithm ${JSON.stringify(algorithm)}; expected ${ALGORITHMS.join(' or ')}`,
      );
    }
    const seed = Number(hyperparameters.seed ?? '0');
    if (!Number.isInteger(seed))
      throw new ValidationError(`seed must be an integer, got ${hyperparameters.seed}`);
    const task = hyperparameters.task as Task | undefined;
    const params = Object.fromEntries(
      Object.entries(hyperparameters).filter(([key]) => !KILN_KEYS.includes(key)),
    );

    const trainDir = join(root, 'input', 'data', 'train');
    const testDir = join(root, 'input', 'data', 'test');
    const manifest = JSON.parse(await readFile(join(trainDir, 'manifest.json'), 'utf8')) as {
      schema: { columns: ColumnContract[] };
    };
    const trainRows = await readTableFile(join(trainDir, 'train.parquet'));
    const testRows = await readTableFile(join(testDir, await singleDataFile(testDir)));
    const result = trainOnRows({
      trainRows,
      testRows,
      columns: manifest.schema.columns,
      target,
      algorithm,
      params,
      seed,
      task,
      transformSpec: hyperparameters.transform_spec ? JSON.parse(hyperparameters.transform_spec) : undefined,
    });

    const modelDir = join(root, 'model');
    await mkdir(modelDir, { recursive: true });
    const summary: TrainingSummary = {
      task: result.task,
      classes: result.classes,
      target,
      inputs: result.fitted.inputs,
      algorithm,
      hyperparameters: result.model.hyperparameters,
      seed,
      metrics: result.metrics,
      trainRows: trainRows.length,
      testRows: testRows.length,
      model: hyperparameters.kiln_model,
      dataset: hyperparameters.kiln_dataset,
      datasetVersion: hyperparameters.kiln_dataset_version,
      transformHash: result.fitted.hash,
      codeVersion: codeVersion(),
      startedAt,
      endedAt: new Date().toISOString(),
      summary: result.model.summary,
    };
    await writeFile(join(modelDir, 'model.onnx'), result.model.toOnnx());
    await writeFile(join(modelDir, 'transform.json'), `${JSON.stringify(result.fitted, null, 2)}\n`);
    await writeFile(join(modelDir, 'metrics.json'), `${JSON.stringify(result.metrics, null, 2)}\n`);
    await writeFile(join(modelDir, 'baseline.json'), `${JSON.stringify(result.baseline)}\n`);
    await writeFile(join(modelDir, 'training.json'), `${JSON.stringify(summary, null, 2)}\n`);
    return summary;
  } catch (error) {
    await mkdir(join(root, 'output'), { recursive: true });
    await writeFile(join(root, 'output', 'failure'), `${describeError(error)}\n`);
    throw error;
  }
}

/** The held-out channel holds one data file (test.parquet from ETL, or a user's own test file). */
async function singleDataFile(dir: string): Promise<string> {
  const files = (await readdir(dir)).filter((name) => !name.endsWith('.json'));
  if (files.includes('test.parquet')) return 'test.parquet';
  const [only, ...rest] = files;
  if (!only || rest.length > 0)
    throw new ValidationError(`the test channel must hold one data file, found ${files.length}`);
  return only;
}
