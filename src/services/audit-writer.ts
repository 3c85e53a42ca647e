/**
 * The audit writer: a worker thread (started by audit-service.ts through spawn-worker.ts) that
 * owns a connection of its own to the store and appends the events the main thread posts.
 *
 * Every batch that arrives while a write is not running joins the next one: the messages of one
 * turn of this thread become one BEGIN IMMEDIATE transaction that reads the stored head and
 * chains the events onto it (audit-chain.ts chainEvents), hashing here rather than on the main
 * thread. Because the head is read under the write lock, any number of writers, in this process
 * or others, extend one chain. Messages are handled in the order posted, so a `flush` answered
 * after writing the queue covers every event posted before it. A batch that fails is reported,
 * not retried (the store has already had busy_timeout to answer, and the batches behind it must
 * not wait on one the store refuses), and the connection is reopened for the next, in case the
 * failure was the connection's.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { createAuditAppender } from '../store/audit-store.js';
import type { Db } from '../store/database.js';
import { chainEvents, type UnchainedEvent } from './audit-chain.js';
import { unpackEvents, type AuditWriterData, type FromWriter, type PackedEvents, type ToWriter } from './audit-writer-protocol.js';

const data = workerData as AuditWriterData;
const port = parentPort!;
const settled = new BigInt64Array(data.settled);

let db: Db | undefined;
let append: ReturnType<typeof createAuditAppender> | undefined;
let queued: PackedEvents[] = [];
let writeScheduled = false;

function open(): ReturnType<typeof createAuditAppender> {
  if (append) return append;
  // The service opened the file and migrated it before starting this thread.
  db = new Database(data.databasePath, { fileMustExist: true });
  db.pragma(`busy_timeout = ${data.busyTimeoutMs}`);
  db.pragma('synchronous = NORMAL');
  append = createAuditAppender(db);
  return append;
}

function closeDb(): void {
  append = undefined;
  try {
    db?.close();
  } catch {
    // Already unusable; a fresh connection is what comes next either way.
  }
  db = undefined;
}

function post(message: FromWriter): void {
  port.postMessage(message);
}

function writeQueued(): void {
  writeScheduled = false;
  if (queued.length === 0) return;
  const events: UnchainedEvent[] = [];
  for (const batch of queued) unpackEvents(batch, events);
  queued = [];
  if (events.length === 0) return;
  try {
    open()((head) => chainEvents(head, events));
  } catch (error) {
    const { name, message, code } = error as { name?: string; message?: string; code?: unknown };
    post({
      type: 'failed',
      events: events.length,
      firstReqId: events[0]!.reqId,
      error: { name: String(name ?? 'Error'), message: String(message ?? error), ...(typeof code === 'string' ? { code } : {}) },
    });
    closeDb();
  } finally {
    Atomics.add(settled, 0, BigInt(events.length));
  }
}

port.on('message', (message: ToWriter) => {
  switch (message.type) {
    case 'append':
      queued.push(message.events);
      if (!writeScheduled) {
        writeScheduled = true;
        setImmediate(writeQueued);
      }
      return;
    case 'flush':
      writeQueued();
      post({ type: 'flushed', id: message.id });
      return;
    case 'close':
      writeQueued();
      closeDb();
      port.close();
      return;
  }
});
