/**
 * The one place an error becomes a response: the contract's envelope (docs/contract.md) {reqId, statusCode, message,
 * error[, details]}. Token failures that mean "the HSM is not there" become a 503 with
 * Retry-After; anything unexpected becomes a generic 500 whose cause goes to the log only.
 *
 * Refusals a flood multiplies (503, 429, 401) are logged one by one at debug level only and
 * counted into the refused-requests summary (log-flood.ts); a 500 is a bug and keeps its own
 * error line.
 */
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { AppError, notFound, serviceUnavailable } from '../errors.js';
import { SUMMARIZED_STATUSES, type FloodSummary } from '../log-flood.js';
import type { Logger } from '../logger.js';
import { TokenError } from '../pkcs11/errors.js';
import { reqIdOf } from './request-context.js';

function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  if (error instanceof TokenError) {
    if (error.errorClass === 'busy') return serviceUnavailable('Every token session is busy; retry shortly', error);
    if (error.errorClass === 'timeout') return serviceUnavailable('The HSM did not answer in time; retry shortly', error);
    if (error.errorClass !== 'operation' && error.errorClass !== 'stale-handle') return serviceUnavailable('The HSM is unavailable; retry shortly', error);
    return new AppError('InternalServerError', 'Something went wrong', { cause: error });
  }
  // body-parser's errors carry a `type` and a 4xx status.
  const parserError = error as { type?: string; status?: number };
  if (parserError?.type === 'entity.too.large') return new AppError('PayloadTooLarge', 'Request body is too large', { cause: error });
  if (parserError?.type === 'entity.parse.failed') return new AppError('BadRequest', 'Request body is not valid JSON', { cause: error });
  if (error instanceof URIError) return new AppError('BadRequest', 'The path has malformed percent-encoding', { cause: error });
  // Any other http-errors 4xx: body-parser's own (with a `type`), or zlib's for a body that is
  // not what its Content-Encoding says (without one).
  if (typeof parserError?.status === 'number' && parserError.status >= 400 && parserError.status < 500) {
    return new AppError('BadRequest', parserError.type ? 'Request body could not be read' : 'Request could not be read', { cause: error });
  }
  return new AppError('InternalServerError', 'Something went wrong', { cause: error });
}

/**
 * Why a summarized refusal happened, from a fixed set: the CKR name or the pool's own reason
 * for a token failure, the limit for a 429, else the error kind.
 */
export function refusalReason(error: unknown): string {
  if (error instanceof TokenError) return error.ckr;
  if (error instanceof AppError) return error.cause instanceof TokenError ? error.cause.ckr : (error.options.reason ?? error.kind);
  return 'ServiceUnavailable';
}

export function errorHandler(logger: Logger, refusals: Pick<FloodSummary, 'add'>): ErrorRequestHandler {
  return (error, req, res, _next) => {
    const appError = toAppError(error);
    const reqId = reqIdOf(res);
    const summarized = SUMMARIZED_STATUSES.has(appError.statusCode);
    if (summarized) {
      if (logger.isLevelEnabled('debug')) logger.debug({ reqId, method: req.method, route: req.route?.path, statusCode: appError.statusCode, reason: refusalReason(appError), err: appError.cause ?? appError }, appError.message);
    } else if (appError.statusCode >= 500) {
      logger.error({ reqId, method: req.method, route: req.route?.path, err: appError.cause ?? appError }, appError.message);
    }
    if (res.headersSent) return;
    // Counted when answered, so the summaries add up to the refusals clients were sent.
    if (summarized) refusals.add(`${appError.statusCode} ${refusalReason(appError)}`);
    if (appError.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(appError.retryAfterSeconds));
    res.status(appError.statusCode).json({ reqId, ...appError.envelope() });
  };
}

export const routeNotFound: RequestHandler = (req, _res, next) => next(notFound(`Route ${req.method} ${req.path.slice(0, 200)} not found`));
