import { describe, expect, it } from 'vitest';
import { IntegrityError, ValidationError } from '../../lib/core/errors.ts';
import type { ColumnContract } from '../../lib/core/schema.ts';
import { fitTransform, parseTransformSpec } from '../../lib/core/transform.ts';
import { resolveTransform } from '../../lib/training/byo.ts';
import { trainOnRows } from '../../lib/training/contract.ts';
import { parseTrainingHyperparameters } from '../../lib/training/hyperparameters.ts';

type Row = Record<string, unknown>;

const columns: ColumnContract[] = [
  { name: 'x1', type: 'number', nullable: true },
  { name: 'x2', type: 'number', nullable: true },
  { name: 'color', type: 'string', nullable: true },
  { name: 'y', type: 'string', nullable: true },
];

/** Deterministic rows: y depends on x1 + x2. */
function rows(n: number, offset = 0): Row[] {
  return Array.from({ length: n }, (_, k) => {
    const i = k + offset;
    const x1 = ((i * 37) % 101) / 10;
    const x2 = ((i * 53) % 89) / 9;
    return { x1, x2, color: ['red', 'green', 'blue'][i % 3], y: x1 + x2 > 10 ? 'yes' : 'no' };
  });
}

const train = (overrides: Partial<Parameters<typeof trainOnRows>[0]> = {}) =>
  trainOnRows({
    trainRows: rows(200),
    testRows: rows(50, 1000),
    columns,
    target: 'y',
    algorithm: 'linear',
    params: {},
    seed: 0,
    ...overrides,
  });

