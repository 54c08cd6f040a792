import { describe, expect, it } from 'vitest';
import { binShares, type ColumnProfile, profileColumn } from '../../lib/core/profile.ts';
import { rng as mulberry32 } from '../../lib/ml/split.ts';
import {
  adjustPValues,
  assessDrift,
  type Baseline,
  binIndex,
  ColumnAccumulator,
  chiSquaredHomogeneity,
  compareColumn,
  currentColumnOf,
  DEFAULT_DRIFT_SETTINGS,
  type DriftSettings,
  driftSettings,
  jensenShannonDistance,
  ksPValue,
  ksStatistic,
  NEW_CATEGORY,
  parseBaseline,
  populationStabilityIndex,
} from '../../lib/monitoring/drift.ts';
import {
  chiSquaredSurvival,
  kolmogorovSurvival,
  logGamma,
  normalQuantile,
  regularizedGammaP,
  regularizedGammaQ,
} from '../../lib/monitoring/special.ts';

// Seeded generators: every run draws the same numbers, so these statistical tests are deterministic.
function normals(seed: number) {
  const random = mulberry32(seed);
  return (mean = 0, sd = 1) => {
    let u = 0;
    while (u === 0) u = random();
    return mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  };
}
function categories(seed: number) {
  const random = mulberry32(seed);
  return (shares: Record<string, number>) => {
    const r = random();
    let cumulative = 0;
    for (const [name, share] of Object.entries(shares)) {
      cumulative += share;
      if (r < cumulative) return name;
    }
    return Object.keys(shares).at(-1) as string;
  };
}
const draw = <T>(n: number, f: () => T): T[] => Array.from({ length: n }, () => f());

/** Baseline with one numeric and one categorical feature, as training would save it. */
function baselineOf(x: ColumnProfile, colour: ColumnProfile): Baseline {
  return { features: { x, colour }, prediction: profileColumn([0, 1], 'numeric') };
}

describe('special functions (reference values from mpmath and scipy)', () => {
  it('regularized incomplete gamma P and Q match mpmath to 1e-12 relative', () => {
    const references: Array<[number, number, number, number]> = [
      // a, x, Q(a, x), P(a, x) — mpmath.gammainc(a, x, inf, regularized=True), rounded to doubles
      [0.5, 0.01, 0.8875370839817152, 0.11246291601828488],
      [1, 1.920729410347062, 0.1465000644860843, 0.8534999355139157],
      [2.5, 5, 0.07523524614651218, 0.9247647538534878],
      [4.5, 0.3, 0.9999336189284352, 6.638107156479943e-5],
      [10, 20, 0.004995412308307587, 0.9950045876916924],
      [26, 40, 0.007566375789866606, 0.9924336242101334],
      [50, 9, 1.0, 2.537140207400348e-21],
      [1000, 1100, 0.0010593232539299773, 0.99894067674607],
    ];
    for (const [a, x, q, p] of references) {
      expect(Math.abs(regularizedGammaQ(a, x) - q) / q, `Q(${a}, ${x})`).toBeLessThan(1e-12);
      expect(Math.abs(regularizedGammaP(a, x) - p) / p, `P(${a}, ${x})`).toBeLessThan(1e-10);
    }
    expect(regularizedGammaP(3, 0)).toBe(0);
    expect(regularizedGammaQ(3, 0)).toBe(1);
    expect(logGamma(10)).toBeCloseTo(Math.log(362880), 12);
    expect(() => regularizedGammaQ(0, 1)).toThrow(/a > 0/);
  });

  it('chi-squared p-values match the textbook critical values', () => {
    expect(chiSquaredSurvival(3.841458820694124, 1)).toBeCloseTo(0.05, 12);
    expect(chiSquaredSurvival(7.814727903251178, 3)).toBeCloseTo(0.05, 12);
    expect(chiSquaredSurvival(50, 10) / 2.66908342e-7).toBeCloseTo(1, 6);
    expect(chiSquaredSurvival(0, 4)).toBe(1);
  });

  it('the Kolmogorov survival function matches scipy.stats.kstwobign on both sides of its branch', () => {
    const references: Array<[number, number]> = [
      [0.5, 0.963945244],
      [1.0, 0.269999672],
      [1.1799999, 0.123453867],
      [1.18, 0.123453809],
      [1.3580986393225505, 0.05],
      [2.0, 6.70925256e-4],
    ];
    for (const [lambda, sf] of references) expect(kolmogorovSurvival(lambda) / sf).toBeCloseTo(1, 7);
    expect(kolmogorovSurvival(0)).toBe(1);
  });

  it('normal quantiles', () => {
    expect(normalQuantile(0.95)).toBeCloseTo(1.6448536, 6);
    expect(normalQuantile(0.975)).toBeCloseTo(1.959964, 6);
    expect(normalQuantile(0.01)).toBeCloseTo(-2.3263479, 6);
  });
});

