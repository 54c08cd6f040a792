import { z } from 'zod';

/** Logical column types of the schema contract. DuckDB types map onto these (see lib/etl/typing.ts). */
export const ColumnTypeSchema = z.enum(['number', 'integer', 'string', 'boolean', 'timestamp']);
export type ColumnType = z.infer<typeof ColumnTypeSchema>;

/**
 * One column of a dataset's contract.
 * - `min`/`max` are the range observed on first ingest: recorded as a baseline, never enforced.
 * - `hardMin`/`hardMax` are limits a human put into the contract (`kiln schema edit`): enforced, the row is
 *   quarantined with reason `range:<column>` when a value falls outside.
 * - `categories` (string columns only) is the closed set of allowed values: anything else is quarantined.
 */
export const ColumnContractSchema = z.strictObject({
  name: z.string().min(1),
  type: ColumnTypeSchema,
  nullable: z.boolean(),
  min: z.number().optional(),
  max: z.number().optional(),
  hardMin: z.number().optional(),
  hardMax: z.number().optional(),
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
  /** Largest share (0..1) of quarantined rows an ETL run accepts before it fails; default 0.05. */
  quarantineThreshold: z.number().min(0).max(1).optional(),
  /** Where the contract came from, e.g. the raw key it was inferred from. */
  inferredFrom: z.string().optional(),
  createdAt: z.string(),
  updatedAt: z.string().optional(),
});
export type SchemaContract = z.infer<typeof SchemaContractSchema>;

/** The quarantine threshold used when neither the ETL input nor the contract sets one. */
export const DEFAULT_QUARANTINE_THRESHOLD = 0.05;

/**
 * Semantic checks zod cannot express: unique column names, ordered limits, categories only on strings.
 * Returns the problems found (empty when the contract is coherent).
 */
export function contractProblems(contract: SchemaContract): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const column of contract.columns) {
    if (seen.has(column.name)) problems.push(`column ${JSON.stringify(column.name)} appears more than once`);
    seen.add(column.name);
    if (column.hardMin !== undefined && column.hardMax !== undefined && column.hardMin > column.hardMax) {
      problems.push(
        `column ${column.name}: hardMin ${column.hardMin} is greater than hardMax ${column.hardMax}`,
      );
    }
    if ((column.hardMin !== undefined || column.hardMax !== undefined) && !isNumeric(column.type)) {
      problems.push(
        `column ${column.name}: hardMin/hardMax need a number or integer column, not ${column.type}`,
      );
    }
    if (column.categories !== undefined) {
      if (column.type !== 'string') {
        problems.push(`column ${column.name}: categories need a string column, not ${column.type}`);
      }
      if (new Set(column.categories).size !== column.categories.length) {
        problems.push(`column ${column.name}: categories contain duplicates`);
      }
    }
  }
  return problems;
}

/** True for the logical types stored as numbers. */
export function isNumeric(type: ColumnType): boolean {
  return type === 'number' || type === 'integer';
}
