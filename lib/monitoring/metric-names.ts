/**
 * CloudWatch names shared by the monitor handlers (which emit them as embedded metric format) and the CDK
 * dashboard and alarms (which read them), so the two cannot drift apart.
 */
export const MONITORING_NAMESPACE = 'Kiln/Monitoring';
/** Powertools service name of the monitoring handlers: the `service` dimension of every metric. */
export const MONITORING_SERVICE = 'kiln-monitoring';

/** Dimension names. Aggregates carry only `service`; per-model metrics add `model` and `version`. */
export const MonitoringDimensions = {
  service: 'service',
  model: 'model',
  version: 'version',
  feature: 'feature',
} as const;

/** Metric names. */
export const MonitoringMetrics = {
  /** 1 when a drift report found drift, else 0 (per model version, and as an aggregate for alarms). */
  driftDetected: 'DriftDetected',
  /** Number of drifted features in a report. */
  driftedFeatures: 'DriftedFeatures',
  /** 1 when the prediction distribution drifted, else 0. */
  predictionDrift: 'PredictionDrift',
  /** PSI of the prediction distribution. */
  predictionPsi: 'PredictionPsi',
  /** PSI of one feature (dimension `feature`). */
  featureDriftScore: 'FeatureDriftScore',
  /** Captured input rows a report covered. */
  monitoredRows: 'MonitoredRows',
  /** Captured records that could not be read, and rows with unknown columns or missing features. */
  invalidRecords: 'InvalidCaptureRecords',
  rowsWithUnknownColumns: 'RowsWithUnknownColumns',
  rowsMissingFeatures: 'RowsMissingFeatures',
  /** Accuracy (classification) or RMSE (regression) on late labels. */
  accuracy: 'ModelAccuracy',
  rmse: 'ModelRmse',
  /** Predictions with a label in the window. */
  labelledRows: 'LabelledRows',
  /** 1 when quality dropped below the held-out metric, else 0. */
  qualityDropped: 'QualityDropped',
  /** Labels that matched no captured request. */
  unmatchedLabels: 'UnmatchedLabels',
  /** Models the monitor could not check (missing baseline, unreadable registry, …). */
  monitorFailures: 'MonitorFailures',
} as const;
