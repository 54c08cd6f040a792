import { z } from 'zod';
import { IntegrityError, ValidationError } from '../core/errors.ts';
import type { CategoricalProfile, ColumnProfile, NumericProfile } from '../core/profile.ts';
import { rng } from '../ml/split.ts';
import { chiSquaredSurvival, kolmogorovSurvival } from './special.ts';

/**
 * Drift statistics: live traffic against the baseline profile saved at training (lib/core/profile.ts).
 *
 * A column drifts when two things hold at once: the difference is statistically significant (KS for
 * numeric columns, chi-squared for categorical ones, p-values corrected across every column tested in the
 * report), and it is large enough to matter (PSI for numeric, Jensen–Shannon distance for categorical, at
 * or above a floor). The p-value alone flags trivial shifts once traffic is large; the effect size alone
 * flags noise when traffic is small (PSI of 50 rows in 10 bins is ~0.2 with no shift at all).
 */

/** How drift is decided; every field has a default (DEFAULT_DRIFT_SETTINGS). */
export interface DriftSettings {
  /** Family-wise (Bonferroni) or false-discovery (Benjamini–Hochberg) level of the tests. */
  alpha: number;
  /** Correction across the columns tested in one report. */
  correction: 'benjamini-hochberg' | 'bonferroni' | 'none';
  /** Effect-size floor of numeric columns (population stability index). */
  psiThreshold: number;
  /** Effect-size floor of categorical columns (Jensen–Shannon distance, base 2, in [0, 1]). */
  jsThreshold: number;
  /** Fewest non-missing current values a column needs to be tested at all. */
  minRows: number;
  /** Share that stands in for an empty bin in PSI (ln 0 is undefined). */
  psiEpsilon: number;
  /** Current values kept per numeric column (seeded reservoir) for the KS test. */
  maxSample: number;
}

export const DEFAULT_DRIFT_SETTINGS: Readonly<DriftSettings> = Object.freeze({
  alpha: 0.05,
  correction: 'benjamini-hochberg',
  psiThreshold: 0.1,
  jsThreshold: 0.1,
  minRows: 30,
  psiEpsilon: 1e-4,
  maxSample: 20_000,
});

/** Validates partial settings (from a CLI flag, an event, an env var) and fills in the defaults. */
export const DriftSettingsSchema = z
  .strictObject({
    alpha: z.number().gt(0).lt(1),
    correction: z.enum(['benjamini-hochberg', 'bonferroni', 'none']),
    psiThreshold: z.number().min(0),
    jsThreshold: z.number().min(0).max(1),
    minRows: z.number().int().min(2),
    psiEpsilon: z.number().gt(0).lt(0.01),
    maxSample: z.number().int().min(100).max(10_000_000),
  })
  .partial();

/** Settings with defaults; throws ValidationError naming the bad field and its range. */
export function driftSettings(partial: unknown = {}): DriftSettings {
  const parsed = DriftSettingsSchema.safeParse(partial ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ValidationError(
      `invalid drift setting ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`,
      { cause: parsed.error },
    );
  }
  return { ...DEFAULT_DRIFT_SETTINGS, ...parsed.data };
}

// ---- baseline ----------------------------------------------------------------------------------------

const NumericProfileSchema = z.looseObject({
  kind: z.literal('numeric'),
  count: z.number().int().nonnegative(),
  missing: z.number().int().nonnegative(),
  mean: z.number(),
  std: z.number(),
  min: z.number(),
  max: z.number(),
  edges: z.array(z.number()),
  shares: z.array(z.number().min(0)),
  sample: z.array(z.number()),
});
const CategoricalProfileSchema = z.looseObject({
  kind: z.literal('categorical'),
  count: z.number().int().nonnegative(),
  missing: z.number().int().nonnegative(),
  shares: z.record(z.string(), z.number().min(0)),
});
const ColumnProfileSchema = z.discriminatedUnion('kind', [NumericProfileSchema, CategoricalProfileSchema]);

