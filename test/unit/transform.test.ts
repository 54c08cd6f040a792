import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ValidationError } from '../../lib/core/errors.ts';
import type { ColumnContract } from '../../lib/core/schema.ts';
import {
  applyTransform,
  defaultTransformSpec,
  type FittedTransform,
  fitTransform,
  fnv1a32,
  parseTimestamp,
  parseTransformSpec,
  type Step,
  type TransformSpec,
  TransformSpecSchema,
} from '../../lib/core/transform.ts';
import { utcParts } from '../../lib/core/transform-values.ts';

type Row = Record<string, unknown>;

function spec(columns: TransformSpec['columns'], target?: string): TransformSpec {
  return { kind: 'kiln.transform', version: 1, ...(target ? { target } : {}), columns };
}

function one(name: string, type: TransformSpec['columns'][number]['type'], steps: Step[]): TransformSpec {
  return spec([{ name, type, steps }]);
}

/** Features of `rows` as plain numbers, one array per row. */
function matrix(fitted: FittedTransform, rows: Row[]): number[][] {
  const { features, nRows, nFeatures } = applyTransform(fitted, rows);
  return Array.from({ length: nRows }, (_, r) =>
    Array.from(features.subarray(r * nFeatures, (r + 1) * nFeatures)),
  );
}

function column(fitted: FittedTransform, rows: Row[]): number[] {
  return matrix(fitted, rows).map((row) => row[0] ?? Number.NaN);
}

function validationMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return (error as Error).message;
  }
  throw new Error('expected a ValidationError, nothing was thrown');
}

