import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { IntegrityError, ValidationError } from '../../lib/core/errors.ts';
import {
  applyTransform,
  applyTransformToInputs,
  canonicalJson,
  coerceRowInputs,
  coerceRowValues,
  type FittedTransform,
  fitTransform,
  parseFittedTransform,
  type TransformSpec,
} from '../../lib/core/transform.ts';

type Row = Record<string, unknown>;

/** Every step type, on every column type. */
const SPEC: TransformSpec = {
  kind: 'kiln.transform',
  version: 1,
  target: 'label',
  columns: [
    { name: 'id', type: 'string', nullable: false, steps: [{ op: 'drop' }] },
    {
      name: 'age',
      type: 'integer',
      nullable: true,
      steps: [
        { op: 'impute', strategy: 'median' },
        { op: 'clip', lowerQuantile: 0.05, upperQuantile: 0.95 },
        { op: 'scale', method: 'standard' },
      ],
    },
    {
      name: 'income',
      type: 'number',
      nullable: true,
      steps: [
        { op: 'impute', strategy: 'mean' },
        { op: 'clip', min: 0 },
        { op: 'log', offset: 1 },
        { op: 'scale', method: 'minmax' },
      ],
    },
    { name: 'ratio', type: 'number', nullable: true, steps: [] },
    { name: 'member', type: 'boolean', nullable: true, steps: [{ op: 'impute', strategy: 'mode' }] },
    { name: 'active', type: 'boolean', nullable: true, steps: [] },
    {
      name: 'city',
      type: 'string',
      nullable: true,
      steps: [{ op: 'onehot', maxCategories: 3, unknown: 'bucket' }],
    },
    { name: 'size', type: 'string', nullable: true, steps: [{ op: 'ordinal', categories: ['s', 'm', 'l'] }] },
    { name: 'email', type: 'string', nullable: true, steps: [{ op: 'hash', buckets: 16 }] },
    {
      name: 'code',
      type: 'integer',
      nullable: true,
      steps: [{ op: 'impute', strategy: 'mode' }, { op: 'onehot' }],
    },
    {
      name: 'signup',
      type: 'timestamp',
      nullable: true,
      steps: [{ op: 'dateparts', parts: ['year', 'month', 'day', 'dayofweek', 'hour'] }],
    },
  ],
};

const STRING_COLUMNS = new Set(SPEC.columns.filter((c) => c.type === 'string').map((c) => c.name));

/** Deterministic PRNG (mulberry32) so the generated rows are the same on every run. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rows as DuckDB hands them to the batch path: numbers, bigints, booleans, null, `YYYY-MM-DD hh:mm:ss` strings. */
function duckRows(n: number, seed: number): Row[] {
  const rand = prng(seed);
  const pick = <T>(items: T[]): T => items[Math.floor(rand() * items.length)] as T;
  const maybe = <T>(value: T, pNull = 0.15): T | null => (rand() < pNull ? null : value);
  return Array.from({ length: n }, (_, i) => {
    const seconds = Math.floor(rand() * 86_400 * 365 * 3);
    const ts = new Date(Date.UTC(2022, 0, 1) + seconds * 1000).toISOString().replace('T', ' ').slice(0, 19);
    return {
      id: `row-${i}`,
      age: maybe(BigInt(18 + Math.floor(rand() * 70))),
      income: maybe(pick([0.1, 1 / 3, 123456.789, 1e-7, 2 ** 40 + 0.5, rand() * 1e5, -0])),
      ratio: maybe(rand() * 2 - 1),
      member: maybe(rand() < 0.6),
      active: maybe(rand() < 0.5),
      city: maybe(pick(['Berlin', 'München', 'Zürich', 'Köln', '東京'])),
      size: maybe(pick(['s', 'm', 'l', 'xl'])),
      email: maybe(`user${Math.floor(rand() * 50)}@example.com`),
      code: maybe(pick([7, 42, 1001])),
      signup: maybe(ts),
      label: rand() < 0.5,
    };
  });
}

