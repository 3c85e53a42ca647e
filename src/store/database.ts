/**
 * The store: one SQLite file (the default, nothing to set up) or one PostgreSQL database that
 * identical replicas share. Either way it is opened here, migrated here under a lock, and handed
 * to every *-store.ts as a `Store`: a Kysely instance, the engine, and close(). Queries are
 * written once with Kysely; the few places where the engines truly differ (locks, the
 * migration SQL) switch on `engine`.
 *
 * What the engines must agree on, and how:
 * - Integers: epoch milliseconds and counters are BIGINT on PostgreSQL, which pg returns as
 *   strings by default; this pool parses them to numbers (refusing any beyond 2^53), as
 *   better-sqlite3 gives them. BYTEA comes back as a Buffer, as a BLOB does.
 * - Exclusive sections (`exclusive`): SQLite's BEGIN IMMEDIATE takes the database's one write
 *   lock before the first read; PostgreSQL takes a transaction-scoped advisory lock
 *   (pg_advisory_xact_lock) named after the section. Either way a read-then-write inside is
 *   not interleaved with the same section in any other connection or process.
 * - Secrets: the connection URL's password never appears in an error this module throws or in a
 *   description of the store (errors from pg are scrubbed of it before they leave).
 *
 * One SQLite store per thread per file: better-sqlite3 waits for a lock synchronously (up to
 * busy_timeout), so a second connection in the same thread whose transaction overlaps the
 * first's, now that transactions span awaits, would block the very thread the first needs to
 * commit. The service keeps to that (one store on the main thread, one in each audit writer
 * thread); within one store Kysely runs one query or transaction at a time.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql, type SqliteDatabase, type SqliteStatement } from 'kysely';
import pg from 'pg';
import type { Schema } from './schema.js';

export type Engine = 'sqlite' | 'postgres';

/** Where the store is; enough for another thread (the audit writer) to open it too. */
export type StoreLocation = { engine: 'sqlite'; path: string } | { engine: 'postgres'; url: string };

/** Sections that must not interleave across connections and processes (see `exclusive`). */
export type LockName = 'audit';