describe('parseTransformSpec', () => {
  const base = { kind: 'kiln.transform', version: 1 };

  it('accepts a valid spec and returns it unchanged', () => {
    const doc = {
      ...base,
      target: 'y',
      columns: [
        { name: 'age', type: 'number', nullable: true, steps: [{ op: 'impute', strategy: 'median' }] },
        { name: 'city', type: 'string', steps: [{ op: 'onehot', unknown: 'bucket' }] },
      ],
    };
    expect(parseTransformSpec(doc)).toEqual(doc);
  });

  it('rejects an unknown step, naming it, its path and the allowed steps', () => {
    const message = validationMessage(() =>
      parseTransformSpec({ ...base, columns: [{ name: 'age', type: 'number', steps: [{ op: 'scal' }] }] }),
    );
    expect(message).toContain('unknown step "scal"');
    expect(message).toContain('columns[0] ("age").steps[0].op');
    expect(message).toContain('impute, clip, scale, log, onehot, ordinal, hash, dateparts, drop');
  });

  it('rejects a step without op', () => {
    const message = validationMessage(() =>
      parseTransformSpec({
        ...base,
        columns: [{ name: 'x', type: 'number', steps: [{ strategy: 'mean' }] }],
      }),
    );
    expect(message).toContain('a step needs an "op"');
  });

  it.each([
    [{ op: 'impute', strategy: 'avg' }, 'steps[0].strategy', '"avg"'],
    [{ op: 'impute', strategy: 'constant' }, 'steps[0].value', 'needs a value'],
    [{ op: 'impute', strategy: 'mean', value: 3 }, 'steps[0].value', 'only allowed with strategy "constant"'],
    [{ op: 'clip' }, 'steps[0]', 'at least one of min, max'],
    [{ op: 'clip', min: 5, max: 1 }, 'steps[0].max', 'below min'],
    [{ op: 'clip', lowerQuantile: 1.5 }, 'steps[0].lowerQuantile', '1.5'],
    [{ op: 'clip', min: 0, lowerQuantile: 0.1 }, 'steps[0].lowerQuantile', 'not both'],
    [{ op: 'scale', method: 'zscore' }, 'steps[0].method', '"zscore"'],
    [{ op: 'scale', method: 'standard', extra: 1 }, 'steps[0]', 'extra'],
    [{ op: 'log', offset: 'one' }, 'steps[0].offset', 'expected number'],
  ])('rejects bad params %j', (step, path, fragment) => {
    const message = validationMessage(() =>
      parseTransformSpec({ ...base, columns: [{ name: 'x', type: 'number', steps: [step] }] }),
    );
    expect(message).toContain(`columns[0] ("x").${path}`);
    expect(message).toContain(fragment);
  });

  it.each([
    ['string', [{ op: 'hash', buckets: 0 }], 'steps[0].buckets'],
    ['string', [{ op: 'onehot', maxCategories: 3, categories: ['a'] }], 'cannot be combined'],
    ['string', [{ op: 'onehot', categories: ['a', 'a'] }], 'unique'],
    ['string', [{ op: 'impute', strategy: 'mode' }], 'needs an encoder'],
    ['string', [{ op: 'log' }, { op: 'hash', buckets: 4 }], 'log is not allowed before hash'],
    [
      'string',
      [
        { op: 'impute', strategy: 'median' },
        { op: 'hash', buckets: 4 },
      ],
      'use "mode" or "constant"',
    ],
    [
      'string',
      [
        { op: 'impute', strategy: 'constant', value: 3 },
        { op: 'hash', buckets: 4 },
      ],
      'type string',
    ],
    ['number', [{ op: 'onehot' }], 'needs a string, integer or boolean column'],
    ['number', [{ op: 'dateparts', parts: ['year'] }], 'needs a timestamp column'],
    ['number', [{ op: 'drop' }, { op: 'log' }], 'must be its last step'],
    ['boolean', [{ op: 'scale', method: 'standard' }], 'scale is not allowed on a boolean column'],
    ['integer', [{ op: 'ordinal', categories: ['1', 'x'] }], 'can never occur'],
    ['timestamp', [], 'needs dateparts or drop'],
    ['timestamp', [{ op: 'dateparts', parts: ['year', 'week'] }], 'parts[1]'],
  ])('rejects %s column with steps %j', (type, steps, fragment) => {
    const message = validationMessage(() =>
      parseTransformSpec({ ...base, columns: [{ name: 'c', type, steps }] }),
    );
    expect(message).toContain(fragment);
  });

  it('rejects duplicate columns, the target as a feature, unknown keys and an all-dropped spec', () => {
    const col = { name: 'a', type: 'number', steps: [] };
    expect(validationMessage(() => parseTransformSpec({ ...base, columns: [col, col] }))).toContain(
      'duplicate column "a"',
    );
    expect(validationMessage(() => parseTransformSpec({ ...base, target: 'a', columns: [col] }))).toContain(
      '"a" is the target',
    );
    expect(validationMessage(() => parseTransformSpec({ ...base, columns: [col], extra: true }))).toContain(
      'Unrecognized key',
    );
    expect(validationMessage(() => parseTransformSpec({ ...base, kind: 'other', columns: [col] }))).toContain(
      'kind',
    );
    expect(
      validationMessage(() =>
        parseTransformSpec({ ...base, columns: [{ name: 'a', type: 'number', steps: [{ op: 'drop' }] }] }),
      ),
    ).toContain('no features');
  });

  it('is a zod schema that exports to JSON Schema', () => {
    expect(TransformSpecSchema.safeParse({ ...base, columns: [] }).success).toBe(false);
    const jsonSchema = JSON.stringify(z.toJSONSchema(TransformSpecSchema));
    expect(jsonSchema).toContain('kiln.transform');
  });
});

describe('fitTransform validation', () => {
  it('names a spec column that is missing from the training rows', () => {
    const message = validationMessage(() =>
      fitTransform(one('income', 'number', []), [{ age: 1 }, { age: 2 }]),
    );
    expect(message).toContain('column "income"');
    expect(message).toContain('row 0 has: age');
  });

  it('rejects zero rows, mistyped values and all-missing columns it must learn from', () => {
    expect(validationMessage(() => fitTransform(one('x', 'number', []), []))).toContain('zero rows');
    expect(validationMessage(() => fitTransform(one('x', 'number', []), [{ x: 1 }, { x: 'two' }]))).toContain(
      'row 1: column "x": expected number, got "two"',
    );
    expect(
      validationMessage(() =>
        fitTransform(one('x', 'number', [{ op: 'impute', strategy: 'median' }]), [{ x: null }, { x: null }]),
      ),
    ).toContain('all 2 training values are missing');
  });
});