/** baseline.json as training writes it (lib/training/baseline.ts). */
export const BaselineProfileSchema = z.looseObject({
  features: z.record(z.string(), ColumnProfileSchema),
  prediction: ColumnProfileSchema,
});
export type Baseline = { features: Record<string, ColumnProfile>; prediction: ColumnProfile };

/** Parses baseline.json; IntegrityError when it is not a baseline profile. */
export function parseBaseline(json: unknown, where = 'baseline.json'): Baseline {
  const parsed = BaselineProfileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new IntegrityError(
      `${where} is not a baseline profile (${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'})`,
      { cause: parsed.error },
    );
  }
  for (const [name, profile] of [
    ...Object.entries(parsed.data.features),
    ['(prediction)', parsed.data.prediction] as const,
  ]) {
    if (profile.kind === 'numeric' && profile.shares.length !== profile.edges.length + 1) {
      throw new IntegrityError(
        `${where}: column ${name} has ${profile.edges.length} bin edges but ${profile.shares.length} shares (expected ${profile.edges.length + 1})`,
      );
    }
  }
  return parsed.data as Baseline;
}

// ---- statistics --------------------------------------------------------------------------------------

/**
 * Population stability index Σ (a − e)·ln(a / e) over aligned bins of two share vectors; shares below
 * `epsilon` (empty bins) count as `epsilon`.
 */
export function populationStabilityIndex(
  expected: ReadonlyArray<number>,
  actual: ReadonlyArray<number>,
  epsilon = 1e-4,
): number {
  assertAligned(expected, actual);
  let psi = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.max(expected[i] as number, epsilon);
    const a = Math.max(actual[i] as number, epsilon);
    psi += (a - e) * Math.log(a / e);
  }
  return psi;
}

/** Jensen–Shannon distance (square root of the base-2 divergence), in [0, 1]; inputs are normalised. */
export function jensenShannonDistance(p: ReadonlyArray<number>, q: ReadonlyArray<number>): number {
  assertAligned(p, q);
  const sp = sum(p);
  const sq = sum(q);
  if (sp <= 0 || sq <= 0) return 0;
  let divergence = 0;
  for (let i = 0; i < p.length; i++) {
    const a = (p[i] as number) / sp;
    const b = (q[i] as number) / sq;
    const m = (a + b) / 2;
    if (a > 0) divergence += 0.5 * a * Math.log2(a / m);
    if (b > 0) divergence += 0.5 * b * Math.log2(b / m);
  }
  return Math.sqrt(Math.min(1, Math.max(0, divergence)));
}

/** The two-sample Kolmogorov–Smirnov statistic D = sup |F₁ − F₂| of two ascending samples (ties handled). */
export function ksStatistic(a: ReadonlyArray<number>, b: ReadonlyArray<number>): number {
  const n1 = a.length;
  const n2 = b.length;
  if (n1 === 0 || n2 === 0) throw new ValidationError('the KS statistic needs two non-empty samples');
  let i = 0;
  let j = 0;
  let d = 0;
  while (i < n1 && j < n2) {
    const x = Math.min(a[i] as number, b[j] as number);
    while (i < n1 && (a[i] as number) <= x) i++;
    while (j < n2 && (b[j] as number) <= x) j++;
    d = Math.max(d, Math.abs(i / n1 - j / n2));
  }
  return d;
}

/**
 * Asymptotic p-value of a two-sample KS statistic for samples of n and m values: the Kolmogorov
 * distribution at (√nₑ + 0.12 + 0.11/√nₑ)·D with nₑ = nm/(n+m) (Stephens' small-sample correction).
 */
export function ksPValue(d: number, n: number, m: number): number {
  if (!(n > 0 && m > 0))
    throw new ValidationError(`KS p-value needs positive sample sizes, got ${n} and ${m}`);
  const ne = (n * m) / (n + m);
  const root = Math.sqrt(ne);
  return kolmogorovSurvival((root + 0.12 + 0.11 / root) * d);
}