export interface Store {
  readonly db: Kysely<Schema>;
  readonly engine: Engine;
  readonly location: StoreLocation;
  /**
   * SQLite only: the connection itself, for the one path where Kysely's per-query work cost more
   * than SQLite's (the audit writer's appends, store/audit-store.ts). Synchronous calls on it
   * must not overlap a Kysely transaction of the same store (one connection).
   */
  readonly sqlite?: BetterSqlite3.Database;
  /**
   * Runs `fn` in a transaction that holds `lock` from its start: BEGIN IMMEDIATE on SQLite (the
   * write lock, whatever the name), BEGIN + pg_advisory_xact_lock on PostgreSQL. Committed when
   * `fn` resolves, rolled back when it throws. Use only `trx` inside: on SQLite the store has
   * one connection, and a query on `db` there would wait for this section to end.
   */
  exclusive<T>(lock: LockName, fn: (trx: Kysely<Schema>) => Promise<T>): Promise<T>;
  /**
   * Runs `fn` in a read-write transaction without a named lock: BEGIN IMMEDIATE on SQLite (the
   * write lock from the start, so a read followed by a write never fails upgrading its lock
   * when another process wrote in between), plain BEGIN (read committed) on PostgreSQL, where
   * `fn` takes the row locks its decision rests on (an UPDATE of the row first). Use only `trx`
   * inside, as for `exclusive`.
   */
  write<T>(fn: (trx: Kysely<Schema>) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Apply pending migrations (default true). The audit writer and the verifier skip it. */
  migrate?: boolean;
  /** SQLite busy_timeout, PostgreSQL lock_timeout: how long to wait for another's lock (ms). */
  busyTimeoutMs?: number;
  /** PostgreSQL connections in the pool (default 10). */
  poolSize?: number;
  /** SQLite: open read-only, and the file must exist (the verifier). */
  readonly?: boolean;
  /** An idle PostgreSQL connection failed (the server restarted, say); the pool replaces it. */
  onConnectionError?: (error: Error) => void;
}

// The SQL lives under src/ both for tsx and for the compiled dist/ (tsc copies no .sql), so the
// path is relative to this file's directory two levels up: src/store or dist/store.
const MIGRATIONS_DIR = fileURLToPath(new URL('../../src/store/migrations/', import.meta.url));

const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/**
 * PostgreSQL advisory lock keys (one 64-bit space per database, shared with anything else
 * using it, hence numbers unlikely to collide: "hsms" in ASCII, then a small tag).
 */
const ADVISORY_LOCKS: Record<LockName | 'migrations', string> = {
  migrations: '1752395123001',
  audit: '1752395123002',
};

/** The store the configuration names: PostgreSQL when a URL is set, else the SQLite file. */
export function storeLocation(database: { url?: string | null | undefined; path?: string | null | undefined }, defaultPath: string): StoreLocation {
  if (database.url) return { engine: 'postgres', url: database.url };
  return { engine: 'sqlite', path: database.path ?? defaultPath };
}

/** The location for a log line or a message: never the password. */
export function describeLocation(location: StoreLocation): string {
  if (location.engine === 'sqlite') return location.path;
  try {
    const url = new URL(location.url);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return 'postgres (an unparsable DATABASE_URL)';
  }
}

export async function openStore(location: StoreLocation, options: OpenOptions = {}): Promise<Store> {
  return location.engine === 'sqlite' ? openSqlite(location, options) : openPostgres(location, options);
}

// --- SQLite ---

/**
 * better-sqlite3 as Kysely's dialect wants it, with each statement prepared once per SQL text:
 * Kysely prepares on every query, and preparing on every call showed up in profiles of the
 * issue path. Bounded, since a few queries vary in text (IN lists).
 */
function cachingDatabase(raw: BetterSqlite3.Database): SqliteDatabase {
  const statements = new Map<string, SqliteStatement>();
  return {
    close: () => raw.close(),
    prepare(text) {
      let statement = statements.get(text);
      if (!statement) {
        if (statements.size >= 500) statements.delete(statements.keys().next().value!);
        statement = raw.prepare(text) as unknown as SqliteStatement;
        statements.set(text, statement);
      }
      return statement;
    },
  };
}

async function openSqlite(location: { engine: 'sqlite'; path: string }, options: OpenOptions): Promise<Store> {
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  if (!options.readonly) mkdirSync(dirname(location.path), { recursive: true });
  const raw = new BetterSqlite3(location.path, options.readonly ? { readonly: true, fileMustExist: true } : {});
  try {
    if (!options.readonly) raw.pragma('journal_mode = WAL');
    raw.pragma('synchronous = NORMAL');
    raw.pragma('foreign_keys = ON');
    raw.pragma(`busy_timeout = ${Math.trunc(busyTimeoutMs)}`);
    if (options.migrate !== false) migrateSqlite(raw);
  } catch (error) {
    raw.close();
    throw error;
  }
  const db = new Kysely<Schema>({ dialect: new SqliteDialect({ database: cachingDatabase(raw) }) });
  return {
    db,
    engine: 'sqlite',
    location,
    sqlite: raw,
    exclusive: (_lock, fn) =>
      // One write lock for the whole file: the name only matters on PostgreSQL.
      db.connection().execute((conn) => inTransaction(conn, 'begin immediate', fn)),
    write: (fn) => db.connection().execute((conn) => inTransaction(conn, 'begin immediate', fn)),
    close: async () => {
      await db.destroy();
      // Kysely closes the connection only if it ever ran a query on it; a store used only
      // through `sqlite` (the audit writer's) is closed here.
      if (raw.open) raw.close();
    },
  };
}

function migrationFiles(engine: Engine): string[] {
  return readdirSync(MIGRATIONS_DIR + engine)
    .filter((file) => file.endsWith('.sql'))
    .sort();
}

/**
 * The whole run in one BEGIN IMMEDIATE transaction: two processes opening a new file at once
 * cannot both find a migration missing (the second waits for the write lock, then finds it
 * applied). SQLite's DDL is transactional, so a failed migration leaves nothing behind.
 * Databases made before the per-engine folders have the same names in schema_migrations.
 */
function migrateSqlite(raw: BetterSqlite3.Database): void {
  const files = migrationFiles('sqlite');
  raw.transaction(() => {
    raw.exec('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
    const applied = new Set(raw.prepare<[], { name: string }>('SELECT name FROM schema_migrations').all().map((row) => row.name));
    for (const file of files) {
      if (applied.has(file)) continue;
      raw.exec(readFileSync(`${MIGRATIONS_DIR}sqlite/${file}`, 'utf8'));
      raw.prepare('INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)').run(file, new Date().toISOString());
    }
  }).immediate();
}

// --- PostgreSQL ---

/** int8 as a JS number (epoch ms, counters, COUNT(*)); a value past 2^53 is an error, not a rounding. */
function parseBigint(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new RangeError(`a BIGINT from the store is beyond 2^53: ${text}`);
  return value;
}

const INT8_OID = 20;
const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseBigint : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/** The password as it may appear in text: as written in the URL and decoded. */
function secretsOf(url: string): string[] {
  try {
    const password = new URL(url).password;
    if (!password) return [];
    const decoded = decodeURIComponent(password);
    return [...new Set([password, decoded])].filter((secret) => secret.length > 0);
  } catch {
    // Unparsable: the only safe form of the URL in a message is none of it.
    return [url];
  }
}

/**
 * A write refused because a row with the same unique key is there already (a duplicate name, a
 * key version another writer took first). The stores throw it, on either engine, so services
 * answer with a 400 without knowing any driver's error codes.
 */
export class UniqueViolation extends Error {
  constructor(cause: unknown) {
    super('A row with the same unique key exists', { cause });
    this.name = 'UniqueViolation';
  }
}

/** better-sqlite3's codes for a UNIQUE or PRIMARY KEY failure, and PostgreSQL's SQLSTATE 23505. */
function isUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}

/** Runs a write whose unique keys may clash; such a clash becomes a UniqueViolation, anything else passes through. */
export async function uniqueWrite<T>(write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    throw isUniqueViolation(error) ? new UniqueViolation(error) : error;
  }
}