describe('numeric steps', () => {
  const rows = [{ x: 1 }, { x: 2 }, { x: null }, { x: 4 }, { x: 10 }];

  it.each([
    ['mean', 4.25],
    ['median', 3],
    ['mode', 1],
  ] as const)('impute %s learns %d', (strategy, fill) => {
    const fitted = fitTransform(one('x', 'number', [{ op: 'impute', strategy }]), rows);
    expect(fitted.params[0]?.steps).toEqual([{ op: 'impute', fill }]);
    expect(column(fitted, [{ x: null }, { x: Number.NaN }, { x: 7 }])).toEqual([fill, fill, 7]);
  });

  it('impute constant and mode tie-breaking', () => {
    const constant = fitTransform(
      one('x', 'number', [{ op: 'impute', strategy: 'constant', value: -1 }]),
      rows,
    );
    expect(column(constant, [{ x: undefined }, { x: 5 }])).toEqual([-1, 5]);
    const mode = fitTransform(one('x', 'integer', [{ op: 'impute', strategy: 'mode' }]), [
      { x: 9 },
      { x: 9 },
      { x: 3 },
      { x: 3 },
      { x: 5 },
    ]);
    expect(mode.params[0]?.steps).toEqual([{ op: 'impute', fill: 3 }]);
  });

  it('without impute, missing numbers become NaN', () => {
    const fitted = fitTransform(one('x', 'number', []), rows);
    expect(fitted.featureNames).toEqual(['x']);
    const out = column(fitted, [{ x: null }, { x: 2.5 }]);
    expect(Number.isNaN(out[0])).toBe(true);
    expect(out[1]).toBe(2.5);
  });

  it('clip with fixed bounds', () => {
    const fitted = fitTransform(one('x', 'number', [{ op: 'clip', min: 0, max: 5 }]), rows);
    expect(fitted.params[0]?.steps).toEqual([{ op: 'clip', min: 0, max: 5 }]);
    const out = column(fitted, [{ x: -3 }, { x: 2 }, { x: 7 }, { x: null }]);
    expect(out.slice(0, 3)).toEqual([0, 2, 5]);
    expect(Number.isNaN(out[3])).toBe(true);
  });

  it('clip learns quantiles with linear interpolation', () => {
    const train = Array.from({ length: 11 }, (_, i) => ({ x: 10 - i }));
    const fitted = fitTransform(
      one('x', 'number', [{ op: 'clip', lowerQuantile: 0.1, upperQuantile: 0.95 }]),
      train,
    );
    expect(fitted.params[0]?.steps).toEqual([{ op: 'clip', min: 1, max: 9.5 }]);
    expect(column(fitted, [{ x: -5 }, { x: 5 }, { x: 20 }])).toEqual([1, 5, 9.5]);
    const upperOnly = fitTransform(one('x', 'number', [{ op: 'clip', upperQuantile: 0.5 }]), train);
    expect(upperOnly.params[0]?.steps).toEqual([{ op: 'clip', min: null, max: 5 }]);
  });

  it('scale standard uses the population standard deviation', () => {
    const train = [{ x: 1 }, { x: 2 }, { x: 3 }, { x: 4 }];
    const fitted = fitTransform(one('x', 'number', [{ op: 'scale', method: 'standard' }]), train);
    expect(fitted.params[0]?.steps).toEqual([{ op: 'scale', center: 2.5, scale: Math.sqrt(1.25) }]);
    expect(column(fitted, [{ x: 1 }, { x: 2.5 }, { x: 4 }])).toEqual([
      Math.fround(-1.5 / Math.sqrt(1.25)),
      0,
      Math.fround(1.5 / Math.sqrt(1.25)),
    ]);
  });

  it('scale minmax maps the training range onto [0, 1] and does not clip beyond it', () => {
    const fitted = fitTransform(one('x', 'number', [{ op: 'scale', method: 'minmax' }]), [
      { x: 2 },
      { x: 4 },
      { x: 10 },
    ]);
    expect(fitted.params[0]?.steps).toEqual([{ op: 'scale', center: 2, scale: 8 }]);
    expect(column(fitted, [{ x: 2 }, { x: 6 }, { x: 12 }])).toEqual([0, 0.5, 1.25]);
  });

  it('scale of a constant column only centres it', () => {
    const fitted = fitTransform(one('x', 'number', [{ op: 'scale', method: 'standard' }]), [
      { x: 3 },
      { x: 3 },
    ]);
    expect(fitted.params[0]?.steps).toEqual([{ op: 'scale', center: 3, scale: 1 }]);
    expect(column(fitted, [{ x: 3 }, { x: 5 }])).toEqual([0, 2]);
  });

  it('log is log1p(value + offset) and rejects value + offset < 0', () => {
    const fitted = fitTransform(one('x', 'number', [{ op: 'log', offset: 1 }]), [{ x: 0 }, { x: 3 }]);
    expect(column(fitted, [{ x: 0 }, { x: 4 }])).toEqual([
      Math.fround(Math.log(2)),
      Math.fround(Math.log(6)),
    ]);
    const plain = fitTransform(one('x', 'number', [{ op: 'log' }]), [{ x: 0 }, { x: Math.E - 1 }]);
    expect(column(plain, [{ x: Math.E - 1 }])).toEqual([1]);
    expect(validationMessage(() => fitTransform(one('x', 'number', [{ op: 'log' }]), [{ x: -2 }]))).toContain(
      'raise offset to at least 2',
    );
    expect(validationMessage(() => applyTransform(plain, [{ x: 1 }, { x: -0.5 }]))).toContain(
      'row 1: column "x": log needs value + offset >= 0, got -0.5',
    );
  });

  it('steps chain in order and each is fitted on the output of the previous ones', () => {
    const fitted = fitTransform(
      one('x', 'number', [
        { op: 'impute', strategy: 'constant', value: 0 },
        { op: 'clip', max: 10 },
        { op: 'log' },
        { op: 'scale', method: 'minmax' },
      ]),
      [{ x: null }, { x: Math.E - 1 }, { x: 1000 }],
    );
    const logged = [0, 1, Math.log1p(10)];
    expect(fitted.params[0]?.steps.at(-1)).toEqual({ op: 'scale', center: 0, scale: logged[2] });
    expect(column(fitted, [{ x: null }, { x: Math.E - 1 }, { x: 5000 }])).toEqual([
      0,
      Math.fround(1 / Math.log1p(10)),
      1,
    ]);
  });

  it('booleans become 0/1 and integers pass through', () => {
    const fitted = fitTransform(
      spec([
        { name: 'b', type: 'boolean', steps: [] },
        { name: 'n', type: 'integer', steps: [] },
      ]),
      [{ b: true, n: 3 }],
    );
    expect(
      matrix(fitted, [
        { b: true, n: 3n },
        { b: false, n: -7 },
      ]),
    ).toEqual([
      [1, 3],
      [0, -7],
    ]);
  });
});

