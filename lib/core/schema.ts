import { z } from 'zod';

/** Logical column types of the schema contract. DuckDB types map onto these (see lib/etl). */
export const ColumnTypeSchema = z.enum(['number', 'integer', 'string', 'boolean', 'timestamp']);
export type ColumnType = z.infer<typeof ColumnTypeSchema>;

/** One column of a dataset's contract: type, nullability, observed numeric range, allowed categories. */
export const ColumnContractSchema = z.strictObject({
  name: z.string().min(1),
  type: ColumnTypeSchema,
  nullable: z.boolean(),
  min: z.number().optional(),
  max: z.number().optional(),
  /** Allowed values of a low-cardinality string column; absent means free text. */
  categories: z.array(z.string()).optional(),
});
export type ColumnContract = z.infer<typeof ColumnContractSchema>;

/** The schema contract stored at `schemas/<dataset>/schema.json`, inferred on first ingest, then enforced. */
export const SchemaContractSchema = z.strictObject({
  kind: z.literal('kiln.schema'),
  version: z.literal(1),
  dataset: z.string(),
  columns: z.array(ColumnContractSchema).min(1),
  createdAt: z.string(),
  updatedAt: z.string().optional(),
});
export type SchemaContract = z.infer<typeof SchemaContractSchema>;
