/**
 * ACME (RFC 8555) under /api/v1/cert-manager/acme/profiles/{profileId}/: the directory, nonces,
 * and the JWS-signed POSTs (services/acme-service.ts says what each does and checks).
 *
 * What every answer carries here: a fresh `Replay-Nonce` (errors too, so a client answered
 * badNonce retries at once), `Link: <directory>;rel="index"`, `Cache-Control: no-store`, and
 * `Location` / `Link rel="up"` / `Retry-After` where the RFC gives a resource one. Errors are
 * `application/problem+json` documents with `urn:ietf:params:acme:error:*` types, never the
 * service's JSON envelope: ACME clients act on the type.
 *
 * Audit: account creation and changes, orders, challenge responses, finalize and revocation
 * are one event each once the JWS is verified; reads (the directory, nonces, POST-as-GET polls,
 * which clients repeat every second) are not. Requests refused before a JWS verified are
 * counted like other unauthenticated refusals (audit-trail.ts).
 */
import express, { Router, type ErrorRequestHandler, type Response } from 'express';
import { AppError } from '../../errors.js';
import type { FloodSummary } from '../../log-flood.js';
import type { Logger } from '../../logger.js';
import { TokenError } from '../../pkcs11/errors.js';
import { AcmeProblem, acmeProblem } from '../../services/acme-problem.js';
import { ACME_PATH, type AcmeAnswer, type AcmeRequest, type AcmeService } from '../../services/acme-service.js';
import { auditIndividually, notAudited } from '../audit-trail.js';
import { refusalReason } from '../error-handler.js';
import { reqIdOf } from '../request-context.js';
import { on } from '../route.js';
import type { RouteKey } from '../route-table.js';

/** A JWS with a CSR or a certificate chain is a few KiB; base64url and JSON add a little. */
const ACME_REQUEST_LIMIT_BYTES = 64 * 1024;
const JOSE_JSON = 'application/jose+json';

export interface AcmeRouteDeps {
  acme: AcmeService;
  logger: Logger;
  publicBaseUrl: () => string;
  /** Where 503s are counted for the log's summary lines (log-flood.ts), as the error handler does. */
  refusals: Pick<FloodSummary, 'add'>;
}

