import { z } from 'zod';

export const StageSchema = z.enum(['candidate', 'approved', 'production', 'archived', 'rejected']);
export type Stage = z.infer<typeof StageSchema>;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'expected a lower-case hex SHA-256');
const metricsSchema = z.record(z.string(), z.unknown());

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
  history: z.array(StageChangeSchema),
});
export type VersionRecord = z.infer<typeof VersionRecordSchema>;

export const AliasesSchema = z.strictObject({
  kind: z.literal('kiln.aliases'),
  model: z.string(),
  aliases: z.record(z.string(), z.number().int().positive()),
});
export type Aliases = z.infer<typeof AliasesSchema>;

/** Alias names: `champion`, `challenger` or user-defined, lower-case. */
export const ALIAS_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;
