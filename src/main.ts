/**
 * Entry point: load the configuration, start the service, stop cleanly on SIGTERM/SIGINT.
 *
 * libuv's thread pool runs every asynchronous PKCS#11 call, and it is sized from
 * UV_THREADPOOL_SIZE when it first starts, which happens while Node is still loading modules.
 * So when the variable is not set, this process starts itself again with it set to the
 * twice the session pool's size (room for stuck calls, see below) plus two, and passes signals
 * through.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { loadConfig } from './config/load.js';

const config = loadConfig();
// A hung token can hold 2 x sessions threads (the pool replaces up to `sessions` stuck
// sessions); two more keep scrypt (logins) and file I/O from waiting behind it.
const wantedThreads = String(2 * config.hsm.sessions + 2);

if (process.env.UV_THREADPOOL_SIZE === undefined) {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, UV_THREADPOOL_SIZE: wantedThreads },
  });
  // When a whole process group is signalled (Ctrl-C, systemd) the child already has the signal;
  // passing it on again is harmless, since the child stops once however many it gets.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(code ?? 128 + (signal ? constants.signals[signal] : 1)));
} else {
  const { createLogger } = await import('./logger.js');
  const { startService, StartupError } = await import('./app.js');
  const logger = createLogger(config.logLevel);
  if (Number(process.env.UV_THREADPOOL_SIZE) < config.hsm.sessions) {
    logger.warn({ UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE, sessions: config.hsm.sessions }, 'UV_THREADPOOL_SIZE is smaller than the session pool: sessions will wait for threads');
  }
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
}
