/**
 * The composition root: the only file that builds concrete implementations and wires them
 * together. `startService` brings up the token, the store and the services, undoes what stopped
 * replicas left half-done, makes the first-start admin, and listens; `close` undoes it in
 * reverse.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { Server as NetServer, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Express } from 'express';
import { embeddedTokenLockPath, ensureAdminIdentity, prepareEmbeddedSoftHsm } from './bootstrap.js';
import { withFileLockSync } from './file-lock.js';
import { pinReader } from './config/pin.js';
import type { Config } from './config/schema.js';
import { answerClientErrors } from './http/client-error.js';
import { createDeniedSummary } from './http/audit-trail.js';
import { createHttpApp, processHealth } from './http/create-app.js';
import { expressServerClasses, type ServerClasses } from './http/express-prototypes.js';
import { observeRequests } from './http/observe-requests.js';
import { createOpsApp, listenOps } from './http/ops-app.js';
import type { HealthSource } from './http/routes/health.js';
import type { Logger } from './logger.js';
import { refusedRequestsSummary, tokenStateLog, type TokenStateLog } from './log-flood.js';
import { auditEventsPruned, auditPruneOverdue, auditRecordFailures, auditSinkFailures, auditSinkLag, auditStoreEvents, csrThreadFailures, maintenanceLeader, observeAuditWrites, observeCsrThreads, observePool } from './metrics.js';
import { TokenError } from './pkcs11/errors.js';
import { Pkcs11Module } from './pkcs11/module.js';
import { Pkcs11Token } from './pkcs11/token.js';
import { TokenThreadPool } from './pkcs11/token-threads.js';
import { CsrThreadPool } from './pki/csr-threads.js';
import { createCryptoService } from './services/crypto-service.js';
import { createIdentityService } from './services/identity-service.js';
import { createKeyService } from './services/key-service.js';
import { createCaService } from './services/ca-service.js';
import { createCertificateService } from './services/certificate-service.js';
import { createAcmeService } from './services/acme-service.js';
import { resolveMap } from './services/acme-validation.js';
import { createEstService } from './services/est-service.js';
import { createOcspService } from './services/ocsp-service.js';
import { createAuditService } from './services/audit-service.js';
import { createAuditRetention, startAuditUpkeep } from './services/audit-retention.js';
import { createSinkFeeder, sinkDestination } from './services/audit-sink.js';
import { createAuditStore } from './store/audit-store.js';
import { retentionMs } from './config/load.js';
import { destroyOrphanObjects } from './services/orphan-objects.js';
import { liveOwners, startMaintenance, startReplicaPresence, underLease } from './services/leases.js';
import { describeLocation, openStore, storeLocation, type Store } from './store/database.js';
import { createIdentityStore } from './store/identity-store.js';
import { createKeyStore } from './store/key-store.js';
import { createPkiStore } from './store/pki-store.js';
import { createAcmeStore } from './store/acme-store.js';
import { getOrCreateSetting } from './store/settings-store.js';
import { createLeaseStore } from './store/lease-store.js';

/** How often the maintainer replica purges expired tokens and checks CRLs for renewal. */
const MAINTENANCE_INTERVAL_MS = 60_000;

export interface RunningService {
  server: Server;
  /** The Express application the server hands requests to (tests read its routes). */
  app: Express;
  /** http://host:port with the port actually bound. */
  url: string;
  /** The ops listener's http://host:port, when server.opsPort is set. */
  opsUrl?: string;
  /** What /healthz, /readyz and /metrics answer for this process (the cluster primary asks it over IPC). */
  health: HealthSource;
  token: Pkcs11Token;
  /** Starts a new audit sink file at the next write (SIGHUP, after logrotate moved it). */
  reopenAuditSink(): void;
  /**
   * Drains for `delayMs` (default 0; main.ts passes server.shutdownDelayMs on SIGTERM): /readyz
   * fails at once and every answer carries Connection: close, while the listener still accepts.
   * Then stops accepting, lets in-flight requests finish (up to server.shutdownGraceMs), signs
   * the audit head, closes the sessions and finalizes the module. Rejects when a token call was
   * still running at the end of the grace period: the module is then left unfinalized, since
   * finalizing under a running call crashes the process.
   */
  close(options?: {
    delayMs?: number;
    /** After a delay, when the listener has closed: resolves when held requests may go on (a cluster worker waits for the others). */
    afterListenerClosed?: () => Promise<void>;
  }): Promise<void>;
}

