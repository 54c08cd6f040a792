import { z } from 'zod';
import { ValidationError } from '../core/errors.ts';
import type { ColumnProfile } from '../core/profile.ts';
import {
  ColumnAccumulator,
  chiSquaredHomogeneity,
  compareColumn,
  type DriftSettings,
  DriftSettingsSchema,
  driftSettings,
  jensenShannonDistance,
  ksPValue,
  ksStatistic,
  populationStabilityIndex,
} from '../monitoring/drift.ts';
import { predictionValue } from '../monitoring/monitor.ts';
import type { RouterSnapshot } from '../serving/canary.ts';

/**
 * The rollout decision: after a canary or shadow bake, promote the challenger or roll it back. Pure, so the
 * same rules are tested directly and applied by the local server; on SageMaker the endpoint's own
 * guardrails apply the alarm side of the same rules (lib/updates/deploy.ts).
 *
 * A challenger is rolled back when any check fails: too little traffic to judge (inconclusive is never a
 * promotion), more errors than the champion, a slower tail, prediction drift, or worse quality where late
 * labels exist.
 *
 * Prediction drift is judged the way the monitor judges it — each version's live predictions against the
 * prediction profile of its own held-out data — and the challenger fails only when it drifts and drifts
 * more than the champion on the same traffic: when the traffic itself moved, the champion drifts too, and
 * a challenger retrained on the new data should drift less. How far the two versions' predictions differ
 * from each other is reported, never a reason by itself: a retrained model is supposed to answer
 * differently.
 */

/** Thresholds of the checks; every field has a default. */
export const RolloutCriteriaSchema = z.strictObject({
  /** Challenger requests needed to judge at all. */
  minRequests: z.number().int().min(1).default(30),
  /** Largest allowed rise of the error rate (challenger − champion, absolute). */
  maxErrorRateIncrease: z.number().min(0).max(1).default(0.01),
  /** Largest allowed ratio of 95th-percentile latencies (challenger / champion). */
  maxLatencyRatio: z.number().min(1).default(1.5),
  /** Latency differences below this are noise, whatever the ratio (ms). */
  latencySlackMs: z.number().min(0).default(25),
  /** How prediction drift is decided (the monitor's settings: level, PSI / JS floors, minimum rows). */
  drift: DriftSettingsSchema.default({}),
  /** Shadow only: least share of rows on which both versions agree (0 turns the check off). */
  minAgreement: z.number().min(0).max(1).default(0),
  /** Largest allowed quality loss on labelled live traffic, relative to the champion's. */
  maxQualityDrop: z.number().min(0).max(1).default(0.02),
  /** Labelled rows each version needs before quality is compared. */
  minLabels: z.number().int().min(1).default(30),
});
export type RolloutCriteria = z.infer<typeof RolloutCriteriaSchema>;

/** Criteria with defaults; ValidationError naming the bad field and its range. */
export function rolloutCriteria(partial: unknown = {}): RolloutCriteria {
  const parsed = RolloutCriteriaSchema.safeParse(partial ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ValidationError(
      `invalid rollout criterion ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`,
      { cause: parsed.error },
    );
  }
  return parsed.data;
}

/** One check of the decision. */
export interface RolloutCheck {
  name: 'traffic' | 'errors' | 'latency' | 'prediction-drift' | 'agreement' | 'quality';
  status: 'pass' | 'fail' | 'skipped';
  detail: string;
}

/** Quality of one version on labelled live traffic (lib/monitoring/quality.ts). */
export interface ArmQuality {
  metric: 'accuracy' | 'rmse';
  value: number | null;
  labelled: number;
}

/** How the two versions' predictions compare on live traffic. */
export interface PredictionComparison {
  kind: 'numeric' | 'categorical';
  test: 'kolmogorov-smirnov' | 'chi-squared';
  statistic: number;
  pValue: number;
  effect: { metric: 'psi' | 'js-distance'; value: number };
  rows: { champion: number; challenger: number };
}

/** One version's live predictions against its own baseline prediction profile. */
export interface PredictionDrift {
  drifted: boolean;
  test: 'kolmogorov-smirnov' | 'chi-squared';
  pValue: number;
  effect: { metric: 'psi' | 'js-distance'; value: number; threshold: number };
  rows: number;
}

/** The decision and why. */
export interface RolloutDecision {
  decision: 'promote' | 'rollback';
  checks: RolloutCheck[];
  /** The failed checks' details (empty when promoted). */
  reasons: string[];
  /** Each version's prediction drift against its own baseline (null: no profile or too few rows). */
  drift: { champion: PredictionDrift | null; challenger: PredictionDrift | null };
  /** How the two versions' predictions differ on the same live traffic (informational). */
  predictions: PredictionComparison | null;
}

