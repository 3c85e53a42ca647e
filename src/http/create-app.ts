/**
 * The Express application: request id, metrics and audit hooks, security headers, then per
 * route family authentication (before the body is even parsed), the per-identity rate limit,
 * JSON body parsing with the size limit, validation inside each route, and the one error
 * handler.
 */
import { isUtf8 } from 'node:buffer';
import express, { type Express, type RequestHandler } from 'express';
import { AppError } from '../errors.js';
import helmet from 'helmet';
import type { Logger } from '../logger.js';
import type { Token } from '../pkcs11/token.js';
import type { AuditService } from '../services/audit-service.js';
import type { CaService } from '../services/ca-service.js';
import type { CertificateService } from '../services/certificate-service.js';
import type { CryptoService } from '../services/crypto-service.js';
import type { IdentityService } from '../services/identity-service.js';
import type { KeyService } from '../services/key-service.js';
import { auditTrail } from './audit-trail.js';
import { errorHandler, routeNotFound } from './error-handler.js';
import { observeRequests } from './observe-requests.js';
import { identityRateLimit, LoginThrottle, type LoginThrottleOptions } from './rate-limit.js';
import { authenticate, requestId } from './request-context.js';
import { auditRoutes } from './routes/audit.js';
import { authRoutes } from './routes/auth.js';
import { healthRoutes } from './routes/health.js';
import { identityRoutes } from './routes/identities.js';
import { kmsRoutes } from './routes/kms.js';
import { certManagerRoutes, publicPkiRoutes, signCertificateRoutes } from './routes/pki.js';

export interface HttpDeps {
  logger: Logger;
  bodyLimitBytes: number;
  identities: IdentityService;
  keys: KeyService;
  crypto: CryptoService;
  cas: CaService;
  certificates: CertificateService;
  audit: AuditService;
  token: Pick<Token, 'ping'>;
  readyTimeoutMs: number;
  rateLimit: { perIdentityPerSecond: number; burst: number };
  loginThrottle: LoginThrottleOptions;
  /** True once shutdown began: readiness fails so balancers stop sending, connections close. */
  draining: () => boolean;
  /** False once the service cannot serve again without a restart (the token refused the PIN). */
  alive: () => boolean;
}

/** Nothing an API answer holds may be cached on the way; the public CA files may. */
const noStore: RequestHandler = (_req, res, next) => {
  res.setHeader('Cache-Control', 'no-store');
  next();
};

export function createHttpApp(deps: HttpDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  const json = express.json({
    limit: deps.bodyLimitBytes,
    strict: true,
    // body-parser would decode broken UTF-8 to U+FFFD and carry on: a name or key that is not
    // the one the client sent must be refused, not stored.
    verify: (_req, _res, buffer) => {
      if (!isUtf8(buffer)) throw new AppError('BadRequest', 'Request body is not valid UTF-8');
    },
  });
  const bearer = authenticate(deps.identities);
  const rateLimit = identityRateLimit({ perSecond: deps.rateLimit.perIdentityPerSecond, burst: deps.rateLimit.burst });
  const loginThrottle = new LoginThrottle(deps.loginThrottle);

  app.use(requestId);
  app.use(observeRequests(deps.logger));
  app.use(auditTrail(deps.audit));
  // An API of JSON and DER: no page may frame it, run script from it, or sniff its types.
  app.use(
    helmet({
      contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
      frameguard: { action: 'deny' },
    }),
  );
  app.use((_req, res, next) => {
    // While draining, each answer closes its keep-alive connection, so clients reconnect elsewhere.
    if (deps.draining()) res.setHeader('Connection', 'close');
    next();
  });
  app.use(healthRoutes(deps));
  app.use('/api/v1/auth', noStore, json, authRoutes({ identities: deps.identities, loginThrottle }));
  app.use('/api/v1/kms', noStore, bearer, rateLimit, json, kmsRoutes(deps));
  app.use('/api/v1/identities', noStore, bearer, rateLimit, json, identityRoutes(deps));
  app.use('/api/v3/pki', noStore, bearer, rateLimit, json, signCertificateRoutes(deps));
  app.use('/api/v1/cert-manager', noStore, bearer, rateLimit, json, certManagerRoutes(deps));
  app.use('/api/v1/audit-logs', noStore, bearer, rateLimit, auditRoutes(deps));
  app.use('/pki', publicPkiRoutes(deps));
  app.use(routeNotFound);
  app.use(errorHandler(deps.logger));
  return app;
}
