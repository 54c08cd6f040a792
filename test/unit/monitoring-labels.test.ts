import { describe, expect, it } from 'vitest';
import { landedLabelObject, normaliseLabelRows } from '../../lib/monitoring/labels.ts';
import { wilsonUpper } from '../../lib/monitoring/quality.ts';
import { normalQuantile } from '../../lib/monitoring/special.ts';

const binary = { task: 'binary' as const, target: 'churned', classes: ['0', '1', 'no', 'true', 'yes'] };

describe('label rows', () => {
  it('reads ids, rows and classes in the model’s spelling; the last duplicate wins', () => {
    const result = normaliseLabelRows(
      [
        { requestId: 'a', label: 'yes' },
        { requestId: 'b', row: '2', label: '1.0' },
        { request_id: 'ignored', requestId: 'c', label: 'TRUE' },
        { requestId: 'a', label: 'no' },
        { requestId: 'd', label: 'maybe' },
      ],
      binary,
    );
    expect(result.labels).toEqual([
      { requestId: 'a', row: 0, label: 'no' },
      { requestId: 'b', row: 2, label: '1' },
      { requestId: 'c', row: 0, label: 'true' },
      { requestId: 'd', row: 0, label: 'maybe' },
    ]);
    expect(result).toMatchObject({
      duplicates: 1,
      invalid: 0,
      labelColumn: 'label',
      unexpectedLabels: { maybe: 1 },
    });
  });

  it('refuses bad rows with the reason and the file row, and regression labels that are not numbers', () => {
    const result = normaliseLabelRows(
      [
        { requestId: '', value: '3' },
        { requestId: 'x', row: 1.5, value: '3' },
        { requestId: 'y', value: 'n/a' },
        { requestId: 'z', value: ' 4.25 ' },
      ],
      { task: 'regression', target: 'spend', classes: [] },
    );
    expect(result.labels).toEqual([{ requestId: 'z', row: 0, label: 4.25 }]);
    expect(result.invalidExamples).toEqual([
      { row: 1, reason: 'missing or invalid request id ""' },
      { row: 2, reason: 'row must be a non-negative integer, got 1.5' },
      { row: 3, reason: 'value must be a number for a regression model, got "n/a"' },
    ]);
  });

  it('uses the model’s target column, or a named one', () => {
    expect(normaliseLabelRows([{ requestId: 'a', churned: 'yes' }], binary).labelColumn).toBe('churned');
    expect(normaliseLabelRows([{ requestId: 'a', truth: 'yes' }], binary, 'truth').labels).toHaveLength(1);
    expect(() => normaliseLabelRows([{ requestId: 'a', truth: 'yes' }], binary)).toThrow(
      /needs a label column \(label, value, churned\); it has requestId, truth/,
    );
  });
});

describe('landed label objects', () => {
  it('takes the model from labels/<model>/… and decodes S3 keys', () => {
    expect(landedLabelObject({ detail: { object: { key: 'labels/churn/2026%2F03.csv', size: 5 } } })).toEqual(
      {
        key: 'labels/churn/2026/03.csv',
        model: 'churn',
        size: 5,
      },
    );
    expect(() => landedLabelObject({ key: 'labels/churn/' })).toThrow(/labels\/<model>\/<file>/);
    expect(() => landedLabelObject({ key: 'labels/Churn/a.csv' })).toThrow(/invalid model name/);
  });
});

describe('accuracy bound', () => {
  it('the Wilson upper bound matches the closed form and tightens with n', () => {
    const z = normalQuantile(0.95);
    // 80 of 100 at one-sided 95 %: (p + z²/2n + z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n), evaluated in Python.
    expect(wilsonUpper(80, 100, z)).toBeCloseTo(0.8574981763, 8);
    expect(wilsonUpper(8, 10, z)).toBeGreaterThan(wilsonUpper(800, 1000, z));
    expect(wilsonUpper(0, 0, z)).toBe(1);
  });
});
