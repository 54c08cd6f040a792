import { randomBytes } from 'node:crypto';
import { discardEvents, type EventPublisher } from '../core/events.ts';
import type { VersionRecord } from '../registry/records.ts';
import { ModelRegistry } from '../registry/registry.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { toJsonBody } from '../store/object-store.ts';
import { emptyReadStats, parseWindow, readCaptures } from './captures.ts';
import { qualityDroppedEvent } from './events.ts';
import { resolveVersion } from './monitor.ts';
import { normalQuantile } from './special.ts';

/**
 * Model quality on late ground truth: labels (ingested by lib/monitoring/labels.ts into
 * `monitoring/<model>/labels/`) joined to captured predictions by request id and row, scored per model
 * version overall and per hour or day, and compared with the version's held-out metric. No DuckDB here, so
 * the scheduled monitor stays a light function.
 */

/** One ground-truth value for one row of one request. */
export interface LabelRecord {
  requestId: string;
  /** Row of the request (0 for single-row requests). */
  row: number;
  /** Class (classification) or number (regression). */
  label: string | number;
}

/** What to score. */
export interface QualityRequest {
  model: string;
  /** A version number or alias. @default every version with labelled traffic, and the champion */
  version?: number | string;
  since?: Date | string;
  until?: Date | string;
  /** Bucket width of the time series. @default 'day' */
  bucket?: 'hour' | 'day';
  /** Relative drop from the held-out metric that counts as a quality drop. @default 0.1 */
  maxRelativeDrop?: number;
  /** Fewest labelled rows before a version is judged at all. @default 30 */
  minLabels?: number;
  /** One-sided confidence of the bound compared with the threshold. @default 0.95 */
  confidence?: number;
}

/** Collaborators of {@link computeQuality}. */
export interface QualityOptions {
  /** Where `QualityDropped` goes. @default discardEvents */
  events?: EventPublisher;
  now?: Date;
  registry?: ModelRegistry;
  /** Write the report to the lake. @default true */
  write?: boolean;
}

/** Quality of one version over the window. */
export interface VersionQuality {
  version: number;
  stage: string;
  metric: 'accuracy' | 'rmse';
  /** The metric on held-out data at training (null when the version has none). */
  heldOut: number | null;
  /** The value beyond which quality counts as dropped (null without a held-out metric). */
  threshold: number | null;
  /** Predictions with a label. */
  labelled: number;
  /** Accuracy or RMSE on the labelled predictions (null when none). */
  value: number | null;
  /** One-sided confidence bound compared with the threshold: upper for accuracy, lower for RMSE. */
  bound: number | null;
  /** Mean absolute error (regression). */
  mae?: number | null;
  /** Labelled predictions whose prediction could not be read. */
  unreadablePredictions: number;
  buckets: Array<{ start: string; labelled: number; value: number }>;
  dropped: boolean;
  /** Why it was or was not judged a drop. */
  reason: string;
}

/** The quality report written to `monitoring/<model>/quality/<stamp>.json`. */
export interface QualityReport {
  kind: 'kiln.quality-report';
  schemaVersion: 1;
  model: string;
  generatedAt: string;
  window: { since: string | null; until: string | null };
  bucket: 'hour' | 'day';
  settings: { maxRelativeDrop: number; minLabels: number; confidence: number };
  labels: {
    files: number;
    /** Distinct (request id, row) pairs with a label. */
    labels: number;
    /** Labels joined to a captured prediction of some version in the window. */
    matched: number;
    /** Labels whose request id (and row) no captured request of this model in the window has. */
    unmatched: number;
    unmatchedExamples: string[];
  };
  versions: VersionQuality[];
  dropped: number[];
  summary: string;
  key: string | null;
}

const MAX_EXAMPLES = 20;
const labelKey = (requestId: string, row: number) => `${requestId}\u0000${row}`;

/** Whether any labels were ingested for the model (one listing, no reads). */
export async function hasLabels(store: ObjectStore, model: string): Promise<boolean> {
  assertName('model', model);
  return (await store.list(lake.labelsPrefix(model))).some((info) => info.key.endsWith('.jsonl'));
}

