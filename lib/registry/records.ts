import { z } from 'zod';
import { NAME_PATTERN } from '../store/layout.ts';

export const StageSchema = z.enum(['candidate', 'approved', 'production', 'archived', 'rejected']);
export type Stage = z.infer<typeof StageSchema>;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'expected a lower-case hex SHA-256');
const metricsSchema = z.record(z.string(), z.unknown());

/** Model names: the lake's dataset/model name rule. */
export const ModelNameSchema = z
  .string()
  .regex(NAME_PATTERN, "1-64 lower-case letters, digits, '-' or '_', starting with a letter");

/** Alias names: `champion`, `challenger` or user-defined, lower-case. */
export const ALIAS_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;
export const AliasNameSchema = z
  .string()
  .regex(ALIAS_PATTERN, "1-32 lower-case letters, digits or '-', starting with a letter");

/** The alias that serving follows; it moves only through promote and rollback (never a plain alias write). */
export const CHAMPION = 'champion';

/** Who did something: an IAM ARN on AWS, a user name locally. Printable, no control characters. */
export const ActorSchema = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[^\p{Cc}]+$/u, 'printable characters only');

/** Why something was done; every state change carries one. */
export const ReasonSchema = z.string().trim().min(1, 'a reason is required').max(1000);

/** Where a model came from. Registration refuses a version without every field (issue: lineage is enforced). */
export const LineageSchema = z.strictObject({
  dataset: z.string().min(1),
  datasetVersion: z.string().min(1),
  transformHash: sha256,
  codeVersion: z.string().min(1),
  algorithm: z.string().min(1),
  hyperparameters: z.record(z.string(), z.unknown()),
  seed: z.number().int(),
  metrics: metricsSchema,
  artifactSha256: sha256,
  trainingJob: z.string().min(1),
  startedAt: z.string().min(1),
  endedAt: z.string().min(1),
});
export type Lineage = z.infer<typeof LineageSchema>;

export const ArtifactRefSchema = z.strictObject({
  key: z.string(),
  sha256,
  size: z.number().int().nonnegative(),
});
export type ArtifactRef = z.infer<typeof ArtifactRefSchema>;

export const StageChangeSchema = z.strictObject({
  from: StageSchema.nullable(),
  to: StageSchema,
  by: z.string(),
  at: z.string(),
  reason: z.string(),
});
export type StageChange = z.infer<typeof StageChangeSchema>;

/** One person's sign-off on a version; promotion policies count these. */
export const ApprovalSchema = z.strictObject({
  by: z.string(),
  at: z.string(),
  reason: z.string(),
});
export type Approval = z.infer<typeof ApprovalSchema>;

/** One immutable model version plus its mutable stage, stored at `registry/<model>/versions/<n>.json`. */
export const VersionRecordSchema = z.strictObject({
  kind: z.literal('kiln.model-version'),
  model: z.string(),
  version: z.number().int().positive(),
  stage: StageSchema,
  createdAt: z.string(),
  task: z.enum(['binary', 'multiclass', 'regression']),
  classes: z.array(z.string()),
  target: z.string(),
  inputs: z.array(z.strictObject({ name: z.string(), type: z.string(), nullable: z.boolean().optional() })),
  metrics: metricsSchema,
  artifacts: z.record(z.string(), ArtifactRefSchema),
  lineage: LineageSchema,
  gate: z.record(z.string(), z.unknown()).optional(),
  /** Sign-offs by people (absent on records written before approvals existed). */
  approvals: z.array(ApprovalSchema).optional(),
  history: z.array(StageChangeSchema),
});
export type VersionRecord = z.infer<typeof VersionRecordSchema>;

export const AliasesSchema = z.strictObject({
  kind: z.literal('kiln.aliases'),
  model: z.string(),
  aliases: z.record(z.string(), z.number().int().positive()),
  /**
   * Every version that became champion, oldest first (the last 50), in compare-and-swap order: rollback
   * walks it back. Absent in documents written before it existed.
   */
  championHistory: z.array(z.number().int().positive()).optional(),
});
export type Aliases = z.infer<typeof AliasesSchema>;

/** The actions the audit log records. */
export const AuditActionSchema = z.enum([
  'register',
  'approve',
  'approval-refused',
  'reject',
  'promote',
  'promotion-refused',
  'rollback',
  'archive',
  'set-alias',
  'remove-alias',
  // Written by earlier releases, kept readable.
  'set-stage',
]);
export type AuditAction = z.infer<typeof AuditActionSchema>;

/**
 * One append-only audit entry (`registry/<model>/audit/<time>-<id>.json`, written create-only): who, when,
 * why, and what; action-specific fields ride along.
 */
export const AuditEntrySchema = z.looseObject({
  at: z.string(),
  action: AuditActionSchema,
  actor: z.string(),
  reason: z.string().optional(),
  version: z.number().int().positive().optional(),
});
export type AuditEntry = z.infer<typeof AuditEntrySchema>;
