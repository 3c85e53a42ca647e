/**
 * What the audit service (main thread) and its writer thread (audit-writer.ts) say to each other.
 * Events travel as one flat array of primitives per batch, FIELDS_PER_EVENT values each: the
 * structured clone of a flat array costs the main thread far less than one of an object per
 * event, and the main thread is what this split exists to spare.
 */
import type { StoreLocation } from '../store/database.js';
import type { RowWriterTable } from '../store/row-writer.js';
import type { UnchainedEvent } from './audit-chain.js';

export const FIELDS_PER_EVENT = 8;

/** Slots of AuditWriterData.settled. */
export const SETTLED = 0;
export const WRITTEN = 1;

export type PackedEvents = Array<string | number | null>;

export interface AuditWriterData {
  /** The store the service opened (for PostgreSQL, its URL: workerData is not logged). */
  location: StoreLocation;
  busyTimeoutMs: number;
  /**
   * Two BigInt64s the writer raises: [SETTLED] by the events it has finished with (written or
   * failed), so that if the thread dies the service can count the events lost with it, and
   * [WRITTEN] by those committed (a metric), without a message per batch.
   */
  settled: SharedArrayBuffer;
}

/** One row to insert (store/row-writer.ts); the `inserted` answer names it by `id`. */
export interface RowInsert {
  id: number;
  table: RowWriterTable;
  columns: readonly string[];
  values: unknown[];
}

export type ToWriter =
  /**
   * What the main thread hands over in one message (audit-service.ts postBatch): the events
   * recorded since the last one, in order, and the rows handed over since. One message for
   * all rather than one per row or event: a message that wakes a sleeping thread costs the two
   * threads about 20 µs of CPU together (measured on a 2-core VM), more than structured-cloning
   * a few rows.
   */
  | { type: 'batch'; events: PackedEvents; rows: RowInsert[] }
  /** Answer `flushed` once every event posted before this message is written or has failed. */
  | { type: 'flush'; id: number }
  /** Write what is queued, close the database and end the thread. */
  | { type: 'close' };

export interface WriterError {
  name: string;
  message: string;
  code?: string;
}

export type FromWriter =
  | { type: 'flushed'; id: number }
  /** The rows of `batch` messages, each committed (no error) or refused. */
  | { type: 'inserted'; results: Array<{ id: number; error?: WriterError }> }
  /** A batch that could not be appended: none of its events are in the store. */
  | { type: 'failed'; events: number; firstReqId: string; error: WriterError };

export function packEvent(into: PackedEvents, event: UnchainedEvent): void {
  into.push(event.timeMs, event.reqId, event.identityId, event.action, event.resourceType, event.resourceId, event.statusCode, event.clientAddress);
}

export function unpackEvents(packed: PackedEvents, into: UnchainedEvent[]): void {
  for (let i = 0; i + FIELDS_PER_EVENT <= packed.length; i += FIELDS_PER_EVENT) {
    into.push({
      timeMs: packed[i] as number,
      reqId: packed[i + 1] as string,
      identityId: packed[i + 2] as string | null,
      action: packed[i + 3] as string,
      resourceType: packed[i + 4] as string | null,
      resourceId: packed[i + 5] as string | null,
      statusCode: packed[i + 6] as number,
      clientAddress: packed[i + 7] as string | null,
    });
  }
}