/** Thrown when the service cannot start; `message` is meant for the operator. */
export class StartupError extends Error {}

function connectToken(config: Config, logger: Logger, stateLog: TokenStateLog): { module: Pkcs11Module; pool: TokenThreadPool; token: Pkcs11Token } {
  const module = new Pkcs11Module({
    modulePath: config.hsm.modulePath,
    ...(config.hsm.tokenLabel ? { tokenLabel: config.hsm.tokenLabel } : {}),
    ...(config.hsm.tokenSerial ? { tokenSerial: config.hsm.tokenSerial } : {}),
  });
  let readPin!: () => string;
  try {
    const findToken = () => {
      const embedded = config.hsm.embedded ? prepareEmbeddedSoftHsm(config) : undefined;
      readPin = pinReader(config);
      module.initialize();
      if (module.findToken(embedded && { soPin: embedded.soPin, userPin: readPin() })) logger.info({ label: config.hsm.tokenLabel }, 'created the embedded SoftHSM2 token');
    };
    // Replicas and cluster workers starting together on one DATA_DIR would each create a token
    // of the same label; under the lock the first creates it and the others, initializing the
    // module after it, find it. A real HSM's token exists beforehand: no lock needed.
    if (config.hsm.embedded) withFileLockSync(embeddedTokenLockPath(config), findToken);
    else findToken();
    module.login(readPin());
  } catch (error) {
    module.finalize();
    if (error instanceof TokenError && error.errorClass === 'fatal-login') {
      throw new StartupError(`The HSM refused the user PIN (${error.ckr}). Not retrying: repeated attempts can lock the token. Check HSM_PIN / hsm.pinSource.`);
    }
    throw new StartupError(`Cannot use the HSM: ${(error as Error).message}`);
  }
  const pool = new TokenThreadPool(module, {
    size: config.hsm.sessions,
    acquireTimeoutMs: config.hsm.acquireTimeoutMs,
    readPin,
    // One line per state change, the rest summarized (log-flood.ts). After a reconnect the
    // threads look every key up again (their handle caches start empty).
    onDown: (error) => stateLog.onDown(error),
    onRecovered: () => stateLog.onRecovered(),
    onRecoveryFailed: (error) => stateLog.onRecoveryFailed(error),
  });
  pool.open();
  observePool(pool);
  const token = new Pkcs11Token(pool, { keyGenerationTimeoutMs: config.hsm.keyGenerationTimeoutMs });
  return { module, pool, token };
}

/** At the end of a shutdown delay, the listener closes after this long without a new connection or an answer ... */
const LISTENER_QUIET_MS = 50;
/** ... or after this long at most, if traffic never pauses (requests arriving meanwhile wait). */
const LISTENER_HOLD_MAX_MS = 1000;

/** A reconnect the token fails again within this long is the same outage (log-flood.ts). */
const TOKEN_SETTLE_MS = 1000;

