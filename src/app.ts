/**
 * The composition root: the only file that builds concrete implementations and wires them
 * together. `startService` brings up the token, the store and the services, reconciles keys
 * with the token, makes the first-start admin, and listens; `close` undoes it in reverse.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { ensureAdminIdentity, prepareEmbeddedSoftHsm } from './bootstrap.js';
import { pinReader } from './config/pin.js';
import type { Config } from './config/schema.js';
import { createHttpApp } from './http/create-app.js';
import type { Logger } from './logger.js';
import { TokenError } from './pkcs11/errors.js';
import { Pkcs11Module } from './pkcs11/module.js';
import { SessionPool } from './pkcs11/session-pool.js';
import { Pkcs11Token } from './pkcs11/token.js';
import { createCryptoService } from './services/crypto-service.js';
import { createIdentityService } from './services/identity-service.js';
import { createKeyService } from './services/key-service.js';
import { createCaService } from './services/ca-service.js';
import { createCertificateService } from './services/certificate-service.js';
import { destroyOrphanObjects } from './services/orphan-objects.js';
import { openDatabase } from './store/database.js';
import { createSqliteIdentityStore } from './store/identity-store.js';
import { createSqliteKeyStore } from './store/key-store.js';
import { createSqlitePkiStore } from './store/pki-store.js';
import { getOrCreateSetting } from './store/settings-store.js';

export interface RunningService {
  server: Server;
  /** http://host:port with the port actually bound. */
  url: string;
  token: Pkcs11Token;
  close(): Promise<void>;
}

/** Thrown when the service cannot start; `message` is meant for the operator. */
export class StartupError extends Error {}

function connectToken(config: Config, logger: Logger): { module: Pkcs11Module; pool: SessionPool; token: Pkcs11Token } {
  const embedded = config.hsm.embedded ? prepareEmbeddedSoftHsm(config) : undefined;
  const readPin = pinReader(config);
  const module = new Pkcs11Module({
    modulePath: config.hsm.modulePath,
    ...(config.hsm.tokenLabel ? { tokenLabel: config.hsm.tokenLabel } : {}),
    ...(config.hsm.tokenSerial ? { tokenSerial: config.hsm.tokenSerial } : {}),
  });
  try {
    module.initialize();
    if (module.findToken(embedded && { soPin: embedded.soPin, userPin: readPin() })) logger.info({ label: config.hsm.tokenLabel }, 'created the embedded SoftHSM2 token');
    module.login(readPin());
  } catch (error) {
    module.finalize();
    if (error instanceof TokenError && error.errorClass === 'fatal-login') {
      throw new StartupError(`The HSM refused the user PIN (${error.ckr}). Not retrying: repeated attempts can lock the token. Check HSM_PIN / hsm.pinSource.`);
    }
    throw new StartupError(`Cannot use the HSM: ${(error as Error).message}`);
  }
  let token: Pkcs11Token | undefined;
  const pool = new SessionPool(module, {
    size: config.hsm.sessions,
    acquireTimeoutMs: config.hsm.acquireTimeoutMs,
    readPin,
    onDown: (error) => logger.error({ ckr: error.ckr }, 'the HSM failed; answering 503 while reconnecting'),
    onRecovered: () => {
      token?.forgetHandles();
      logger.info('reconnected to the HSM');
    },
    onRecoveryFailed: (error) => logger.warn({ ckr: error.ckr }, 'reconnecting to the HSM failed; will retry'),
  });
  pool.open();
  token = new Pkcs11Token(module, pool);
  return { module, pool, token };
}

export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const { module, pool, token } = connectToken(config, logger);
  const db = openDatabase(config.database.path ?? join(config.dataDir, 'hsm-signer.db'));
  const orgId = getOrCreateSetting(db, 'orgId', randomUUID);
  const identityStore = createSqliteIdentityStore(db);
  const identities = createIdentityService({ identityStore, settings: config.auth });
  const keys = createKeyService({ keyStore: createSqliteKeyStore(db), token, orgId, logger });
  const crypto = createCryptoService({ keys, token });
  const pkiStore = createSqlitePkiStore(db);

  let publicBaseUrl = config.server.publicBaseUrl?.replace(/\/+$/, '') ?? '';
  const cas = createCaService({ pkiStore, token, publicBaseUrl: () => publicBaseUrl, logger });
  const certificates = createCertificateService({ pkiStore, cas });

  const undone = (await keys.reconcile()) + (await cas.reconcile());
  const orphansDestroyed = await destroyOrphanObjects(token, [...(await keys.objectIds()), ...(await pkiStore.caObjectIds())], logger);
  if (undone || orphansDestroyed) logger.warn({ undone, orphansDestroyed }, 'reconciled the store with the token after an interrupted run');
  const app = createHttpApp({ logger, bodyLimitBytes: config.server.bodyLimitBytes, identities, keys, crypto, cas, certificates, token });
  // Requests that arrive while the first-start bootstrap below runs wait for it, so nobody
  // sees a listening service whose admin credentials are not written yet.
  let bootstrapped!: () => void;
  const ready = new Promise<void>((resolve) => (bootstrapped = resolve));
  const server = createServer((req, res) => void ready.then(() => app(req, res)));
  server.listen(config.server.port, config.server.host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host}:${port}`;
  // Certificates name URLs on the public base; without one configured, the address bound.
  publicBaseUrl ||= url;

  // After listening, since the demo CAs name the service's own URLs in their extensions.
  const credentialsPath = await ensureAdminIdentity(config, identities, identityStore, { cas, certificates });
  if (credentialsPath) logger.info({ path: credentialsPath }, 'created the admin machine identity; its credentials are in this file');
  bootstrapped();

  const purge = setInterval(() => void identities.purgeExpiredTokens().catch(() => undefined), 60_000);
  purge.unref();
  const crlRenewal = setInterval(() => void cas.renewExpiringCrls().catch((error: unknown) => logger.warn({ err: error }, 'renewing CRLs failed; will retry')), 3_600_000);
  crlRenewal.unref();

  let closing: Promise<void> | undefined;
  return {
    server,
    url,
    token,
    close() {
      closing ??= (async () => {
        clearInterval(purge);
        clearInterval(crlRenewal);
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await pool.close();
        module.finalize();
        db.close();
      })();
      return closing;
    },
  };
}
