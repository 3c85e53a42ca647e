/**
 * Liveness, readiness and metrics, without authentication. What they read is a HealthSource:
 * this process's own state (createApp's), or, in the cluster primary, its workers' over IPC
 * (src/cluster/primary.ts); the answers have the same shape either way.
 */
import { Router } from 'express';
import { on } from '../route.js';

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

  on(router, 'GET /healthz', async (_input, res) => {
    const failed = await source.failed();
    if (failed !== undefined) return res.status(503).json({ status: 'failed', message: failed });
    res.json({ status: 'ok' });
  });

  on(router, 'GET /readyz', async (_input, res) => {
    const why = await source.notReady();
    if (why === undefined) return res.json({ status: 'ready' });
    res.status(503).setHeader('Retry-After', '1').json({ status: 'unavailable', message: why });
  });

  on(router, 'GET /metrics', async (_input, res) => {
    const { contentType, text } = await source.metrics();
    res.setHeader('Content-Type', contentType);
    res.send(text);
  });

  return router;
}