export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  // Refused requests and repeated token failures are counted and summarized, never one line each.
  const refusals = refusedRequestsSummary(logger, config.logSummaryIntervalMs);
  const stateLog = tokenStateLog(logger, { intervalMs: config.logSummaryIntervalMs, settleMs: TOKEN_SETTLE_MS, beforeRecoveredLine: () => refusals.flush() });
  const { module, pool, token } = connectToken(config, logger, stateLog);
  const store = await openConfiguredStore(config, logger);
  const orgId = await getOrCreateSetting(store, 'orgId', randomUUID);
  const leases = createLeaseStore(store);
  // Before this replica writes any pending row: the others leave rows of a live writer alone.
  const presence = await startReplicaPresence(leases, logger);
  const identityStore = createIdentityStore(store);
  const identities = createIdentityService({
    identityStore,
    settings: config.auth,
    onRefreshError: (error) => logger.warn({ err: error }, 'refreshing cached access tokens failed; requests read the store instead'),
  });
  // A key deleted (here or by another process) takes its session copies in every token thread with it.
  const keys = createKeyService({ keyStore: createKeyStore(store), token, orgId, logger, onKeyObjectsGone: (objectIds) => token.forgetObjects(objectIds) });
  identities.startRefresh();
  keys.startRefresh();
  const crypto = createCryptoService({ keys, token });
  // The composition root builds the audit trail's store: the service gets its interface, and
  // the writer thread opens the same database (location) on a connection of its own.
  const auditStore = createAuditStore(store);
  const audit = createAuditService({ auditStore, location: store.location, token, logger, signIntervalMs: config.audit.signIntervalMs, onRecordFailure: () => auditRecordFailures.inc() });
  // New certificates are inserted on the audit writer's connection on SQLite (store/row-writer.ts).
  const pkiStore = createPkiStore(store, { rowWriter: audit.rowWriter });

  let publicBaseUrl = config.server.publicBaseUrl?.replace(/\/+$/, '') ?? '';
  const cas = createCaService({ pkiStore, token, publicBaseUrl: () => publicBaseUrl, logger });
  // The CSRs of sign-certificate, EST and ACME are parsed and verified on threads of their own (pki/csr-threads.ts).
  const csrThreads = new CsrThreadPool({
    size: config.pki.csrThreads,
    onThreadFailure: (error) => {
      csrThreadFailures.inc();
      logger.warn({ err: error }, 'a CSR thread failed; starting another');
    },
  });
  observeCsrThreads(csrThreads);
  const certificates = createCertificateService({ pkiStore, cas, csrThreads });
  const ocsp = createOcspService({ pkiStore, cas });
  const est = createEstService({ pkiStore, cas, certificates, csrThreads });
  const acme = createAcmeService({
    acmeStore: createAcmeStore(store),
    certificates,
    pkiStore,
    cas,
    publicBaseUrl: () => publicBaseUrl,
    http01: {
      port: config.acme.http01Port,
      resolve: resolveMap(config.acme.resolve),
      allowPrivateAddresses: config.acme.allowPrivateAddresses,
      timeoutMs: config.acme.validationTimeoutMs,
      attempts: config.acme.validationAttempts,
    },
    logger,
  });

  /** Half-done deletes, and pending creations whose writer is no longer alive; how many rows. */
  const undoAbandonedWork = async () => {
    const isLive = await liveOwners(leases);
    return (await keys.reconcile(isLive)) + (await cas.reconcile(isLive));
  };
  // Under the bootstrap lease, which the first-start bootstrap below holds too: a replica
  // starting at the same moment may be between generating its audit key and saving it, and the
  // orphan sweep must not take that for a crash's leftover. Pending rows of live replicas (keys
  // and CAs being made right now) are told apart by their writer's presence, not by the lease.
  await underLease(leases, 'bootstrap', 60_000, async () => {
    await audit.start();
    const undone = await undoAbandonedWork();
    const orphansDestroyed = await destroyOrphanObjects(token, [...(await keys.objectIds()), ...(await pkiStore.caObjectIds()), ...audit.objectIds()], logger);
    if (undone || orphansDestroyed) logger.warn({ undone, orphansDestroyed }, 'reconciled the store with the token after an interrupted run');
  });
  observeAuditWrites(audit);
  const deniedRequests = createDeniedSummary(audit, { intervalMs: config.audit.deniedSummaryIntervalMs });

  // The audit trail's upkeep (services/audit-retention.ts): sink and pruning, on the
  // maintenance lease holder only; every process reads the sink's state for audit.sinkFailure.
  const feeder = config.audit.sink
    ? createSinkFeeder({ auditStore, destination: sinkDestination(config.audit.sink), logger, onFailure: () => auditSinkFailures.inc() })
    : undefined;
  const auditUpkeep = startAuditUpkeep({
    retention: createAuditRetention({ auditStore, audit, logger, retentionMs: retentionMs(config), maxEvents: config.audit.maxEvents, sink: feeder !== undefined }),
    feeder,
    sinkIntervalMs: config.audit.sinkIntervalMs,
    pruneIntervalMs: config.audit.pruneIntervalMs,
    logger,
    metrics: {
      pruned: (n) => auditEventsPruned.inc(n),
      sinkLag: (n) => auditSinkLag.set(n),
      storeEvents: (n) => auditStoreEvents.set(n),
      overdue: (n) => auditPruneOverdue.set(n),
    },
  });
  let sinkFailing = false;
  const sinkWatch =
    feeder && config.audit.sinkFailure === 'block'
      ? setInterval(() => {
          auditStore.sinkState().then(
            (state) => (sinkFailing = state.failingSince !== null),
            () => undefined,
          );
        }, Math.min(config.audit.sinkIntervalMs, 1000))
      : undefined;
  sinkWatch?.unref();
  let draining = false;
  const app = createHttpApp({
    logger,
    bodyLimitBytes: config.server.bodyLimitBytes,
    identities,
    keys,
    crypto,
    cas,
    certificates,
    ocsp,
    est,
    acme,
    publicBaseUrl: () => publicBaseUrl,
    estClientCertificateHeader: config.server.estClientCertificateHeader ?? undefined,
    audit,
    deniedRequests,
    refusals,
    ...(sinkWatch ? { auditRefuses: () => sinkFailing } : {}),
    token,
    readyTimeoutMs: config.hsm.readyTimeoutMs,
    rateLimit: config.rateLimit,
    trustedProxies: config.server.trustedProxies,
    loginThrottle: config.auth.loginThrottle,
    draining: () => draining,
    alive: () => pool.state !== 'failed',
  });
  // Requests that arrive while the first-start bootstrap below runs wait for it, so nobody
  // sees a listening service whose admin credentials are not written yet.
  let bootstrapped!: () => void;
  const ready = new Promise<void>((resolve) => (bootstrapped = resolve));
  // The answers each connection has in flight (more than one when its client pipelines), so
  // that when draining begins each can still be told to close its keep-alive connection (a
  // connection left open would hold server.close until it times out). Kept per connection:
  // with one set that every answer entered and left, V8's minor collections promoted much of
  // each request's objects (measured: README, "How a request runs"), and a pipelined answer
  // whose connection dropped, which Node never closes, stayed in it for good.
  const answering = new WeakMap<Socket, Set<ServerResponse>>();
  // When each connection was accepted or last began a request: at the end of a shutdown delay,
  // the connections idle since before it began are closed (see close()).
  const lastActive = new Map<Socket, number>();
  // When a connection was last accepted or an answer last ended (close() waits for a pause).
  let lastArrivalOrAnswer = 0;
  // While set, requests wait for it before they start (the moment the listener closes).
  let held: Promise<void> | undefined;
  /** Closing idle connections as each answer ends: only once no request can be on its way (no delay). */
  let closeIdleAfterEachAnswer = false;
  const server = listener(config, expressServerClasses(app), (req, res) => {
    const { socket } = req;
    let answers = answering.get(socket);
    if (!answers) answering.set(socket, (answers = new Set()));
    answers.add(res);
    lastActive.set(socket, Date.now());
    res.once('close', () => {
      answers.delete(res);
      lastArrivalOrAnswer = Date.now();
      if (closeIdleAfterEachAnswer) server.closeIdleConnections();
    });
    void (held ?? ready).then(() => app(req, res));
  });
  server.on('connection', () => (lastArrivalOrAnswer = Date.now()));
  // The TLS socket over HTTPS, which is the one requests see (req.socket).
  server.on(config.server.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    lastActive.set(socket, Date.now());
    socket.once('close', () => lastActive.delete(socket));
  });
  answerClientErrors(server);
  server.listen(config.server.port, config.server.host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const scheme = config.server.tls ? 'https' : 'http';
  const url = `${scheme}://${config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host}:${port}`;
  // Certificates name URLs on the public base; without one configured, the address bound.
  publicBaseUrl ||= url;

  // The ops listener, when configured: plain HTTP, health and metrics only, open until the
  // API port has drained so probes see /readyz fail while it does.
  const health = processHealth({ token, readyTimeoutMs: config.hsm.readyTimeoutMs, draining: () => draining, alive: () => pool.state !== 'failed' });
  let ops: { server: Server; url: string } | undefined;
  if (config.server.opsPort !== null) {
    try {
      ops = await listenOps(createOpsApp(health, { logger, draining: () => draining, observe: observeRequests(logger) }), config.server.host, config.server.opsPort);
    } catch (error) {
      server.close();
      throw new StartupError(`Cannot listen on the ops port ${config.server.opsPort}: ${(error as Error).message}`);
    }
  }

  // After listening, since the demo CAs name the service's own URLs in their extensions.
  // Under a lease, so replicas starting together on an empty store make one admin and one demo PKI.
  const credentialsPath = await underLease(leases, 'bootstrap', 60_000, () => ensureAdminIdentity(config, identities, identityStore, { cas, certificates }));
  if (credentialsPath) logger.info({ path: credentialsPath }, 'created the admin machine identity; its credentials are in this file');
  bootstrapped();

  // One replica at a time runs these for all (services/leases.ts); each is idempotent.
  const maintenance = startMaintenance({
    leases,
    intervalMs: MAINTENANCE_INTERVAL_MS,
    ttlMs: 3 * MAINTENANCE_INTERVAL_MS,
    logger,
    onLeadership: (leading) => {
      maintenanceLeader.set(leading ? 1 : 0);
      auditUpkeep.setLeading(leading);
    },
    duties: [
      {
        // A replica that crashed left pending rows whose presence lease has lapsed since.
        name: 'undo the work of stopped replicas',
        run: async () => {
          const undone = await undoAbandonedWork();
          if (undone) logger.warn({ undone }, 'undid key and CA creations a stopped replica left pending');
        },
      },
      { name: 'purge expired access tokens', run: () => identities.purgeExpiredTokens() },
      { name: 'renew expiring CRLs', run: () => cas.renewExpiringCrls() },
      { name: 'purge expired ACME nonces', run: async () => void (await acme.purgeExpiredNonces()) },
    ],
  });
  // A first round now: the purge and the CRL check need not wait a whole interval after a restart.
  void maintenance.runNow();

  let closing: Promise<void> | undefined;
  return {
    server,
    app,
    url,
    ...(ops ? { opsUrl: ops.url } : {}),
    token,
    health,
    reopenAuditSink() {
      feeder?.reopen();
    },
    close(closeOptions = {}) {
      closing ??= (async () => {
        const delayMs = closeOptions.delayMs ?? 0;
        const drainStartedAt = Date.now();
        draining = true;
        // Every connection with an answer in flight began a request, so it is in lastActive.
        for (const socket of lastActive.keys()) for (const res of answering.get(socket) ?? []) if (!res.headersSent) res.setHeader('Connection', 'close');
        let drained: Promise<void>;
        if (delayMs > 0) {
          // Still accepting and serving, so that a request a client writes on a keep-alive
          // connection now (or a balancer sends before its health check has seen /readyz fail)
          // is answered, with Connection: close, instead of being reset unanswered.
          logger.info({ delayMs }, 'draining: /readyz fails and every answer closes its connection; still accepting until the delay has passed');
          await sleep(delayMs);
          // Closing a listening socket makes the kernel reset the connections it has completed
          // but the process has not accepted yet: requests already written, unanswered. Clients
          // connect again right after each answer, so the listener is closed in a pause: new
          // requests are held (not started), those running finish, and once no connection has
          // arrived and no answer has gone out for LISTENER_QUIET_MS (at most
          // LISTENER_HOLD_MAX_MS) nobody is between an answer and its next connection.
          let release!: () => void;
          held = new Promise<void>((resolve) => (release = resolve));
          const holdStartedAt = Date.now();
          while (Date.now() - lastArrivalOrAnswer < LISTENER_QUIET_MS && Date.now() - holdStartedAt < LISTENER_HOLD_MAX_MS) {
            await sleep(Math.max(1, LISTENER_QUIET_MS - (Date.now() - lastArrivalOrAnswer)));
          }
          // The listener only: http.Server.close would also close every connection without a
          // request in progress, among them connections just accepted whose request is on its
          // way. Each busy connection closes after its answer (Connection: close).
          drained = new Promise<void>((resolve) => NetServer.prototype.close.call(server, () => resolve()));
          // A cluster worker's listener is the primary's socket: closing it tells the primary, over
          // IPC, to stop handing this worker connections, and the primary closes the socket once
          // every worker has. A connection handed over meanwhile is refused by the worker and
          // reset by the primary; so the answers stay held until every worker's listener is
          // closed (main.ts asks the primary), and clients connecting again are refused.
          await closeOptions.afterListenerClosed?.();
          held = undefined;
          release();
          // Connections idle since before the drain began had the whole delay to send: closed
          // now, rather than when their keep-alive timeout runs out.
          for (const [socket, at] of lastActive) if (at < drainStartedAt && !answering.get(socket)?.size) socket.destroy();
          logger.info({ delayMs, heldMs: Date.now() - holdStartedAt }, 'stopped accepting connections; finishing the requests in progress');
        } else {
          // server.close stops accepting and closes idle keep-alive connections; busy ones close
          // after their answer (each carries Connection: close while draining).
          closeIdleAfterEachAnswer = true;
          drained = new Promise<void>((resolve) => server.close(() => resolve()));
        }
        // The lease holder exports what is left once the last checkpoint is signed (below).
        const exportAtEnd = auditUpkeep.leading && feeder !== undefined;
        await maintenance.stop();
        await auditUpkeep.stop();
        clearInterval(sinkWatch);
        identities.stopRefresh();
        keys.stopRefresh();
        // The grace period follows the delay (the pause for closing the listener comes out of it).
        const deadline = drainStartedAt + delayMs + config.server.shutdownGraceMs;
        if (!(await within(drained, deadline))) {
          logger.warn({ graceMs: config.server.shutdownGraceMs }, 'requests still running at the end of the grace period; cutting their connections');
          server.closeAllConnections();
        }
        if (ops) {
          const opsServer = ops.server;
          const opsClosed = new Promise<void>((resolve) => opsServer.close(() => resolve()));
          opsServer.closeAllConnections();
          await opsClosed;
        }
        // The last counts of refused requests and token failures, before the process ends.
        refusals.close();
        stateLog.close();
        // ACME validations still running write their results before the store closes.
        await within(acme.idle(), Math.max(deadline, Date.now() + 1000));
        // Requests are answered or cut by now: nothing waits for a CSR thread.
        await csrThreads.close();
        // Summaries of refused requests go into the chain before its last checkpoint.
        deniedRequests.close();
        await audit.close();
        if (exportAtEnd) {
          try {
            for (let round = 0; round < 100 && (await feeder.round()).more; round++);
          } catch (error) {
            logger.warn({ err: error }, 'could not export the last audit events at shutdown; the next sink feeder will');
          }
        }
        await feeder?.close();
        observeAuditWrites(undefined);
        const poolClosed = pool.close();
        if (!(await within(poolClosed, Math.max(deadline, Date.now() + 1000)))) {
          await store.close();
          throw new Error(`A token call still had not returned after the grace period (${pool.insideModule} token threads still inside the module); exiting without C_Finalize`);
        }
        module.finalize();
        observePool(undefined);
        observeCsrThreads(undefined);
        // Nothing of this replica's is pending any more: the others need not wait out its presence.
        await presence.stop();
        await store.close();
      })();
      return closing;
    },
  };
}

