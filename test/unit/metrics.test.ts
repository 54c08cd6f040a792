import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../lib/core/errors.ts';
import { classificationMetrics, regressionMetrics, rocAuc } from '../../lib/core/metrics.ts';

describe('classificationMetrics', () => {
  it('binary: hand-computed values', () => {
    // p(class 1) = 0.1, 0.4, 0.35, 0.8 for y = 0, 0, 1, 1 (scikit-learn's roc_auc_score example: 0.75).
    const probs = Float32Array.of(0.9, 0.1, 0.6, 0.4, 0.65, 0.35, 0.2, 0.8);
    const m = classificationMetrics(Int32Array.of(0, 0, 1, 1), probs, 2);
    expect(m.accuracy).toBe(0.75);
    expect(m.confusion_matrix).toEqual([
      [2, 0],
      [1, 1],
    ]);
    expect(m.balanced_accuracy).toBeCloseTo(0.75, 12);
    expect(m.roc_auc).toBeCloseTo(0.75, 12);
    expect(m.f1).toBeCloseTo(2 / 3, 12);
    const logLoss = -(Math.log(0.9) + Math.log(0.6) + Math.log(0.35) + Math.log(0.8)) / 4;
    expect(m.log_loss).toBeCloseTo(logLoss, 6);
  });

  it('multiclass: macro one-vs-rest AUC and macro F1', () => {
    const probs = Float64Array.of(0.7, 0.2, 0.1, 0.3, 0.4, 0.3, 0.2, 0.5, 0.3, 0.1, 0.1, 0.8);
    const m = classificationMetrics(Float64Array.of(0, 1, 2, 2), probs, 3);
    expect(m.accuracy).toBe(0.75);
    expect(m.confusion_matrix).toEqual([
      [1, 0, 0],
      [0, 1, 0],
      [0, 1, 1],
    ]);
    expect(m.balanced_accuracy).toBeCloseTo(2.5 / 3, 12);
    expect(m.f1).toBeCloseTo((1 + 2 / 3 + 2 / 3) / 3, 12);
    // One-vs-rest AUCs: class 0 → 1, class 1 → 2/3, class 2 → 3.5/4 (one tie at 0.3).
    expect(m.roc_auc).toBeCloseTo((1 + 2 / 3 + 0.875) / 3, 12);
    const logLoss = -(Math.log(0.7) + Math.log(0.4) + Math.log(0.3) + Math.log(0.8)) / 4;
    expect(m.log_loss).toBeCloseTo(logLoss, 12);
  });

  it('clips zero probabilities in the log loss and breaks argmax ties towards the lowest class', () => {
    const m = classificationMetrics([1, 0], [1, 0, 0.5, 0.5], 2);
    expect(m.log_loss).toBeCloseTo((-Math.log(1e-15) - Math.log(0.5)) / 2, 6);
    expect(m.confusion_matrix).toEqual([
      [1, 0],
      [1, 0],
    ]);
    expect(m.f1).toBe(0);
    expect(m.balanced_accuracy).toBe(0.5);
  });

  it('AUC is NaN when only one class is present, and 0.5 for tied scores', () => {
    expect(rocAuc([0.2, 0.9], [true, true])).toBeNaN();
    expect(rocAuc([0.5, 0.5], [false, true])).toBe(0.5);
    expect(rocAuc([0.1, 0.9, 0.2], [true, false, false])).toBe(0);
  });

  it('rejects mismatched shapes and labels outside the classes', () => {
    expect(() => classificationMetrics([0, 1], [0.5, 0.5], 2)).toThrow(/expected rows x classes = 2 x 2 = 4/);
    expect(() => classificationMetrics([0, 3], [0.5, 0.5, 0.5, 0.5], 2)).toThrow(ValidationError);
    expect(() => classificationMetrics([0], [1], 1)).toThrow(/nClasses must be an integer >= 2/);
    expect(() => classificationMetrics([], [], 2)).toThrow(ValidationError);
  });
});

describe('regressionMetrics', () => {
  it('hand-computed values', () => {
    const m = regressionMetrics(Float64Array.of(3, -0.5, 2, 7), Float32Array.of(2.5, 0, 2, 8));
    expect(m.rmse).toBeCloseTo(Math.sqrt(0.375), 12);
    expect(m.mae).toBeCloseTo(0.5, 12);
    expect(m.r2).toBeCloseTo(1 - 1.5 / 29.1875, 12);
  });

  it('constant targets: r2 is 1 for a perfect fit, else 0', () => {
    expect(regressionMetrics([2, 2], [2, 2]).r2).toBe(1);
    expect(regressionMetrics([2, 2], [1, 3]).r2).toBe(0);
  });

  it('rejects mismatched lengths and non-finite values', () => {
    expect(() => regressionMetrics([1, 2], [1])).toThrow(/yPred has 1 values for 2 targets/);
    expect(() => regressionMetrics([1, Number.NaN], [1, 2])).toThrow(/yTrue\[1\] is NaN/);
    expect(() => regressionMetrics([], [])).toThrow(ValidationError);
  });
});
