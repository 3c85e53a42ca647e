/** Organisation-wide settings, made once at first start (the org id keys report). */
import type { Db } from './database.js';

export function getOrCreateSetting(db: Db, name: string, create: () => string): string {
  db.prepare('INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)').run(name, create());
  return db.prepare<[string], { value: string }>('SELECT value FROM settings WHERE name = ?').get(name)!.value;
}