describe('drift statistics on known inputs (reference values from scipy)', () => {
  it('KS statistic, ties included', () => {
    expect(ksStatistic([0.1, 0.5, 0.9, 1.3, 2.2, 3.0], [0.4, 0.6, 1.0, 1.1, 2.5, 3.5, 4.0])).toBeCloseTo(
      0.2857142857142857,
      12,
    );
    expect(ksStatistic([1, 1, 2, 3], [1, 2, 2, 4])).toBeCloseTo(0.25, 12);
    expect(ksStatistic([1, 2, 3], [1, 2, 3])).toBe(0);
  });

  it('chi-squared homogeneity equals scipy.stats.chi2_contingency(correction=False)', () => {
    const result = chiSquaredHomogeneity([30, 50, 20], [45, 35, 20]);
    expect(result.statistic).toBeCloseTo(5.647058823529411, 10);
    expect(result.df).toBe(2);
    expect(result.pValue).toBeCloseTo(0.05939593960520477, 10);
  });

  it('chi-squared pools categories too thin for the approximation', () => {
    // Expected counts of the three small categories in the 100-row sample are 3, 3 and 4: pooled into one.
    expect(chiSquaredHomogeneity([400, 500, 30, 30, 40], [40, 50, 3, 3, 4]).df).toBe(2);
    // A pool still too thin on its own is folded into the smallest regular category.
    expect(chiSquaredHomogeneity([400, 500, 1, 1, 2], [40, 50, 1, 0, 1]).df).toBe(1);
    expect(chiSquaredHomogeneity([10, 0], [0, 0]).pValue).toBe(1);
  });

  it('Jensen–Shannon distance (base 2) and PSI', () => {
    expect(jensenShannonDistance([0.5, 0.3, 0.2], [0.2, 0.3, 0.5])).toBeCloseTo(0.3095409536771482, 12);
    expect(jensenShannonDistance([1, 0], [0, 1])).toBeCloseTo(1, 12);
    expect(jensenShannonDistance([0.2, 0.8], [0.2, 0.8])).toBe(0);
    expect(populationStabilityIndex([0.5, 0.3, 0.2], [0.2, 0.3, 0.5])).toBeCloseTo(0.549774439124493, 12);
    // An empty bin counts as epsilon instead of ln 0.
    const psi = populationStabilityIndex([0.5, 0.5], [1, 0], 1e-4);
    expect(psi).toBeCloseTo(0.5 * Math.log(2) + 0.4999 * Math.log(0.5 / 1e-4), 10);
  });

  it('Benjamini–Hochberg and Bonferroni adjustments', () => {
    const p = [0.01, 0.04, 0.03, 0.2];
    const bh = adjustPValues(p, 'benjamini-hochberg');
    expect(bh[0]).toBeCloseTo(0.04, 12);
    expect(bh[1]).toBeCloseTo(0.16 / 3, 12);
    expect(bh[2]).toBeCloseTo(0.16 / 3, 12);
    expect(bh[3]).toBeCloseTo(0.2, 12);
    expect(adjustPValues(p, 'bonferroni')).toEqual([0.04, 0.16, 0.12, 0.8]);
    expect(adjustPValues(p, 'none')).toEqual(p);
  });

  it('bins numbers exactly as the training profile does', () => {
    const normal = normals(1);
    const train = draw(2000, normal);
    const profile = profileColumn(train, 'numeric');
    if (profile.kind !== 'numeric') throw new Error('expected numeric');
    const live = draw(3000, () => normal(0.3, 1.2));
    const column = currentColumnOf('x', profile, live);
    if (column.kind !== 'numeric') throw new Error('expected numeric');
    const shares = column.binCounts.map((count) => count / live.length);
    expect(shares).toEqual(binShares(live, profile.edges));
    // And a value on an edge goes to the bin it closes, as in profile.ts.
    expect(binIndex([1, 2, 3], 2)).toBe(1);
    expect(binIndex([1, 2, 3], 3.5)).toBe(3);
  });
});