/**
 * A version's live predictions against its baseline prediction profile, decided as the monitor decides a
 * column (lib/monitoring/drift.ts): significant at `alpha` AND an effect at or above the floor.
 */
export function predictionDrift(
  profile: ColumnProfile,
  outputs: readonly unknown[],
  settings: Partial<DriftSettings> = {},
): PredictionDrift | null {
  const full = driftSettings(settings);
  const accumulator = new ColumnAccumulator('prediction', profile, full.maxSample);
  for (const output of outputs) {
    const value = predictionValue(output, profile.kind);
    if (value !== undefined) accumulator.add(value);
  }
  const column = compareColumn('prediction', profile, accumulator.snapshot(), full);
  if (column.status !== 'tested' || !column.test || !column.effect) return null;
  return {
    drifted: column.test.pValue <= full.alpha && column.effect.exceeded,
    test: column.test.name,
    pValue: column.test.pValue,
    effect: { metric: column.effect.metric, value: column.effect.value, threshold: column.effect.threshold },
    rows: column.rows,
  };
}

/**
 * Compares the two versions' live predictions in the champion's baseline bins: KS on the values
 * (regression) or chi-squared on the label counts (classification), with PSI / Jensen–Shannon as the size
 * of the shift. Null when either side has fewer than two readable predictions.
 */
export function comparePredictions(
  profile: ColumnProfile,
  champion: readonly unknown[],
  challenger: readonly unknown[],
): PredictionComparison | null {
  const accumulate = (name: string, outputs: readonly unknown[]) => {
    const accumulator = new ColumnAccumulator(name, profile);
    let n = 0;
    for (const output of outputs) {
      const value = predictionValue(output, profile.kind);
      if (value === undefined) continue;
      accumulator.add(value);
      n++;
    }
    return { snapshot: accumulator.snapshot(), n };
  };
  const a = accumulate('champion', champion);
  const b = accumulate('challenger', challenger);
  if (a.n < 2 || b.n < 2) return null;
  if (a.snapshot.kind === 'numeric' && b.snapshot.kind === 'numeric') {
    const d = ksStatistic(a.snapshot.sample, b.snapshot.sample);
    const shares = (counts: number[]) => {
      const total = counts.reduce((x, y) => x + y, 0);
      return counts.map((c) => (total ? c / total : 0));
    };
    return {
      kind: 'numeric',
      test: 'kolmogorov-smirnov',
      statistic: d,
      pValue: ksPValue(d, a.snapshot.sample.length, b.snapshot.sample.length),
      effect: {
        metric: 'psi',
        value: populationStabilityIndex(shares(a.snapshot.binCounts), shares(b.snapshot.binCounts)),
      },
      rows: { champion: a.n, challenger: b.n },
    };
  }
  if (a.snapshot.kind === 'categorical' && b.snapshot.kind === 'categorical') {
    const labels = [
      ...new Set([...Object.keys(a.snapshot.counts), ...Object.keys(b.snapshot.counts)]),
    ].sort();
    const countsA = labels.map(
      (label) => (a.snapshot.kind === 'categorical' ? a.snapshot.counts[label] : 0) ?? 0,
    );
    const countsB = labels.map(
      (label) => (b.snapshot.kind === 'categorical' ? b.snapshot.counts[label] : 0) ?? 0,
    );
    const chi = chiSquaredHomogeneity(countsA, countsB);
    return {
      kind: 'categorical',
      test: 'chi-squared',
      statistic: chi.statistic,
      pValue: chi.pValue,
      effect: { metric: 'js-distance', value: jensenShannonDistance(countsA, countsB) },
      rows: { champion: a.n, challenger: b.n },
    };
  }
  return null;
}

/** What {@link decideRollout} weighs. */
export interface RolloutEvidence {
  snapshot: RouterSnapshot;
  /** Each version's baseline prediction profile (baseline.json); null skips that side. */
  profiles: { champion: ColumnProfile | null; challenger: ColumnProfile | null };
  /** Quality per version on labelled live traffic; null when no labels exist. */
  quality: { champion: ArmQuality; challenger: ArmQuality } | null;
  criteria: RolloutCriteria;
}

