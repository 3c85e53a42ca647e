/**
 * The closed set of errors a request can end in. Each kind fixes the HTTP status and the
 * `error` word of the error envelope (docs/contract.md); `message` is safe to show a client, `cause` is kept for
 * the log only and never leaves the process.
 */
export type ErrorKind =
  | 'BadRequest'
  | 'UnauthorizedError'
  | 'PermissionDenied'
  | 'NotFound'
  | 'PayloadTooLarge'
  | 'RequestTimeout'
  | 'RequestHeaderFieldsTooLarge'
  | 'ValidationFailure'
  | 'RateLimitExceeded'
  | 'ServiceUnavailable'
  | 'InternalServerError';

export const STATUS_OF: Record<ErrorKind, number> = {
  BadRequest: 400,
  UnauthorizedError: 401,
  PermissionDenied: 403,
  NotFound: 404,
  PayloadTooLarge: 413,
  RequestTimeout: 408,
  RequestHeaderFieldsTooLarge: 431,
  ValidationFailure: 422,
  RateLimitExceeded: 429,
  ServiceUnavailable: 503,
  InternalServerError: 500,
};

/** Kinds whose envelope may carry `details` (the spec's 400 and 403 schemas allow it). */
const KINDS_WITH_DETAILS = new Set<ErrorKind>(['BadRequest', 'PermissionDenied']);

export interface ValidationProblem {
  path: string;
  message: string;
}

export class AppError extends Error {
  readonly statusCode: number;
  readonly retryAfterSeconds: number | undefined;

  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly options: {
      details?: unknown;
      cause?: unknown;
      retryAfterSeconds?: number;
      problems?: ValidationProblem[];
      /** Why, from a fixed set, for the log's summaries (log-flood.ts); never shown to the client. */
      reason?: string;
    } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = kind;
    this.statusCode = STATUS_OF[kind];
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  /** The envelope body (docs/contract.md), without reqId (the error handler adds it). */
  envelope(): { statusCode: number; message: unknown; error: ErrorKind; details?: unknown } {
    const message: unknown = this.kind === 'ValidationFailure' && this.options.problems ? this.options.problems : this.message;
    const body: { statusCode: number; message: unknown; error: ErrorKind; details?: unknown } = {
      statusCode: this.statusCode,
      message,
      error: this.kind,
    };
    if (this.options.details !== undefined && KINDS_WITH_DETAILS.has(this.kind)) body.details = this.options.details;
    return body;
  }
}

export const badRequest = (message: string, details?: unknown) => new AppError('BadRequest', message, { details });
export const unauthorized = (message = 'Token missing, malformed, forged or expired') => new AppError('UnauthorizedError', message);
export const notFound = (message: string) => new AppError('NotFound', message);
export const permissionDenied = (action: string, projectId: string) =>
  new AppError('PermissionDenied', `You are not allowed to ${action} on project ${projectId}`, {
    details: { action, projectId },
  });
/** The action is not allowed on any project (a route that names no project, such as listing identities). */
export const permissionDeniedEverywhere = (action: string) =>
  new AppError('PermissionDenied', `You are not allowed to ${action} on any project`, { details: { action } });
export const validationFailure = (problems: ValidationProblem[]) =>
  new AppError('ValidationFailure', problems.map((p) => `${p.path} ${p.message}`).join('; '), { problems });
export const serviceUnavailable = (message: string, cause?: unknown) =>
  new AppError('ServiceUnavailable', message, { cause, retryAfterSeconds: 1 });
/** `reason`: which limit (identity, address, login), as in the rate_limited_total metric. */
export const rateLimitExceeded = (message: string, retryAfterSeconds: number, reason: string) =>
  new AppError('RateLimitExceeded', message, { retryAfterSeconds, reason });
