/**
 * The audit trail: events (a hash chain, see services/audit-chain.ts), the signed checkpoints
 * of its head, and the audit key's settings. Events are appended only through
 * createAuditAppender, by the audit writer thread on a connection of its own; the rest is read
 * and written by the service on the main connection. Nothing here ever updates an event; events
 * are deleted only from the start of the chain, by retention (`pruneThrough`), up to a
 * checkpoint it keeps.
 *
 * Rows are compact (migration 008): time in epoch ms, hashes as 32-byte blobs, no outcome (it
 * follows from the status code), no UUID for events written since. toEvent and toEventRow turn
 * them into the logical event the chain hashes (services/audit-chain.ts) and back.
 *
 * Invariant with several writers (threads, processes, replicas) on one store: an append reads
 * the head and inserts after it inside one exclusive section (database.ts `exclusive`): on
 * SQLite a BEGIN IMMEDIATE transaction, which takes the write lock before the read; on
 * PostgreSQL a transaction that first takes the audit advisory lock (pg_advisory_xact_lock),
 * held until it commits. Either way no other writer can append between the read and the
 * inserts, so seq stays gap-free and every event links to the one before it.
 */
import type BetterSqlite3 from 'better-sqlite3';
import { CompiledQuery, sql, type Kysely } from 'kysely';
import { DENIED_STATUS_CODES, outcomeOf } from '../services/audit-chain.js';
import type { Store } from './database.js';
import type { Schema, AuditEventsTable } from './schema.js';

export interface AuditEventRecord {
  seq: number;
  /** The UUID of an event written before migration 008 (hash format v1); null since. */
  id: string | null;
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
  /** Inclusive, ISO 8601 UTC with milliseconds. */
  startTime?: string | undefined;
  /** Exclusive, same form. */
  endTime?: string | undefined;
  identityId?: string | undefined;
  resourceType?: string | undefined;
  resourceId?: string | undefined;
  action?: string | undefined;
  outcome?: 'success' | 'denied' | 'failure' | undefined;
}

/** Where the export to the sink has got to (services/audit-sink.ts). */
export interface AuditSinkState {
  /** Every event up to this seq is written to the sink (0: none yet). */
  exportedSeq: number;
  /** Every checkpoint up to this seq is written to the sink. */
  exportedCheckpointSeq: number;
  /** Epoch ms of the first failed write since the last one that succeeded; null while writes succeed. */
  failingSince: number | null;
  lastError: string | null;
}

export interface AuditStore {
  /** The last event, or undefined for an empty chain. */
  head(): Promise<AuditEventRecord | undefined>;
  /** The first and last seq kept (both 0 for an empty chain); seq is gap-free between them. */
  bounds(): Promise<{ first: number; last: number }>;
  /** The last seq whose time is before `timeMs` (0: none). */
  lastSeqBefore(timeMs: number): Promise<number>;
  /** The highest checkpoint seq at or below `seq` (0: none). */
  checkpointAtOrBelow(seq: number): Promise<number>;
  /** The seq of an `action` event naming `resourceId` after `afterSeq`, if one is stored (retention's own record). */
  findEvent(action: string, resourceId: string, afterSeq: number): Promise<number | undefined>;
  /** Deletes events from..to (inclusive; retention, from the start only); returns how many. */
  deleteEvents(from: number, to: number): Promise<number>;
  /** Deletes checkpoints below `seq` (they sign events no longer kept). */
  deleteCheckpointsBelow(seq: number): Promise<number>;
  /** Up to `limit` events after `afterSeq`, in seq order. */
  eventsAfter(afterSeq: number, limit: number): Promise<AuditEventRecord[]>;
  /** Checkpoints with afterSeq < seq <= uptoSeq, in seq order. */
  checkpointsBetween(afterSeq: number, uptoSeq: number): Promise<AuditCheckpointRecord[]>;
  sinkState(): Promise<AuditSinkState>;
  /**
   * Moves the sink's cursor from `from` to `to` and clears its failure, only if it is still at
   * `from` (another process feeding the sink meanwhile makes this false, and the caller stops).
   */
  advanceSink(from: AuditSinkState, to: { exportedSeq: number; exportedCheckpointSeq: number }): Promise<boolean>;
  /** Records that the sink could not write (keeps the first failure's time). */
  sinkFailed(error: string, atMs: number): Promise<void>;
  /** False when a checkpoint of that seq is already stored (another process signed it first). */
  insertCheckpoint(checkpoint: AuditCheckpointRecord): Promise<boolean>;
  lastCheckpoint(): Promise<AuditCheckpointRecord | undefined>;
  list(query: AuditListQuery): Promise<{ events: AuditEventRecord[]; totalCount: number }>;
  auditKey(): Promise<AuditKeySettings | undefined>;
  /**
   * Written once, after the key exists in the token. Returns the key stored: `key`, or the one
   * another process saved first (then `key` is named by no row, and the orphan sweep removes it).
   */
  saveAuditKey(key: AuditKeySettings): Promise<AuditKeySettings>;
}