/** Result of a chi-squared test. */
export interface ChiSquaredResult {
  statistic: number;
  df: number;
  pValue: number;
}

/**
 * Chi-squared test of homogeneity of two count vectors over the same categories (a 2×k contingency table).
 * Categories whose expected count is below 5 in either sample are pooled first, the textbook condition for
 * the chi-squared approximation; categories empty in both samples are dropped.
 */
export function chiSquaredHomogeneity(a: ReadonlyArray<number>, b: ReadonlyArray<number>): ChiSquaredResult {
  assertAligned(a, b);
  const na = sum(a);
  const nb = sum(b);
  if (na <= 0 || nb <= 0) return { statistic: 0, df: 0, pValue: 1 };
  const total = na + nb;
  const columns: Array<[number, number]> = [];
  let pooled: [number, number] = [0, 0];
  for (let i = 0; i < a.length; i++) {
    const ca = a[i] as number;
    const cb = b[i] as number;
    const column = ca + cb;
    if (column <= 0) continue;
    const smallest = (column * Math.min(na, nb)) / total;
    if (smallest < 5) pooled = [pooled[0] + ca, pooled[1] + cb];
    else columns.push([ca, cb]);
  }
  if (pooled[0] + pooled[1] > 0) {
    const smallest = ((pooled[0] + pooled[1]) * Math.min(na, nb)) / total;
    if (smallest >= 5 || columns.length === 0) columns.push(pooled);
    else {
      // Still too thin on its own: fold the pool into the smallest regular category.
      let target = 0;
      for (let i = 1; i < columns.length; i++) {
        const c = columns[i] as [number, number];
        const t = columns[target] as [number, number];
        if (c[0] + c[1] < t[0] + t[1]) target = i;
      }
      const t = columns[target] as [number, number];
      columns[target] = [t[0] + pooled[0], t[1] + pooled[1]];
    }
  }
  if (columns.length < 2) return { statistic: 0, df: 0, pValue: 1 };
  let statistic = 0;
  for (const [ca, cb] of columns) {
    const column = ca + cb;
    const ea = (column * na) / total;
    const eb = (column * nb) / total;
    statistic += (ca - ea) ** 2 / ea + (cb - eb) ** 2 / eb;
  }
  const df = columns.length - 1;
  return { statistic, df, pValue: chiSquaredSurvival(statistic, df) };
}

/** Multiple-testing correction of p-values (same order out as in). */
export function adjustPValues(pValues: ReadonlyArray<number>, method: DriftSettings['correction']): number[] {
  const m = pValues.length;
  if (method === 'none') return [...pValues];
  if (method === 'bonferroni') return pValues.map((p) => Math.min(1, p * m));
  // Benjamini–Hochberg step-up: adjusted p(i) = min over j ≥ i of m·p(j)/j, made monotone.
  const order = pValues.map((p, i) => ({ p, i })).sort((x, y) => x.p - y.p);
  const adjusted = new Array<number>(m).fill(1);
  let running = 1;
  for (let rank = m; rank >= 1; rank--) {
    const entry = order[rank - 1] as { p: number; i: number };
    running = Math.min(running, (entry.p * m) / rank);
    adjusted[entry.i] = Math.min(1, running);
  }
  return adjusted;
}

// ---- current traffic ---------------------------------------------------------------------------------

/** Category bucket for values a baseline without `__other__` never saw. */
export const NEW_CATEGORY = '__new__';
const OTHER = '__other__';
const MAX_UNSEEN_LISTED = 20;

/** What one column of live traffic looked like, in the baseline's bins. */
export type CurrentColumn = CurrentNumeric | CurrentCategorical;