describe('drift decision and sample size', () => {
  const normal = normals(42);
  const pick = categories(43);
  const BASE = { a: 0.5, b: 0.3, c: 0.2 };
  const baseline = baselineOf(
    profileColumn(draw(5000, normal), 'numeric'),
    profileColumn(
      draw(5000, () => pick(BASE)),
      'categorical',
    ),
  );
  const assess = (xs: number[], colours: string[], settings: Partial<DriftSettings> = {}) =>
    assessDrift(
      baseline,
      {
        features: {
          x: currentColumnOf('x', baseline.features.x as ColumnProfile, xs),
          colour: currentColumnOf('colour', baseline.features.colour as ColumnProfile, colours),
        },
        prediction: null,
      },
      settings,
    );
  const feature = (assessment: ReturnType<typeof assess>, name: string) => {
    const column = assessment.features.find((c) => c.column === name);
    if (!column) throw new Error(`no column ${name}`);
    return column;
  };

  it('with no shift, 50 rows are not flagged although PSI alone would cry wolf', () => {
    let psiAboveFloor = 0;
    let rawRejections = 0;
    let flagged = 0;
    const runs = 200;
    for (let run = 0; run < runs; run++) {
      const assessment = assess(
        draw(50, normal),
        draw(50, () => pick(BASE)),
      );
      const x = feature(assessment, 'x');
      if ((x.psi ?? 0) >= DEFAULT_DRIFT_SETTINGS.psiThreshold) psiAboveFloor++;
      if ((x.test?.pValue ?? 1) <= 0.05) rawRejections++;
      if (assessment.detected) flagged++;
    }
    // Noise in 10 bins of 50 rows gives PSI ≈ 0.2: a fixed PSI cut-off flags most of these runs …
    expect(psiAboveFloor / runs).toBeGreaterThan(0.5);
    // … while the KS test keeps its level (calibrated: about 5 % of null runs) …
    expect(rawRejections / runs).toBeGreaterThan(0.01);
    expect(rawRejections / runs).toBeLessThan(0.09);
    // … and the corrected decision over both features stays at or below it.
    expect(flagged / runs).toBeLessThanOrEqual(0.06);
  });

  it('the same small shift is not significant at 50 rows and significant at 50 000', () => {
    const shift = 0.2; // standard deviations: PSI ≈ 0.04
    const run = (n: number, settings: Partial<DriftSettings> = {}) =>
      feature(
        assess(
          draw(n, () => normal(shift)),
          draw(n, () => pick(BASE)),
          settings,
        ),
        'x',
      );
    // At 50 rows the test has little power for a 0.2σ shift (about 5 % of runs are significant with no
    // shift at all, see above): significant in only a small minority of runs.
    const small = Array.from({ length: 100 }, () => run(50));
    const significantSmall = small.filter((column) => column.significant).length;
    expect(significantSmall).toBeLessThan(25);
    // At 50 000 rows the very same shift is significant every time.
    const large = Array.from({ length: 5 }, () => run(50_000));
    for (const column of large) {
      expect(column.test?.adjustedPValue).toBeLessThan(1e-10);
      expect(column.significant).toBe(true);
      // Whether it is *drift* is the effect-size floor's call: PSI ≈ 0.04 is under the default 0.1 …
      expect(column.psi).toBeGreaterThan(0.02);
      expect(column.psi).toBeLessThan(0.1);
      expect(column.drifted).toBe(false);
    }
    // … and with a floor of 0.02 it is flagged at 50 000 rows, while 50 rows still mostly are not.
    const strict = { psiThreshold: 0.02 };
    expect(run(50_000, strict).drifted).toBe(true);
    const strictSmall = Array.from({ length: 100 }, () => run(50, strict));
    expect(strictSmall.filter((column) => column.drifted).length).toBeLessThan(25);
  });

  it('a real shift is flagged: numeric mean +0.5σ, categorical shares moved', () => {
    const assessment = assess(
      draw(5000, () => normal(0.5)),
      draw(5000, () => pick({ a: 0.3, b: 0.3, c: 0.4 })),
    );
    const x = feature(assessment, 'x');
    const colour = feature(assessment, 'colour');
    expect(x.test?.name).toBe('kolmogorov-smirnov');
    expect(x.psi).toBeGreaterThan(0.15);
    expect(x.drifted).toBe(true);
    expect(colour.test?.name).toBe('chi-squared');
    expect(colour.effect?.metric).toBe('js-distance');
    expect(colour.drifted).toBe(true);
    expect(assessment.driftedFeatures.sort()).toEqual(['colour', 'x']);
    expect(assessment.detected).toBe(true);
  });

  it('at millions of rows a negligible shift is significant but not drift (effect-size floor)', () => {
    const pickHuge = categories(7);
    const huge = profileColumn(
      draw(1_000_000, () => pickHuge(BASE)),
      'categorical',
    );
    const negligible = currentColumnOf(
      'colour',
      huge,
      (function* () {
        for (let i = 0; i < 5_000_000; i++) yield pickHuge({ a: 0.49, b: 0.31, c: 0.2 });
      })(),
    );
    const unchanged = currentColumnOf(
      'colour',
      huge,
      (function* () {
        for (let i = 0; i < 5_000_000; i++) yield pickHuge(BASE);
      })(),
    );
    const settings = driftSettings();
    const shifted = compareColumn('colour', huge, negligible, settings);
    expect(shifted.rows).toBe(5_000_000);
    expect(shifted.test?.pValue).toBeLessThan(1e-10);
    expect(shifted.jsDistance).toBeLessThan(0.02);
    const decided = assessDrift(
      { features: { colour: huge }, prediction: huge },
      { features: { colour: negligible }, prediction: unchanged },
    );
    expect(decided.features[0]?.significant).toBe(true);
    expect(decided.features[0]?.drifted).toBe(false);
    expect(decided.prediction?.drifted).toBe(false);
    expect(decided.detected).toBe(false);

    // Numeric: 200 000 training rows, 2 000 000 live rows shifted by 0.05σ.
    const normalHuge = normals(9);
    const numeric = profileColumn(draw(200_000, normalHuge), 'numeric');
    const live = currentColumnOf(
      'x',
      numeric,
      (function* () {
        for (let i = 0; i < 2_000_000; i++) yield normalHuge(0.05);
      })(),
    );
    const x = compareColumn('x', numeric, live, settings);
    expect(x.rows).toBe(2_000_000);
    expect(x.test?.pValue).toBeLessThan(1e-4);
    expect(x.psi).toBeLessThan(0.01);
    expect(
      assessDrift(
        { features: { x: numeric }, prediction: numeric },
        { features: { x: live }, prediction: null },
      ).detected,
    ).toBe(false);
  });

  it('counts new categories, missing and wrongly typed values, and refuses to test too few rows', () => {
    const colour = baseline.features.colour as ColumnProfile;
    const accumulator = new ColumnAccumulator('colour', colour);
    const values = [...draw(60, () => pick(BASE)), ...draw(40, () => 'purple'), null, '', { nested: true }];
    const outcomes = values.map((value) => accumulator.add(value));
    expect(outcomes.filter((o) => o === 'missing')).toHaveLength(2);
    expect(outcomes.filter((o) => o === 'invalid')).toHaveLength(1);
    const current = accumulator.snapshot();
    if (current.kind !== 'categorical') throw new Error('expected categorical');
    expect(current.counts[NEW_CATEGORY]).toBe(40);
    expect(current.unseen).toEqual({ purple: 40 });
    const drift = compareColumn('colour', colour, current);
    expect(drift.bins.labels).toContain(NEW_CATEGORY);
    expect(drift.drifted).toBe(false); // not yet corrected: decided by assessDrift
    const decided = assessDrift(baseline, { features: { colour: current }, prediction: null });
    expect(decided.features[0]?.drifted).toBe(true);
    expect(decided.features[0]?.missingRate.current).toBeCloseTo(3 / 103, 12);

    const x = currentColumnOf('x', baseline.features.x as ColumnProfile, [1, 2, 'three', null]);
    expect(x).toMatchObject({ count: 4, missing: 1, invalid: 1 });
    const few = compareColumn('x', baseline.features.x as ColumnProfile, x);
    expect(few.status).toBe('insufficient-data');
    expect(few.test).toBeNull();
  });

  it('a baseline with __other__ pools unseen values there', () => {
    const values = [
      ...Array.from({ length: 60 }, (_, i) => `c${i}`),
      ...Array.from({ length: 60 }, (_, i) => `c${i}`),
    ];
    const profile = profileColumn(values, 'categorical');
    if (profile.kind !== 'categorical') throw new Error('expected categorical');
    expect(profile.shares.__other__).toBeGreaterThan(0);
    const current = currentColumnOf('c', profile, ['c0', 'zzz', 'zzz']);
    if (current.kind !== 'categorical') throw new Error('expected categorical');
    expect(current.counts.__other__).toBe(2);
    expect(current.counts[NEW_CATEGORY]).toBeUndefined();
    expect(current.unseen).toEqual({ zzz: 2 });
  });

  it('treats category names like `constructor` as data, not object properties', () => {
    const profile = profileColumn(['a', 'b', 'a'], 'categorical');
    const current = currentColumnOf('c', profile, ['constructor', 'toString', 'a']);
    if (current.kind !== 'categorical') throw new Error('expected categorical');
    expect(current.counts).toEqual({ a: 1, [NEW_CATEGORY]: 2 });
    expect(current.unseen).toEqual({ constructor: 1, toString: 1 });
    const drift = compareColumn('c', profile, current);
    expect(drift.bins.baseline.every((share) => typeof share === 'number')).toBe(true);
  });
});

