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
  aliasMoved: 'AliasMoved',
  promotionRefused: 'PromotionRefused',
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
