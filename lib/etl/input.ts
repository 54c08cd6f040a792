import type { z } from 'zod';
import { ValidationError } from '../core/errors.ts';

/** Parses handler input with a zod schema; a mismatch becomes a ValidationError naming every bad field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const problems = result.error.issues.map(
    (issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`,
  );
  throw new ValidationError(`invalid ${what}: ${problems.join('; ')}`, { cause: result.error });
}
