import { ValidationError } from '../core/errors.ts';
import type { ColumnContract } from '../core/schema.ts';
import { applyTransform, type FittedTransform, type TransformSpec } from '../core/transform.ts';
import type { Task, TrainingSet } from '../ml/train.ts';

type Row = Record<string, unknown>;

/** Classification for strings, booleans and integers with few distinct values; regression otherwise. */
export function inferTask(target: ColumnContract, rows: ReadonlyArray<Row>): Task {
  const distinct = new Set(rows.map((row) => String(row[target.name])));
  if (
    target.type === 'string' ||
    target.type === 'boolean' ||
    (target.type === 'integer' && distinct.size <= 10)
  ) {
    return distinct.size > 2 ? 'multiclass' : 'binary';
  }
  if (target.type === 'timestamp')
    throw new ValidationError(`target ${target.name} is a timestamp: cannot be predicted`);
  return 'regression';
}

/** Class names of a classification target: the distinct training values, sorted. */
export function classesOf(rows: ReadonlyArray<Row>, target: string): string[] {
  return [...new Set(rows.map((row) => String(row[target])))].sort();
}

/** The target as numbers: class index for classification, the value for regression; throws on missing targets. */
export function encodeTarget(
  rows: ReadonlyArray<Row>,
  target: string,
  task: Task,
  classes: string[],
): Float64Array {
  const y = new Float64Array(rows.length);
  const index = new Map(classes.map((name, i) => [name, i]));
  let missing = 0;
  rows.forEach((row, i) => {
    const value = row[target];
    if (value === null || value === undefined || (typeof value === 'number' && Number.isNaN(value))) {
      missing++;
      return;
    }
    if (task === 'regression') {
      const number = Number(value);
      if (!Number.isFinite(number)) {
        throw new ValidationError(
          `target ${target} has a non-numeric value ${JSON.stringify(value)} in row ${i + 1}`,
        );
      }
      y[i] = number;
    } else {
      y[i] = index.get(String(value)) ?? -1;
    }
  });
  if (missing > 0) {
    throw new ValidationError(
      `target ${target} is missing in ${missing} of ${rows.length} rows: label them or drop them`,
    );
  }
  return y;
}

/** Transforms raw rows into the trainer's matrix, with the target encoded. */
export function buildTrainingSet(
  fitted: FittedTransform,
  rows: ReadonlyArray<Row>,
  target: string,
  task: Task,
  classes: string[],
): TrainingSet {
  const { features, nRows, nFeatures } = applyTransform(fitted, rows);
  return {
    X: features,
    nRows,
    nFeatures,
    featureNames: fitted.featureNames,
    y: encodeTarget(rows, target, task, classes),
    task,
    classes,
  };
}

/** Columns of a spec (dropped ones aside) that hold a single value, missing included, in every row. */
export function constantColumns(spec: TransformSpec, rows: ReadonlyArray<Row>): string[] {
  if (rows.length === 0) return [];
  const constant: string[] = [];
  for (const column of spec.columns) {
    if (column.steps.some((step) => step.op === 'drop')) continue;
    const first = valueKey(rows[0]?.[column.name]);
    if (rows.every((row) => valueKey(row[column.name]) === first)) constant.push(column.name);
  }
  return constant;
}

/** The spec with the named columns dropped (they stay accepted inputs, but produce no feature). */
export function dropColumns(spec: TransformSpec, names: ReadonlyArray<string>): TransformSpec {
  const drop = new Set(names);
  return {
    ...spec,
    columns: spec.columns.map((column) =>
      drop.has(column.name) ? { ...column, steps: [{ op: 'drop' as const }] } : column,
    ),
  };
}

/**
 * A classifier needs examples of each class to learn from; with fewer than two training rows per class on
 * average (an identifier as target, or more classes than rows) nothing generalises.
 */
export function assertClassesLearnable(target: string, classes: string[], trainRows: number): void {
  if (classes.length < 2) {
    throw new ValidationError(
      `target ${target} has a single class (${JSON.stringify(classes[0] ?? null)}) in ${trainRows} training rows: a classifier needs at least two`,
    );
  }
  if (classes.length * 2 > trainRows) {
    throw new ValidationError(
      `target ${target} has ${classes.length} classes for ${trainRows} training rows: a classifier needs at least 2 rows per class on average (is ${target} an identifier?)`,
    );
  }
}

/** Equality key of a raw value: every missing spelling is one value, types stay apart. */
function valueKey(value: unknown): string {
  if (value === null || value === undefined || value === '') return 'missing';
  if (typeof value === 'number') return Number.isNaN(value) ? 'missing' : `n:${value}`;
  if (typeof value === 'bigint') return `n:${value}`;
  if (value instanceof Date) return `t:${value.toISOString()}`;
  return `${typeof value}:${String(value)}`;
}
