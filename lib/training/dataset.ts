import { ValidationError } from '../core/errors.ts';
import type { ColumnContract } from '../core/schema.ts';
import { applyTransform, type FittedTransform } from '../core/transform.ts';
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
