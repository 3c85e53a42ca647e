/**
 * The Express application: client address, request id and security headers (one middleware),
 * metrics and audit hooks, health routes, the per-address limit, then per route family
 * authentication (before the body is even parsed), the per-identity rate limit,
 * JSON body parsing with the size limit, validation inside each route, and the one error
 * handler.
 */
import { isUtf8 } from 'node:buffer';
import express, { type Express, type Request, type RequestHandler } from 'express';
import { AppError } from '../errors.js';
import type { FloodSummary } from '../log-flood.js';
import type { Logger } from '../logger.js';
import type { Token } from '../pkcs11/token.js';
import type { AuditService } from '../services/audit-service.js';
import type { CaService } from '../services/ca-service.js';
import type { CertificateService } from '../services/certificate-service.js';
import type { CryptoService } from '../services/crypto-service.js';
import type { AcmeService } from '../services/acme-service.js';
import type { EstService } from '../services/est-service.js';
import type { OcspService } from '../services/ocsp-service.js';
import type { IdentityService } from '../services/identity-service.js';
import type { KeyService } from '../services/key-service.js';
import { registry } from '../metrics.js';
import { auditTrail, type DeniedSummary } from './audit-trail.js';
import { normalizeAddress, trustedProxyList, trustFunction } from './client-address.js';
import { errorHandler, routeNotFound } from './error-handler.js';
import { frontDoor } from './front-door.js';
import { observeRequests } from './observe-requests.js';
import { readStatedLength } from './read-body.js';
import { addressRateLimit, identityRateLimit, LoginThrottle, type LoginThrottleOptions } from './rate-limit.js';
import { authenticate } from './request-context.js';
import { auditRoutes } from './routes/audit.js';
import { docsRoutes } from './routes/docs.js';
import { authRoutes } from './routes/auth.js';
import { healthRoutes, type HealthSource } from './routes/health.js';
import { identityRoutes } from './routes/identities.js';
import { kmsRoutes } from './routes/kms.js';
import { acmeRoutes } from './routes/acme.js';
import { estRoutes } from './routes/est.js';
import { ocspRoutes } from './routes/ocsp.js';
import { certManagerRoutes, publicPkiRoutes, signCertificateRoutes } from './routes/pki.js';

export interface HttpDeps {
  logger: Logger;
  bodyLimitBytes: number;
  identities: IdentityService;
  keys: KeyService;
  crypto: CryptoService;
  cas: CaService;
  certificates: CertificateService;
  ocsp: OcspService;
  est: EstService;
  acme: AcmeService;
  /** The base URL clients reach the service at (ACME's signed URLs and links are on it). */
  publicBaseUrl: () => string;
  /** server.estClientCertificateHeader: where a trusted proxy passes an EST client's certificate. */
  estClientCertificateHeader?: string | undefined;
  audit: AuditService;
  /** Where refused unauthenticated requests are counted instead of audited one by one. */
  deniedRequests: Pick<DeniedSummary, 'count'>;
  /** Where refused requests (503, 429, 401) are counted for the log's summary lines. */
  refusals: Pick<FloodSummary, 'add'>;
  /** True while audited requests must be refused (the audit sink fails and audit.sinkFailure is block). */
  auditRefuses?: () => boolean;
  token: Pick<Token, 'ping'>;
  readyTimeoutMs: number;
  rateLimit: { perIdentityPerSecond: number; burst: number; perAddressPerSecond: number; perAddressBurst: number };
  /** server.trustedProxies: whose X-Forwarded-For is believed (client-address.ts). */
  trustedProxies: readonly string[];
  loginThrottle: LoginThrottleOptions;
  /** True once shutdown began: readiness fails so balancers stop sending, connections close. */
  draining: () => boolean;
  /** False once the service cannot serve again without a restart (the token refused the PIN). */
  alive: () => boolean;
}

export { SECURITY_HEADERS } from './front-door.js';

// body-parser would decode broken UTF-8 to U+FFFD and carry on: a name or key that is not the
// one the client sent must be refused, not stored.
const notUtf8 = () => new AppError('BadRequest', 'Request body is not valid UTF-8');
const notJson = (cause: unknown) => new AppError('BadRequest', 'Request body is not valid JSON', { cause });
const unreadable = (cause: unknown) => new AppError('BadRequest', 'Request body could not be read', { cause });

/** The Content-Type spellings the lean path takes; any other (or a charset check) goes to body-parser. */
const PLAIN_JSON_TYPES = new Set(['application/json', 'application/json; charset=utf-8', 'application/json;charset=utf-8', 'application/json; charset=UTF-8']);
const FIRST_NON_WHITESPACE = /[^\x20\x09\x0a\x0d]/;

/**
 * JSON bodies the way body-parser (`express.json`, strict, with the UTF-8 check) reads them,
 * without its per-request work (media-type parsing, charset lookup, decoder set-up), for the
 * requests every client sends: a plain `application/json` body of a stated length within the
 * limit, not compressed. Everything else (other types or charsets, Content-Encoding, chunked,
 * too large) goes to `fallback`, body-parser itself, with its own answers.
 */