/** Every stored label of a model; a later ingest overrides an earlier one for the same request row. */
export async function readStoredLabels(
  store: ObjectStore,
  model: string,
): Promise<{ labels: Map<string, LabelRecord>; files: number }> {
  assertName('model', model);
  const keys = (await store.list(lake.labelsPrefix(model)))
    .map((info) => info.key)
    .filter((key) => key.endsWith('.jsonl'))
    .sort();
  const labels = new Map<string, LabelRecord>();
  for (const key of keys) {
    for (const line of (await store.get(key)).toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      const record = JSON.parse(line) as LabelRecord;
      labels.set(labelKey(record.requestId, record.row), record);
    }
  }
  return { labels, files: keys.length };
}

/**
 * Joins stored labels to captured predictions and scores each version: accuracy (classification) or RMSE
 * (regression), overall and per bucket, with a confidence bound so that a few unlucky labels do not count
 * as a drop. Publishes `QualityDropped` for each servable version whose bound crosses the threshold.
 */
export async function computeQuality(
  store: ObjectStore,
  request: QualityRequest,
  options: QualityOptions = {},
): Promise<QualityReport> {
  assertName('model', request.model);
  const window = parseWindow(request.since, request.until);
  const bucket = request.bucket ?? 'day';
  const settings = {
    maxRelativeDrop: request.maxRelativeDrop ?? 0.1,
    minLabels: request.minLabels ?? 30,
    confidence: request.confidence ?? 0.95,
  };
  if (!(settings.maxRelativeDrop >= 0 && settings.maxRelativeDrop < 1)) {
    throw new RangeError(`maxRelativeDrop must be in [0, 1), got ${settings.maxRelativeDrop}`);
  }
  if (!(settings.confidence > 0.5 && settings.confidence < 1)) {
    throw new RangeError(`confidence must be in (0.5, 1), got ${settings.confidence}`);
  }
  const registry = options.registry ?? new ModelRegistry(store);
  const now = options.now ?? new Date();
  const all = await registry.listVersions(request.model);
  const requested =
    request.version === undefined
      ? undefined
      : await resolveVersion(registry, request.model, request.version);
  let champion: number | undefined;
  try {
    champion = (await registry.readAliases(request.model)).aliases.champion;
  } catch {
    champion = undefined;
  }
  const { labels, files } = await readStoredLabels(store, request.model);

  const matched = new Set<string>();
  const scored = new Map<number, Scorer>();
  // Every version is scanned, even when one is asked for: a label is only "unmatched" if no version saw it.
  for (const record of all) {
    if (labels.size === 0) break;
    const scorer = new Scorer(record, bucket);
    const stats = emptyReadStats();
    for await (const captured of readCaptures(store, record.model, record.version, window, stats)) {
      for (let row = 0; row < captured.inputs.length; row++) {
        const key = labelKey(captured.requestId, row);
        const label = labels.get(key);
        if (label === undefined) continue;
        matched.add(key);
        scorer.add(captured.time, captured.outputs[row], label.label);
      }
    }
    scored.set(record.version, scorer);
  }
  const reported = requested
    ? [requested]
    : all.filter((record) => (scored.get(record.version)?.n ?? 0) > 0 || record.version === champion);
  const versions = reported.map((record) =>
    (scored.get(record.version) ?? new Scorer(record, bucket)).result(settings),
  );
  const unmatchedExamples: string[] = [];
  let unmatched = 0;
  for (const [key, label] of labels) {
    if (matched.has(key)) continue;
    unmatched++;
    if (unmatchedExamples.length < MAX_EXAMPLES) {
      unmatchedExamples.push(label.row ? `${label.requestId}#${label.row}` : label.requestId);
    }
  }
  const stamp = `${now.toISOString().replace(/:/g, '-')}-${randomBytes(3).toString('hex')}`;
  const write = options.write ?? true;
  const report: QualityReport = {
    kind: 'kiln.quality-report',
    schemaVersion: 1,
    model: request.model,
    generatedAt: now.toISOString(),
    window: { since: window.since?.toISOString() ?? null, until: window.until?.toISOString() ?? null },
    bucket,
    settings,
    labels: { files, labels: labels.size, matched: matched.size, unmatched, unmatchedExamples },
    versions,
    dropped: versions.filter((v) => v.dropped).map((v) => v.version),
    summary: '',
    key: write ? lake.qualityReport(request.model, stamp) : null,
  };
  report.summary = summarizeQualityReport(report);
  if (report.key) {
    await store.put(report.key, toJsonBody(report), { ifNoneMatch: '*', contentType: 'application/json' });
  }
  const stages = new Map(all.map((record) => [record.version, record.stage]));
  const events = versions
    .filter((v) => v.dropped && stages.get(v.version) !== 'archived' && stages.get(v.version) !== 'rejected')
    .map((v) =>
      qualityDroppedEvent({
        model: request.model,
        version: v.version,
        generatedAt: report.generatedAt,
        since: report.window.since,
        until: report.window.until,
        metric: v.metric,
        value: v.value as number,
        heldOut: v.heldOut as number,
        threshold: v.threshold as number,
        bound: v.bound as number,
        labelled: v.labelled,
        reportKey: report.key ?? '',
      }),
    );
  if (events.length > 0) await (options.events ?? discardEvents).publish(events);
  return report;
}

