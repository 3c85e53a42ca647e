/**
 * The audit trail: every authenticated operation and every login appends one event to a hash
 * chain (audit-chain.ts) in the store, and the chain's head is signed now and then by an
 * audit key that lives in the token (EC P-256, sensitive, never extractable).
 *
 * Invariants: this process is the only writer, so the head (last seq, hash and time) is kept
 * in memory and each event gets seq = last + 1 and its hash at once, in record(); the events
 * of one event-loop turn are then written in one transaction (setImmediate): one commit per
 * event cost ~80 us of main thread, more than the signature the event records. An event is
 * recorded when its response has gone out, so the turn's delay opens no new window of loss.
 * Everything that reads or signs the chain writes the pending events first. Times never go
 * backwards (a clock stepped back repeats the last time), so seq order is time order.
 * Recording never throws: it runs on a response's 'finish', where there is nobody to tell, so
 * a failed append is logged and counted. Signing never holds up recording: it runs on a timer,
 * and a token that is down only delays the next checkpoint.
 */
import { createHash, createPublicKey, randomBytes, randomUUID, verify } from 'node:crypto';
import type { KeySpec } from '../algorithms.js';
import { badRequest, permissionDenied } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Token } from '../pkcs11/token.js';
import type { Db } from '../store/database.js';
import { createSqliteAuditStore, type AuditEventRecord, type AuditKeySettings, type AuditListQuery } from '../store/audit-store.js';
import { CHECKPOINT_ALGORITHM, GENESIS_HASH, checkpointMessage, eventHash, type ChainedEvent } from './audit-chain.js';
import { ecdsaRawToDer } from './kms-encoding.js';
import { OBJECT_LABEL_PREFIX } from './orphan-objects.js';
import type { Principal } from './permissions.js';

export type AuditResourceType = 'key' | 'ca' | 'profile' | 'certificate' | 'identity' | 'audit';
export type AuditOutcome = 'success' | 'denied' | 'failure';

export interface AuditEventInput {
  reqId: string;
  /** The acting identity; for a login, the identity the clientId names (null when none does). */
  identityId: string | null;
  /** A fixed name such as `kms.key.encrypt` or `auth.login`. */
  action: string;
  resourceType: AuditResourceType | null;
  resourceId: string | null;
  /** success (2xx), denied (401/403/429), failure (anything else). */
  outcome: AuditOutcome;
  statusCode: number;
  clientAddress: string | null;
}

/** One event as GET /api/v1/audit-logs shows it, hashes included so anyone can re-check them. */
export interface AuditEventView extends AuditEventInput {
  seq: number;
  id: string;
  time: string;
  prevHash: string;
  hash: string;
}

export type AuditListInput = AuditListQuery;

