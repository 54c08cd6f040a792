import { z } from 'zod';

/**
 * Every event Kiln emits, in EventBridge's shape (`source`, `detail-type`, `detail`), so the local bus and
 * EventBridge carry the same documents and rules match the same patterns. See docs/events.md.
 */
export const KilnEventSchema = z.object({
  source: z.enum([
    'kiln.ingest',
    'kiln.etl',
    'kiln.training',
    'kiln.registry',
    'kiln.monitoring',
    'kiln.serving',
    'kiln.updates',
  ]),
  detailType: z.string().min(1),
  detail: z.record(z.string(), z.unknown()),
  time: z.string().optional(),
});
export type KilnEvent = z.infer<typeof KilnEventSchema>;

/** Detail types, one place, so subscribers and publishers cannot drift apart. */
export const EventTypes = {
  rawObjectCreated: 'Object Created',
  etlRunSucceeded: 'EtlRunSucceeded',
  trainingRunSucceeded: 'TrainingRunSucceeded',
  modelVersionRegistered: 'ModelVersionRegistered',
  modelVersionStageChanged: 'ModelVersionStageChanged',
  modelVersionApproved: 'ModelVersionApproved',
  modelVersionRejected: 'ModelVersionRejected',
  aliasMoved: 'AliasMoved',
  promotionRefused: 'PromotionRefused',
  /** kiln.monitoring: a drift report found drifted features or prediction drift (lib/monitoring/events.ts). */
  driftDetected: 'DriftDetected',
  /** kiln.monitoring: a version's quality on late labels fell below its held-out metric (lib/monitoring/events.ts). */
  qualityDropped: 'QualityDropped',
  /** kiln.monitoring: a label file was ingested (lib/monitoring/events.ts). */
  labelsIngested: 'LabelsIngested',
  /** kiln.updates: a retraining run finished: trained, skipped (nothing new) or failed (lib/updates/events.ts). */
  retrainingRunCompleted: 'RetrainingRunCompleted',
  /** kiln.updates: a challenger went on a canary or a shadow (lib/updates/events.ts). */
  rolloutStarted: 'RolloutStarted',
  /** kiln.updates: a canary or shadow ended: promoted or rolled back (lib/updates/events.ts). */
  rolloutCompleted: 'RolloutCompleted',
} as const;

/** Where events go: EventBridge on AWS, the in-process bus locally. */
export interface EventPublisher {
  publish(events: KilnEvent[]): Promise<void>;
}

/** A publisher that drops events, for callers that explicitly do not want them. */
export const discardEvents: EventPublisher = { publish: async () => undefined };

let localPublisher: EventPublisher | undefined;

/** The local runtime routes every handler's events to its in-process bus through this hook. */
export function setLocalEventPublisher(publisher: EventPublisher | undefined): void {
  localPublisher = publisher;
}

/** The publisher set by the local runtime, if any (undefined on AWS). */
export function localEventPublisher(): EventPublisher | undefined {
  return localPublisher;
}
