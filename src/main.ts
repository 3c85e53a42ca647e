/**
 * Entry point: load the configuration, then either serve in this process (server.httpWorkers
 * = 1, and in every cluster worker) or become the node:cluster primary that runs
 * server.httpWorkers workers (src/cluster/primary.ts). Both are imported only when needed: the
 * primary must never load the PKCS#11 module or the store, which src/app.ts brings in.
 *
 * Token calls run on token threads of their own (src/pkcs11/token-threads.ts), not on libuv's
 * thread pool, so libuv keeps its default size for scrypt (logins) and file I/O.
 */
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { loadConfig, type Config } from './config/load.js';
import { createLogger, type Logger } from './logger.js';

/** The longest a cluster worker holds its answers waiting for the other workers' listeners to close. */
const LISTENERS_CLOSED_TIMEOUT_MS = 2000;

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  console.error(`hsm-signer: ${(error as Error).message}`);
  process.exit(1);
}
const workers = config.server.httpWorkers === 'auto' ? availableParallelism() : config.server.httpWorkers;

if (cluster.isPrimary && workers > 1) {
  const { runPrimary } = await import('./cluster/primary.js');
  await runPrimary(config, createLogger(config.logLevel), workers);
} else if (cluster.isWorker) {
  // Each worker's lines say which process wrote them; the primary alone serves the ops port.
  await serve({ ...config, server: { ...config.server, opsPort: null } }, createLogger(config.logLevel).child({ worker: cluster.worker!.id, pid: process.pid }), true);
} else {
  await serve(config, createLogger(config.logLevel), false);
}

async function serve(config: Config, logger: Logger, isWorker: boolean): Promise<void> {
  const { startService, StartupError } = await import('./app.js');
  try {
    const service = await startService(config, logger);
    logger.info({ url: service.url, sessions: config.hsm.sessions, ...(service.opsUrl ? { opsUrl: service.opsUrl } : {}) }, isWorker ? 'worker is listening' : 'hsm-signer is listening');
    const clusterWorker = isWorker ? await import('./cluster/worker.js') : undefined;
    const stop = (signal: string) => {
      // SIGTERM is how orchestrators and balanced deployments stop a replica: drain for
      // server.shutdownDelayMs first. SIGINT (Ctrl-C) and a vanished cluster primary (its
      // listener is gone with it) stop at once.
      const delayMs = signal === 'SIGTERM' ? config.server.shutdownDelayMs : 0;
      logger.info({ signal, delayMs }, 'stopping');
      service
        .close({
          delayMs,
          // The workers share one listening socket: each holds its answers until all have closed theirs.
          ...(clusterWorker ? { afterListenerClosed: () => clusterWorker.allListenersClosed(logger, LISTENERS_CLOSED_TIMEOUT_MS) } : {}),
        })
        .then(
          () => process.exit(0),
          (error: unknown) => {
            logger.error({ err: error }, 'error while stopping');
            process.exit(1);
          },
        );
    };
    // `on`, not `once`: a second signal (the group's and the parent's copy) must not fall back
    // to the default action and kill the process mid-drain; close() runs once however called.
    let stopping = false;
    const onSignal = (signal: string) => {
      if (stopping) return;
      stopping = true;
      stop(signal);
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
    // logrotate's postrotate: the audit sink file starts afresh at its next write (without a
    // handler, SIGHUP would end the process).
    process.on('SIGHUP', () => {
      logger.info('SIGHUP: reopening the audit sink file');
      service.reopenAuditSink();
    });
    if (clusterWorker) {
      clusterWorker.serveThePrimary(service.url, service.health, logger);
      // A primary that is gone (killed) cannot pass signals on: drain and exit as if told to.
      process.on('disconnect', () => onSignal('disconnect'));
    }
  } catch (error) {
    if (error instanceof StartupError) {
      logger.fatal(error.message);
      console.error(`hsm-signer: ${error.message}`);
    } else {
      logger.fatal({ err: error }, 'hsm-signer could not start');
    }
    process.exit(1);
  }
}
