/**
 * Per-request id and principal. The id comes from `X-Request-Id` when the caller sends a sane
 * one, else is generated; it is echoed in the response header and in every error envelope.
 */
import { randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import { unauthorized } from '../errors.js';
import type { IdentityService } from '../services/identity-service.js';
import type { Principal } from '../services/permissions.js';

const SANE_REQUEST_ID = /^[A-Za-z0-9._:@\/+=-]{1,128}$/;

/** The caller's X-Request-Id when it is a sane one, else a new id. */
export const requestIdFrom = (given: string | undefined): string => (given && SANE_REQUEST_ID.test(given) ? given : `req-${randomUUID()}`);

export const reqIdOf = (res: Response): string => (res.locals.reqId as string | undefined) ?? 'unknown';

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/** Resolves the bearer token to a principal, or ends the request with a 401. */
export function authenticate(identities: Pick<IdentityService, 'authenticate'>): RequestHandler {
  return async (req, res, next) => {
    const match = BEARER.exec(req.headers.authorization ?? '');
    if (!match) return next(unauthorized('Missing or malformed Authorization header: expected "Bearer <accessToken>"'));
    res.locals.principal = await identities.authenticate(match[1]!);
    next();
  };
}

export const principalOf = (res: Response): Principal => res.locals.principal as Principal;