describe('categorical steps', () => {
  const train = [{ city: 'a' }, { city: 'b' }, { city: 'a' }, { city: 'c' }, { city: null }];

  it('onehot keeps the most frequent categories and routes everything else to the unknown bucket', () => {
    const fitted = fitTransform(
      one('city', 'string', [{ op: 'onehot', maxCategories: 2, unknown: 'bucket' }]),
      train,
    );
    expect(fitted.params[0]?.steps).toEqual([{ op: 'onehot', categories: ['a', 'b'] }]);
    expect(fitted.featureNames).toEqual(['city=a', 'city=b', 'city=__unknown__']);
    expect(
      matrix(fitted, [{ city: 'a' }, { city: 'c' }, { city: 'never-seen' }, { city: null }, { city: 'b' }]),
    ).toEqual([
      [1, 0, 0],
      [0, 0, 1],
      [0, 0, 1],
      [0, 0, 0],
      [0, 1, 0],
    ]);
  });

  it('onehot after impute mode fills missing with the most frequent category', () => {
    const fitted = fitTransform(
      one('city', 'string', [{ op: 'impute', strategy: 'mode' }, { op: 'onehot' }]),
      train,
    );
    expect(fitted.params[0]?.steps[0]).toEqual({ op: 'impute', fill: 'a' });
    expect(matrix(fitted, [{ city: null }, { city: '' }])).toEqual([
      [1, 0, 0, 0],
      [1, 0, 0, 0],
    ]);
  });

  it('onehot on an integer column uses the decimal form as the category', () => {
    const fitted = fitTransform(one('n', 'integer', [{ op: 'onehot' }]), [{ n: 10 }, { n: 9 }, { n: 10 }]);
    expect(fitted.featureNames).toEqual(['n=10', 'n=9', 'n=__unknown__']);
    expect(matrix(fitted, [{ n: 9 }, { n: 11 }])).toEqual([
      [0, 1, 0],
      [0, 0, 1],
    ]);
  });

  it('ordinal gives the unknown bucket its own code and missing NaN', () => {
    const learned = fitTransform(one('size', 'string', [{ op: 'ordinal' }]), [
      { size: 'm' },
      { size: 'l' },
      { size: 's' },
    ]);
    expect(learned.params[0]?.steps).toEqual([{ op: 'ordinal', categories: ['l', 'm', 's'] }]);
    const out = column(learned, [{ size: 's' }, { size: 'xl' }, { size: null }, { size: 'l' }]);
    expect(out.slice(0, 2)).toEqual([2, 3]);
    expect(Number.isNaN(out[2])).toBe(true);
    expect(out[3]).toBe(0);
    const ordered = fitTransform(one('size', 'string', [{ op: 'ordinal', categories: ['s', 'm', 'l'] }]), [
      { size: 'm' },
    ]);
    expect(column(ordered, [{ size: 's' }, { size: 'm' }, { size: 'l' }, { size: 'xxl' }])).toEqual([
      0, 1, 2, 3,
    ]);
  });

  it('hash is FNV-1a 32-bit over UTF-8 bytes', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
    // Reference over the bytes Node's encoder produces, for the multi-byte and surrogate-pair paths.
    const reference = (s: string) => {
      let h = 0x811c9dc5;
      for (const b of Buffer.from(s, 'utf8')) h = Math.imul(h ^ b, 0x01000193);
      return h >>> 0;
    };
    for (const s of ['é', 'München', '東京', '🙂x', 'lone\ud800']) expect(fnv1a32(s)).toBe(reference(s));
  });

  it('hash sets one bucket per value, stable across fits', () => {
    const fitted = fitTransform(one('id', 'string', [{ op: 'hash', buckets: 64 }]), [{ id: 'x' }]);
    expect(fitted.featureNames).toHaveLength(64);
    expect(fitted.featureNames[0]).toBe('id#0');
    const [a, missing] = matrix(fitted, [{ id: 'a' }, { id: null }]);
    expect(a?.indexOf(1)).toBe(0xe40c292c % 64);
    expect(a?.reduce((s, v) => s + v)).toBe(1);
    expect(missing?.every((v) => v === 0)).toBe(true);
    const again = fitTransform(one('id', 'string', [{ op: 'hash', buckets: 64 }]), [{ id: 'other' }]);
    expect(applyTransform(again, [{ id: 'a' }]).features).toEqual(
      applyTransform(fitted, [{ id: 'a' }]).features,
    );
  });
});

