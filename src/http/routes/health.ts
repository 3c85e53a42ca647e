/** Liveness and readiness, without authentication. */
import { Router } from 'express';
import type { Token } from '../../pkcs11/token.js';

/** A readiness probe must answer quickly even when the token hangs. */
const READY_TIMEOUT_MS = 1000;

export function healthRoutes(deps: { token: Pick<Token, 'ping'> }): Router {
  const router = Router();

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timeout')), READY_TIMEOUT_MS);
    });
    try {
      await Promise.race([deps.token.ping(), timeout]);
      res.json({ status: 'ready' });
    } catch {
      res.status(503).setHeader('Retry-After', '1').json({ status: 'unavailable', message: 'The HSM does not answer' });
    } finally {
      clearTimeout(timer);
    }
  });

  return router;
}
