import { ConflictError, KilnError, NotFoundError, ValidationError } from '../core/errors.ts';
import { OverloadedError } from './batcher.ts';

/** The request body or its row count is over the configured limit (HTTP 413). */
export class PayloadTooLargeError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'PayloadTooLarge', options);
  }
}

/** The request's Content-Type is not one the route reads (HTTP 415). */
export class UnsupportedMediaTypeError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'UnsupportedMediaType', options);
  }
}

/** The client's Accept header allows no format the route writes (HTTP 406). */
export class NotAcceptableError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'NotAcceptable', options);
  }
}

/** The route exists but not for this HTTP method (HTTP 405). */
export class MethodNotAllowedError extends KilnError {
  constructor(
    message: string,
    readonly allow: string,
    options?: { cause?: unknown },
  ) {
    super(message, 'MethodNotAllowed', options);
  }
}

/** The server is starting, stopping or has no model for the request yet (HTTP 503). */
export class UnavailableError extends KilnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'Unavailable', options);
  }
}

/**
 * The one place errors become HTTP statuses. Anything not raised on purpose is a 500 whose message stays
 * in the server log: `expose` tells the caller whether the message may go into the response body.
 */
export function httpStatusOf(error: unknown): { status: number; expose: boolean } {
  if (error instanceof ValidationError) return { status: 400, expose: true };
  if (error instanceof NotFoundError) return { status: 404, expose: true };
  if (error instanceof MethodNotAllowedError) return { status: 405, expose: true };
  if (error instanceof NotAcceptableError) return { status: 406, expose: true };
  if (error instanceof ConflictError) return { status: 409, expose: true };
  if (error instanceof PayloadTooLargeError) return { status: 413, expose: true };
  if (error instanceof UnsupportedMediaTypeError) return { status: 415, expose: true };
  if (error instanceof OverloadedError || error instanceof UnavailableError)
    return { status: 503, expose: true };
  return { status: 500, expose: false };
}
