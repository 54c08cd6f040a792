import { Token } from 'aws-cdk-lib';
import { ValidationError } from '../core/errors.ts';

/** Throws unless `value` is an integer in [min, max]; unresolved tokens are accepted as-is. */
export function assertIntegerInRange(
  name: string,
  value: number | undefined,
  min: number,
  max: number,
): void {
  if (value === undefined || Token.isUnresolved(value)) return;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ValidationError(`${name} must be an integer between ${min} and ${max}, got ${value}`);
  }
}

/** Throws unless `value` is a number in [min, max]; unresolved tokens are accepted as-is. */
export function assertNumberInRange(name: string, value: number | undefined, min: number, max: number): void {
  if (value === undefined || Token.isUnresolved(value)) return;
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new ValidationError(`${name} must be between ${min} and ${max}, got ${value}`);
  }
}

/** Throws unless `value` matches `pattern`; unresolved tokens are accepted as-is. */
export function assertMatches(
  name: string,
  value: string | undefined,
  pattern: RegExp,
  allowed: string,
): void {
  if (value === undefined || Token.isUnresolved(value)) return;
  if (!pattern.test(value)) {
    throw new ValidationError(`${name} must be ${allowed}, got '${value}'`);
  }
}

/** Throws unless `value` is one of `allowed`; unresolved tokens are accepted as-is. */
export function assertOneOf<T extends string>(
  name: string,
  value: T | undefined,
  allowed: readonly T[],
): void {
  if (value === undefined || Token.isUnresolved(value)) return;
  if (!allowed.includes(value)) {
    throw new ValidationError(`${name} must be one of ${allowed.join(', ')}, got '${value}'`);
  }
}

/** SageMaker instance types look like `ml.<family>.<size>`. */
export const SAGEMAKER_INSTANCE_TYPE = /^ml\.[a-z0-9-]+\.[a-z0-9]+$/;
