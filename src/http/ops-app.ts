/**
 * The ops listener (server.opsPort): plain HTTP on the API's host, serving /healthz, /readyz
 * and /metrics only, so probes and Prometheus need neither the API's client certificate nor
 * its port. Anything else is a 404 in the API's error envelope.
 *
 * This module must stay loadable by the cluster primary, which never loads the PKCS#11 module
 * or the store: hence its own small error handler rather than error-handler.ts (whose
 * TokenError mapping pulls in pkcs11js).
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { AppError, notFound } from '../errors.js';
import type { Logger } from '../logger.js';
import { answerClientErrors } from './client-error.js';
import { expressServerClasses } from './express-prototypes.js';
import { frontDoor } from './front-door.js';
import { reqIdOf } from './request-context.js';
import { healthRoutes, type HealthSource } from './routes/health.js';

export function createOpsApp(source: HealthSource, options: { logger: Logger; draining: () => boolean; observe?: RequestHandler }): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Probes' own addresses are what they are: no X-Forwarded-For is believed here.
  app.use(frontDoor(options.draining, false));
  if (options.observe) app.use(options.observe);
  app.use(healthRoutes(source));
  app.use((req, _res, next) => next(notFound(`Route ${req.method} ${req.path.slice(0, 200)} not found`)));
  const errors: ErrorRequestHandler = (error, req, res, _next) => {
    const appError = error instanceof AppError ? error : new AppError('InternalServerError', 'Something went wrong', { cause: error });
    if (appError.statusCode >= 500) options.logger.error({ reqId: reqIdOf(res), method: req.method, err: appError.cause ?? appError }, appError.message);
    if (res.headersSent) return;
    res.status(appError.statusCode).json({ reqId: reqIdOf(res), ...appError.envelope() });
  };
  app.use(errors);
  return app;
}

/** Listens on host:port (0 picks one); resolves with the server and its http:// URL. */
export async function listenOps(app: express.Express, host: string, port: number): Promise<{ server: Server; url: string }> {
  const server = createServer(expressServerClasses(app), app);
  answerClientErrors(server);
  server.listen(port, host);
  await once(server, 'listening');
  const bound = (server.address() as AddressInfo).port;
  return { server, url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}` };
}