export interface AuditService {
  /** Adds one event to the chain now; it reaches the store at the end of this event-loop turn. */
  record(event: AuditEventInput): void;
  /** Writes the events recorded so far to the store now (reads and signing do this first). */
  flush(): void;
  /** Makes the audit key in the token on first start, then signs the head every interval. */
  start(): Promise<void>;
  /** CKA_ID of the audit key, which the orphan sweep must keep. */
  objectIds(): Buffer[];
  /** Signs the head now if it moved since the last checkpoint; rejects when the token fails. */
  signHead(): Promise<void>;
  /** Stops the timer and signs the head one last time; never rejects. */
  close(): Promise<void>;
  /** Pages through events, newest first by default; admins only. */
  list(principal: Principal, query: AuditListInput): Promise<{ auditLogs: AuditEventView[]; totalCount: number }>;
  /** Appends that failed since start (each one also logged at error level). */
  readonly recordFailures: number;
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

interface Head {
  seq: number;
  hash: string;
  timeMs: number;
}

export function createAuditService(deps: {
  db: Db;
  token: Pick<Token, 'generateKey' | 'signDigest'>;
  logger: Logger;
  signIntervalMs: number;
  /** Called after each failed append (for a metric); must not throw. */
  onRecordFailure?: (error: unknown) => void;
}): AuditService {
  const { token, logger } = deps;
  const store = createSqliteAuditStore(deps.db);

  const loadHead = (): Head => {
    const last = store.head();
    if (!last) return { seq: 0, hash: GENESIS_HASH, timeMs: 0 };
    const timeMs = Date.parse(last.time);
    return { seq: last.seq, hash: last.hash, timeMs: Number.isFinite(timeMs) ? timeMs : 0 };
  };

  let head = loadHead();
  let lastSignedSeq = store.lastCheckpoint()?.seq ?? 0;
  let auditKey: AuditKeySettings | undefined = store.auditKey();
  let timer: NodeJS.Timeout | undefined;
  let signing: Promise<void> = Promise.resolve();
  let closing: Promise<void> | undefined;
  let failures = 0;
  let pending: Array<ChainedEvent & { hash: string }> = [];
  let flushScheduled = false;

  function flush(): void {
    flushScheduled = false;
    if (pending.length === 0) return;
    const events = pending;
    pending = [];
    try {
      store.append(events);
    } catch (error) {
      failures += events.length;
      // The events' names only: their fields hold no secrets, but a log line needs no more.
      logger.error({ err: error, events: events.length, firstSeq: events[0]!.seq, reqId: events[0]!.reqId }, 'could not append audit events');
      try {
        // Whatever the store holds now is the head the next append must follow.
        head = loadHead();
      } catch {
        // The store is gone (closed, disk failing); the next append will say so again.
      }
      for (let i = 0; i < events.length; i++) {
        try {
          deps.onRecordFailure?.(error);
        } catch {
          // A metric must not turn into an exception here.
        }
      }
    }
  }

  async function signNow(): Promise<void> {
    const key = auditKey;
    if (!key) throw new Error('The audit service has not started: there is no audit key yet');
    flush();
    const { seq, hash } = head;
    if (seq === 0 || seq === lastSignedSeq) return;
    const signedAt = new Date().toISOString();
    const message = checkpointMessage(seq, hash, signedAt);
    const raw = await token.signDigest(key.objectId, 'ecdsa', 'sha256', createHash('sha256').update(message).digest());
    const signature = ecdsaRawToDer(raw);
    // A checkpoint nobody can verify is worse than none: it would read as tampering later.
    if (!verify('sha256', message, createPublicKey({ key: key.publicKey, format: 'der', type: 'spki' }), signature)) {
      throw new Error('The audit key in the token does not match the public key in the settings');
    }
    store.insertCheckpoint({ seq, headHash: hash, signedAt, algorithm: CHECKPOINT_ALGORITHM, signature });
    lastSignedSeq = seq;
  }

  function signHead(): Promise<void> {
    // One signing at a time, so two callers never write two checkpoints for one head.
    const run = signing.then(signNow);
    signing = run.catch(() => undefined);
    return run;
  }

  return {
    record(event) {
      const timeMs = Math.max(Date.now(), head.timeMs);
      const fields: ChainedEvent = {
        seq: head.seq + 1,
        id: randomUUID(),
        time: new Date(timeMs).toISOString(),
        reqId: event.reqId,
        identityId: event.identityId ?? null,
        action: event.action,
        resourceType: event.resourceType ?? null,
        resourceId: event.resourceId ?? null,
        outcome: event.outcome,
        statusCode: event.statusCode,
        clientAddress: event.clientAddress ?? null,
        prevHash: head.hash,
      };
      const hash = eventHash(fields);
      pending.push({ ...fields, hash });
      head = { seq: fields.seq, hash, timeMs };
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    },

    async start() {
      if (!auditKey) {
        const objectId = randomBytes(16);
        const { publicKeySpki } = await token.generateKey(objectId, AUDIT_KEY_LABEL, AUDIT_KEY_SPEC);
        if (!publicKeySpki) throw new Error('The token returned no public key for the audit key');
        // Only now that the key exists: a crash before this line leaves an object no row names,
        // which the orphan sweep destroys at the next start.
        store.saveAuditKey({ objectId, publicKey: publicKeySpki });
        auditKey = { objectId, publicKey: publicKeySpki };
        logger.info({ objectId: objectId.toString('hex') }, 'generated the audit checkpoint key in the token');
      }
      if (timer || closing) return;
      timer = setInterval(() => {
        signHead().catch((error: unknown) => logger.warn({ err: error }, 'signing the audit chain head failed; will retry'));
      }, deps.signIntervalMs);
      timer.unref();
    },

    flush,

    objectIds() {
      return auditKey ? [auditKey.objectId] : [];
    },

    signHead,

    close() {
      closing ??= (async () => {
        clearInterval(timer);
        timer = undefined;
        flush();
        if (!auditKey) return;
        try {
          await signHead();
        } catch (error) {
          logger.warn({ err: error, seq: head.seq }, 'could not sign the audit chain head at shutdown; events after the last checkpoint stay unsigned until the next one');
        }
      })();
      return closing;
    },

    async list(principal, query) {
      if (!isAdmin(principal)) throw permissionDenied('read audit logs', '*');
      flush();
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
  };
}
