/**
 * The embedded SQLite store: one file, WAL journal, migrations applied in order at open.
 * Every *-store.ts takes this handle; nothing else opens the file.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

export type Db = Database.Database;

const MIGRATIONS_DIR = fileURLToPath(new URL('../../src/store/migrations/', import.meta.url));

export function openDatabase(path: string): Db {
  mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  return db;
}

/**
 * Applies the migrations not yet applied, all in one IMMEDIATE transaction: it takes the write
 * lock before reading what is applied, so replicas opening one new file together migrate it
 * once (the others wait on busy_timeout, then find nothing left to do).
 */
function migrate(db: Db): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
  const files = readdirSync(MIGRATIONS_DIR).filter((file) => file.endsWith('.sql')).sort();
  db.transaction(() => {
    const applied = new Set(db.prepare<[], { name: string }>('SELECT name FROM schema_migrations').all().map((row) => row.name));
    for (const file of files) {
      if (applied.has(file)) continue;
      db.exec(readFileSync(MIGRATIONS_DIR + file, 'utf8'));
      db.prepare('INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)').run(file, new Date().toISOString());
    }
  }).immediate();
}
