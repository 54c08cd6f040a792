import { z } from 'zod';
import { EventTypes, type KilnEvent } from '../core/events.ts';

/** Source of every model-update event. */
export const UPDATES_SOURCE = 'kiln.updates' as const;

/** Detail of `RetrainingRunCompleted`: what one debounced retraining run did and which events caused it. */
export const RetrainingRunCompletedDetailSchema = z.looseObject({
  model: z.string(),
  /** The retraining execution's name: `retrain-<model>-<window>`. */
  runId: z.string(),
  windowId: z.string(),
  status: z.enum(['trained', 'skipped', 'failed']),
  reason: z.string(),
  /** Detail-types of the events that caused the run, in arrival order. */
  causes: z.array(z.string()),
  datasetVersion: z.string().nullable(),
  /** The registered version (trained runs). */
  version: z.number().int().positive().nullable(),
  gatePassed: z.boolean().nullable(),
  recordKey: z.string(),
});
export type RetrainingRunCompletedDetail = z.infer<typeof RetrainingRunCompletedDetailSchema>;

/** Detail of `RolloutStarted`. */
export const RolloutStartedDetailSchema = z.looseObject({
  model: z.string(),
  champion: z.number().int().positive(),
  challenger: z.number().int().positive(),
  mode: z.enum(['canary', 'shadow']),
  share: z.number(),
  /** `local` (the Kiln server) or `sagemaker` (an endpoint update with deployment guardrails). */
  host: z.enum(['local', 'sagemaker']),
  recordKey: z.string(),
});
export type RolloutStartedDetail = z.infer<typeof RolloutStartedDetailSchema>;

/** Detail of `RolloutCompleted`. */
export const RolloutCompletedDetailSchema = RolloutStartedDetailSchema.extend({
  decision: z.enum(['promoted', 'rolled-back']),
  reasons: z.array(z.string()),
});
export type RolloutCompletedDetail = z.infer<typeof RolloutCompletedDetailSchema>;

/** A `RetrainingRunCompleted` event. */
export function retrainingRunCompletedEvent(detail: RetrainingRunCompletedDetail): KilnEvent {
  return {
    source: UPDATES_SOURCE,
    detailType: EventTypes.retrainingRunCompleted,
    detail: RetrainingRunCompletedDetailSchema.parse(detail),
  };
}

/** A `RolloutStarted` event. */
export function rolloutStartedEvent(detail: RolloutStartedDetail): KilnEvent {
  return {
    source: UPDATES_SOURCE,
    detailType: EventTypes.rolloutStarted,
    detail: RolloutStartedDetailSchema.parse(detail),
  };
}

/** A `RolloutCompleted` event. */
export function rolloutCompletedEvent(detail: RolloutCompletedDetail): KilnEvent {
  return {
    source: UPDATES_SOURCE,
    detailType: EventTypes.rolloutCompleted,
    detail: RolloutCompletedDetailSchema.parse(detail),
  };
}