describe('training hyperparameters', () => {
  it('splits Kiln settings from algorithm parameters and parses strings', () => {
    const { settings, params } = parseTrainingHyperparameters({
      target: 'y',
      algorithm: 'gbdt',
      seed: '42',
      max_iter: '20',
      constant_features: 'drop',
      kiln_model: 'm',
    });
    expect(settings).toMatchObject({
      target: 'y',
      algorithm: 'gbdt',
      seed: 42,
      constantFeatures: 'drop',
      model: 'm',
    });
    expect(params).toEqual({ max_iter: '20' });
  });

  it('rejects unknown hyperparameters and out-of-range values with the name, the value and the range', () => {
    expect(() => parseTrainingHyperparameters({ target: 'y', max_depht: '3' })).toThrow(
      /unknown hyperparameter max_depht \(allowed: learning_rate, max_iter/,
    );
    expect(() => parseTrainingHyperparameters({ target: 'y', learning_rate: '-1' })).toThrow(
      /learning_rate: .*\(got "-1"\)/,
    );
    expect(() => parseTrainingHyperparameters({ target: 'y', seed: '1.5' })).toThrow(
      /seed must be an integer from 0 to 4294967295, got "1.5"/,
    );
    expect(() => parseTrainingHyperparameters({ target: 'y', algorithm: 'xgboost' })).toThrow(
      /algorithm must be one of gbdt, linear, got "xgboost"/,
    );
    expect(() => parseTrainingHyperparameters({ target: 'y', task: 'ranking' })).toThrow(
      /task must be one of binary, multiclass, regression, got "ranking"/,
    );
    expect(() => parseTrainingHyperparameters({ target: 'y', constant_features: 'keep' })).toThrow(
      /constant_features must be one of error, drop, got "keep"/,
    );
    expect(() => parseTrainingHyperparameters({ target: 'y', transform_spec: '{' })).toThrow(
      /transform_spec is not JSON/,
    );
    expect(() => parseTrainingHyperparameters({ algorithm: 'gbdt' })).toThrow(/"target" is required/);
    expect(() => parseTrainingHyperparameters({ target: 'y', nested: { a: 1 } })).toThrow(
      /hyperparameter nested must be a string/,
    );
  });
});

describe('bad training data fails with a clear message', () => {
  it('trains on good rows (the baseline the failures below differ from)', () => {
    const result = train();
    expect(result.task).toBe('binary');
    expect(result.metrics.accuracy).toBeGreaterThan(0.8);
    expect(result.droppedConstantColumns).toEqual([]);
  });

  it('a target with one class', () => {
    const one = rows(200).map((row) => ({ ...row, y: 'no' }));
    expect(() => train({ trainRows: one })).toThrow(
      /target y has a single class \("no"\) in 200 training rows/,
    );
  });

  it('a target with missing values (null or NaN)', () => {
    const withNull = rows(200).map((row, i) => (i % 50 === 0 ? { ...row, y: null } : row));
    expect(() => train({ trainRows: withNull })).toThrow(
      /target y is missing \(null or NaN\) in 4 of 200 training rows/,
    );
    const numeric: ColumnContract[] = [...columns.slice(0, 3), { name: 'v', type: 'number', nullable: true }];
    const withNaN = rows(200).map((row, i) => ({ ...row, v: i === 7 ? Number.NaN : row.x1 }));
    expect(() =>
      train({
        trainRows: withNaN,
        testRows: rows(20).map((r) => ({ ...r, v: 1 })),
        columns: numeric,
        target: 'v',
      }),
    ).toThrow(/target v is missing \(null or NaN\) in 1 of 200/);
  });

  it('a regression target with one value', () => {
    const numeric: ColumnContract[] = [...columns.slice(0, 3), { name: 'v', type: 'number', nullable: true }];
    const flat = rows(200).map((row) => ({ ...row, v: 3.5 }));
    expect(() =>
      train({ trainRows: flat, testRows: flat.slice(0, 10), columns: numeric, target: 'v' }),
    ).toThrow(/target v has a single value \(3.5\) in all 200 training rows/);
  });

  it('more classes than rows (an identifier as target)', () => {
    const ids = rows(200).map((row, i) => ({ ...row, y: `customer-${i}` }));
    expect(() => train({ trainRows: ids, task: 'multiclass' })).toThrow(
      /target y has 200 classes for 200 training rows: a classifier needs at least 2 rows per class/,
    );
  });

  it('a constant feature fails by default and is dropped with constant_features=drop', () => {
    const constant = rows(200).map((row) => ({ ...row, color: 'red' }));
    expect(() => train({ trainRows: constant })).toThrow(
      /constant feature column color: one value in all 200 training rows \(color="red"\).*constant_features=drop/,
    );
    const dropped = train({ trainRows: constant, constantFeatures: 'drop' });
    expect(dropped.droppedConstantColumns).toEqual(['color']);
    expect(dropped.fitted.featureNames).toEqual(['x1', 'x2']);
    // The column is still an accepted input (requests may carry it), it just makes no feature.
    expect(dropped.fitted.inputs.map((input) => input.name)).toContain('color');
  });

  it('every feature constant: nothing to learn, even with constant_features=drop', () => {
    const flat = rows(200).map((row) => ({ ...row, x1: 1, x2: 2, color: 'red' }));
    expect(() => train({ trainRows: flat, constantFeatures: 'drop' })).toThrow(/every feature is constant/);
  });

  it('an unknown target column', () => {
    expect(() => train({ target: 'nope' })).toThrow(
      /target column "nope" does not exist; columns are x1, x2/,
    );
  });
});

describe('a bring-your-own transform', () => {
  const spec = {
    kind: 'kiln.transform',
    version: 1,
    target: 'y',
    columns: [
      { name: 'x1', type: 'number', steps: [{ op: 'impute', strategy: 'constant', value: 0 }] },
      { name: 'color', type: 'string', steps: [{ op: 'onehot', categories: ['blue', 'red'] }] },
      { name: 'x2', type: 'number', steps: [{ op: 'drop' }] },
    ],
  };
  const artifacts = (json: unknown) => ({ 'transform.json': Buffer.from(JSON.stringify(json)) });

  it('a spec with fixed parameters is fitted to the same transform on any rows', () => {
    const a = resolveTransform(artifacts(spec), rows(30));
    const b = resolveTransform(artifacts(spec), rows(5, 500));
    expect(a.hash).toBe(b.hash);
    expect(a.featureNames).toEqual(['x1', 'color=blue', 'color=red', 'color=__unknown__']);
    expect(a.inputs.map((input) => input.name)).toEqual(['x1', 'color', 'x2']);
  });

  it('a fitted transform is taken as is, hash checked', () => {
    const fitted = fitTransform(parseTransformSpec(spec), rows(10));
    expect(resolveTransform(artifacts(fitted), []).hash).toBe(fitted.hash);
    expect(() => resolveTransform(artifacts({ ...fitted, hash: '0'.repeat(64) }), [])).toThrow(
      IntegrityError,
    );
  });

  it('refuses steps that would learn from data, and a missing or broken transform.json', () => {
    const learning = {
      ...spec,
      columns: [
        { name: 'x1', type: 'number', steps: [{ op: 'scale', method: 'standard' }] },
        { name: 'color', type: 'string', steps: [{ op: 'onehot' }] },
      ],
    };
    expect(() => resolveTransform(artifacts(learning), rows(10))).toThrow(
      /steps that learn from data \(x1.scale, color.onehot\)/,
    );
    expect(() => resolveTransform({}, rows(10))).toThrow(/wrote no transform.json/);
    expect(() => resolveTransform({ 'transform.json': Buffer.from('{') }, rows(10))).toThrow(ValidationError);
    expect(() =>
      resolveTransform(artifacts({ ...spec, columns: [{ name: 'zz', type: 'number', steps: [] }] }), rows(3)),
    ).toThrow(/column "zz" of the transform spec is not in the training rows/);
  });
});
