/**
 * The worker side of cluster mode: tells the primary once it listens, and answers its probe
 * and metrics requests from this process's own HealthSource (the same one the API port's
 * /healthz, /readyz and /metrics answer from).
 */
import { registry } from '../metrics.js';
import type { HealthSource } from '../http/routes/health.js';
import type { Logger } from '../logger.js';
import { CHANNEL, isOurs, type FromWorker, type ToWorker } from './protocol.js';

function send(message: FromWorker, logger: Logger): void {
  // A primary that is gone cannot be told; the 'disconnect' handler stops this worker.
  if (!process.connected) return;
  process.send!(message, undefined, undefined, (error: Error | null) => {
    if (error) logger.warn({ err: error }, 'could not answer the cluster primary');
  });
}

export function serveThePrimary(url: string, health: HealthSource, logger: Logger): void {
  process.on('message', (message: unknown) => {
    if (!isOurs<ToWorker>(message)) return;
    if (message.type === 'probe') {
      const check = message.probe === 'healthz' ? health.failed() : health.notReady();
      void check.then(
        (problem) => send({ channel: CHANNEL, type: 'probe', id: message.id, ...(problem === undefined ? {} : { problem }) }, logger),
        (error: unknown) => send({ channel: CHANNEL, type: 'probe', id: message.id, problem: `The probe failed: ${(error as Error).message}` }, logger),
      );
    } else if (message.type === 'metrics') {
      void registry.getMetricsAsJSON().then(
        (metrics) => send({ channel: CHANNEL, type: 'metrics', id: message.id, metrics }, logger),
        (error: unknown) => logger.warn({ err: error }, 'could not read the metrics for the cluster primary'),
      );
    }
  });
  send({ channel: CHANNEL, type: 'listening', url }, logger);
}
