import { z } from 'zod';
import { EventTypes, type KilnEvent } from '../core/events.ts';

/**
 * The monitoring events and their detail documents. Subscribers (retraining, canary rollback) parse the
 * detail with these schemas instead of guessing at fields; publishers build events only through the
 * functions below, so both sides agree by construction.
 */

/** Source of every monitoring event. */
export const MONITORING_SOURCE = 'kiln.monitoring' as const;

const isoTime = z.string().refine((value) => !Number.isNaN(Date.parse(value)), 'an ISO-8601 time');

/** Detail of `DriftDetected`: which model version drifted, where the report is, and what drifted. */
export const DriftDetectedDetailSchema = z.looseObject({
  model: z.string(),
  version: z.number().int().positive(),
  generatedAt: isoTime,
  /** Window of captured traffic the report covers (null: unbounded). */
  since: isoTime.nullable(),
  until: isoTime.nullable(),
  requests: z.number().int().nonnegative(),
  rows: z.number().int().nonnegative(),
  /** Drifted features, most drifted first (at most 50 listed; `driftedFeatureCount` has the total). */
  driftedFeatures: z.array(z.string()),
  driftedFeatureCount: z.number().int().nonnegative(),
  /** PSI of each listed drifted feature. */
  scores: z.record(z.string(), z.number()),
  predictionDrift: z.boolean(),
  predictionPsi: z.number().nullable(),
  /** Lake keys of the report (JSON) and its HTML page. */
  reportKey: z.string(),
  htmlKey: z.string(),
});
export type DriftDetectedDetail = z.infer<typeof DriftDetectedDetailSchema>;

/** Detail of `QualityDropped`: a version's quality on late labels against its held-out metric. */
export const QualityDroppedDetailSchema = z.looseObject({
  model: z.string(),
  version: z.number().int().positive(),
  generatedAt: isoTime,
  since: isoTime.nullable(),
  until: isoTime.nullable(),
  metric: z.enum(['accuracy', 'rmse']),
  /** The metric on labelled live traffic. */
  value: z.number(),
  /** The metric on held-out data at training. */
  heldOut: z.number(),
  /** The value that counts as a drop (heldOut adjusted by the allowed relative drop). */
  threshold: z.number(),
  /** The confidence bound that crossed the threshold (upper for accuracy, lower for RMSE). */
  bound: z.number(),
  labelled: z.number().int().nonnegative(),
  reportKey: z.string(),
});
export type QualityDroppedDetail = z.infer<typeof QualityDroppedDetailSchema>;

/** Detail of `LabelsIngested`. */
export const LabelsIngestedDetailSchema = z.looseObject({
  model: z.string(),
  key: z.string().nullable(),
  ingestId: z.string(),
  alreadyIngested: z.boolean(),
  accepted: z.number().int().nonnegative(),
  invalid: z.number().int().nonnegative(),
  matched: z.number().int().nonnegative(),
  unknownRequestIds: z.number().int().nonnegative(),
});
export type LabelsIngestedDetail = z.infer<typeof LabelsIngestedDetailSchema>;

/** A `DriftDetected` event. */
export function driftDetectedEvent(detail: DriftDetectedDetail): KilnEvent {
  return {
    source: MONITORING_SOURCE,
    detailType: EventTypes.driftDetected,
    detail: DriftDetectedDetailSchema.parse(detail),
  };
}

/** A `QualityDropped` event. */
export function qualityDroppedEvent(detail: QualityDroppedDetail): KilnEvent {
  return {
    source: MONITORING_SOURCE,
    detailType: EventTypes.qualityDropped,
    detail: QualityDroppedDetailSchema.parse(detail),
  };
}

/** A `LabelsIngested` event. */
export function labelsIngestedEvent(detail: LabelsIngestedDetail): KilnEvent {
  return {
    source: MONITORING_SOURCE,
    detailType: EventTypes.labelsIngested,
    detail: LabelsIngestedDetailSchema.parse(detail),
  };
}