/** A row as the store returns it: the table's own shape (schema.ts). */
type EventRow = AuditEventsTable;

const SINK_ROW = 'sink';

interface CheckpointRow {
  seq: number;
  head_hash: string;
  signed_at: string;
  algorithm: string;
  signature: Buffer;
}

/** A row as an event (exported for tests that tamper with rows). */
export const toEvent = (row: EventRow): AuditEventRecord => ({
  seq: row.seq,
  id: row.id,
  time: new Date(row.time).toISOString(),
  reqId: row.req_id,
  identityId: row.identity_id,
  action: row.action,
  resourceType: row.resource_type,
  resourceId: row.resource_id,
  outcome: outcomeOf(row.status_code),
  statusCode: row.status_code,
  clientAddress: row.client_address,
  prevHash: row.prev_hash.toString('hex'),
  hash: row.hash.toString('hex'),
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

async function readSettings(db: Kysely<Schema>): Promise<AuditKeySettings | undefined> {
  const rows = await db.selectFrom('settings').select(['name', 'value']).where('name', 'in', [KEY_OBJECT_ID, PUBLIC_KEY]).execute();
  const value = (name: string) => rows.find((row) => row.name === name)?.value;
  const objectId = value(KEY_OBJECT_ID);
  const publicKey = value(PUBLIC_KEY);
  return objectId && publicKey ? { objectId: Buffer.from(objectId, 'hex'), publicKey: Buffer.from(publicKey, 'base64') } : undefined;
}

async function readHead(db: Kysely<Schema>): Promise<AuditEventRecord | undefined> {
  const row = await db.selectFrom('audit_events').selectAll().orderBy('seq', 'desc').limit(1).executeTakeFirst();
  return row && toEvent(row);
}

export const toEventRow = (event: AuditEventRecord): EventRow => ({
  seq: event.seq,
  time: Date.parse(event.time),
  req_id: event.reqId,
  identity_id: event.identityId,
  action: event.action,
  resource_type: event.resourceType,
  resource_id: event.resourceId,
  status_code: event.statusCode,
  client_address: event.clientAddress,
  prev_hash: Buffer.from(event.prevHash, 'hex'),
  hash: Buffer.from(event.hash, 'hex'),
  id: event.id,
});

/** The columns of an event row, in the order the precompiled INSERTs below bind them. */
const EVENT_COLUMNS = ['seq', 'time', 'req_id', 'identity_id', 'action', 'resource_type', 'resource_id', 'status_code', 'client_address', 'prev_hash', 'hash', 'id'] as const;

/**
 * Rows per multi-row INSERT: one statement (a round trip on PostgreSQL) each, well under either
 * engine's parameter limit (32766 on SQLite, 65535 on PostgreSQL).
 */
const INSERT_ROWS = 64;

/**
 * The INSERT text for `rows` rows, made once per (engine, row count) and run as it is: building
 * each insert through Kysely's query compiler cost the writer thread more than the store's own
 * work (a third of a core at 2,000 requests/s in the benchmark's profile).
 */
const insertTexts = new Map<string, string>();
function insertText(engine: Store['engine'], rows: number): string {
  const cacheKey = `${engine}:${rows}`;
  let text = insertTexts.get(cacheKey);
  if (text === undefined) {
    let parameter = 0;
    const placeholder = () => (engine === 'postgres' ? `$${++parameter}` : '?');
    const tuples = Array.from({ length: rows }, () => `(${EVENT_COLUMNS.map(placeholder).join(', ')})`);
    text = `insert into audit_events (${EVENT_COLUMNS.join(', ')}) values ${tuples.join(', ')}`;
    insertTexts.set(cacheKey, text);
  }
  return text;
}

async function insertEventRows(trx: Kysely<Schema>, engine: Store['engine'], rows: readonly EventRow[]): Promise<void> {
  for (let start = 0; start < rows.length; start += INSERT_ROWS) {
    const chunk = rows.slice(start, start + INSERT_ROWS);
    // At most INSERT_ROWS distinct texts per engine, each prepared once.
    await trx.executeQuery(CompiledQuery.raw(insertText(engine, chunk.length), eventParameters(chunk)));
  }
}

/**
 * The one way events enter the store: `build` gets the stored head (undefined: empty chain) and
 * returns the events that follow it, which are inserted in the same transaction, all or none,
 * inside the audit exclusive section (the lock is taken before the head is read: a plain
 * transaction would read a head another writer may move before this one's first insert, and
 * then fail on the seq). Returns what was inserted.
 */
export function createAuditAppender(store: Store): (build: (head: AuditEventRecord | undefined) => AuditEventRecord[]) => Promise<AuditEventRecord[]> {
  if (store.sqlite) return sqliteAppender(store.sqlite);
  return (build) =>
    store.exclusive('audit', async (trx) => {
      const events = build(await readHead(trx));
      await insertEventRows(trx, store.engine, events.map(toEventRow));
      return events;
    });
}

/**
 * The same append on SQLite, as synchronous better-sqlite3 calls in one BEGIN IMMEDIATE
 * transaction (`.immediate()`: the write lock before the head is read, as `exclusive` takes it):
 * 40 µs of CPU for a batch of three events where the same through Kysely took ten times that,
 * on the writer thread of every request. Only the writer thread appends on its store, so no
 * Kysely transaction of the same connection can be open meanwhile.
 */
function sqliteAppender(raw: BetterSqlite3.Database): (build: (head: AuditEventRecord | undefined) => AuditEventRecord[]) => Promise<AuditEventRecord[]> {
  const head = raw.prepare<[], EventRow>(`select * from audit_events order by seq desc limit 1`);
  const inserts = new Map<number, BetterSqlite3.Statement<unknown[]>>();
  const insert = (rows: number) => {
    let statement = inserts.get(rows);
    if (!statement) inserts.set(rows, (statement = raw.prepare<unknown[]>(insertText('sqlite', rows))));
    return statement;
  };
  const append = raw.transaction((build: (head: AuditEventRecord | undefined) => AuditEventRecord[]) => {
    const stored = head.get();
    const events = build(stored && toEvent(stored));
    const rows = events.map(toEventRow);
    for (let start = 0; start < rows.length; start += INSERT_ROWS) {
      const chunk = rows.slice(start, start + INSERT_ROWS);
      insert(chunk.length).run(eventParameters(chunk));
    }
    return events;
  });
  return async (build) => append.immediate(build);
}

function eventParameters(rows: readonly EventRow[]): unknown[] {
  const parameters: unknown[] = [];
  for (const row of rows) for (const column of EVENT_COLUMNS) parameters.push(row[column]);
  return parameters;
}

const FILTERS = {
  identityId: ['identity_id', '='],
  resourceType: ['resource_type', '='],
  resourceId: ['resource_id', '='],
  action: ['action', '='],
} as const;

export function createAuditStore(store: Store): AuditStore {
  const { db } = store;
  return {
    head: () => readHead(db),
    async insertCheckpoint(checkpoint) {
      const result = await db
        .insertInto('audit_checkpoints')
        .values({ seq: checkpoint.seq, head_hash: checkpoint.headHash, signed_at: checkpoint.signedAt, algorithm: checkpoint.algorithm, signature: checkpoint.signature })
        .onConflict((conflict) => conflict.column('seq').doNothing())
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
    },
    async lastCheckpoint() {
      const row = await db.selectFrom('audit_checkpoints').selectAll().orderBy('seq', 'desc').limit(1).executeTakeFirst();
      return row && toCheckpoint(row);
    },
    async list(query) {
      let filtered = db.selectFrom('audit_events');
      for (const [field, [column, op]] of Object.entries(FILTERS) as Array<[keyof typeof FILTERS, (typeof FILTERS)[keyof typeof FILTERS]]>) {
        const value = query[field];
        if (value !== undefined) filtered = filtered.where(column, op, value);
      }
      if (query.startTime !== undefined) filtered = filtered.where('time', '>=', Date.parse(query.startTime));
      if (query.endTime !== undefined) filtered = filtered.where('time', '<', Date.parse(query.endTime));
      // The outcome is not stored: it is the status codes it stands for (audit-chain.ts outcomeOf).
      if (query.outcome === 'success') filtered = filtered.where('status_code', '<', 400);
      else if (query.outcome === 'denied') filtered = filtered.where('status_code', 'in', [...DENIED_STATUS_CODES]);
      else if (query.outcome === 'failure') filtered = filtered.where('status_code', '>=', 400).where('status_code', 'not in', [...DENIED_STATUS_CODES]);
      // seq order is time order (times never go backwards), and seq is the primary key.
      const rows = await filtered
        .selectAll()
        .orderBy('seq', query.orderDirection === 'asc' ? 'asc' : 'desc')
        .limit(query.limit)
        .offset(query.offset)
        .execute();
      const { count } = await filtered.select((eb) => eb.fn.countAll<number>().as('count')).executeTakeFirstOrThrow();
      return { events: rows.map(toEvent), totalCount: Number(count) };
    },
    async bounds() {
      const row = await db
        .selectFrom('audit_events')
        .select((eb) => [eb.fn.min<number | null>('seq').as('first'), eb.fn.max<number | null>('seq').as('last')])
        .executeTakeFirstOrThrow();
      return { first: Number(row.first ?? 0), last: Number(row.last ?? 0) };
    },
    async lastSeqBefore(timeMs) {
      // Two index lookups rather than one scan of every event before timeMs: the latest time
      // before it, then the last seq at that time (times never decrease along seq).
      const latest = await db.selectFrom('audit_events').select((eb) => eb.fn.max<number | null>('time').as('time')).where('time', '<', timeMs).executeTakeFirstOrThrow();
      if (latest.time === null) return 0;
      const row = await db.selectFrom('audit_events').select((eb) => eb.fn.max<number | null>('seq').as('seq')).where('time', '=', Number(latest.time)).executeTakeFirstOrThrow();
      return Number(row.seq ?? 0);
    },
    async checkpointAtOrBelow(seq) {
      const row = await db.selectFrom('audit_checkpoints').select((eb) => eb.fn.max<number | null>('seq').as('seq')).where('seq', '<=', seq).executeTakeFirstOrThrow();
      return Number(row.seq ?? 0);
    },
    async findEvent(action, resourceId, afterSeq) {
      const row = await db.selectFrom('audit_events').select('seq').where('resource_id', '=', resourceId).where('action', '=', action).where('seq', '>', afterSeq).limit(1).executeTakeFirst();
      return row?.seq;
    },
    async deleteEvents(from, to) {
      const result = await db.deleteFrom('audit_events').where('seq', '>=', from).where('seq', '<=', to).executeTakeFirst();
      return Number(result.numDeletedRows);
    },
    async deleteCheckpointsBelow(seq) {
      const result = await db.deleteFrom('audit_checkpoints').where('seq', '<', seq).executeTakeFirst();
      return Number(result.numDeletedRows);
    },
    async eventsAfter(afterSeq, limit) {
      const rows = await db.selectFrom('audit_events').selectAll().where('seq', '>', afterSeq).orderBy('seq').limit(limit).execute();
      return rows.map(toEvent);
    },
    async checkpointsBetween(afterSeq, uptoSeq) {
      const rows = await db.selectFrom('audit_checkpoints').selectAll().where('seq', '>', afterSeq).where('seq', '<=', uptoSeq).orderBy('seq').execute();
      return rows.map(toCheckpoint);
    },
    async sinkState() {
      const row = await db.selectFrom('audit_sink').selectAll().where('name', '=', SINK_ROW).executeTakeFirst();
      return {
        exportedSeq: row?.exported_seq ?? 0,
        exportedCheckpointSeq: row?.exported_checkpoint_seq ?? 0,
        failingSince: row?.failing_since ?? null,
        lastError: row?.last_error ?? null,
      };
    },
    async advanceSink(from, to) {
      // One statement: insert the first cursor, or move it only from where the caller read it.
      const result = await db
        .insertInto('audit_sink')
        .values({ name: SINK_ROW, exported_seq: to.exportedSeq, exported_checkpoint_seq: to.exportedCheckpointSeq, failing_since: null, last_error: null })
        .onConflict((conflict) =>
          conflict
            .column('name')
            .doUpdateSet({ exported_seq: to.exportedSeq, exported_checkpoint_seq: to.exportedCheckpointSeq, failing_since: null, last_error: null })
            .where('audit_sink.exported_seq', '=', from.exportedSeq)
            .where('audit_sink.exported_checkpoint_seq', '=', from.exportedCheckpointSeq),
        )
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
    },
    async sinkFailed(error, atMs) {
      await db
        .insertInto('audit_sink')
        .values({ name: SINK_ROW, exported_seq: 0, exported_checkpoint_seq: 0, failing_since: atMs, last_error: error })
        .onConflict((conflict) =>
          conflict.column('name').doUpdateSet({ failing_since: sql<number>`coalesce(audit_sink.failing_since, ${atMs})`, last_error: error }),
        )
        .execute();
    },
    auditKey: () => readSettings(db),
    saveAuditKey(key) {
      // Exclusive, so two processes' first starts cannot both find no key and both save one.
      return store.exclusive('audit', async (trx) => {
        const stored = await readSettings(trx);
        if (stored) return stored;
        await trx
          .insertInto('settings')
          .values([
            { name: KEY_OBJECT_ID, value: key.objectId.toString('hex') },
            { name: PUBLIC_KEY, value: key.publicKey.toString('base64') },
          ])
          .execute();
        return key;
      });
    },
  };
}

/** Events per read while the verifier walks the chain: memory stays flat however long it is. */
const VERIFY_PAGE = 1000;

/**
 * The chain as the verifier reads it, from a store that may be read-only: SELECTs only, and
 * events in pages by seq rather than all at once. On a live store whose trail retention prunes,
 * pass a transaction (`withSnapshot`) so every page comes from one snapshot: pages read one by
 * one could see the start deleted between them and report a gap that was never there.
 */
export function readAuditChain(store: Pick<Store, 'db'>): {
  events(): AsyncIterable<AuditEventRecord>;
  checkpoints(): Promise<AuditCheckpointRecord[]>;
  publicKey(): Promise<Buffer | undefined>;
} {
  const { db } = store;
  return {
    async *events() {
      // Keyset pages (seq > last): each page a fresh query, so two passes can be open at once.
      let after = Number.NEGATIVE_INFINITY;
      for (;;) {
        let page = db.selectFrom('audit_events').selectAll().orderBy('seq').limit(VERIFY_PAGE);
        if (after !== Number.NEGATIVE_INFINITY) page = page.where('seq', '>', after);
        const rows = await page.execute();
        for (const row of rows) yield toEvent(row);
        if (rows.length < VERIFY_PAGE) return;
        after = rows.at(-1)!.seq;
      }
    },
    checkpoints: async () => (await db.selectFrom('audit_checkpoints').selectAll().orderBy('seq').execute()).map(toCheckpoint),
    publicKey: async () => (await readSettings(db))?.publicKey,
  };
}

/**
 * Runs `read` in one read transaction (a snapshot: SQLite's deferred BEGIN in WAL mode,
 * PostgreSQL's REPEATABLE READ), so a long read sees the store as it was when it began.
 */
export function withSnapshot<T>(store: Store, read: (snapshot: Pick<Store, 'db'>) => Promise<T>): Promise<T> {
  const transaction = store.engine === 'postgres' ? store.db.transaction().setIsolationLevel('repeatable read') : store.db.transaction();
  return transaction.execute((trx) => read({ db: trx }));
}