/** Promote or roll back, with every check's verdict in words. */
export function decideRollout(evidence: RolloutEvidence): RolloutDecision {
  const { snapshot, criteria } = evidence;
  const { champion, challenger } = snapshot;
  const checks: RolloutCheck[] = [];
  const add = (name: RolloutCheck['name'], status: RolloutCheck['status'], detail: string) =>
    checks.push({ name, status, detail });

  const enough = challenger.requests >= criteria.minRequests;
  add(
    'traffic',
    enough ? 'pass' : 'fail',
    `challenger v${challenger.version} ${snapshot.mode === 'shadow' ? 'saw' : 'answered'} ${challenger.requests} request(s), champion v${champion.version} ${champion.requests}; ${enough ? '' : 'inconclusive: '}needs ≥ ${criteria.minRequests}`,
  );

  const rise = challenger.errorRate - champion.errorRate;
  add(
    'errors',
    challenger.requests === 0 ? 'skipped' : rise > criteria.maxErrorRateIncrease ? 'fail' : 'pass',
    `error rate ${pct(challenger.errorRate)} (${challenger.errors}/${challenger.requests}) vs champion ${pct(champion.errorRate)} (${champion.errors}/${champion.requests}); allowed rise ${pct(criteria.maxErrorRateIncrease)}`,
  );

  const p95a = champion.latency.p95;
  const p95b = challenger.latency.p95;
  if (p95a === null || p95b === null) add('latency', 'skipped', 'no latency samples on one side');
  else {
    const slow = p95b > p95a * criteria.maxLatencyRatio && (p95b - p95a) * 1000 > criteria.latencySlackMs;
    add(
      'latency',
      slow ? 'fail' : 'pass',
      `p95 ${ms(p95b)} vs champion ${ms(p95a)}; allowed ×${criteria.maxLatencyRatio} (differences under ${criteria.latencySlackMs} ms are noise)`,
    );
  }

  const { profiles } = evidence;
  const predictions = profiles.champion
    ? comparePredictions(profiles.champion, champion.predictions, challenger.predictions)
    : null;
  const drift = {
    champion: profiles.champion
      ? predictionDrift(profiles.champion, champion.predictions, criteria.drift)
      : null,
    challenger: profiles.challenger
      ? predictionDrift(profiles.challenger, challenger.predictions, criteria.drift)
      : null,
  };
  if (!drift.challenger) {
    add('prediction-drift', 'skipped', 'no baseline prediction profile or too few challenger predictions');
  } else {
    const b = drift.challenger;
    const a = drift.champion;
    const worse = b.drifted && (!a?.drifted || b.effect.value > a.effect.value);
    const describe = (d: PredictionDrift) =>
      `${d.effect.metric} ${fmt(d.effect.value)} (floor ${d.effect.threshold}), p=${fmt(d.pValue)}, ${d.drifted ? 'drifted' : 'stable'}`;
    add(
      'prediction-drift',
      worse ? 'fail' : 'pass',
      `against their own baselines: challenger ${describe(b)}; champion ${a ? describe(a) : 'not measured'}${worse ? '' : b.drifted ? ' (the traffic moved; the challenger drifts less)' : ''}`,
    );
  }

  if (snapshot.agreement) {
    const { compared, agreed } = snapshot.agreement;
    const share = compared ? agreed / compared : 0;
    add(
      'agreement',
      criteria.minAgreement === 0 || compared === 0
        ? 'skipped'
        : share < criteria.minAgreement
          ? 'fail'
          : 'pass',
      `the versions agree on ${agreed}/${compared} rows (${pct(share)})${criteria.minAgreement ? `; needs ≥ ${pct(criteria.minAgreement)}` : ''}`,
    );
  }

  const quality = evidence.quality;
  if (!quality) add('quality', 'skipped', 'no late labels for this traffic yet');
  else {
    const { champion: qa, challenger: qb } = quality;
    if (
      qa.value === null ||
      qb.value === null ||
      qa.labelled < criteria.minLabels ||
      qb.labelled < criteria.minLabels
    ) {
      add(
        'quality',
        'skipped',
        `labelled rows: challenger ${qb.labelled}, champion ${qa.labelled}; each needs ≥ ${criteria.minLabels}`,
      );
    } else {
      const higherIsBetter = qa.metric === 'accuracy';
      const loss = higherIsBetter
        ? (qa.value - qb.value) / Math.max(qa.value, 1e-12)
        : (qb.value - qa.value) / Math.max(qa.value, 1e-12);
      add(
        'quality',
        loss > criteria.maxQualityDrop ? 'fail' : 'pass',
        `${qa.metric} ${fmt(qb.value)} on ${qb.labelled} labels vs champion ${fmt(qa.value)} on ${qa.labelled} (relative loss ${pct(Math.max(0, loss))}, allowed ${pct(criteria.maxQualityDrop)})`,
      );
    }
  }

  const reasons = checks
    .filter((check) => check.status === 'fail')
    .map((check) => `${check.name}: ${check.detail}`);
  return { decision: reasons.length === 0 ? 'promote' : 'rollback', checks, reasons, drift, predictions };
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)} %`;
}

function ms(seconds: number): string {
  return `${(seconds * 1000).toFixed(1)} ms`;
}

function fmt(x: number): string {
  return Number.isFinite(x) ? String(Number(x.toPrecision(3))) : String(x);
}
