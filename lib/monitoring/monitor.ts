import { randomBytes } from 'node:crypto';
import { NotFoundError } from '../core/errors.ts';
import { discardEvents, type EventPublisher } from '../core/events.ts';
import type { VersionRecord } from '../registry/records.ts';
import { ModelRegistry } from '../registry/registry.ts';
import { assertName, lake } from '../store/layout.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { toJsonBody } from '../store/object-store.ts';
import {
  type CapturedRequest,
  type CaptureReadStats,
  emptyReadStats,
  parseWindow,
  readCaptures,
} from './captures.ts';
import {
  assessDrift,
  type Baseline,
  ColumnAccumulator,
  type DriftSettings,
  driftSettings,
  parseBaseline,
} from './drift.ts';
import { driftDetectedEvent } from './events.ts';
import { renderDriftReportHtml } from './html.ts';
import { type CaptureValidation, type DriftReport, summarizeDriftReport } from './report.ts';

export type { CaptureValidation, DriftReport } from './report.ts';
export { summarizeDriftReport, validationIssues } from './report.ts';

/** What to monitor: a model version and a window of its captured traffic. */
export interface MonitorRequest {
  model: string;
  /** A version number, or an alias (`champion`, `challenger`, …). @default the champion, else the newest servable version */
  version?: number | string;
  /** Only requests at or after this time. @default unbounded */
  since?: Date | string;
  /** Only requests before this time. @default unbounded */
  until?: Date | string;
  /** Overrides of the drift decision's settings. @default DEFAULT_DRIFT_SETTINGS */
  settings?: Partial<DriftSettings>;
}

/** Collaborators of {@link runMonitor}. */
export interface MonitorOptions {
  /** Where `DriftDetected` goes. @default discardEvents */
  events?: EventPublisher;
  /** The report's time (and key). @default new Date() */
  now?: Date;
  /** Registry to resolve versions with. @default a ModelRegistry on `store` */
  registry?: ModelRegistry;
  /** Write the JSON and HTML report to the lake. @default true */
  write?: boolean;
}

const MAX_UNKNOWN_COLUMNS = 50;
const MORE = '(other names)';

/**
 * Reads a model version's captured traffic in a window, compares it with the baseline saved at training,
 * writes the report (JSON and a self-contained HTML page) to the lake's monitoring zone, publishes
 * `DriftDetected` when something drifted, and returns the report. No traffic is a report, not an error.
 */
export async function runMonitor(
  store: ObjectStore,
  request: MonitorRequest,
  options: MonitorOptions = {},
): Promise<DriftReport> {
  assertName('model', request.model);
  const settings = driftSettings(request.settings ?? {});
  const window = parseWindow(request.since, request.until);
  const registry = options.registry ?? new ModelRegistry(store);
  const record = await resolveVersion(registry, request.model, request.version);
  const { baseline, ref } = await loadBaseline(registry, record);
  const now = options.now ?? new Date();

  const stats = emptyReadStats();
  const traffic = await profileTraffic(
    readCaptures(store, record.model, record.version, window, stats),
    baseline,
    settings,
  );
  const validation: CaptureValidation = { ...stats, ...traffic.validation };

  const current = {
    features: Object.fromEntries(
      Object.entries(traffic.features).map(([name, accumulator]) => [name, accumulator.snapshot()]),
    ),
    prediction: traffic.prediction.snapshot(),
  };
  const assessment = assessDrift(baseline, current, settings);
  const stamp = `${now.toISOString().replace(/:/g, '-')}-${randomBytes(3).toString('hex')}`;
  const keys = {
    json: lake.driftReport(record.model, record.version, stamp, 'json'),
    html: lake.driftReport(record.model, record.version, stamp, 'html'),
  };
  const tested = [...assessment.features, ...(assessment.prediction ? [assessment.prediction] : [])].filter(
    (column) => column.status === 'tested',
  );
  const status: DriftReport['status'] =
    validation.records === 0
      ? 'no-traffic'
      : tested.length === 0
        ? 'insufficient-data'
        : assessment.detected
          ? 'drift'
          : 'no-drift';
  const maxPsi = assessment.features.reduce<{ column: string; value: number } | null>(
    (best, column) =>
      column.psi !== null && (best === null || column.psi > best.value)
        ? { column: column.column, value: column.psi }
        : best,
    null,
  );
  const report: DriftReport = {
    kind: 'kiln.drift-report',
    schemaVersion: 1,
    model: record.model,
    version: record.version,
    stage: record.stage,
    task: record.task,
    generatedAt: now.toISOString(),
    status,
    summary: '',
    window: {
      since: window.since?.toISOString() ?? null,
      until: window.until?.toISOString() ?? null,
      firstRequest: validation.firstRequest,
      lastRequest: validation.lastRequest,
    },
    traffic: { files: validation.files, requests: validation.records, rows: traffic.rows },
    drift: {
      detected: assessment.detected,
      driftedFeatures: assessment.driftedFeatures,
      predictionDrift: assessment.predictionDrift,
      featuresMonitored: assessment.features.length,
      columnsTested: assessment.tested,
      maxPsi,
    },
    settings,
    features: assessment.features,
    prediction: assessment.prediction,
    validation,
    baseline: ref,
    keys,
  };
  report.summary = summarizeDriftReport(report);
  if (options.write ?? true) {
    await store.put(keys.json, toJsonBody(report), { ifNoneMatch: '*', contentType: 'application/json' });
    await store.put(keys.html, renderDriftReportHtml(report), {
      ifNoneMatch: '*',
      contentType: 'text/html; charset=utf-8',
    });
  }
  if (report.drift.detected) {
    const events = options.events ?? discardEvents;
    const listed = report.drift.driftedFeatures.slice(0, 50);
    await events.publish([
      driftDetectedEvent({
        model: report.model,
        version: report.version,
        generatedAt: report.generatedAt,
        since: report.window.since,
        until: report.window.until,
        requests: report.traffic.requests,
        rows: report.traffic.rows,
        driftedFeatures: listed,
        driftedFeatureCount: report.drift.driftedFeatures.length,
        scores: Object.fromEntries(
          listed.map((name) => [name, report.features.find((column) => column.column === name)?.psi ?? 0]),
        ),
        predictionDrift: report.drift.predictionDrift,
        predictionPsi: report.prediction?.psi ?? null,
        reportKey: keys.json,
        htmlKey: keys.html,
      }),
    ]);
  }
  return report;
}

