import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError, ValidationError } from '../core/errors.ts';
import type { ColumnContract } from '../core/schema.ts';
import { defaultTransformSpec, fitTransform, type TransformSpec } from '../core/transform.ts';
import { readTableFile } from '../etl/tables.ts';
import { type Algorithm, type Task, trainModel } from '../ml/train.ts';
import { baselineProfile } from './baseline.ts';
import { codeVersion } from './code-version.ts';
import {
  assertClassesLearnable,
  buildTrainingSet,
  classesOf,
  constantColumns,
  dropColumns,
  inferTask,
} from './dataset.ts';
import { scorePredictions } from './evaluation.ts';
import { type ConstantFeaturePolicy, parseTrainingHyperparameters } from './hyperparameters.ts';

type Row = Record<string, unknown>;

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
  /** Feature columns dropped because they were constant (hyperparameter constant_features=drop). */
  droppedConstantColumns: string[];
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
  transformSpec?: TransformSpec;
  constantFeatures?: ConstantFeaturePolicy;
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
  const task = options.task ?? inferTask(targetColumn, trainRows);
  const classes = task === 'regression' ? [] : classesOf(trainRows, target);
  // Missing targets first: otherwise "null" would count as a class below.
  checkTarget(trainRows, target, task);
  if (task !== 'regression') assertClassesLearnable(target, classes, trainRows.length);
  let spec = options.transformSpec ?? defaultTransformSpec(columns, target);
  if (spec.columns.some((column) => column.name === target)) {
    throw new ValidationError(`the transform spec lists the target ${target} as an input column`);
  }
  const constant = constantColumns(spec, trainRows);
  if (constant.length > 0) {
    if ((options.constantFeatures ?? 'error') === 'error' || constant.length === spec.columns.length) {
      throw new ValidationError(
        `constant feature column${constant.length > 1 ? 's' : ''} ${constant.join(', ')}: one value in all ${trainRows.length} training rows (${describeConstant(trainRows[0], constant)}) carries no information and usually means an upstream bug; ` +
          (constant.length === spec.columns.length
            ? 'every feature is constant, so there is nothing to learn'
            : 'drop it in the transform spec, or pass the hyperparameter constant_features=drop'),
      );
    }
    spec = dropColumns(spec, constant);
  }
  const fitted = fitTransform(spec, trainRows);
  const data = buildTrainingSet(fitted, trainRows, target, task, classes);
  const model = trainModel(options.algorithm, data, options.params, options.seed);
  const test = buildTrainingSet(fitted, testRows, target, task, classes);
  const output = model.predict(test.X, test.nRows);
  const metrics = scorePredictions(output, testRows, target, task, classes);
  const baseline = baselineProfile(fitted.inputs, trainRows, output, task, classes);
  return { model, fitted, task, classes, metrics, baseline, droppedConstantColumns: constant };
}

function checkTarget(rows: Row[], target: string, task: Task): void {
  const missing = rows.filter((row) => {
    const value = row[target];
    return (
      value === null ||
      value === undefined ||
      value === '' ||
      (typeof value === 'number' && Number.isNaN(value))
    );
  }).length;
  if (missing > 0) {
    throw new ValidationError(
      `target ${target} is missing (null or NaN) in ${missing} of ${rows.length} training rows: label them or drop them`,
    );
  }
  if (task === 'regression') {
    const first = Number(rows[0]?.[target]);
    if (rows.every((row) => Number(row[target]) === first)) {
      throw new ValidationError(
        `target ${target} has a single value (${first}) in all ${rows.length} training rows: nothing to learn`,
      );
    }
  }
}

function describeConstant(row: Row | undefined, columns: string[]): string {
  return columns
    .slice(0, 5)
    .map(
      (name) =>
        `${name}=${JSON.stringify(row?.[name] ?? null, (_, v) => (typeof v === 'bigint' ? Number(v) : v))}`,
    )
    .join(', ');
}

