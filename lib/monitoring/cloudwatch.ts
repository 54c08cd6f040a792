import { type Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { MonitorJobEntry } from './job.ts';
import { MonitoringDimensions as D, MonitoringMetrics as M } from './metric-names.ts';
import type { QualityReport } from './quality.ts';
import type { DriftReport } from './report.ts';

/**
 * Turns monitoring results into CloudWatch metrics (embedded metric format, through Powertools): one
 * blob per model version, one per feature, and aggregates with only the `service` dimension, which the
 * alarms watch because model names are not known when the stack is deployed.
 */
export function publishMonitoringMetrics(metrics: Metrics, entries: ReadonlyArray<MonitorJobEntry>): void {
  let failures = 0;
  for (const entry of entries) {
    if (entry.error) failures++;
    if (entry.drift) publishDrift(metrics, entry.drift);
    if (entry.quality) publishQuality(metrics, entry.quality, entry.version ?? undefined);
  }
  // Aggregates: published last, with only the default `service` dimension.
  for (const entry of entries) {
    if (entry.drift && entry.drift.status !== 'no-traffic') {
      metrics.addMetric(M.driftDetected, MetricUnit.Count, entry.drift.drift.detected ? 1 : 0);
      metrics.addMetric(M.predictionDrift, MetricUnit.Count, entry.drift.drift.predictionDrift ? 1 : 0);
    }
    for (const version of entry.quality?.versions ?? []) {
      if (version.value !== null)
        metrics.addMetric(M.qualityDropped, MetricUnit.Count, version.dropped ? 1 : 0);
    }
  }
  metrics.addMetric(M.monitorFailures, MetricUnit.Count, failures);
  metrics.publishStoredMetrics();
}

/** Per-version and per-feature drift metrics of one report. */
export function publishDrift(metrics: Metrics, report: DriftReport): void {
  const version = String(report.version);
  metrics.addDimension(D.model, report.model);
  metrics.addDimension(D.version, version);
  metrics.addMetric(M.monitoredRows, MetricUnit.Count, report.traffic.rows);
  metrics.addMetric(M.invalidRecords, MetricUnit.Count, report.validation.invalidRecords);
  metrics.addMetric(M.rowsWithUnknownColumns, MetricUnit.Count, report.validation.rowsWithUnknownColumns);
  metrics.addMetric(M.rowsMissingFeatures, MetricUnit.Count, report.validation.rowsMissingFeatures);
  if (report.status !== 'no-traffic') {
    metrics.addMetric(M.driftDetected, MetricUnit.Count, report.drift.detected ? 1 : 0);
    metrics.addMetric(M.driftedFeatures, MetricUnit.Count, report.drift.driftedFeatures.length);
    metrics.addMetric(M.predictionDrift, MetricUnit.Count, report.drift.predictionDrift ? 1 : 0);
  }
  if (report.prediction?.psi !== null && report.prediction?.psi !== undefined) {
    metrics.addMetric(M.predictionPsi, MetricUnit.NoUnit, report.prediction.psi);
  }
  metrics.publishStoredMetrics();
  for (const feature of report.features) {
    if (feature.psi === null) continue;
    metrics.addDimension(D.model, report.model);
    metrics.addDimension(D.version, version);
    metrics.addDimension(D.feature, feature.column);
    metrics.addMetric(M.featureDriftScore, MetricUnit.NoUnit, feature.psi);
    metrics.publishStoredMetrics();
  }
}

/** Per-version quality metrics of one report (only `version` when given). */
export function publishQuality(metrics: Metrics, report: QualityReport, only?: number): void {
  for (const version of report.versions) {
    if (only !== undefined && version.version !== only) continue;
    metrics.addDimension(D.model, report.model);
    metrics.addDimension(D.version, String(version.version));
    metrics.addMetric(M.labelledRows, MetricUnit.Count, version.labelled);
    metrics.addMetric(M.unmatchedLabels, MetricUnit.Count, report.labels.unmatched);
    if (version.value !== null) {
      metrics.addMetric(
        version.metric === 'accuracy' ? M.accuracy : M.rmse,
        MetricUnit.NoUnit,
        version.value,
      );
      metrics.addMetric(M.qualityDropped, MetricUnit.Count, version.dropped ? 1 : 0);
    }
    metrics.publishStoredMetrics();
  }
}
