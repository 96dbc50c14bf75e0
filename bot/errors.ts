// Typed errors with stable codes. Each transport translates them once: the Fastify error handler to HTTP,
// the chat responder to a private reply. Messages are for the person who typed the input: they say what
// was wrong and what to do, and they never carry a secret.

export type ErrorKind =
  | 'bad_request'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'step_up_required'
  | 'rate_limited';

export abstract class AppError extends Error {
  abstract readonly kind: ErrorKind;
  abstract readonly status: number;
  /** A stable, dotted code such as `command.unknown` or `policy.no_role`. */
  readonly code: string;
  readonly details?: Record<string, unknown>;

  constructor(code: string, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

export class BadRequest extends AppError {
  readonly kind = 'bad_request' as const;
  readonly status = 400;
}

export class Forbidden extends AppError {
  readonly kind = 'forbidden' as const;
  readonly status = 403;
}

export class NotFound extends AppError {
  readonly kind = 'not_found' as const;
  readonly status = 404;
}

export class Conflict extends AppError {
  readonly kind = 'conflict' as const;
  readonly status = 409;
}

export class RateLimited extends AppError {
  readonly kind = 'rate_limited' as const;
  readonly status = 429;
}

/** The action needs a live step-up window; `url` is a single-use link to the step-up page. */
export class StepUpRequired extends AppError {
  readonly kind = 'step_up_required' as const;
  readonly status = 401;
  constructor(
    message: string,
    readonly url: string,
    details?: Record<string, unknown>,
  ) {
    super('stepup.required', message, details);
  }
}

export function isAppError(e: unknown): e is AppError {
  return e instanceof AppError;
}

/** Turns a zod error into one readable line naming each field, e.g. `reason: too long (max 2000)`. */
export function describeZodIssues(issues: ReadonlyArray<{ path: PropertyKey[]; message: string }>): string {
  return issues
    .map((i) => (i.path.length ? `${i.path.map(String).join('.')}: ${i.message}` : i.message))
    .join('; ');
}
