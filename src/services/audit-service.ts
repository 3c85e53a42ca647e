/**
 * The audit trail: every authenticated operation and every login appends one event to a hash
 * chain (audit-chain.ts) in the store, and the chain's head is signed now and then by an audit
 * key that lives in the token (EC P-256, sensitive, never extractable).
 *
 * The main thread only collects. record() packs the event's fields and the time into a batch,
 * posted as one message to the writer thread (audit-writer.ts) about EVENT_POST_DELAY_MS later
 * (with any certificate rows handed over meanwhile, which go at the end of their turn); the
 * writer numbers, hashes and stores each batch in one transaction that reads the stored head
 * under the store's audit lock (SQLite: BEGIN IMMEDIATE, the write lock; PostgreSQL:
 * pg_advisory_xact_lock). That is what keeps several writers right (another service
 * in this process, other processes and replicas on the same store): each batch
 * goes after whatever any writer committed before it, on one chain without gaps or forks, and
 * no process keeps a head in memory that another could make stale.
 *
 * Guarantees (the README's "Audit log" says the same to operators):
 * - Recorded: when the response has gone out (its 'close'); posted to the writer about
 *   EVENT_POST_DELAY_MS later (a timer: later while the event loop is busy).
 * - Durable: committed by the writer's first transaction after the batch arrives, typically
 *   within a few milliseconds of the response. No hard time bound: the writer needs the CPU, and
 *   waits for another writer's lock up to busy_timeout (SQLite) or lock_timeout (PostgreSQL),
 *   5 s, after which that batch fails as below. On SQLite committed means in the WAL: it
 *   survives a crash of the process; a power cut may roll back the last commits before it
 *   (synchronous=NORMAL, as for everything in the store). On PostgreSQL it means what the
 *   server's durability settings make of a COMMIT.
 * - A crash loses what was recorded but not committed: the batch still gathering and the ones
 *   queued behind the transaction in progress (normally milliseconds of traffic; up to
 *   busy_timeout's worth while another writer holds the lock). Events lost with a dead writer thread are
 *   counted as failures, and so are batches in the second before a new writer starts; a
 *   process crash counts nothing.
 * - Order: seq order is commit order, and time never decreases along seq: an event's time is
 *   when it was recorded, raised to the previous event's when that is later (a clock stepped
 *   back, or another writer committed a later event first).
 * - A store failure is logged, counted (recordFailures, and onRecordFailure for the metric
 *   hsm_signer_audit_record_failures_total) and never fails a request: recording runs on a
 *   response's 'close', where there is nobody to tell. The next batch goes on from the stored
 *   head.
 * - Reads and signing first flush: a round trip to the writer that returns once every event this
 *   process recorded before it is committed or has failed. Signing then reads the head from the
 *   store, signs it and inserts the checkpoint, so it only ever signs what is stored; a head
 *   already signed, by any process, is not signed again. Graceful shutdown (close) drains the
 *   writer, signs the head and only then ends the writer.
 * Signing never holds up recording: it runs on a timer, and a token that is down only delays the
 * next checkpoint.
 */
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import type { Worker } from 'node:worker_threads';
import type { KeySpec } from '../algorithms.js';
import { badRequest, permissionDenied, serviceUnavailable } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Token } from '../pkcs11/token.js';
import { spawnWorker } from '../spawn-worker.js';
import type { StoreLocation } from '../store/database.js';
import { RowWriterUnavailable, type RowWriter } from '../store/row-writer.js';
import type { AuditEventRecord, AuditKeySettings, AuditListQuery, AuditStore } from '../store/audit-store.js';
import { CHECKPOINT_ALGORITHM, checkpointMessage, type AuditOutcome } from './audit-chain.js';
import { FIELDS_PER_EVENT, packEvent, SETTLED, WRITTEN, type AuditWriterData, type FromWriter, type PackedEvents, type RowInsert, type ToWriter } from './audit-writer-protocol.js';
import { signMessageDer } from './token-signature.js';
import { OBJECT_LABEL_PREFIX } from './orphan-objects.js';
import type { Principal } from './permissions.js';

export type AuditResourceType = 'key' | 'ca' | 'profile' | 'certificate' | 'identity' | 'audit' | 'acme-account' | 'acme-order';
export type { AuditOutcome } from './audit-chain.js';

