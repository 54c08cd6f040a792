import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../lib/core/errors.ts';
import { decideGate } from '../../lib/training/evaluation.ts';

describe('the evaluation gate', () => {
  it('promotes the first model of a name (there is no champion to beat)', () => {
    const gate = decideGate({ task: 'binary', margin: 0.05, challenger: 0.7 });
    expect(gate).toMatchObject({ passed: true, champion: null, championVersion: null, improvement: null });
    expect(gate.reason).toMatch(/no champion yet/);
  });

  it('keeps the champion when the challenger is worse, and records both scores', () => {
    const gate = decideGate({
      task: 'binary',
      margin: 0,
      challenger: 0.8,
      champion: { version: 3, score: 0.9 },
    });
    expect(gate).toMatchObject({
      passed: false,
      metric: 'accuracy',
      challenger: 0.8,
      champion: 0.9,
      championVersion: 3,
    });
    expect(gate.improvement).toBeCloseTo(-0.1, 12);
    expect(gate.reason).toMatch(/champion stays/);
  });

  it('promotes a better challenger', () => {
    const gate = decideGate({
      task: 'multiclass',
      margin: 0,
      challenger: 0.91,
      champion: { version: 1, score: 0.9 },
    });
    expect(gate.passed).toBe(true);
    expect(gate.reason).toMatch(/challenger wins/);
  });

  it('needs strictly better: a tie keeps the champion even with margin 0', () => {
    expect(
      decideGate({ task: 'binary', margin: 0, challenger: 0.9, champion: { version: 1, score: 0.9 } }).passed,
    ).toBe(false);
  });

  it('respects the margin: better by less than it is not enough, by exactly it is', () => {
    const champion = { version: 2, score: 0.92 };
    expect(decideGate({ task: 'binary', margin: 0.02, challenger: 0.93, champion }).passed).toBe(false);
    // 0.94 - 0.92 is 0.01999… in binary floating point: exactly the margin still passes.
    expect(decideGate({ task: 'binary', margin: 0.02, challenger: 0.94, champion }).passed).toBe(true);
    expect(decideGate({ task: 'binary', margin: 0.02, challenger: 0.95, champion }).passed).toBe(true);
  });

  it('compares regression models on RMSE, lower is better', () => {
    const champion = { version: 1, score: 100 };
    const better = decideGate({ task: 'regression', margin: 5, challenger: 90, champion });
    expect(better).toMatchObject({ passed: true, metric: 'rmse', higherIsBetter: false, improvement: 10 });
    expect(decideGate({ task: 'regression', margin: 5, challenger: 97, champion }).passed).toBe(false);
    expect(decideGate({ task: 'regression', margin: 0, challenger: 101, champion }).passed).toBe(false);
  });

  it('never replaces a champion that is not comparable, and never promotes a NaN score', () => {
    const other = decideGate({
      task: 'binary',
      margin: 0,
      challenger: 0.99,
      notComparable: 'champion v1 predicts price (regression)',
    });
    expect(other.passed).toBe(false);
    expect(other.reason).toMatch(/not comparable|promote it by hand/);
    expect(decideGate({ task: 'binary', margin: 0, challenger: Number.NaN }).passed).toBe(false);
    expect(
      decideGate({ task: 'binary', margin: 0, challenger: Number.NaN, champion: { version: 1, score: 0.5 } })
        .passed,
    ).toBe(false);
  });

  it('rejects a negative or non-finite margin, naming the value', () => {
    expect(() => decideGate({ task: 'binary', margin: -0.1, challenger: 1 })).toThrow(ValidationError);
    expect(() => decideGate({ task: 'binary', margin: Number.POSITIVE_INFINITY, challenger: 1 })).toThrow(
      /margin must be a finite number >= 0, got Infinity/,
    );
  });
});
