/**
 * The audit trail: events (a hash chain, see services/audit-chain.ts), the signed checkpoints
 * of its head, and the audit key's settings. Events are appended only through
 * createAuditAppender, by the audit writer thread on a connection of its own; the rest is read
 * and written by the service on the main connection. Nothing here ever updates or deletes an
 * event.
 *
 * Invariant with several writers (threads or processes) on one file: an append reads the head
 * and inserts after it inside one BEGIN IMMEDIATE transaction, which takes SQLite's write lock
 * before the read, so no other writer can append between the two and seq stays gap-free.
 */
import type { Db } from './database.js';

export interface AuditEventRecord {
  seq: number;
  id: string;
  /** ISO 8601 with milliseconds, UTC; never earlier than the previous event's. */
  time: string;
  reqId: string;
  identityId: string | null;
  action: string;
  resourceType: string | null;
  resourceId: string | null;
  outcome: string;
  statusCode: number;
  clientAddress: string | null;
  /** Hex SHA-256 of the previous event (64 zeros for seq 1). */
  prevHash: string;
  hash: string;
}

export interface AuditCheckpointRecord {
  /** The seq of the head event signed. */
  seq: number;
  headHash: string;
  signedAt: string;
  algorithm: string;
  /** DER ECDSA signature over services/audit-chain.ts checkpointMessage. */
  signature: Buffer;
}

export interface AuditKeySettings {
  /** CKA_ID of the audit key pair in the token. */
  objectId: Buffer;
  /** DER SubjectPublicKeyInfo. */
  publicKey: Buffer;
}

export interface AuditListQuery {
  offset: number;
  limit: number;
  orderDirection: 'asc' | 'desc';
  /** Inclusive, ISO 8601 UTC with milliseconds (the form events are stored in). */
  startTime?: string | undefined;
  /** Exclusive, same form. */
  endTime?: string | undefined;
  identityId?: string | undefined;
  resourceType?: string | undefined;
  resourceId?: string | undefined;
  action?: string | undefined;
  outcome?: string | undefined;
}

export interface AuditStore {
  /** The last event, or undefined for an empty chain. */
  head(): AuditEventRecord | undefined;
  /** False when a checkpoint of that seq is already stored (another process signed it first). */
  insertCheckpoint(checkpoint: AuditCheckpointRecord): boolean;
  lastCheckpoint(): AuditCheckpointRecord | undefined;
  list(query: AuditListQuery): Promise<{ events: AuditEventRecord[]; totalCount: number }>;
  auditKey(): AuditKeySettings | undefined;
  /**
   * Written once, after the key exists in the token. Returns the key stored: `key`, or the one
   * another process saved first (then `key` is named by no row, and the orphan sweep removes it).
   */
  saveAuditKey(key: AuditKeySettings): AuditKeySettings;
}

interface EventRow {
  seq: number;
  id: string;
  time: string;
  req_id: string;
  identity_id: string | null;
  action: string;
  resource_type: string | null;
  resource_id: string | null;
  outcome: string;
  status_code: number;
  client_address: string | null;
  prev_hash: string;
  hash: string;
}

interface CheckpointRow {
  seq: number;
  head_hash: string;
  signed_at: string;
  algorithm: string;
  signature: Buffer;
}

const toEvent = (row: EventRow): AuditEventRecord => ({
  seq: row.seq,
  id: row.id,
  time: row.time,
  reqId: row.req_id,
  identityId: row.identity_id,
  action: row.action,
  resourceType: row.resource_type,
  resourceId: row.resource_id,
  outcome: row.outcome,
  statusCode: row.status_code,
  clientAddress: row.client_address,
  prevHash: row.prev_hash,
  hash: row.hash,
});

const toCheckpoint = (row: CheckpointRow): AuditCheckpointRecord => ({
  seq: row.seq,
  headHash: row.head_hash,
  signedAt: row.signed_at,
  algorithm: row.algorithm,
  signature: row.signature,
});

const KEY_OBJECT_ID = 'auditKeyObjectId';
const PUBLIC_KEY = 'auditPublicKey';

const FILTERS: Array<[keyof AuditListQuery, string]> = [
  ['startTime', 'time >= @startTime'],
  ['endTime', 'time < @endTime'],
  ['identityId', 'identity_id = @identityId'],
  ['resourceType', 'resource_type = @resourceType'],
  ['resourceId', 'resource_id = @resourceId'],
  ['action', 'action = @action'],
  ['outcome', 'outcome = @outcome'],
];

function readSettings(db: Db): AuditKeySettings | undefined {
  const rows = db.prepare<[string, string], { name: string; value: string }>('SELECT name, value FROM settings WHERE name IN (?, ?)').all(KEY_OBJECT_ID, PUBLIC_KEY);
  const value = (name: string) => rows.find((row) => row.name === name)?.value;
  const objectId = value(KEY_OBJECT_ID);
  const publicKey = value(PUBLIC_KEY);
  return objectId && publicKey ? { objectId: Buffer.from(objectId, 'hex'), publicKey: Buffer.from(publicKey, 'base64') } : undefined;
}