export interface AuditEventInput {
  reqId: string;
  /** The acting identity; for a login, the identity the clientId names (null when none does). */
  identityId: string | null;
  /** A fixed name such as `kms.key.encrypt` or `auth.login`. */
  action: string;
  resourceType: AuditResourceType | null;
  resourceId: string | null;
  /** Its outcome follows from it (audit-chain.ts outcomeOf). */
  statusCode: number;
  clientAddress: string | null;
}

/** One event as GET /api/v1/audit-logs shows it, hashes included so anyone can re-check them. */
export interface AuditEventView extends AuditEventInput {
  seq: number;
  /** Only events written before the compact format (migration 008) have one; seq names an event. */
  id: string | null;
  outcome: AuditOutcome;
  time: string;
  prevHash: string;
  hash: string;
}

export type AuditListInput = AuditListQuery;

export interface AuditService {
  /** Records one event now; the writer thread chains and stores it about EVENT_POST_DELAY_MS later. */
  record(event: AuditEventInput): void;
  /** Resolves once every event recorded so far is stored or has failed; never rejects. */
  flush(): Promise<void>;
  /** Makes the audit key in the token on first start, then signs the head every interval. */
  start(): Promise<void>;
  /** CKA_ID of the audit key, which the orphan sweep must keep. */
  objectIds(): Buffer[];
  /** Signs the head now if it moved since the last checkpoint; rejects when the token fails. */
  signHead(): Promise<void>;
  /** Stops the timer, drains the writer, signs the head one last time, ends the writer; never rejects. */
  close(): Promise<void>;
  /** Pages through events, newest first by default; admins only. */
  list(principal: Principal, query: AuditListInput): Promise<{ auditLogs: AuditEventView[]; totalCount: number }>;
  /** Appends that failed since start (each one also logged at error level). */
  readonly recordFailures: number;
  /** Events this process's writer threads committed since start. */
  readonly eventsWritten: number;
  /**
   * Inserts rows on the writer thread's connection (store/row-writer.ts); on SQLite only, where
   * an insert on the main connection would stop the event loop. Undefined on PostgreSQL.
   */
  readonly rowWriter: RowWriter | undefined;
}

const AUDIT_KEY_LABEL = `${OBJECT_LABEL_PREFIX}audit-checkpoints`;
const AUDIT_KEY_SPEC: KeySpec = { kind: 'ec', curve: 'P-256' };

/** Reading the trail is an admin's business: `*` actions on project `*`. */
function isAdmin(principal: Principal): boolean {
  return principal.permissions.some((entry) => entry.projectId === '*' && entry.actions.includes('*'));
}

/** The stored form (ISO, UTC, milliseconds), so time filters compare as strings. */
function storedTime(value: string | undefined, name: string): string | undefined {
  if (value === undefined) return undefined;
  const ms = Date.parse(value);
  if (!Number.isFinite(ms)) throw badRequest(`${name} is not a valid date-time`);
  return new Date(ms).toISOString();
}

const toView = (event: AuditEventRecord): AuditEventView => ({
  ...event,
  resourceType: event.resourceType as AuditResourceType | null,
  outcome: event.outcome as AuditOutcome,
});

/** The wait for another writer's lock, as the main connection's (store/database.ts). */
const DEFAULT_BUSY_TIMEOUT_MS = 5000;
/**
 * How long recorded events may wait to be posted to the writer, and how many may gather before
 * they go at the end of the turn. Each message wakes the writer thread, which costs the two threads about 20 µs
 * of CPU on a small VM, and each batch is a transaction (a commit and the pages it writes); at a
 * few thousand requests a second, 5 ms makes one of each per ten or more events instead of one
 * per event-loop turn (one or two events). It is also how much more traffic a crash may lose.
 */
const EVENT_POST_DELAY_MS = 5;
const EVENT_POST_MAX = 256;
/** After a writer thread died, how long batches are counted as failed before another starts. */
const WRITER_RESTART_DELAY_MS = 1000;

interface Writer {
  worker: Worker;
  /** Events the writer has written or failed (raised by the writer; see audit-writer-protocol.ts). */
  settled: BigInt64Array;
  posted: number;
  flushes: Map<number, () => void>;
  /** Rows handed over and not answered yet (store/row-writer.ts). */
  inserts: Map<number, { resolve: () => void; reject: (error: Error) => void }>;
  exited: Promise<void>;
}

