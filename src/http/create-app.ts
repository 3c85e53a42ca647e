/**
 * The Express application: request id, then per route family authentication (before the body
 * is even parsed), JSON body parsing with the size limit, validation inside each route, and
 * the one error handler.
 */
import express, { type Express } from 'express';
import type { Logger } from '../logger.js';
import type { Token } from '../pkcs11/token.js';
import type { CryptoService } from '../services/crypto-service.js';
import type { IdentityService } from '../services/identity-service.js';
import type { KeyService } from '../services/key-service.js';
import type { CaService } from '../services/ca-service.js';
import type { CertificateService } from '../services/certificate-service.js';
import { errorHandler, routeNotFound } from './error-handler.js';
import { authenticate, requestId } from './request-context.js';
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
  token: Pick<Token, 'ping'>;
}

export function createHttpApp(deps: HttpDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  const json = express.json({ limit: deps.bodyLimitBytes, strict: true });
  const bearer = authenticate(deps.identities);

  app.use(requestId);
  app.use(healthRoutes({ token: deps.token }));
  app.use('/api/v1/auth', json, authRoutes(deps));
  app.use('/api/v1/kms', bearer, json, kmsRoutes(deps));
  app.use('/api/v1/identities', bearer, json, identityRoutes(deps));
  app.use('/api/v3/pki', bearer, json, signCertificateRoutes(deps));
  app.use('/api/v1/cert-manager', bearer, json, certManagerRoutes(deps));
  app.use('/pki', publicPkiRoutes(deps));
  app.use(routeNotFound);
  app.use(errorHandler(deps.logger));
  return app;
}
