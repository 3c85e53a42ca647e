/**
 * Liveness, readiness and metrics, without authentication. What they read is a HealthSource:
 * this process's own state (createApp's), or, in the cluster primary, its workers' over IPC
 * (src/cluster/primary.ts); the answers have the same shape either way.
 */
import { Router } from 'express';

export interface HealthSource {
  /** Why the service is in a state no retry can leave (an orchestrator should restart it), or undefined. */
  failed(): Promise<string | undefined>;
  /** Why the service should get no traffic now, or undefined when it is ready. */
  notReady(): Promise<string | undefined>;
  /** Prometheus text and its Content-Type. */
  metrics(): Promise<{ contentType: string; text: string }>;
}

export function healthRoutes(source: HealthSource): Router {
  const router = Router();

  router.get('/healthz', async (_req, res) => {
    res.locals.route = '/healthz';
    const failed = await source.failed();
    if (failed !== undefined) return res.status(503).json({ status: 'failed', message: failed });
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    res.locals.route = '/readyz';
    const why = await source.notReady();
    if (why === undefined) return res.json({ status: 'ready' });
    res.status(503).setHeader('Retry-After', '1').json({ status: 'unavailable', message: why });
  });

  router.get('/metrics', async (_req, res) => {
    res.locals.route = '/metrics';
    const { contentType, text } = await source.metrics();
    res.setHeader('Content-Type', contentType);
    res.send(text);
  });

  return router;
}