/** Resolves a version number, alias or (undefined) the champion / newest servable version. */
export async function resolveVersion(
  registry: ModelRegistry,
  model: string,
  version?: number | string,
): Promise<VersionRecord> {
  assertName('model', model);
  return registry.resolve(version === undefined || version === '' ? model : `${model}@${version}`);
}

/** The version's baseline.json, hash-verified; NotFoundError when the version was registered without one. */
export async function loadBaseline(
  registry: ModelRegistry,
  record: VersionRecord,
): Promise<{ baseline: Baseline; ref: { key: string; sha256: string } }> {
  const ref = record.artifacts['baseline.json'];
  if (!ref) {
    throw new NotFoundError(
      `${record.model}@${record.version} has no baseline.json artifact: it was registered without a baseline profile, so its traffic cannot be compared with training`,
    );
  }
  const body = await registry.readArtifact(record, 'baseline.json');
  const baseline = parseBaseline(
    JSON.parse(body.toString('utf8')),
    `${record.model}@${record.version} baseline.json`,
  );
  return { baseline, ref: { key: ref.key, sha256: ref.sha256 } };
}

// ---- traffic -----------------------------------------------------------------------------------------

/** Live traffic accumulated per column, with what validation found. */
export interface TrafficProfile {
  features: Record<string, ColumnAccumulator>;
  prediction: ColumnAccumulator;
  /** Input rows seen. */
  rows: number;
  validation: Omit<CaptureValidation, keyof CaptureReadStats>;
}

/**
 * Accumulates captured requests into per-column profiles in the baseline's bins, validating every row
 * against the baseline's columns: unknown columns and missing features are counted, never fatal.
 */
export async function profileTraffic(
  requests: AsyncIterable<CapturedRequest> | Iterable<CapturedRequest>,
  baseline: Baseline,
  settings: DriftSettings,
): Promise<TrafficProfile> {
  const featureNames = Object.keys(baseline.features);
  const known = new Set(featureNames);
  const features: Record<string, ColumnAccumulator> = {};
  for (const name of featureNames) {
    features[name] = new ColumnAccumulator(
      name,
      baseline.features[name] as Baseline['prediction'],
      settings.maxSample,
    );
  }
  const prediction = new ColumnAccumulator('(prediction)', baseline.prediction, settings.maxSample);
  const validation: TrafficProfile['validation'] = {
    rowsNotObjects: 0,
    rowsWithUnknownColumns: 0,
    unknownColumns: {},
    rowsMissingFeatures: 0,
    missingFeatures: {},
    invalidValues: {},
    outputMismatches: 0,
    unreadablePredictions: 0,
  };
  let rows = 0;
  for await (const record of requests) {
    if (record.outputs.length !== record.inputs.length) validation.outputMismatches++;
    record.inputs.forEach((row, i) => {
      rows++;
      if (row === null || typeof row !== 'object' || Array.isArray(row)) {
        validation.rowsNotObjects++;
        return;
      }
      const values = row as Record<string, unknown>;
      let unknown = false;
      for (const key of Object.keys(values)) {
        if (known.has(key)) continue;
        unknown = true;
        const names = validation.unknownColumns;
        const slot =
          Object.hasOwn(names, key) || Object.keys(names).length < MAX_UNKNOWN_COLUMNS ? key : MORE;
        names[slot] = (names[slot] ?? 0) + 1;
      }
      if (unknown) validation.rowsWithUnknownColumns++;
      let missing = false;
      for (const name of featureNames) {
        const accumulator = features[name] as ColumnAccumulator;
        if (!Object.hasOwn(values, name)) {
          missing = true;
          validation.missingFeatures[name] = (validation.missingFeatures[name] ?? 0) + 1;
          accumulator.add(undefined);
          continue;
        }
        if (accumulator.add(values[name]) === 'invalid') {
          validation.invalidValues[name] = (validation.invalidValues[name] ?? 0) + 1;
        }
      }
      if (missing) validation.rowsMissingFeatures++;
      if (i < record.outputs.length) {
        const value = predictionValue(record.outputs[i], baseline.prediction.kind);
        if (value === undefined) validation.unreadablePredictions++;
        else prediction.add(value);
      }
    });
  }
  return { features, prediction, rows, validation };
}

/** The value the baseline's prediction profile describes: `value` (regression) or `label` (classification). */
export function predictionValue(
  output: unknown,
  kind: 'numeric' | 'categorical',
): number | string | undefined {
  if (output === null || typeof output !== 'object') return undefined;
  const record = output as Record<string, unknown>;
  if (kind === 'numeric') {
    return typeof record.value === 'number' && Number.isFinite(record.value) ? record.value : undefined;
  }
  return typeof record.label === 'string' || typeof record.label === 'number'
    ? String(record.label)
    : undefined;
}
