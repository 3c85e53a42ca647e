/**
 * The audit writer: a worker thread (started by audit-service.ts through spawn-worker.ts) that
 * owns a connection of its own to the store and appends the events the main thread posts.
 *
 * Every batch that arrives while a write is not running joins the next one: the events of the
 * messages of one turn of this thread become one transaction that reads the stored head and
 * chains them onto it (audit-chain.ts chainEvents), hashing here rather than on the main thread.
 * The transaction holds the store's audit lock from before that read (BEGIN IMMEDIATE on SQLite,
 * pg_advisory_xact_lock on PostgreSQL; store/audit-store.ts createAuditAppender), so any number
 * of writers, in this process, in others, on other replicas, extend one chain. Writes run one
 * at a time and messages are handled in the order posted, so a `flush` answered after writing
 * the queue covers every event posted before it. A batch that fails is reported, not retried
 * (the store has already had busy_timeout / lock_timeout to answer, and the batches behind it
 * must not wait on one the store refuses), and the connection is reopened for the next, in case
 * the failure was the connection's.
 *
 * It also inserts the rows the request path hands it (store/row-writer.ts: new certificates, on
 * SQLite): those that arrive together go into one BEGIN IMMEDIATE transaction of their own,
 * after the events' one, so that a failed audit append never fails a row; each INSERT runs on its
 * own (a refused row, a duplicate say, fails alone: SQLite undoes only that statement), and one
 * message answers them all.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type BetterSqlite3 from 'better-sqlite3';
import { createAuditAppender } from '../store/audit-store.js';
import { openStore, type Store } from '../store/database.js';
import { chainEvents, type UnchainedEvent } from './audit-chain.js';
import { ROW_WRITER_TABLES } from '../store/row-writer.js';
import { SETTLED, unpackEvents, WRITTEN, type AuditWriterData, type FromWriter, type PackedEvents, type RowInsert, type ToWriter, type WriterError } from './audit-writer-protocol.js';

const data = workerData as AuditWriterData;
const port = parentPort!;
const settled = new BigInt64Array(data.settled);

let store: Store | undefined;
let append: ReturnType<typeof createAuditAppender> | undefined;
let queued: PackedEvents[] = [];
let queuedRows: RowInsert[] = [];
const insertStatements = new Map<string, BetterSqlite3.Statement<unknown[]>>();
let writeScheduled = false;
/** The writes, flushes and the close, one after another in the order their messages came. */
let tail: Promise<void> = Promise.resolve();

function serially(task: () => Promise<void>): void {
  tail = tail.then(task).catch(() => undefined);
}

async function open(): Promise<ReturnType<typeof createAuditAppender>> {
  if (append) return append;
  // The service opened the store and migrated it before starting this thread; one connection
  // is all a writer that writes one batch at a time uses.
  store = await openStore(data.location, { migrate: false, busyTimeoutMs: data.busyTimeoutMs, poolSize: 1 });
  append = createAuditAppender(store);
  return append;
}

async function closeStore(): Promise<void> {
  const current = store;
  append = undefined;
  store = undefined;
  // Prepared on the connection being closed: the next one prepares its own.
  insertStatements.clear();
  try {
    await current?.close();
  } catch {
    // Already unusable; a fresh connection is what comes next either way.
  }
}

function post(message: FromWriter): void {
  port.postMessage(message);
}

function writerError(error: unknown): WriterError {
  const { name, message, code } = error as { name?: string; message?: string; code?: unknown };
  return { name: String(name ?? 'Error'), message: String(message ?? error), ...(typeof code === 'string' ? { code } : {}) };
}

/** Buffers cross threads as Uint8Array, which better-sqlite3 does not bind. */
const bindable = (value: unknown) => (value instanceof Uint8Array && !Buffer.isBuffer(value) ? Buffer.from(value.buffer, value.byteOffset, value.byteLength) : value);

async function insertQueuedRows(): Promise<void> {
  if (queuedRows.length === 0) return;
  const rows = queuedRows;
  queuedRows = [];
  const results: Array<{ id: number; error?: WriterError }> = [];
  try {
    await open();
    const raw = store?.sqlite;
    if (!raw) throw new Error('rows are handed to the writer thread on SQLite only');
    const insertAll = raw.transaction(() => {
      for (const row of rows) {
        try {
          if (!(ROW_WRITER_TABLES as readonly string[]).includes(row.table)) throw new Error(`no rows are inserted into ${row.table} here`);
          const text = `insert into ${row.table} (${row.columns.join(', ')}) values (${row.columns.map(() => '?').join(', ')})`;
          let statement = insertStatements.get(text);
          if (!statement) insertStatements.set(text, (statement = raw.prepare<unknown[]>(text)));
          statement.run(row.values.map(bindable));
          results.push({ id: row.id });
        } catch (error) {
          // SQLite ended the whole transaction (a full disk, an I/O error), not just this
          // statement: the rows after it would be committed one by one outside it, so stop.
          if (!raw.inTransaction) throw error;
          results.push({ id: row.id, error: writerError(error) });
        }
      }
    });
    insertAll.immediate();
  } catch (error) {
    // The transaction itself failed (the write lock not granted, the commit refused): no row is in.
    const failure = writerError(error);
    results.length = 0;
    for (const row of rows) results.push({ id: row.id, error: failure });
    await closeStore();
  }
  post({ type: 'inserted', results });
}

async function writeQueued(): Promise<void> {
  writeScheduled = false;
  if (queued.length === 0) return;
  const events: UnchainedEvent[] = [];
  for (const batch of queued) unpackEvents(batch, events);
  queued = [];
  if (events.length === 0) return;
  try {
    await (await open())((head) => chainEvents(head, events));
    Atomics.add(settled, WRITTEN, BigInt(events.length));
  } catch (error) {
    post({ type: 'failed', events: events.length, firstReqId: events[0]!.reqId, error: writerError(error) });
    await closeStore();
  } finally {
    Atomics.add(settled, SETTLED, BigInt(events.length));
  }
}

/** Everything that arrives before this runs (and while the write before it runs) joins it. */
function scheduleWrite(): void {
  if (writeScheduled) return;
  writeScheduled = true;
  setImmediate(() =>
    serially(async () => {
      await writeQueued();
      await insertQueuedRows();
    }),
  );
}

port.on('message', (message: ToWriter) => {
  switch (message.type) {
    case 'batch':
      if (message.events.length > 0) queued.push(message.events);
      for (const row of message.rows) queuedRows.push(row);
      scheduleWrite();
      return;
    case 'flush':
      serially(async () => {
        await writeQueued();
        await insertQueuedRows();
        post({ type: 'flushed', id: message.id });
      });
      return;
    case 'close':
      serially(async () => {
        await writeQueued();
        await insertQueuedRows();
        await closeStore();
        port.close();
      });
      return;
  }
});