export interface CurrentNumeric {
  kind: 'numeric';
  /** Values offered (present, missing or invalid). */
  count: number;
  missing: number;
  /** Values of the wrong type (counted, then treated as missing). */
  invalid: number;
  /** Counts per baseline bin (length edges.length + 1). */
  binCounts: number[];
  /** Ascending sample of present values (all of them up to maxSample, then a seeded reservoir). */
  sample: number[];
  mean: number;
  std: number;
  min: number;
  max: number;
}

export interface CurrentCategorical {
  kind: 'categorical';
  count: number;
  missing: number;
  invalid: number;
  /** Counts per baseline category (plus NEW_CATEGORY when the baseline has no `__other__`). */
  counts: Record<string, number>;
  /** Values outside the baseline's named categories, with counts (the most frequent few). */
  unseen: Record<string, number>;
}

/** Outcome of offering one value to an accumulator. */
export type ValueOutcome = 'present' | 'missing' | 'invalid';

/** Accumulates one column of live traffic in constant memory (bins, a reservoir sample, moments). */
export class ColumnAccumulator {
  private count = 0;
  private missing = 0;
  private invalid = 0;
  private readonly binCounts: number[];
  private readonly categoryCounts = new Map<string, number>();
  private readonly unseen = new Map<string, number>();
  private readonly reservoir: number[] = [];
  private present = 0;
  private mean = 0;
  private m2 = 0;
  private min = Number.POSITIVE_INFINITY;
  private max = Number.NEGATIVE_INFINITY;
  private readonly random: () => number;

  constructor(
    readonly name: string,
    readonly baseline: ColumnProfile,
    private readonly maxSample: number = DEFAULT_DRIFT_SETTINGS.maxSample,
  ) {
    this.binCounts = baseline.kind === 'numeric' ? new Array<number>(baseline.edges.length + 1).fill(0) : [];
    this.random = rng(hashString(name));
  }

  /** Adds one raw value; null, undefined, '' and NaN are missing; values of the wrong type are invalid. */
  add(value: unknown): ValueOutcome {
    this.count++;
    if (
      value === null ||
      value === undefined ||
      value === '' ||
      (typeof value === 'number' && Number.isNaN(value))
    ) {
      this.missing++;
      return 'missing';
    }
    if (this.baseline.kind === 'numeric') {
      const number = toNumber(value);
      if (number === undefined) {
        this.invalid++;
        return 'invalid';
      }
      this.addNumber(number, this.baseline);
      return 'present';
    }
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      this.invalid++;
      return 'invalid';
    }
    this.addCategory(String(value), this.baseline);
    return 'present';
  }

  /** The column so far, in the baseline's bins. */
  snapshot(): CurrentColumn {
    if (this.baseline.kind === 'numeric') {
      return {
        kind: 'numeric',
        count: this.count,
        missing: this.missing,
        invalid: this.invalid,
        binCounts: [...this.binCounts],
        sample: [...this.reservoir].sort((a, b) => a - b),
        mean: this.present ? this.mean : 0,
        std: this.present > 1 ? Math.sqrt(this.m2 / (this.present - 1)) : 0,
        min: this.present ? this.min : 0,
        max: this.present ? this.max : 0,
      };
    }
    const unseen = [...this.unseen.entries()]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, MAX_UNSEEN_LISTED);
    return {
      kind: 'categorical',
      count: this.count,
      missing: this.missing,
      invalid: this.invalid,
      counts: Object.fromEntries(this.categoryCounts),
      unseen: Object.fromEntries(unseen),
    };
  }

  private addNumber(x: number, baseline: NumericProfile): void {
    const bin = binIndex(baseline.edges, x);
    this.binCounts[bin] = (this.binCounts[bin] ?? 0) + 1;
    this.present++;
    const delta = x - this.mean;
    this.mean += delta / this.present;
    this.m2 += delta * (x - this.mean);
    if (x < this.min) this.min = x;
    if (x > this.max) this.max = x;
    // Algorithm R: every value ends up in the sample with the same probability maxSample / present.
    if (this.reservoir.length < this.maxSample) this.reservoir.push(x);
    else {
      const slot = Math.floor(this.random() * this.present);
      if (slot < this.maxSample) this.reservoir[slot] = x;
    }
  }

  private addCategory(value: string, baseline: CategoricalProfile): void {
    let bucket = value;
    // Object.hasOwn, not `in`: a category named `constructor` must not match Object.prototype.
    if (!Object.hasOwn(baseline.shares, value) || value === OTHER || value === NEW_CATEGORY) {
      bucket = Object.hasOwn(baseline.shares, OTHER) ? OTHER : NEW_CATEGORY;
      this.unseen.set(value, (this.unseen.get(value) ?? 0) + 1);
    }
    this.categoryCounts.set(bucket, (this.categoryCounts.get(bucket) ?? 0) + 1);
  }
}

