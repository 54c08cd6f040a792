import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { EventTypes } from '../core/events.ts';
import { StageSchema } from './records.ts';

/** Bumped only on a breaking change to the registry event details; additive fields keep it. */
export const REGISTRY_EVENT_SCHEMA_VERSION = 1;

/**
 * Fields every registry event detail carries (docs/events.md): subscribers can rely on `model`, `version`,
 * `actor`, `reason` and `at` whatever the detail-type, and deduplicate on `eventId` (EventBridge delivers
 * at least once).
 */
const common = {
  schemaVersion: z.literal(REGISTRY_EVENT_SCHEMA_VERSION),
  eventId: z.uuid(),
  model: z.string(),
  /** The version the event is about; `null` only for an alias that was removed. */
  version: z.number().int().positive().nullable(),
  actor: z.string(),
  reason: z.string(),
  at: z.string(),
};

const registered = z.strictObject({
  ...common,
  version: z.number().int().positive(),
  stage: StageSchema,
  metrics: z.record(z.string(), z.unknown()),
  artifactSha256: z.string(),
  dataset: z.string(),
  datasetVersion: z.string(),
  algorithm: z.string(),
});
const approved = z.strictObject({
  ...common,
  version: z.number().int().positive(),
  stage: StageSchema,
  /** Distinct approvals the version has now. */
  approvals: z.number().int().positive(),
});
const rejected = z.strictObject({ ...common, version: z.number().int().positive(), stage: StageSchema });
const stageChanged = z.strictObject({
  ...common,
  version: z.number().int().positive(),
  from: StageSchema.nullable(),
  to: StageSchema,
});
const aliasMoved = z.strictObject({
  ...common,
  alias: z.string(),
  /** Where the alias pointed before; `null` when it is new. */
  previous: z.number().int().positive().nullable(),
});
const promotionRefused = z.strictObject({
  ...common,
  version: z.number().int().positive(),
  /** The policy revision that was applied (0 = the built-in default). */
  policyRevision: z.number().int().nonnegative(),
  violations: z.array(z.string()).min(1),
});

/** Detail schema per registry detail-type: the one documented shape of every registry event. */
export const RegistryEventDetailSchemas = {
  [EventTypes.modelVersionRegistered]: registered,
  [EventTypes.modelVersionApproved]: approved,
  [EventTypes.modelVersionRejected]: rejected,
  [EventTypes.modelVersionStageChanged]: stageChanged,
  [EventTypes.aliasMoved]: aliasMoved,
  [EventTypes.promotionRefused]: promotionRefused,
} as const;

export type RegistryEventType = keyof typeof RegistryEventDetailSchemas;
export type RegistryEventDetail<T extends RegistryEventType> = z.infer<
  (typeof RegistryEventDetailSchemas)[T]
>;
/** What a caller supplies; the envelope fields (`schemaVersion`, `eventId`, `at`) are filled in. */
export type RegistryEventInput<T extends RegistryEventType> = Omit<
  RegistryEventDetail<T>,
  'schemaVersion' | 'eventId' | 'at'
> & { at?: string };

/** A registry event as it travels on the bus (EventBridge's source / detail-type / detail). */
export const RegistryEventSchema = z.discriminatedUnion('detailType', [
  z.object({
    source: z.literal('kiln.registry'),
    detailType: z.literal('ModelVersionRegistered'),
    detail: registered,
  }),
  z.object({
    source: z.literal('kiln.registry'),
    detailType: z.literal('ModelVersionApproved'),
    detail: approved,
  }),
  z.object({
    source: z.literal('kiln.registry'),
    detailType: z.literal('ModelVersionRejected'),
    detail: rejected,
  }),
  z.object({
    source: z.literal('kiln.registry'),
    detailType: z.literal('ModelVersionStageChanged'),
    detail: stageChanged,
  }),
  z.object({ source: z.literal('kiln.registry'), detailType: z.literal('AliasMoved'), detail: aliasMoved }),
  z.object({
    source: z.literal('kiln.registry'),
    detailType: z.literal('PromotionRefused'),
    detail: promotionRefused,
  }),
]);
export type RegistryEvent = z.infer<typeof RegistryEventSchema>;

/** Builds and validates one event detail, so a publisher can never drift from the documented schema. */
export function registryEventDetail<T extends RegistryEventType>(
  type: T,
  input: RegistryEventInput<T>,
): RegistryEventDetail<T> {
  const schema = RegistryEventDetailSchemas[type] as unknown as z.ZodType<RegistryEventDetail<T>>;
  return schema.parse({
    ...input,
    schemaVersion: REGISTRY_EVENT_SCHEMA_VERSION,
    eventId: randomUUID(),
    at: input.at ?? new Date().toISOString(),
  });
}