/** One line for people. */
export function summarizeQualityReport(report: QualityReport): string {
  const parts = report.versions.map((v) => {
    const name = `${report.model}@${v.version}`;
    if (v.value === null) return `${name}: no labelled predictions`;
    const value = `${v.metric} ${v.value.toFixed(4)} on ${v.labelled} labelled rows`;
    const heldOut = v.heldOut === null ? '' : ` (held-out ${v.heldOut.toFixed(4)})`;
    return `${name}: ${value}${heldOut}${v.dropped ? ' — QUALITY DROPPED' : ''}`;
  });
  const unmatched = report.labels.unmatched
    ? `; ${report.labels.unmatched} of ${report.labels.labels} labels match no captured request`
    : '';
  if (report.labels.labels === 0) return `${report.model}: no labels ingested yet`;
  return `${parts.join('; ') || `${report.model}: no versions`}${unmatched}`;
}

/** Accumulates labelled predictions of one version. */
class Scorer {
  n = 0;
  private correct = 0;
  private sumSq = 0;
  private sumSq2 = 0;
  private sumAbs = 0;
  private unreadable = 0;
  private readonly metric: 'accuracy' | 'rmse';
  private readonly buckets = new Map<string, { n: number; correct: number; sumSq: number }>();

  constructor(
    private readonly record: VersionRecord,
    private readonly bucket: 'hour' | 'day',
  ) {
    this.metric = record.task === 'regression' ? 'rmse' : 'accuracy';
  }

  add(time: Date, output: unknown, label: string | number): void {
    const prediction =
      output !== null && typeof output === 'object' ? (output as Record<string, unknown>) : {};
    let correct = 0;
    let squared = 0;
    if (this.metric === 'rmse') {
      const value = prediction.value;
      const truth = Number(label);
      if (typeof value !== 'number' || !Number.isFinite(value) || !Number.isFinite(truth)) {
        this.unreadable++;
        return;
      }
      squared = (value - truth) ** 2;
      this.sumSq += squared;
      this.sumSq2 += squared * squared;
      this.sumAbs += Math.abs(value - truth);
    } else {
      const predicted = prediction.label;
      if (typeof predicted !== 'string' && typeof predicted !== 'number') {
        this.unreadable++;
        return;
      }
      correct = String(predicted) === String(label) ? 1 : 0;
      this.correct += correct;
    }
    this.n++;
    const start = bucketStart(time, this.bucket);
    const entry = this.buckets.get(start) ?? { n: 0, correct: 0, sumSq: 0 };
    entry.n++;
    entry.correct += correct;
    entry.sumSq += squared;
    this.buckets.set(start, entry);
  }

