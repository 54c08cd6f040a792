import type { VersionRecord } from '../registry/records.ts';
import type { CaptureReadStats } from './captures.ts';
import type { ColumnDrift, DriftSettings } from './drift.ts';

/** Problems found in captured traffic: counted and listed, never fatal. */
export interface CaptureValidation extends CaptureReadStats {
  /** Input rows that were not objects (skipped). */
  rowsNotObjects: number;
  /** Rows carrying columns the model does not take, and how often each such column appeared. */
  rowsWithUnknownColumns: number;
  unknownColumns: Record<string, number>;
  /** Rows lacking a feature column altogether (counted as missing values), and how often per feature. */
  rowsMissingFeatures: number;
  missingFeatures: Record<string, number>;
  /** Values of the wrong type per feature (counted as missing). */
  invalidValues: Record<string, number>;
  /** Records whose outputs do not line up with their inputs (predictions of the extra rows ignored). */
  outputMismatches: number;
  /** Predictions without a usable value or label. */
  unreadablePredictions: number;
}

/** The drift report written to `monitoring/<model>/<version>/drift/<stamp>.json`. */
export interface DriftReport {
  kind: 'kiln.drift-report';
  schemaVersion: 1;
  model: string;
  version: number;
  stage: string;
  task: VersionRecord['task'];
  generatedAt: string;
  /**
   * `drift`: at least one feature or the prediction drifted; `no-drift`: tested, nothing drifted;
   * `no-traffic`: no captured request in the window; `insufficient-data`: traffic, but too little to test.
   */
  status: 'drift' | 'no-drift' | 'no-traffic' | 'insufficient-data';
  /** One line for people. */
  summary: string;
  window: {
    since: string | null;
    until: string | null;
    firstRequest: string | null;
    lastRequest: string | null;
  };
  traffic: { files: number; requests: number; rows: number };
  drift: {
    detected: boolean;
    driftedFeatures: string[];
    predictionDrift: boolean;
    featuresMonitored: number;
    /** Columns tested (features and prediction): the size of the multiple-testing family. */
    columnsTested: number;
    maxPsi: { column: string; value: number } | null;
  };
  settings: DriftSettings;
  features: ColumnDrift[];
  prediction: ColumnDrift | null;
  validation: CaptureValidation;
  baseline: { key: string; sha256: string };
  keys: { json: string; html: string };
}

/** One line for people: status, what drifted, how much traffic. */
export function summarizeDriftReport(report: DriftReport): string {
  const name = `${report.model}@${report.version}`;
  const span =
    report.window.firstRequest && report.window.lastRequest
      ? ` between ${report.window.firstRequest} and ${report.window.lastRequest}`
      : '';
  const traffic = `${report.traffic.rows} rows in ${report.traffic.requests} requests${span}`;
  const issues = validationIssues(report.validation);
  const tail = issues.length ? `; input problems: ${issues.join(', ')}` : '';
  switch (report.status) {
    case 'no-traffic': {
      const window =
        report.window.since || report.window.until
          ? ` between ${report.window.since ?? 'the beginning'} and ${report.window.until ?? 'now'}`
          : '';
      return `${name}: no captured traffic${window}; nothing to compare with the baseline${tail}`;
    }
    case 'insufficient-data':
      return `${name}: too little traffic to test (${traffic}; a column needs at least ${report.settings.minRows} values)${tail}`;
    case 'no-drift':
      return `${name}: no drift in ${report.drift.featuresMonitored} features or the prediction (${traffic})${tail}`;
    case 'drift': {
      const features = report.drift.driftedFeatures;
      const parts: string[] = [];
      if (features.length) {
        parts.push(
          `${features.length} of ${report.drift.featuresMonitored} features (${features.slice(0, 5).join(', ')}${features.length > 5 ? ', …' : ''})`,
        );
      }
      if (report.drift.predictionDrift) parts.push('the prediction');
      return `${name}: DRIFT in ${parts.join(' and ')} (${traffic})${tail}`;
    }
  }
}

/** Short descriptions of the validation problems found, e.g. `3 rows with unknown columns (colour)`. */
export function validationIssues(validation: CaptureValidation): string[] {
  const issues: string[] = [];
  const names = (counts: Record<string, number>) => Object.keys(counts).slice(0, 5).join(', ');
  if (validation.invalidRecords) issues.push(`${validation.invalidRecords} unreadable records`);
  if (validation.misfiledRecords) issues.push(`${validation.misfiledRecords} misfiled records`);
  if (validation.rowsNotObjects) issues.push(`${validation.rowsNotObjects} rows that are not objects`);
  if (validation.rowsWithUnknownColumns) {
    issues.push(
      `${validation.rowsWithUnknownColumns} rows with unknown columns (${names(validation.unknownColumns)})`,
    );
  }
  if (validation.rowsMissingFeatures) {
    issues.push(
      `${validation.rowsMissingFeatures} rows missing features (${names(validation.missingFeatures)})`,
    );
  }
  const invalidValues = Object.values(validation.invalidValues).reduce((a, b) => a + b, 0);
  if (invalidValues)
    issues.push(`${invalidValues} values of the wrong type (${names(validation.invalidValues)})`);
  if (validation.outputMismatches)
    issues.push(`${validation.outputMismatches} records whose outputs do not match their inputs`);
  if (validation.unreadablePredictions)
    issues.push(`${validation.unreadablePredictions} unreadable predictions`);
  return issues;
}