describe('dateparts and drop', () => {
  const dateSpec = one('ts', 'timestamp', [
    { op: 'dateparts', parts: ['year', 'month', 'day', 'dayofweek', 'hour'] },
  ]);

  it('extracts UTC parts; dayofweek is 0 = Sunday', () => {
    const fitted = fitTransform(dateSpec, [{ ts: '2024-01-01' }]);
    expect(fitted.featureNames).toEqual(['ts.year', 'ts.month', 'ts.day', 'ts.dayofweek', 'ts.hour']);
    const out = matrix(fitted, [
      { ts: '2024-03-05T10:20:30Z' },
      { ts: '2024-03-05 10:20:30' },
      { ts: '2024-03-05T01:00:00+02:00' },
      { ts: '2024-03-10' },
      { ts: new Date(Date.UTC(2023, 11, 31, 23, 59, 59, 999)) },
      { ts: '2023-12-31 23:59:59.9999999' },
      { ts: null },
    ]);
    expect(out.slice(0, 6)).toEqual([
      [2024, 3, 5, 2, 10],
      [2024, 3, 5, 2, 10],
      [2024, 3, 4, 1, 23],
      [2024, 3, 10, 0, 0],
      [2023, 12, 31, 0, 23],
      [2023, 12, 31, 0, 23],
    ]);
    expect(out[6]?.every(Number.isNaN)).toBe(true);
  });

  it('calendar arithmetic agrees with Date over four centuries, both ways', () => {
    const start = Date.UTC(1800, 0, 1);
    const step = 86_400_000 * 37 + 3_600_000 * 5 + 61_001;
    for (let ms = start; ms < Date.UTC(2200, 0, 1); ms += step) {
      const d = new Date(ms);
      expect(utcParts(ms)).toEqual({
        year: d.getUTCFullYear(),
        month: d.getUTCMonth() + 1,
        day: d.getUTCDate(),
        dayofweek: d.getUTCDay(),
        hour: d.getUTCHours(),
      });
      expect(parseTimestamp(d.toISOString())).toBe(ms);
    }
  });

  it('rejects impossible timestamps', () => {
    expect(parseTimestamp('2024-02-29')).toBe(Date.UTC(2024, 1, 29));
    expect(parseTimestamp('2024-03-05 10:20:30+02')).toBe(Date.UTC(2024, 2, 5, 8, 20, 30));
    expect(parseTimestamp('2024-03-05 10:20:30.123456 UTC')).toBe(Date.UTC(2024, 2, 5, 10, 20, 30, 123));
    // Not 1999: two-digit years are not shifted into the 1900s.
    expect(new Date(parseTimestamp('0099-01-01') ?? Number.NaN).getUTCFullYear()).toBe(99);
    for (const bad of ['2023-02-29', '2024-13-01', '2024-01-01T24:00', '05/03/2024', 'yesterday']) {
      expect(parseTimestamp(bad)).toBeUndefined();
    }
    const fitted = fitTransform(dateSpec, [{ ts: '2024-01-01' }]);
    expect(validationMessage(() => applyTransform(fitted, [{ ts: '2024-02-30' }]))).toContain(
      'row 0: column "ts": "2024-02-30" is not an ISO-8601 timestamp',
    );
  });

  it('drop removes the column from the features and does not need it in the rows', () => {
    const fitted = fitTransform(
      spec([
        { name: 'id', type: 'string', steps: [{ op: 'drop' }] },
        { name: 'x', type: 'number', steps: [] },
      ]),
      [{ x: 1 }],
    );
    expect(fitted.featureNames).toEqual(['x']);
    expect(fitted.inputs.map((i) => i.name)).toEqual(['id', 'x']);
    expect(matrix(fitted, [{ x: 5 }, { id: 'anything', x: 6 }])).toEqual([[5], [6]]);
  });
});