function leanJson(limit: number, fallback: RequestHandler): RequestHandler {
  return (req, res, next) => {
    const { headers } = req;
    const length = headers['content-length'];
    const type = headers['content-type'];
    if (length === undefined || type === undefined || !PLAIN_JSON_TYPES.has(type) || headers['content-encoding'] !== undefined || headers['transfer-encoding'] !== undefined || req.readableEnded) {
      return fallback(req, res, next);
    }
    const expected = Number(length);
    if (!(expected <= limit)) return fallback(req, res, next);
    if (expected === 0) {
      // body-parser's special case: an empty JSON body is {}.
      req.body = {};
      return next();
    }
    readStatedLength(req, expected, (error, body) => {
      if (error) return next(unreadable(error));
      if (!isUtf8(body)) return next(notUtf8());
      const text = body.toString('utf8');
      if (text[0] !== '{' && text[0] !== '[') {
        const first = FIRST_NON_WHITESPACE.exec(text)?.[0];
        if (first !== '{' && first !== '[') return next(notJson(new SyntaxError('strict mode: the body is not a JSON object or array')));
      }
      try {
        req.body = JSON.parse(text);
      } catch (error) {
        return next(notJson(error));
      }
      next();
    });
  };
}

/** Nothing an API answer holds may be cached on the way; the public CA files may. */
const noStore: RequestHandler = (_req, res, next) => {
  res.setHeader('Cache-Control', 'no-store');
  next();
};

/** This process's own health, for /healthz, /readyz and /metrics on either listener. */
export function processHealth(deps: Pick<HttpDeps, 'token' | 'readyTimeoutMs' | 'draining' | 'alive'>): HealthSource {
  return {
    failed: async () => (deps.alive() ? undefined : 'The HSM refused the PIN while reconnecting; restart with the right PIN'),
    async notReady() {
      if (deps.draining()) return 'Shutting down';
      // A real call on a pooled session, bounded by the pool: a hung token is a 503 in
      // readyTimeoutMs, and the session it hung on is never used again.
      try {
        await deps.token.ping(deps.readyTimeoutMs);
        return undefined;
      } catch {
        return 'The HSM does not answer';
      }
    },
    metrics: async () => ({ contentType: registry.contentType, text: await registry.metrics() }),
  };
}

export function createHttpApp(deps: HttpDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  const trustsProxies = deps.trustedProxies.length > 0;
  const trusted = trustFunction(trustedProxyList(deps.trustedProxies));
  if (trustsProxies) app.set('trust proxy', trusted);
  /** Whether the TCP peer itself (not a forwarded address) is a trusted proxy. */
  const fromTrustedProxy = (req: Request) => trustsProxies && req.socket.remoteAddress !== undefined && trusted(normalizeAddress(req.socket.remoteAddress), 0);

  const json = leanJson(
    deps.bodyLimitBytes,
    express.json({
      limit: deps.bodyLimitBytes,
      strict: true,
      verify: (_req, _res, buffer) => {
        if (!isUtf8(buffer)) throw notUtf8();
      },
    }),
  );
  const bearer = authenticate(deps.identities);
  const rateLimit = identityRateLimit({ perSecond: deps.rateLimit.perIdentityPerSecond, burst: deps.rateLimit.burst });
  const loginThrottle = new LoginThrottle(deps.loginThrottle);

  app.use(frontDoor(deps.draining, trustsProxies));
  app.use(observeRequests(deps.logger));
  app.use(auditTrail(deps.audit, deps.deniedRequests, deps.auditRefuses));
  // Probes and scrapers come before the per-address limit: a busy load balancer's health
  // checks must not be refused for its own address's traffic.
  app.use(healthRoutes(processHealth(deps)));
  app.use(addressRateLimit({ perSecond: deps.rateLimit.perAddressPerSecond, burst: deps.rateLimit.perAddressBurst }));
  // The API reference: the document and the page that renders it, public like the API's shape.
  app.use('/api/docs', docsRoutes());
  app.use('/api/v1/auth', noStore, json, authRoutes({ identities: deps.identities, loginThrottle }));
  app.use('/api/v1/kms', noStore, bearer, rateLimit, json, kmsRoutes(deps));
  app.use('/api/v1/identities', noStore, bearer, rateLimit, json, identityRoutes(deps));
  app.use('/api/v3/pki', noStore, bearer, rateLimit, json, signCertificateRoutes(deps));
  // Before the rest of cert-manager: relying parties ask OCSP without credentials.
  app.use('/api/v1/cert-manager/ocsp', ocspRoutes(deps));
  // ACME authenticates each request by its JWS (account keys), not with bearer tokens.
  app.use('/api/v1/cert-manager/acme', acmeRoutes(deps));
  app.use('/api/v1/cert-manager', noStore, bearer, rateLimit, json, certManagerRoutes(deps));
  // EST authenticates per profile (passphrase or client certificate), not with bearer tokens.
  app.use('/.well-known/est', noStore, estRoutes({ ...deps, estThrottle: new LoginThrottle(deps.loginThrottle), fromTrustedProxy }));
  app.use('/api/v1/audit-logs', noStore, bearer, rateLimit, auditRoutes(deps));
  app.use('/pki', publicPkiRoutes(deps));
  app.use(routeNotFound);
  app.use(errorHandler(deps.logger, deps.refusals));
  return app;
}
