/** Liveness, readiness and metrics, without authentication. */
import { Router } from 'express';
import { registry } from '../../metrics.js';
import type { Token } from '../../pkcs11/token.js';

export function healthRoutes(deps: { token: Pick<Token, 'ping'>; readyTimeoutMs: number; draining: () => boolean; alive: () => boolean }): Router {
  const router = Router();

  router.get('/healthz', (_req, res) => {
    res.locals.route = '/healthz';
    // Only a state no retry can leave: an orchestrator should restart the process.
    if (!deps.alive()) return res.status(503).json({ status: 'failed', message: 'The HSM refused the PIN while reconnecting; restart with the right PIN' });
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    res.locals.route = '/readyz';
    const unavailable = (message: string) => res.status(503).setHeader('Retry-After', '1').json({ status: 'unavailable', message });
    if (deps.draining()) return unavailable('Shutting down');
    // A real call on a pooled session, bounded by the pool: a hung token is a 503 in
    // readyTimeoutMs, and the session it hung on is never used again.
    try {
      await deps.token.ping(deps.readyTimeoutMs);
      res.json({ status: 'ready' });
    } catch {
      unavailable('The HSM does not answer');
    }
  });

  router.get('/metrics', async (_req, res) => {
    res.locals.route = '/metrics';
    res.setHeader('Content-Type', registry.contentType);
    res.send(await registry.metrics());
  });

  return router;
}