/** Mounted at /api/v1/cert-manager/acme. */
export function acmeRoutes(deps: AcmeRouteDeps): Router {
  const { acme, logger } = deps;
  const router = Router();
  const directoryUrl = (profileId: string) => `${deps.publicBaseUrl()}${ACME_PATH}/${encodeURIComponent(profileId)}/directory`;

  /** Replay-Nonce and the index link, on every answer of a profile's resources. */
  async function commonHeaders(res: Response, profileId: string): Promise<void> {
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Replay-Nonce', await acme.newNonce());
    res.append('Link', `<${directoryUrl(profileId)}>;rel="index"`);
  }

  async function send(res: Response, profileId: string, answer: AcmeAnswer): Promise<void> {
    await commonHeaders(res, profileId);
    if (answer.location) res.setHeader('Location', answer.location);
    for (const link of answer.links ?? []) res.append('Link', `<${link.url}>;rel="${link.rel}"`);
    if (answer.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(answer.retryAfterSeconds));
    if (answer.auditResourceId) res.locals.auditResourceId = answer.auditResourceId;
    if (answer.audited === false) notAudited(res);
    res.status(answer.status);
    if (answer.body === undefined) res.end();
    else if (answer.contentType) res.type(answer.contentType).send(Buffer.from(String(answer.body), 'utf8'));
    else res.json(answer.body);
  }

  const requestOf = (req: express.Request): AcmeRequest => ({
    profileId: String(req.params.profileId),
    // The URL the client addressed, as the JWS must name it: this service's public base and the path sent.
    url: `${deps.publicBaseUrl()}${req.originalUrl}`,
    body: req.body,
  });

  /** Reads the body as JSON (its type must be application/jose+json, §6.2), then runs the operation. */
  const signed =
    (operation: (request: AcmeRequest, params: Record<string, string>) => Promise<AcmeAnswer>) =>
    async (req: express.Request, res: Response): Promise<void> => {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== JOSE_JSON) throw acmeProblem('malformed', `ACME requests are ${JOSE_JSON}`, { status: 415 });
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        throw acmeProblem('malformed', 'The request body is not JSON');
      }
      const request: AcmeRequest = { ...requestOf(req), body, onAuthenticated: () => auditIndividually(res) };
      await send(res, request.profileId, await operation(request, req.params as Record<string, string>));
    };

  const body = express.raw({ type: () => true, limit: ACME_REQUEST_LIMIT_BYTES });

  // The route table (route-table.ts) describes these; ACME judges its own input (a problem
  // document for anything wrong), so nothing is validated against its schemas here.
  const route = <K extends RouteKey>(key: K, handler: (req: express.Request, res: Response) => Promise<void>, signedBody = false) =>
    on(router, key, (_input, res, req) => handler(req, res), { validate: false, ...(signedBody ? { after: [body] } : {}) });
  const ACME = '/api/v1/cert-manager/acme/profiles/:profileId';

  route(`GET ${ACME}/directory`, async (req, res) => {
    const profileId = String(req.params.profileId);
    const directory = await acme.directory(profileId);
    notAudited(res);
    res.setHeader('Cache-Control', 'no-store');
    res.json(directory);
  });

  // §7.2: HEAD answers 200, GET 204, both with a nonce and never cached.
  route(`HEAD ${ACME}/new-nonce`, async (req, res) => {
    await acme.acmeProfile(String(req.params.profileId));
    notAudited(res);
    await commonHeaders(res, String(req.params.profileId));
    res.status(200).end();
  });
  route(`GET ${ACME}/new-nonce`, async (req, res) => {
    await acme.acmeProfile(String(req.params.profileId));
    notAudited(res);
    await commonHeaders(res, String(req.params.profileId));
    res.status(204).end();
  });

  const post = <K extends RouteKey>(key: K, operation: Parameters<typeof signed>[0]) => route(key, signed(operation), true);
  post(`POST ${ACME}/new-account`, (request) => acme.newAccount(request));
  post(`POST ${ACME}/accounts/:accountId`, (request, params) => acme.account(request, params.accountId!));
  post(`POST ${ACME}/accounts/:accountId/orders`, (request, params) => acme.accountOrders(request, params.accountId!));
  post(`POST ${ACME}/new-order`, (request) => acme.newOrder(request));
  post(`POST ${ACME}/orders/:orderId`, (request, params) => acme.order(request, params.orderId!));
  post(`POST ${ACME}/orders/:orderId/finalize`, (request, params) => acme.finalize(request, params.orderId!));
  post(`POST ${ACME}/orders/:orderId/certificate`, (request, params) => acme.certificate(request, params.orderId!));
  post(`POST ${ACME}/authorizations/:authorizationId`, (request, params) => acme.authorization(request, params.authorizationId!));
  post(`POST ${ACME}/authorizations/:authorizationId/challenges/:challengeId`, (request, params) => acme.challenge(request, params.authorizationId!, params.challengeId!));
  post(`POST ${ACME}/revoke-cert`, (request) => acme.revokeCert(request));
  post(`POST ${ACME}/key-change`, (request) => acme.keyChange(request));

  router.use((req, _res, next) => next(acmeProblem('malformed', `No ACME resource ${req.method} ${req.path.slice(0, 200)}`, { status: 404 })));

  /** Every error of these routes as a problem document, with a fresh nonce. */
  const problems: ErrorRequestHandler = async (error: unknown, req, res, _next) => {
    const problem = toProblem(error);
    // A 503 (the token is down) is one of a flood: at debug level and in the summary, not a line each.
    if (problem.status === 503) {
      if (logger.isLevelEnabled('debug')) logger.debug({ reqId: reqIdOf(res), route: res.locals.route, statusCode: 503, reason: refusalReason(error), err: (error as Error)?.cause ?? error }, problem.detail);
    } else if (problem.status >= 500) {
      logger.error({ reqId: reqIdOf(res), route: res.locals.route, err: (error as Error)?.cause ?? error }, problem.detail);
    }
    if (res.headersSent) return;
    if (problem.status === 503) deps.refusals.add(`503 ${refusalReason(error)}`);
    const profileId = typeof req.params?.profileId === 'string' ? req.params.profileId : /^\/profiles\/([^/]+)/.exec(req.path)?.[1];
    try {
      // No nonce for a 404 (an unknown profile, resource or id): it would be a stored row per
      // request to a URL that serves nothing, for anyone who asks.
      if (profileId && problem.status !== 404) await commonHeaders(res, decodeURIComponentSafe(profileId));
      else res.setHeader('Cache-Control', 'no-store');
    } catch (nonceError) {
      // The store is failing: the problem still goes out, without a nonce.
      logger.warn({ reqId: reqIdOf(res), err: nonceError }, 'could not make a nonce for an ACME error answer');
    }
    if (problem.options.location) res.setHeader('Location', problem.options.location);
    const retryAfter = problem.options.retryAfterSeconds;
    if (retryAfter !== undefined) res.setHeader('Retry-After', String(retryAfter));
    res.status(problem.status).type('application/problem+json').send(Buffer.from(JSON.stringify(problem.document()), 'utf8'));
  };
  router.use(problems);
  return router;
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** What a failure means to an ACME client. */
function toProblem(error: unknown): AcmeProblem {
  if (error instanceof AcmeProblem) return error;
  if (error instanceof TokenError || (error instanceof AppError && error.statusCode === 503)) {
    return acmeProblem('serverInternal', 'The HSM is unavailable; retry shortly', { status: 503, retryAfterSeconds: 1, cause: error });
  }
  if (error instanceof AppError) {
    if (error.statusCode === 429) return acmeProblem('rateLimited', error.message, { ...(error.retryAfterSeconds !== undefined ? { retryAfterSeconds: error.retryAfterSeconds } : {}) });
    if (error.statusCode < 500) return acmeProblem('malformed', error.message, { status: error.statusCode });
  }
  const parserError = error as { type?: string; status?: number };
  if (parserError?.type === 'entity.too.large') return acmeProblem('malformed', 'The request body is too large', { status: 413 });
  if (typeof parserError?.status === 'number' && parserError.status >= 400 && parserError.status < 500) return acmeProblem('malformed', 'The request body could not be read', { status: 400 });
  if (error instanceof URIError) return acmeProblem('malformed', 'The path has malformed percent-encoding');
  return acmeProblem('serverInternal', 'Something went wrong', { cause: error });
}