/**
 * The store the configuration names (PostgreSQL with database.url, else SQLite under
 * DATA_DIR), opened and migrated. A failure is a StartupError naming the store without its
 * password (main.ts prints it and exits).
 */
async function openConfiguredStore(config: Config, logger: Logger): Promise<Store> {
  const location = storeLocation(config.database, join(config.dataDir, 'hsm-signer.db'));
  try {
    return await openStore(location, {
      onConnectionError: (error) => logger.warn({ err: error }, 'a database connection failed; the pool replaces it'),
    });
  } catch (error) {
    throw new StartupError(`Cannot open the store ${describeLocation(location)}: ${(error as Error).message}`);
  }
}

/** Resolves true when `promise` settles before `deadline` (epoch ms), false otherwise. */
async function within(promise: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(deadline - Date.now(), 0))));
  try {
    return await Promise.race([promise.then(() => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Plain HTTP, or HTTPS (mutual TLS when a client CA file is configured). */
export function listener(config: Pick<Config, 'server'>, classes: Partial<ServerClasses>, handler: RequestListener<typeof IncomingMessage, typeof ServerResponse>): Server {
  const tls = config.server.tls;
  if (!tls) return createServer(classes, handler);
  try {
    return createHttpsServer(
      {
        ...classes,
        cert: readFileSync(tls.certFile),
        key: readFileSync(tls.keyFile),
        minVersion: 'TLSv1.2',
        ...(tls.clientCaFile
          ? { ca: readFileSync(tls.clientCaFile), requestCert: true, rejectUnauthorized: true }
          : tls.requestClientCertificate
            ? // Asked, not required: the EST service decides which certificates it honours.
              { requestCert: true, rejectUnauthorized: false }
            : {}),
      },
      handler,
    );
  } catch (error) {
    throw new StartupError(`Cannot set up HTTPS: ${(error as Error).message}`);
  }
}