describe('applyTransform', () => {
  it('is row-major over all columns and rejects rows that lack a column', () => {
    const fitted = fitTransform(
      spec([
        { name: 'a', type: 'number', steps: [] },
        { name: 'b', type: 'string', steps: [{ op: 'onehot' }] },
      ]),
      [{ a: 1, b: 'u' }],
    );
    const { features, nRows, nFeatures } = applyTransform(fitted, [
      { a: 1, b: 'u' },
      { a: 2, b: 'v', extra: 'ignored' },
    ]);
    expect([nRows, nFeatures]).toEqual([2, 3]);
    expect(Array.from(features)).toEqual([1, 1, 0, 2, 0, 1]);
    expect(validationMessage(() => applyTransform(fitted, [{ a: 1 }]))).toContain('row 0 has no column "b"');
    expect(validationMessage(() => applyTransform(fitted, [{ a: '1', b: 'u' }]))).toContain(
      'expected number',
    );
    expect(
      validationMessage(() => applyTransform(fitted, [{ a: Number.POSITIVE_INFINITY, b: 'u' }])),
    ).toContain('not a finite number');
    expect(applyTransform(fitted, []).features).toHaveLength(0);
  });

  it('writes one canonical NaN bit pattern and never -0', () => {
    const fitted = fitTransform(one('x', 'number', []), [{ x: 1 }]);
    const negativeNaN = new Float64Array(new BigUint64Array([0xfff8000000000001n]).buffer)[0];
    const { features } = applyTransform(fitted, [{ x: null }, { x: negativeNaN }, { x: -0 }]);
    const bits = new Uint32Array(features.buffer);
    expect(Array.from(bits)).toEqual([0x7fc00000, 0x7fc00000, 0]);
  });
});

