/**
 * Entry point: load the configuration, start the service, stop cleanly on SIGTERM/SIGINT.
 * Token calls run on token threads of their own (src/pkcs11/token-threads.ts), not on libuv's
 * thread pool, so libuv keeps its default size for scrypt (logins) and file I/O.
 */
import { loadConfig } from './config/load.js';
import { createLogger } from './logger.js';
import { startService, StartupError } from './app.js';

const config = loadConfig();
const logger = createLogger(config.logLevel);
try {
  const service = await startService(config, logger);
  logger.info({ url: service.url, sessions: config.hsm.sessions }, 'hsm-signer is listening');
  const stop = (signal: string) => {
    logger.info({ signal }, 'stopping');
    service.close().then(
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
} catch (error) {
  if (error instanceof StartupError) {
    logger.fatal(error.message);
    console.error(`hsm-signer: ${error.message}`);
  } else {
    logger.fatal({ err: error }, 'hsm-signer could not start');
  }
  process.exit(1);
}
