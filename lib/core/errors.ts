/** Base class of every error Kiln raises on purpose; `code` is stable and machine-readable. */
export class KilnError extends Error {
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The caller sent something invalid (maps to HTTP 400 / CLI exit 2). */
export class ValidationError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ValidationError', options);
  }
}

/** A named thing (dataset, model, version, object) does not exist (HTTP 404). */
export class NotFoundError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'NotFound', options);
  }
}

/** A conditional write lost a race or the target already exists (HTTP 409 / 412). */
export class ConflictError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'Conflict', options);
  }
}

/** A stored artifact does not match its recorded hash, or stored state is unreadable. */
export class IntegrityError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'IntegrityError', options);
  }
}

/** A policy (promotion rules, quarantine threshold, gate) refused the action. */
export class PolicyError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'PolicyViolation', options);
  }
}

/** Short, single-line description of any thrown value, for CLI output and logs. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message.split('\n')[0] ?? error.name;
  return String(error);
}
