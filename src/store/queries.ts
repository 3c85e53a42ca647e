/** Query pieces more than one store uses, written once for both engines. */
import { sql } from 'kysely';
import type { Store } from './database.js';

/** IN lists stay well under both engines' limits on bound parameters (SQLite 32766, pg 65535). */
export const IN_LIST_CHUNK = 1000;

export function chunks<T>(items: readonly T[], size = IN_LIST_CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * `%search%` for LIKE with its wildcards escaped. SQLite's LIKE ignores ASCII case and
 * PostgreSQL's does not: ILIKE there, so a search finds the same keys on both.
 */
export function containsPattern(engine: Store['engine'], column: string, search: string) {
  const pattern = `%${search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  return sql<boolean>`${sql.ref(column)} ${sql.raw(engine === 'postgres' ? 'ilike' : 'like')} ${pattern} escape '\\'`;
}
