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

/** Resolvers of allListenersClosed(), answered by the primary's listeners-closed. */
const waitingForListeners = new Set<() => void>();

/**
 * Tells the primary this worker's listener is closed and resolves once it says every worker's
 * is (or after `timeoutMs`, or at once without a primary). Until then no connection can reach
 * the shared port's listener, so the answers a worker held back (app.ts, close()) can go out:
 * the clients connecting again find the port closed (refused), not a listener closing under
 * them (reset).
 */
export function allListenersClosed(logger: Logger, timeoutMs: number): Promise<void> {
  if (!process.connected) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      waitingForListeners.delete(done);
      process.off('disconnect', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    waitingForListeners.add(done);
    process.once('disconnect', done);
    send({ channel: CHANNEL, type: 'listener-closed' }, logger);
  });
}

export function serveThePrimary(url: string, health: HealthSource, logger: Logger): void {
  process.on('message', (message: unknown) => {
    if (!isOurs<ToWorker>(message)) return;
    if (message.type === 'listeners-closed') {
      for (const done of [...waitingForListeners]) done();
    } else if (message.type === 'probe') {
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