/** Bin of x for edges e: bin i holds e[i-1] < x ≤ e[i] (bin 0: x ≤ e[0]; last: x > e[last]), as in profile.ts. */
export function binIndex(edges: ReadonlyArray<number>, x: number): number {
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (x > (edges[mid] as number)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Builds a CurrentColumn straight from values (tests, batch comparisons). */
export function currentColumnOf(
  name: string,
  baseline: ColumnProfile,
  values: Iterable<unknown>,
  maxSample?: number,
): CurrentColumn {
  const accumulator = new ColumnAccumulator(name, baseline, maxSample);
  for (const value of values) accumulator.add(value);
  return accumulator.snapshot();
}

// ---- comparison --------------------------------------------------------------------------------------

/** The statistical test run on a column. */
export interface DriftTest {
  name: 'kolmogorov-smirnov' | 'chi-squared';
  statistic: number;
  pValue: number;
  /** After the correction across every column tested in the same report. */
  adjustedPValue: number;
  /** Degrees of freedom (chi-squared). */
  df?: number;
  /** nₑ = nm/(n+m) of the KS test (n current values sampled, m baseline rows). */
  effectiveN?: number;
}

/** One column's drift: statistics, decision and the bins for a chart. */
export interface ColumnDrift {
  column: string;
  kind: 'numeric' | 'categorical';
  /** `insufficient-data`: fewer than minRows present values (or an empty baseline); not tested. */
  status: 'tested' | 'insufficient-data';
  /** Present (non-missing, valid) current values. */
  rows: number;
  /** Present baseline (training) values. */
  baselineRows: number;
  missingRate: { baseline: number; current: number };
  invalidValues: number;
  /** Population stability index on the baseline bins (both kinds). */
  psi: number | null;
  /** Jensen–Shannon distance on the baseline bins (both kinds). */
  jsDistance: number | null;
  test: DriftTest | null;
  effect: { metric: 'psi' | 'js-distance'; value: number; threshold: number; exceeded: boolean } | null;
  significant: boolean;
  drifted: boolean;
  /** Shares per bin: labels, baseline, current. */
  bins: { labels: string[]; baseline: number[]; current: number[] };
  /** Categorical: values outside the baseline's named categories. */
  unseenCategories?: Record<string, number>;
  /** Numeric: moments of baseline and current values. */
  moments?: {
    baseline: { mean: number; std: number; min: number; max: number };
    current: { mean: number; std: number; min: number; max: number };
  };
}

/** Compares one column with its baseline; the p-value is not yet corrected (see {@link assessDrift}). */
export function compareColumn(
  column: string,
  baseline: ColumnProfile,
  current: CurrentColumn,
  settings: DriftSettings = { ...DEFAULT_DRIFT_SETTINGS },
): ColumnDrift {
  if (baseline.kind !== current.kind) {
    throw new ValidationError(
      `column ${column}: baseline is ${baseline.kind} but current values are ${current.kind}`,
    );
  }
  const baselineRows = baseline.count - baseline.missing;
  const missingRate = {
    baseline: baseline.count ? baseline.missing / baseline.count : 0,
    current: current.count ? (current.missing + current.invalid) / current.count : 0,
  };
  const base = {
    column,
    kind: baseline.kind,
    baselineRows,
    missingRate,
    invalidValues: current.invalid,
  };
  if (baseline.kind === 'numeric' && current.kind === 'numeric') {
    const rows = sum(current.binCounts);
    const labels = numericBinLabels(baseline.edges);
    const shares = rows ? current.binCounts.map((c) => c / rows) : current.binCounts.map(() => 0);
    const moments = {
      baseline: { mean: baseline.mean, std: baseline.std, min: baseline.min, max: baseline.max },
      current: { mean: current.mean, std: current.std, min: current.min, max: current.max },
    };
    const bins = { labels, baseline: [...baseline.shares], current: shares };
    if (rows < settings.minRows || baselineRows === 0 || baseline.sample.length === 0) {
      return untested({ ...base, rows, bins, moments });
    }
    const psi = populationStabilityIndex(baseline.shares, shares, settings.psiEpsilon);
    const js = jensenShannonDistance(baseline.shares, shares);
    const d = ksStatistic(baseline.sample, current.sample);
    // The baseline sample is an evenly spaced quantile summary of all training values: its ECDF is within
    // one step of theirs, so the sampling error is the training set's (m rows) and that step is discounted.
    const quantisation = baseline.sample.length < baselineRows ? 1 / baseline.sample.length : 0;
    const n = current.sample.length;
    const m = baselineRows;
    const pValue = ksPValue(Math.max(0, d - quantisation), n, m);
    return {
      ...base,
      status: 'tested',
      rows,
      psi,
      jsDistance: js,
      test: {
        name: 'kolmogorov-smirnov',
        statistic: d,
        pValue,
        adjustedPValue: pValue,
        effectiveN: (n * m) / (n + m),
      },
      effect: {
        metric: 'psi',
        value: psi,
        threshold: settings.psiThreshold,
        exceeded: psi >= settings.psiThreshold,
      },
      significant: false,
      drifted: false,
      bins,
      moments,
    };
  }
  if (baseline.kind === 'categorical' && current.kind === 'categorical') {
    const labels = Object.keys(baseline.shares);
    for (const key of Object.keys(current.counts)) if (!labels.includes(key)) labels.push(key);
    const rows = sum(Object.values(current.counts));
    const baselineShares = labels.map((label) =>
      Object.hasOwn(baseline.shares, label) ? (baseline.shares[label] ?? 0) : 0,
    );
    const counts = labels.map((label) =>
      Object.hasOwn(current.counts, label) ? (current.counts[label] ?? 0) : 0,
    );
    const shares = counts.map((c) => (rows ? c / rows : 0));
    const bins = { labels, baseline: baselineShares, current: shares };
    const unseenCategories = current.unseen;
    if (rows < settings.minRows || baselineRows === 0) {
      return untested({ ...base, rows, bins, unseenCategories });
    }
    const psi = populationStabilityIndex(baselineShares, shares, settings.psiEpsilon);
    const js = jensenShannonDistance(baselineShares, shares);
    const chi = chiSquaredHomogeneity(
      baselineShares.map((share) => share * baselineRows),
      counts,
    );
    return {
      ...base,
      status: 'tested',
      rows,
      psi,
      jsDistance: js,
      test: {
        name: 'chi-squared',
        statistic: chi.statistic,
        pValue: chi.pValue,
        adjustedPValue: chi.pValue,
        df: chi.df,
      },
      effect: {
        metric: 'js-distance',
        value: js,
        threshold: settings.jsThreshold,
        exceeded: js >= settings.jsThreshold,
      },
      significant: false,
      drifted: false,
      bins,
      unseenCategories,
    };
  }
  throw new ValidationError(`column ${column}: unsupported profile kind`);
}

function untested(
  partial: Omit<ColumnDrift, 'status' | 'psi' | 'jsDistance' | 'test' | 'effect' | 'significant' | 'drifted'>,
): ColumnDrift {
  return {
    ...partial,
    status: 'insufficient-data',
    psi: null,
    jsDistance: null,
    test: null,
    effect: null,
    significant: false,
    drifted: false,
  };
}

/** Drift of every feature and of the prediction, decided together. */
export interface DriftAssessment {
  settings: DriftSettings;
  features: ColumnDrift[];
  prediction: ColumnDrift | null;
  /** Names of the features that drifted, most drifted (highest PSI) first. */
  driftedFeatures: string[];
  predictionDrift: boolean;
  /** Any feature or the prediction drifted. */
  detected: boolean;
  /** Columns actually tested (the size of the correction's family). */
  tested: number;
}

/**
 * Compares every column of current traffic with the baseline, corrects the p-values across all of them
 * (features and prediction are one family) and decides: drifted = significant AND effect ≥ floor.
 */
export function assessDrift(
  baseline: Baseline,
  current: { features: Record<string, CurrentColumn>; prediction: CurrentColumn | null },
  partialSettings: Partial<DriftSettings> = {},
): DriftAssessment {
  const settings = driftSettings(partialSettings);
  const features: ColumnDrift[] = [];
  for (const [name, profile] of Object.entries(baseline.features)) {
    const column = current.features[name];
    if (column === undefined) continue;
    features.push(compareColumn(name, profile, column, settings));
  }
  const prediction =
    current.prediction === null
      ? null
      : compareColumn('prediction', baseline.prediction, current.prediction, settings);
  const all = prediction ? [...features, prediction] : features;
  const tested = all.filter((column) => column.test !== null);
  const adjusted = adjustPValues(
    tested.map((column) => (column.test as DriftTest).pValue),
    settings.correction,
  );
  tested.forEach((column, i) => {
    const test = column.test as DriftTest;
    test.adjustedPValue = adjusted[i] as number;
    column.significant = test.adjustedPValue <= settings.alpha;
    column.drifted = column.significant && (column.effect?.exceeded ?? false);
  });
  const driftedFeatures = features
    .filter((column) => column.drifted)
    .sort((a, b) => (b.psi ?? 0) - (a.psi ?? 0))
    .map((column) => column.column);
  const predictionDrift = prediction?.drifted ?? false;
  return {
    settings,
    features,
    prediction,
    driftedFeatures,
    predictionDrift,
    detected: driftedFeatures.length > 0 || predictionDrift,
    tested: tested.length,
  };
}

/** Readable labels of numeric bins: `≤ e0`, `(e0, e1]`, …, `> eLast`. */
export function numericBinLabels(edges: ReadonlyArray<number>): string[] {
  if (edges.length === 0) return ['all'];
  const f = (x: number) => formatNumber(x);
  const labels = [`≤ ${f(edges[0] as number)}`];
  for (let i = 1; i < edges.length; i++)
    labels.push(`(${f(edges[i - 1] as number)}, ${f(edges[i] as number)}]`);
  labels.push(`> ${f(edges[edges.length - 1] as number)}`);
  return labels;
}

/** A number in at most 4 significant digits, for labels. */
export function formatNumber(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x !== 0 && (Math.abs(x) >= 1e6 || Math.abs(x) < 1e-3)) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}

// ---- helpers -----------------------------------------------------------------------------------------

function toNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string' && value.trim() !== '') {
    const number = Number(value);
    return Number.isFinite(number) ? number : undefined;
  }
  return undefined;
}

function sum(values: ReadonlyArray<number>): number {
  let total = 0;
  for (const value of values) total += value;
  return total;
}

function assertAligned(a: ReadonlyArray<number>, b: ReadonlyArray<number>): void {
  if (a.length !== b.length) {
    throw new ValidationError(`distributions must have the same bins, got ${a.length} and ${b.length}`);
  }
}

function hashString(text: string): number {
  let hash = 2166136261;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 16777619);
  }
  return hash >>> 0;
}
