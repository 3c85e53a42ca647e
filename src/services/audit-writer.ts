/**
 * The audit writer: a worker thread (started by audit-service.ts through spawn-worker.ts) that
 * owns a connection of its own to the store and appends the events the main thread posts.
 *
 * Every batch that arrives while a write is not running joins the next one: the messages of one
 * turn of this thread become one transaction that reads the stored head and chains the events
 * onto it (audit-chain.ts chainEvents), hashing here rather than on the main thread. The
 * transaction holds the store's audit lock from before that read (BEGIN IMMEDIATE on SQLite,
 * pg_advisory_xact_lock on PostgreSQL; store/audit-store.ts createAuditAppender), so any number
 * of writers, in this process, in others, on other replicas, extend one chain. Writes run one
 * at a time and messages are handled in the order posted, so a `flush` answered after writing
 * the queue covers every event posted before it. A batch that fails is reported, not retried
 * (the store has already had busy_timeout / lock_timeout to answer, and the batches behind it
 * must not wait on one the store refuses), and the connection is reopened for the next, in case
 * the failure was the connection's.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createAuditAppender } from '../store/audit-store.js';
import { openStore, type Store } from '../store/database.js';
import { chainEvents, type UnchainedEvent } from './audit-chain.js';
import { SETTLED, unpackEvents, WRITTEN, type AuditWriterData, type FromWriter, type PackedEvents, type ToWriter } from './audit-writer-protocol.js';

const data = workerData as AuditWriterData;
const port = parentPort!;
const settled = new BigInt64Array(data.settled);

let store: Store | undefined;
let append: ReturnType<typeof createAuditAppender> | undefined;
let queued: PackedEvents[] = [];
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
  try {
    await current?.close();
  } catch {
    // Already unusable; a fresh connection is what comes next either way.
  }
}

function post(message: FromWriter): void {
  port.postMessage(message);
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
    const { name, message, code } = error as { name?: string; message?: string; code?: unknown };
    post({
      type: 'failed',
      events: events.length,
      firstReqId: events[0]!.reqId,
      error: { name: String(name ?? 'Error'), message: String(message ?? error), ...(typeof code === 'string' ? { code } : {}) },
    });
    await closeStore();
  } finally {
    Atomics.add(settled, SETTLED, BigInt(events.length));
  }
}

port.on('message', (message: ToWriter) => {
  switch (message.type) {
    case 'append':
      queued.push(message.events);
      if (!writeScheduled) {
        writeScheduled = true;
        // Everything that arrives before this runs (and while the write before it runs) joins it.
        setImmediate(() => serially(writeQueued));
      }
      return;
    case 'flush':
      serially(async () => {
        await writeQueued();
        post({ type: 'flushed', id: message.id });
      });
      return;
    case 'close':
      serially(async () => {
        await writeQueued();
        await closeStore();
        port.close();
      });
      return;
  }
});