/**
 * `error` with every copy of the URL's password replaced, as a fresh Error (the original's own
 * properties, some of which can echo the connection string, are not carried over; its code is).
 */
export function scrubError(error: unknown, url: string): Error {
  const secrets = secretsOf(url);
  const clean = (text: string) => secrets.reduce((out, secret) => out.split(secret).join('***'), text);
  const original = error instanceof Error ? error : new Error(String(error));
  const scrubbed = new Error(clean(original.message));
  scrubbed.name = original.name;
  const code = (original as { code?: unknown }).code;
  if (typeof code === 'string') Object.assign(scrubbed, { code });
  scrubbed.stack = clean(original.stack ?? scrubbed.stack ?? '');
  return scrubbed;
}

async function openPostgres(location: { engine: 'postgres'; url: string }, options: OpenOptions): Promise<Store> {
  const { url } = location;
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  let pool: pg.Pool;
  try {
    pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize ?? 10,
      types: pgTypes,
      // The counterpart of SQLite's busy_timeout: a lock (row or advisory) not granted in this
      // time fails the statement instead of queueing requests behind it indefinitely.
      lock_timeout: Math.trunc(busyTimeoutMs),
      connectionTimeoutMillis: 10_000,
      application_name: 'hsm-signer',
    });
  } catch (error) {
    throw scrubError(error, url);
  }
  // Without a listener an idle connection's error (a server restart) would end the process.
  pool.on('error', (error) => options.onConnectionError?.(scrubError(error, url)));
  const scrubbing = {
    async connect() {
      try {
        return await pool.connect();
      } catch (error) {
        throw scrubError(error, url);
      }
    },
    end: () => pool.end(),
  };
  const db = new Kysely<Schema>({ dialect: new PostgresDialect({ pool: scrubbing }) });
  try {
    if (options.migrate !== false) await migratePostgres(db);
  } catch (error) {
    await db.destroy();
    throw scrubError(error, url);
  }
  return {
    db,
    engine: 'postgres',
    location,
    exclusive: (lock, fn) =>
      db.connection().execute((conn) =>
        inTransaction(conn, 'begin', async (trx) => {
          await sql`select pg_advisory_xact_lock(${ADVISORY_LOCKS[lock]}::bigint)`.execute(trx);
          return fn(trx);
        }),
      ),
    write: (fn) => db.connection().execute((conn) => inTransaction(conn, 'begin', fn)),
    close: () => db.destroy(),
  };
}

/**
 * The whole run under a session advisory lock on one connection: replicas starting together
 * migrate one at a time, and each later one finds the migrations applied. CREATE TABLE IF NOT
 * EXISTS is not safe against a concurrent twin on PostgreSQL, hence schema_migrations too is
 * made under the lock. Each file runs in a transaction of its own (DDL is transactional here).
 */
async function migratePostgres(db: Kysely<Schema>): Promise<void> {
  const files = migrationFiles('postgres');
  await db.connection().execute(async (conn) => {
    // Another replica's migration may take longer than lock_timeout: wait for it as long as it takes.
    await sql`set lock_timeout = 0`.execute(conn);
    await sql`select pg_advisory_lock(${ADVISORY_LOCKS.migrations}::bigint)`.execute(conn);
    try {
      await sql`create table if not exists schema_migrations (name text primary key, applied_at text not null)`.execute(conn);
      const applied = new Set((await conn.selectFrom('schema_migrations').select('name').execute()).map((row) => row.name));
      for (const file of files) {
        if (applied.has(file)) continue;
        const text = readFileSync(`${MIGRATIONS_DIR}postgres/${file}`, 'utf8');
        await inTransaction(conn, 'begin', async (trx) => {
          // No parameters: pg sends it as a simple query, which may hold several statements.
          await sql.raw(text).execute(trx);
          await trx.insertInto('schema_migrations').values({ name: file, applied_at: new Date().toISOString() }).execute();
        });
      }
    } finally {
      await sql`select pg_advisory_unlock(${ADVISORY_LOCKS.migrations}::bigint)`.execute(conn);
      await sql`reset lock_timeout`.execute(conn);
    }
  });
}

/** BEGIN (as given) … COMMIT on one pinned connection; ROLLBACK when `fn` or the COMMIT fails. */
async function inTransaction<T>(conn: Kysely<Schema>, begin: 'begin' | 'begin immediate', fn: (trx: Kysely<Schema>) => Promise<T>): Promise<T> {
  await sql.raw(begin).execute(conn);
  try {
    const result = await fn(conn);
    await sql`commit`.execute(conn);
    return result;
  } catch (error) {
    // Also after a failed COMMIT: SQLite keeps the transaction open after a busy COMMIT, and the
    // connection must not stay inside it.
    try {
      await sql`rollback`.execute(conn);
    } catch {
      // The connection is broken or the transaction already gone; the original error matters.
    }
    throw error;
  }
}