/**
 * The SageMaker training contract: hyperparameters from /opt/ml/input/config/hyperparameters.json (strings),
 * data from /opt/ml/input/data/<channel>, everything the model needs into /opt/ml/model, and on failure the
 * reason into /opt/ml/output/failure. `root` is /opt/ml in a container, a job folder locally.
 */
export async function runTrainingContract(root: string): Promise<TrainingSummary> {
  const startedAt = new Date().toISOString();
  try {
    const hyperparameters = await readJson<Record<string, unknown>>(
      join(root, 'input', 'config', 'hyperparameters.json'),
      'hyperparameters',
    );
    const { settings, params } = parseTrainingHyperparameters(hyperparameters);
    const trainDir = join(root, 'input', 'data', 'train');
    const testDir = join(root, 'input', 'data', 'test');
    const manifest = await readJson<{ schema?: { columns?: ColumnContract[] } }>(
      join(trainDir, 'manifest.json'),
      'the train channel manifest',
    );
    const columns = manifest.schema?.columns;
    if (!Array.isArray(columns) || columns.length === 0) {
      throw new ValidationError('the train channel manifest.json has no schema.columns');
    }
    const trainRows = await readTableFile(join(trainDir, 'train.parquet'));
    const testRows = await readTableFile(join(testDir, await singleDataFile(testDir)));
    const result = trainOnRows({
      trainRows,
      testRows,
      columns,
      target: settings.target,
      algorithm: settings.algorithm,
      params,
      seed: settings.seed,
      task: settings.task,
      transformSpec: settings.transformSpec,
      constantFeatures: settings.constantFeatures,
    });

    const modelDir = join(root, 'model');
    await mkdir(modelDir, { recursive: true });
    const summary: TrainingSummary = {
      task: result.task,
      classes: result.classes,
      target: settings.target,
      inputs: result.fitted.inputs,
      algorithm: settings.algorithm,
      hyperparameters: result.model.hyperparameters,
      seed: settings.seed,
      metrics: result.metrics,
      trainRows: trainRows.length,
      testRows: testRows.length,
      model: settings.model,
      dataset: settings.dataset,
      datasetVersion: settings.datasetVersion,
      transformHash: result.fitted.hash,
      codeVersion: codeVersion(),
      startedAt,
      endedAt: new Date().toISOString(),
      summary: result.model.summary,
      droppedConstantColumns: result.droppedConstantColumns,
    };
    await writeFile(join(modelDir, 'model.onnx'), result.model.toOnnx());
    await writeFile(join(modelDir, 'transform.json'), `${JSON.stringify(result.fitted, null, 2)}\n`);
    await writeFile(join(modelDir, 'metrics.json'), `${JSON.stringify(result.metrics, null, 2)}\n`);
    await writeFile(join(modelDir, 'baseline.json'), `${JSON.stringify(result.baseline)}\n`);
    await writeFile(join(modelDir, 'training.json'), `${JSON.stringify(summary, null, 2)}\n`);
    return summary;
  } catch (error) {
    await mkdir(join(root, 'output'), { recursive: true });
    // SageMaker shows the first 1024 characters as FailureReason: the message goes first, on one line.
    await writeFile(join(root, 'output', 'failure'), `${describeError(error)}\n`);
    throw error;
  }
}

async function readJson<T>(path: string, what: string): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new ValidationError(`${what}: cannot read ${path}`, { cause });
  }
  try {
    return JSON.parse(text) as T;
  } catch (cause) {
    throw new ValidationError(`${what}: ${path} is not JSON (${describeError(cause)})`, { cause });
  }
}

/** The held-out channel holds one data file (test.parquet from ETL, or a user's own test file). */
async function singleDataFile(dir: string): Promise<string> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (cause) {
    throw new ValidationError(`the test channel is missing: no folder ${dir}`, { cause });
  }
  const files = names.filter((name) => !name.endsWith('.json'));
  if (files.includes('test.parquet')) return 'test.parquet';
  const [only, ...rest] = files;
  if (!only || rest.length > 0)
    throw new ValidationError(`the test channel must hold one data file, found ${files.length}`);
  return only;
}