/** The same values as a CSV reader would hand them to the server: all strings, in several spellings. */
function csvText(column: string, value: unknown, variant: number): string {
  // In a string column "NA" is a value (as in DuckDB's CSV reader); only the empty field is missing there.
  if (value === null) return STRING_COLUMNS.has(column) ? '' : (['', 'NA', 'null', 'N/A'][variant % 4] ?? '');
  if (typeof value === 'number') {
    // Each spelling parses back to the same double.
    return [String(value), value.toPrecision(17), value.toExponential(), ` ${value} `][variant % 4] ?? '';
  }
  if (typeof value === 'bigint') return variant % 2 ? `${value}.0` : String(value);
  if (typeof value === 'boolean')
    return [String(value), value ? '1' : '0', value ? 'T' : 'F'][variant % 3] ?? '';
  if (column === 'signup' && typeof value === 'string') {
    return (
      [value, `${value.replace(' ', 'T')}Z`, `${value.replace(' ', 'T')}.000+00:00`][variant % 3] ?? value
    );
  }
  return String(value);
}

function bytes(array: Float32Array): Buffer {
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

const TRAIN = duckRows(300, 1);
const SCORE = duckRows(200, 2);

describe('batch vs online identity', () => {
  const fitted = fitTransform(SPEC, TRAIN);
  const inputs = fitted.inputs.map((c) => c.name);
  const batch = applyTransform(fitted, SCORE);

  it('CSV-string rows, objects and arrays, coerced one at a time, give the batch bytes', () => {
    const rowBytes = 4 * batch.nFeatures;
    expect(batch.nFeatures).toBe(fitted.featureNames.length);
    SCORE.forEach((row, r) => {
      const csvObject = Object.fromEntries(inputs.map((name) => [name, csvText(name, row[name], r)]));
      const csvArray = inputs.map((name) => csvText(name, row[name], r + 1));
      const json = JSON.parse(
        JSON.stringify(
          Object.fromEntries(inputs.map((n) => [n, typeof row[n] === 'bigint' ? Number(row[n]) : row[n]])),
        ),
      ) as Row;
      const expected = bytes(batch.features).subarray(r * rowBytes, (r + 1) * rowBytes);
      for (const request of [csvObject, csvArray, json]) {
        const online = applyTransform(fitted, [coerceRowValues(fitted, request)]);
        expect(Buffer.compare(bytes(online.features), expected)).toBe(0);
        // The server's path: values in inputs order, features written by position.
        const served = applyTransformToInputs(fitted, [coerceRowInputs(fitted, request)]);
        expect(Buffer.compare(bytes(served.features), expected)).toBe(0);
      }
    });
  });

  it('a whole CSV batch through coerceRowValues equals the DuckDB batch byte for byte', () => {
    const coerced = SCORE.map((row, r) =>
      coerceRowValues(
        fitted,
        inputs.map((name) => csvText(name, row[name], r + 2)),
      ),
    );
    const online = applyTransform(fitted, coerced);
    expect(Buffer.compare(bytes(online.features), bytes(batch.features))).toBe(0);
    const served = applyTransformToInputs(
      fitted,
      SCORE.map((row, r) =>
        coerceRowInputs(
          fitted,
          inputs.map((name) => csvText(name, row[name], r + 2)),
        ),
      ),
    );
    expect(Buffer.compare(bytes(served.features), bytes(batch.features))).toBe(0);
    // The fixture exercises missing values and unknown categories, not only the happy path.
    expect(batch.features.some(Number.isNaN)).toBe(true);
    expect(fitted.featureNames).toContain('city=__unknown__');
  });
});

describe('fitted transform hash', () => {
  /** Deep copy with every object's keys in reverse order. */
  function reversed<T>(value: T): T {
    if (Array.isArray(value)) return value.map(reversed) as T;
    if (typeof value === 'object' && value !== null) {
      return Object.fromEntries(
        Object.entries(value)
          .reverse()
          .map(([k, v]) => [k, reversed(v)]),
      ) as T;
    }
    return value;
  }

  it('is sha256 of the canonical JSON of everything but the hash', () => {
    const fitted = fitTransform(SPEC, TRAIN);
    const { hash, ...body } = fitted;
    expect(hash).toBe(createHash('sha256').update(canonicalJson(body)).digest('hex'));
  });

  it('does not depend on key order in the spec or the rows', () => {
    const a = fitTransform(SPEC, TRAIN);
    const b = fitTransform(reversed(SPEC), TRAIN.map(reversed));
    expect(b.hash).toBe(a.hash);
    expect(canonicalJson(b)).toBe(canonicalJson(a));
  });

  it('changes when the learned parameters change', () => {
    const a = fitTransform(SPEC, TRAIN);
    const b = fitTransform(SPEC, TRAIN.slice(1));
    expect(b.hash).not.toBe(a.hash);
  });

  it('canonicalJson sorts keys, drops undefined and refuses non-finite numbers', () => {
    expect(canonicalJson({ b: 1, a: [true, null, 'x', undefined], c: { z: -0, y: undefined } })).toBe(
      '{"a":[true,null,"x",null],"b":1,"c":{"z":0}}',
    );
    expect(() => canonicalJson({ a: Number.NaN })).toThrow(ValidationError);
    expect(() => canonicalJson({ a: 1n })).toThrow(/bigint/);
  });
});

describe('stored fitted transform', () => {
  const fitted = fitTransform(SPEC, TRAIN);

  it('survives a JSON round trip with identical features', () => {
    for (const text of [JSON.stringify(fitted), JSON.stringify(fitted, null, 2)]) {
      const loaded = parseFittedTransform(JSON.parse(text));
      expect(loaded.hash).toBe(fitted.hash);
      expect(loaded).toEqual(fitted);
      const before = applyTransform(fitted, SCORE);
      const after = applyTransform(loaded, SCORE);
      expect(Buffer.compare(bytes(after.features), bytes(before.features))).toBe(0);
    }
  });

  it('round-trips parameters that were -0', () => {
    const s: TransformSpec = {
      kind: 'kiln.transform',
      version: 1,
      columns: [{ name: 'x', type: 'number', steps: [{ op: 'scale', method: 'minmax' }] }],
    };
    const f = fitTransform(s, [{ x: -0 }, { x: 4 }]);
    const loaded = parseFittedTransform(JSON.parse(JSON.stringify(f)));
    expect(loaded.hash).toBe(f.hash);
    const rows = [{ x: -0 }, { x: 1 }];
    expect(
      Buffer.compare(bytes(applyTransform(loaded, rows).features), bytes(applyTransform(f, rows).features)),
    ).toBe(0);
  });

  it('rejects a tampered document', () => {
    const tampered = JSON.parse(JSON.stringify(fitted)) as FittedTransform;
    const income = tampered.params.find((p) => p.column === 'income');
    if (income?.steps[0]?.op !== 'impute') throw new Error('fixture: income should start with impute');
    income.steps[0].fill = 0;
    expect(() => parseFittedTransform(tampered)).toThrow(IntegrityError);
    const renamed = JSON.parse(JSON.stringify(fitted)) as FittedTransform;
    renamed.featureNames[0] = 'something-else';
    expect(() => parseFittedTransform(renamed)).toThrow(/featureNames/);
    expect(() => parseFittedTransform({ ...fitted, hash: 'abc' })).toThrow(ValidationError);
    const { params: _params, ...unfitted } = fitted;
    expect(() => parseFittedTransform(unfitted)).toThrow(/params/);
  });
});

describe('coerceRowValues', () => {
  const fitted = fitTransform(SPEC, TRAIN);

  function message(row: Row | unknown[]): string {
    try {
      coerceRowValues(fitted, row);
    } catch (error) {
      expect(error).toBeInstanceOf(ValidationError);
      return (error as Error).message;
    }
    throw new Error('expected a ValidationError, nothing was thrown');
  }

  it('types CSV strings and treats missing tokens as null', () => {
    expect(
      coerceRowValues(fitted, {
        id: 'x',
        age: '42',
        income: ' 3.5 ',
        ratio: 'NA',
        member: 'yes',
        active: '',
        city: 'NA',
        size: '',
        email: 'a@b',
        code: '7.0',
        signup: '2024-03-05 10:20:30',
      }),
    ).toEqual({
      age: 42,
      income: 3.5,
      ratio: null,
      member: true,
      active: null,
      // For string columns "NA" is a value; only the empty string means missing.
      city: 'NA',
      size: null,
      email: 'a@b',
      code: 7,
      signup: '2024-03-05 10:20:30',
    });
  });

  it('fills absent nullable columns with null and rejects absent required ones', () => {
    const out = coerceRowValues(fitted, { id: 'only' });
    expect(out.age).toBeNull();
    expect(Object.keys(out)).not.toContain('id');
    const strict = fitTransform(
      { ...SPEC, columns: SPEC.columns.map((c) => (c.name === 'age' ? { ...c, nullable: false } : c)) },
      TRAIN.map((r) => ({ ...r, age: 30 })),
    );
    expect(() => coerceRowValues(strict, { age: 'NA' })).toThrow('column "age" is not nullable');
  });

  it.each([
    [{ agee: 1 }, 'unknown column "agee"; allowed: id, age, income'],
    [{ label: true }, '"label" is the target, not an input'],
    [{ age: 'forty' }, 'column "age": expected integer, got "forty"'],
    [{ age: '3.5' }, 'column "age": expected integer, got "3.5"'],
    [{ income: Number.NaN }, 'column "income": NaN is not allowed'],
    [{ income: 'NaN' }, 'column "income": "NaN" is not a finite number'],
    [{ income: Number.POSITIVE_INFINITY }, 'column "income": Infinity is not a finite number'],
    [{ income: '-inf' }, 'not a finite number'],
    [{ income: '1e400' }, 'overflows'],
    [{ income: '0x10' }, 'column "income": expected number, got "0x10"'],
    [{ income: true }, 'column "income": expected number, got true'],
    [{ member: 'maybe' }, 'column "member": expected boolean'],
    [{ city: 12 }, 'column "city": expected string, got 12'],
    [{ signup: 'yesterday' }, 'column "signup": "yesterday" is not an ISO-8601 timestamp'],
    [{ signup: 1700000000000 }, 'column "signup": expected timestamp'],
    [{ ratio: { value: 1 } }, 'column "ratio": expected number, got an object'],
  ])('rejects %j', (row, fragment) => {
    expect(message(row)).toContain(fragment);
  });

  it('checks array length against inputs', () => {
    expect(message(['x', 1])).toContain('expected 11 values in inputs order (id, age, income');
    expect(() => coerceRowValues(fitted, 'a,b' as unknown as Row)).toThrow(/object or an array/);
    expect(() => applyTransformToInputs(fitted, [['x', 1]])).toThrow(
      'row 0: expected 11 values in inputs order',
    );
  });

  it('keeps values in inputs order, with dropped columns left null', () => {
    const values = coerceRowInputs(fitted, { id: 'x', age: '42', city: 'Paris' });
    expect(values).toHaveLength(fitted.inputs.length);
    expect(values[fitted.inputs.findIndex((c) => c.name === 'id')]).toBeNull();
    expect(values[fitted.inputs.findIndex((c) => c.name === 'age')]).toBe(42);
    expect(values[fitted.inputs.findIndex((c) => c.name === 'city')]).toBe('Paris');
  });
});