describe('settings and baseline validation', () => {
  it('fills defaults and names the bad setting', () => {
    expect(driftSettings({ alpha: 0.01 })).toEqual({ ...DEFAULT_DRIFT_SETTINGS, alpha: 0.01 });
    expect(() => driftSettings({ alpha: 2 })).toThrow(/alpha/);
    expect(() => driftSettings({ correction: 'holm' })).toThrow(/correction/);
    expect(() => driftSettings({ minRows: 0 })).toThrow(/minRows/);
  });

  it('parses baseline.json and rejects a malformed one', () => {
    const good = baselineOf(profileColumn([1, 2, 3], 'numeric'), profileColumn(['a'], 'categorical'));
    expect(parseBaseline(JSON.parse(JSON.stringify(good)))).toEqual(good);
    expect(() => parseBaseline({ features: {} })).toThrow(/prediction/);
    const broken = JSON.parse(JSON.stringify(good));
    broken.features.x.shares.pop();
    expect(() => parseBaseline(broken)).toThrow(/bin edges/);
  });

  it('the KS p-value falls with the number of rows for a fixed D', () => {
    expect(ksPValue(0.1, 50, 5000)).toBeGreaterThan(0.5);
    expect(ksPValue(0.1, 5000, 5000)).toBeLessThan(1e-10);
    expect(() => ksPValue(0.1, 0, 10)).toThrow(/positive sample sizes/);
  });
});