const HEAD_SQL = `SELECT * FROM audit_events ORDER BY seq DESC LIMIT 1`;

/**
 * The one way events enter the store: `build` gets the stored head (undefined: empty chain) and
 * returns the events that follow it, which are inserted in the same transaction, all or none.
 * Returns what was inserted.
 */
export function createAuditAppender(db: Db): (build: (head: AuditEventRecord | undefined) => AuditEventRecord[]) => AuditEventRecord[] {
  const head = db.prepare<[], EventRow>(HEAD_SQL);
  const insert = db.prepare(
    `INSERT INTO audit_events (seq, id, time, req_id, identity_id, action, resource_type, resource_id, outcome, status_code, client_address, prev_hash, hash)
     VALUES (@seq, @id, @time, @reqId, @identityId, @action, @resourceType, @resourceId, @outcome, @statusCode, @clientAddress, @prevHash, @hash)`,
  );
  const append = db.transaction((build: (head: AuditEventRecord | undefined) => AuditEventRecord[]) => {
    const row = head.get();
    const events = build(row && toEvent(row));
    for (const event of events) insert.run(event);
    return events;
  });
  // IMMEDIATE: the write lock before the head is read (a DEFERRED transaction would read a head
  // another writer may move before this one's first insert, and then fail on the seq).
  return (build) => append.immediate(build);
}

export function createSqliteAuditStore(db: Db): AuditStore {
  const statements = {
    head: db.prepare<[], EventRow>(HEAD_SQL),
    insertCheckpoint: db.prepare(
      `INSERT INTO audit_checkpoints (seq, head_hash, signed_at, algorithm, signature) VALUES (@seq, @headHash, @signedAt, @algorithm, @signature)
       ON CONFLICT (seq) DO NOTHING`,
    ),
    lastCheckpoint: db.prepare<[], CheckpointRow>(`SELECT * FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`),
    saveSetting: db.prepare(`INSERT INTO settings (name, value) VALUES (?, ?)`),
  };

  return {
    head() {
      const row = statements.head.get();
      return row && toEvent(row);
    },
    insertCheckpoint(checkpoint) {
      return statements.insertCheckpoint.run(checkpoint).changes === 1;
    },
    lastCheckpoint() {
      const row = statements.lastCheckpoint.get();
      return row && toCheckpoint(row);
    },
    async list(query) {
      const where: string[] = [];
      const params: Record<string, unknown> = { limit: query.limit, offset: query.offset };
      for (const [field, clause] of FILTERS) {
        if (query[field] === undefined) continue;
        where.push(clause);
        params[field] = query[field];
      }
      const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
      // seq order is time order (times never go backwards), and seq is the primary key.
      const direction = query.orderDirection === 'asc' ? 'ASC' : 'DESC';
      const rows = db.prepare<Record<string, unknown>, EventRow>(`SELECT * FROM audit_events ${clause} ORDER BY seq ${direction} LIMIT @limit OFFSET @offset`).all(params);
      const { count } = db.prepare<Record<string, unknown>, { count: number }>(`SELECT COUNT(*) AS count FROM audit_events ${clause}`).get(params)!;
      return { events: rows.map(toEvent), totalCount: count };
    },
    auditKey() {
      return readSettings(db);
    },
    saveAuditKey(key) {
      // IMMEDIATE, so two processes' first starts cannot both find no key and both save one.
      return db
        .transaction(() => {
          const stored = readSettings(db);
          if (stored) return stored;
          statements.saveSetting.run(KEY_OBJECT_ID, key.objectId.toString('hex'));
          statements.saveSetting.run(PUBLIC_KEY, key.publicKey.toString('base64'));
          return key;
        })
        .immediate();
    },
  };
}

/**
 * The chain as the verifier reads it, from a handle that may be read-only: it prepares only
 * SELECTs and streams events rather than loading them all.
 */
export function readAuditChain(db: Db): {
  events(): Iterable<AuditEventRecord>;
  checkpoints(): AuditCheckpointRecord[];
  publicKey(): Buffer | undefined;
} {
  const eventsSql = `SELECT * FROM audit_events ORDER BY seq`;
  const checkpoints = db.prepare<[], CheckpointRow>(`SELECT * FROM audit_checkpoints ORDER BY seq`);
  return {
    *events() {
      // A statement of its own per pass: the verifier reads again while a first pass is open.
      for (const row of db.prepare<[], EventRow>(eventsSql).iterate()) yield toEvent(row);
    },
    checkpoints: () => checkpoints.all().map(toCheckpoint),
    publicKey: () => readSettings(db)?.publicKey,
  };
}