export function createAuditService(deps: {
  /** Reads of the trail (head, checkpoints, list) and the audit key's settings. */
  auditStore: AuditStore;
  /** Where the store is: the writer thread opens it on a connection of its own to append. */
  location: StoreLocation;
  token: Pick<Token, 'generateKey' | 'signDigest'>;
  logger: Logger;
  signIntervalMs: number;
  /** Called after each failed append (for a metric); must not throw. */
  onRecordFailure?: (error: unknown) => void;
  /** How long the writer waits for another writer's lock before that batch fails (default 5 s). */
  busyTimeoutMs?: number;
}): AuditService {
  const { token, logger } = deps;
  const { location } = deps;
  if (location.engine === 'sqlite' && (location.path === ':memory:' || location.path === '')) {
    throw new Error('The audit trail needs a database file: its writer thread opens the file on a connection of its own');
  }
  const busyTimeoutMs = deps.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const store = deps.auditStore;

  /** Read from the store by start(). */
  let auditKey: AuditKeySettings | undefined;
  let timer: NodeJS.Timeout | undefined;
  let signing: Promise<void> = Promise.resolve();
  let closing: Promise<void> | undefined;
  let failures = 0;
  let writer: Writer | undefined;
  /** Set once the writer was told to close: nothing more can be stored. */
  let writerClosed = false;
  /** A writer that keeps dying must not be restarted for every batch. */
  let writerRestartAt = 0;
  let batch: PackedEvents = [];
  /** A post at the end of this turn (a row is waiting), or one after EVENT_POST_DELAY_MS. */
  let postNow: NodeJS.Immediate | undefined;
  let postLater: NodeJS.Timeout | undefined;
  let lastFlushId = 0;
  let writtenByEndedWriters = 0;

  function countFailures(events: number, error: unknown, firstReqId: unknown, message: string): void {
    failures += events;
    // The count and the first request id only: the fields hold no secrets, but a log line needs no more.
    logger.error({ err: error, events, reqId: firstReqId }, message);
    for (let i = 0; i < events; i++) {
      try {
        deps.onRecordFailure?.(error);
      } catch {
        // A metric must not turn into an exception here.
      }
    }
  }

  function startWriter(): Writer {
    const settledBuffer = new SharedArrayBuffer(2 * BigInt64Array.BYTES_PER_ELEMENT);
    const workerData: AuditWriterData = { location, busyTimeoutMs, settled: settledBuffer };
    const worker = spawnWorker(import.meta.url, 'audit-writer', { workerData, name: 'audit-writer' });
    // Idle, the writer must not keep the process alive; a flush or close holds it (ref) meanwhile.
    worker.unref();
    let exited!: () => void;
    const started: Writer = { worker, settled: new BigInt64Array(settledBuffer), posted: 0, flushes: new Map(), inserts: new Map(), exited: new Promise((resolve) => (exited = resolve)) };
    worker.on('message', (message: FromWriter) => {
      if (message.type === 'flushed') {
        started.flushes.get(message.id)?.();
        return;
      }
      if (message.type === 'inserted') {
        for (const { id, error } of message.results) {
          const pending = started.inserts.get(id);
          started.inserts.delete(id);
          if (error) pending?.reject(Object.assign(new Error(error.message), { name: error.name }, error.code ? { code: error.code } : {}));
          else pending?.resolve();
        }
        // Once closing, the thread stays held until it has ended (closeWriter).
        if (!writerClosed && started.inserts.size === 0 && started.flushes.size === 0) worker.unref();
        return;
      }
      const error = Object.assign(new Error(message.error.message), { name: message.error.name }, message.error.code ? { code: message.error.code } : {});
      countFailures(message.events, error, message.firstReqId, 'could not append audit events');
    });
    worker.on('error', (error) => logger.error({ err: error }, 'the audit writer thread failed'));
    worker.on('exit', () => {
      if (writer === started) writer = undefined;
      if (!writerClosed) writerRestartAt = Date.now() + WRITER_RESTART_DELAY_MS;
      writtenByEndedWriters += Number(Atomics.load(started.settled, WRITTEN));
      const lost = started.posted - Number(Atomics.load(started.settled, SETTLED));
      if (lost > 0) countFailures(lost, new Error('the audit writer thread ended before storing them'), undefined, 'audit events lost with the writer thread');
      for (const resolve of [...started.flushes.values()]) resolve();
      for (const { reject } of started.inserts.values()) reject(serviceUnavailable('The store did not confirm the write (its writer thread ended); try again'));
      started.inserts.clear();
      exited();
    });
    return started;
  }

  /**
   * Posts the events and rows gathered since the last post to the writer in one message
   * (starting a writer if there is none). Rows that cannot be handed over are rejected with
   * RowWriterUnavailable, so their callers insert them themselves; events that cannot be are
   * counted as failures. They share the message, so a row's values must be structured-cloneable
   * (strings, numbers, Buffers, null: pki-store's toRow), or the events would fail with it.
   */
  function postBatch(): void {
    clearImmediate(postNow);
    clearTimeout(postLater);
    postNow = undefined;
    postLater = undefined;
    const events = batch;
    const rows = pendingRows;
    if (events.length === 0 && rows.length === 0) return;
    batch = [];
    pendingRows = [];
    const count = events.length / FIELDS_PER_EVENT;
    const refuse = (why: string, eventsMessage: string): void => {
      if (count > 0) countFailures(count, new Error(why), events[1], eventsMessage);
      for (const row of rows) row.reject(new RowWriterUnavailable(why));
    };
    if (writerClosed) return refuse('the audit service is closed', 'audit events recorded after the audit service closed');
    if (!writer && Date.now() < writerRestartAt) return refuse('the audit writer thread died less than a second ago', 'audit events dropped while the writer thread restarts');
    let current: Writer;
    try {
      current = writer ??= startWriter();
    } catch (error) {
      return refuse(String((error as Error)?.message ?? error), 'could not hand audit events to the writer thread');
    }
    if (rows.length > 0) {
      // Held (ref) while a row is in hand, as for a flush.
      if (current.inserts.size === 0) current.worker.ref();
      for (const row of rows) current.inserts.set(row.id, row);
    }
    try {
      const message: ToWriter = { type: 'batch', events, rows: rows.map(({ id, table, columns, values }) => ({ id, table, columns, values })) };
      current.worker.postMessage(message);
      current.posted += count;
    } catch (error) {
      for (const row of rows) current.inserts.delete(row.id);
      if (current.inserts.size === 0 && current.flushes.size === 0 && !writerClosed) current.worker.unref();
      refuse(String((error as Error)?.message ?? error), 'could not hand audit events to the writer thread');
    }
  }

  /**
   * Rows go at the end of this turn: their requests wait for them. Events alone wait for a
   * timer of EVENT_POST_DELAY_MS (or for the end of the turn in which EVENT_POST_MAX have
   * gathered), so that one message, one wake-up of the writer and one transaction carry the
   * events of many requests.
   */
  function schedulePost(rowWaiting: boolean): void {
    if (postNow) return;
    if (rowWaiting || batch.length >= EVENT_POST_MAX * FIELDS_PER_EVENT) {
      postNow = setImmediate(postBatch);
      return;
    }
    postLater ??= setTimeout(postBatch, EVENT_POST_DELAY_MS);
  }

  let lastInsertId = 0;
  /** Rows handed to rowWriter this turn, posted at its end with the events gathered so far. */
  let pendingRows: Array<RowInsert & { resolve: () => void; reject: (error: Error) => void }> = [];
  const rowWriter: RowWriter | undefined =
    location.engine !== 'sqlite'
      ? undefined
      : (table, columns, values) =>
          // postBatch refuses the row at the end of this turn if no writer can take it.
          new Promise<void>((resolve, reject) => {
            pendingRows.push({ id: ++lastInsertId, table, columns, values, resolve, reject });
            schedulePost(true);
          });

  function flush(): Promise<void> {
    postBatch();
    const current = writer;
    // No writer: nothing was ever posted, or what was is counted as lost already.
    if (!current) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const id = ++lastFlushId;
      if (current.flushes.size === 0) current.worker.ref();
      current.flushes.set(id, () => {
        current.flushes.delete(id);
        if (!writerClosed && current.flushes.size === 0 && current.inserts.size === 0) current.worker.unref();
        resolve();
      });
      current.worker.postMessage({ type: 'flush', id } satisfies ToWriter);
    });
  }

  async function closeWriter(): Promise<void> {
    postBatch();
    writerClosed = true;
    const current = writer;
    if (!current) return;
    current.worker.ref();
    current.worker.postMessage({ type: 'close' } satisfies ToWriter);
    await current.exited;
  }

  async function signNow(): Promise<void> {
    const key = auditKey;
    if (!key) throw new Error('The audit service has not started: there is no audit key yet');
    await flush();
    // The head as stored, whoever wrote it: a checkpoint must name an event that exists.
    const head = await store.head();
    if (!head || ((await store.lastCheckpoint())?.seq ?? 0) >= head.seq) return;
    const { seq, hash } = head;
    const signedAt = new Date().toISOString();
    const message = checkpointMessage(seq, hash, signedAt);
    const signature = await signMessageDer(token, key.objectId, 'ecdsa', 'sha256', message);
    // A checkpoint nobody can verify is worse than none: it would read as tampering later.
    if (!verify('sha256', message, createPublicKey({ key: key.publicKey, format: 'der', type: 'spki' }), signature)) {
      throw new Error('The audit key in the token does not match the public key in the settings');
    }
    // Another process may have signed this head meanwhile; its checkpoint serves as well.
    await store.insertCheckpoint({ seq, headHash: hash, signedAt, algorithm: CHECKPOINT_ALGORITHM, signature });
  }

  function signHead(): Promise<void> {
    // One signing at a time, so two callers never write two checkpoints for one head.
    const run = signing.then(signNow);
    signing = run.catch(() => undefined);
    return run;
  }

  return {
    record(event) {
      packEvent(batch, {
        timeMs: Date.now(),
        reqId: event.reqId,
        identityId: event.identityId ?? null,
        action: event.action,
        resourceType: event.resourceType ?? null,
        resourceId: event.resourceId ?? null,
        statusCode: event.statusCode,
        clientAddress: event.clientAddress ?? null,
      });
      schedulePost(false);
    },

    async start() {
      auditKey ??= await store.auditKey();
      if (!auditKey) {
        const objectId = randomBytes(16);
        const { publicKeySpki } = await token.generateKey(objectId, AUDIT_KEY_LABEL, AUDIT_KEY_SPEC);
        if (!publicKeySpki) throw new Error('The token returned no public key for the audit key');
        // Only now that the key exists: a crash before this line leaves an object no row names,
        // which the orphan sweep destroys at the next start.
        auditKey = await store.saveAuditKey({ objectId, publicKey: publicKeySpki });
        if (auditKey.objectId.equals(objectId)) logger.info({ objectId: objectId.toString('hex') }, 'generated the audit checkpoint key in the token');
        else logger.info({ objectId: auditKey.objectId.toString('hex') }, 'another process saved its audit checkpoint key first; using that one');
      }
      if (timer || closing) return;
      timer = setInterval(() => {
        signHead().catch((error: unknown) => logger.warn({ err: error }, 'signing the audit chain head failed; will retry'));
      }, deps.signIntervalMs);
      timer.unref();
    },

    flush,
    rowWriter,

    objectIds() {
      return auditKey ? [auditKey.objectId] : [];
    },

    signHead,

    close() {
      closing ??= (async () => {
        clearInterval(timer);
        timer = undefined;
        await flush();
        if (auditKey) {
          try {
            await signHead();
          } catch (error) {
            logger.warn({ err: error, seq: await safeHeadSeq() }, 'could not sign the audit chain head at shutdown; events after the last checkpoint stay unsigned until the next one');
          }
        }
        await closeWriter();
      })();
      return closing;
    },

    async list(principal, query) {
      if (!isAdmin(principal)) throw permissionDenied('read audit logs', '*');
      await flush();
      const { events, totalCount } = await store.list({
        ...query,
        startTime: storedTime(query.startTime, 'startTime'),
        endTime: storedTime(query.endTime, 'endTime'),
      });
      return { auditLogs: events.map(toView), totalCount };
    },

    get recordFailures() {
      return failures;
    },

    get eventsWritten() {
      return writtenByEndedWriters + (writer ? Number(Atomics.load(writer.settled, WRITTEN)) : 0);
    },
  };

  async function safeHeadSeq(): Promise<number | undefined> {
    try {
      return (await store.head())?.seq;
    } catch {
      return undefined;
    }
  }
}