  result(settings: QualityReport['settings']): VersionQuality {
    const raw = this.record.metrics[this.metric];
    const heldOut = typeof raw === 'number' && Number.isFinite(raw) ? raw : null;
    const accuracy = this.metric === 'accuracy';
    const threshold =
      heldOut === null
        ? null
        : accuracy
          ? heldOut * (1 - settings.maxRelativeDrop)
          : heldOut * (1 + settings.maxRelativeDrop);
    const z = normalQuantile(settings.confidence);
    let value: number | null = null;
    let bound: number | null = null;
    if (this.n > 0) {
      if (accuracy) {
        value = this.correct / this.n;
        bound = wilsonUpper(this.correct, this.n, z);
      } else {
        const mse = this.sumSq / this.n;
        value = Math.sqrt(mse);
        // Normal approximation to the mean of squared errors; its lower bound, back on the RMSE scale.
        const variance = this.n > 1 ? Math.max(0, (this.sumSq2 - this.n * mse * mse) / (this.n - 1)) : 0;
        bound = Math.sqrt(Math.max(0, mse - z * Math.sqrt(variance / this.n)));
      }
    }
    let dropped = false;
    let reason: string;
    if (value === null || bound === null) reason = 'no labelled predictions in the window';
    else if (heldOut === null || threshold === null)
      reason = `the version has no held-out ${this.metric} to compare with`;
    else if (this.n < settings.minLabels) {
      reason = `${this.n} labelled rows; at least ${settings.minLabels} are needed to judge`;
    } else if (accuracy) {
      dropped = bound < threshold;
      reason = dropped
        ? `accuracy ${value.toFixed(4)} (upper ${pctConf(settings.confidence)} bound ${bound.toFixed(4)}) is below ${threshold.toFixed(4)} = held-out ${heldOut.toFixed(4)} − ${settings.maxRelativeDrop * 100}%`
        : `accuracy ${value.toFixed(4)} is not credibly below ${threshold.toFixed(4)} (upper bound ${bound.toFixed(4)})`;
    } else {
      dropped = bound > threshold;
      reason = dropped
        ? `RMSE ${value.toFixed(4)} (lower ${pctConf(settings.confidence)} bound ${bound.toFixed(4)}) is above ${threshold.toFixed(4)} = held-out ${heldOut.toFixed(4)} + ${settings.maxRelativeDrop * 100}%`
        : `RMSE ${value.toFixed(4)} is not credibly above ${threshold.toFixed(4)} (lower bound ${bound.toFixed(4)})`;
    }
    const buckets = [...this.buckets.entries()]
      .sort((a, b) => (a[0] < b[0] ? -1 : 1))
      .map(([start, b]) => ({
        start,
        labelled: b.n,
        value: accuracy ? b.correct / b.n : Math.sqrt(b.sumSq / b.n),
      }));
    return {
      version: this.record.version,
      stage: this.record.stage,
      metric: this.metric,
      heldOut,
      threshold,
      labelled: this.n,
      value,
      bound,
      ...(accuracy ? {} : { mae: this.n ? this.sumAbs / this.n : null }),
      unreadablePredictions: this.unreadable,
      buckets,
      dropped,
      reason,
    };
  }
}

/** Wilson score interval's upper bound for k successes in n trials at normal quantile z. */
export function wilsonUpper(k: number, n: number, z: number): number {
  if (n === 0) return 1;
  const p = k / n;
  const z2 = z * z;
  const centre = p + z2 / (2 * n);
  const spread = z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return Math.min(1, (centre + spread) / (1 + z2 / n));
}

function bucketStart(time: Date, bucket: 'hour' | 'day'): string {
  const start = new Date(time.getTime());
  start.setUTCMinutes(0, 0, 0);
  if (bucket === 'day') start.setUTCHours(0);
  return start.toISOString();
}

function pctConf(confidence: number): string {
  return `${Math.round(confidence * 100)}%`;
}