describe('defaultTransformSpec', () => {
  const contract: ColumnContract[] = [
    { name: 'age', type: 'integer', nullable: true, min: 0, max: 120 },
    { name: 'income', type: 'number', nullable: false },
    { name: 'member', type: 'boolean', nullable: true },
    { name: 'plan', type: 'string', nullable: true, categories: ['basic', 'pro'] },
    { name: 'email', type: 'string', nullable: false },
    { name: 'signup', type: 'timestamp', nullable: false },
    { name: 'churned', type: 'boolean', nullable: false },
  ];

  it('picks a step per type and leaves the target out', () => {
    const s = defaultTransformSpec(contract, 'churned');
    expect(s.target).toBe('churned');
    expect(Object.fromEntries(s.columns.map((c) => [c.name, c.steps]))).toEqual({
      age: [{ op: 'impute', strategy: 'median' }],
      income: [{ op: 'impute', strategy: 'median' }],
      member: [{ op: 'impute', strategy: 'mode' }],
      plan: [{ op: 'onehot', maxCategories: 50, unknown: 'bucket' }],
      email: [{ op: 'hash', buckets: 64 }],
      signup: [{ op: 'dateparts', parts: ['year', 'month', 'day', 'dayofweek', 'hour'] }],
    });
    expect(s.columns.find((c) => c.name === 'income')?.nullable).toBe(false);
  });

  it('one-hot encodes at most 50 contract categories and hashes the rest', () => {
    const many = Array.from({ length: 51 }, (_, i) => `c${i}`);
    const s = defaultTransformSpec(
      [
        { name: 'wide', type: 'string', nullable: false, categories: many },
        { name: 'y', type: 'number', nullable: false },
      ],
      'y',
    );
    expect(s.columns[0]?.steps).toEqual([{ op: 'hash', buckets: 64 }]);
  });

  it('fits into NaN-free features for rows with missing values', () => {
    const rows = [
      { age: 30, income: 10, member: true, plan: 'pro', email: 'a@x', signup: '2024-01-02', churned: false },
      { age: null, income: 20, member: null, plan: null, email: 'b@x', signup: '2024-02-03', churned: true },
      {
        age: 50,
        income: 30,
        member: true,
        plan: 'basic',
        email: 'c@x',
        signup: '2024-03-04',
        churned: false,
      },
    ];
    const fitted = fitTransform(defaultTransformSpec(contract, 'churned'), rows);
    expect(fitted.featureNames).not.toContain('churned');
    expect(fitted.featureNames.slice(0, 7)).toEqual([
      'age',
      'income',
      'member',
      'plan=basic',
      'plan=pro',
      'plan=__unknown__',
      'email#0',
    ]);
    const { features } = applyTransform(fitted, rows);
    expect(features.some(Number.isNaN)).toBe(false);
    expect(Array.from(features.subarray(fitted.featureNames.length, fitted.featureNames.length + 3))).toEqual(
      [40, 20, 1],
    );
  });

  it('rejects a target the contract does not have', () => {
    expect(validationMessage(() => defaultTransformSpec(contract, 'nope'))).toContain('target "nope"');
  });
});
