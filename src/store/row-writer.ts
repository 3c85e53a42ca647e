/**
 * Inserting a row on another connection: the audit writer thread's (services/audit-writer.ts),
 * for the one row the request path writes on SQLite, a new certificate. better-sqlite3 is
 * synchronous, so an INSERT on the main connection stops the event loop for its whole run,
 * including any wait for the write lock while the writer thread commits audit events (SQLite
 * waits out busy_timeout by sleeping); on the writer thread the event loop only posts the row
 * and is told when it is committed, and rows that arrive together share one transaction.
 *
 * The promise resolves once the row is committed, rejects with the store's error (its `code`
 * kept, so a unique violation is still told apart), or with RowWriterUnavailable when the row
 * was never handed over (no writer right now): then the caller inserts it itself. A writer that
 * dies with the row in hand rejects with a 503 (services/audit-service.ts): whether it was
 * committed is unknown, so the caller must not insert it again.
 */
export type RowWriter = (table: RowWriterTable, columns: readonly string[], values: unknown[]) => Promise<void>;

/** The tables a RowWriter inserts into (names are never taken from a request). */
export const ROW_WRITER_TABLES = ['certificates'] as const;
export type RowWriterTable = (typeof ROW_WRITER_TABLES)[number];

export class RowWriterUnavailable extends Error {
  constructor(why: string) {
    super(`The row was not handed to the writer thread: ${why}`);
    this.name = 'RowWriterUnavailable';
  }
}
