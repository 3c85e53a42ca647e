/** Query pieces more than one store uses, written once for both engines. */
import { sql, type Compilable, type CompiledQuery, type Kysely } from 'kysely';
import type { Store } from './database.js';
import type { Schema } from './schema.js';

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

/**
 * A query of fixed shape, built and compiled by Kysely once: each call only binds new values.
 * Kysely builds an operation tree and compiles it to SQL on every execution (tens of µs per
 * query), which showed on the certificate issue path (three queries a certificate); the
 * statements the request path runs most are made this way.
 *
 * `build` is called once with a marker object for each parameter; the compiled query's
 * parameters are then matched to the markers by identity, so each call puts its values where
 * the markers were and keeps any constant the query itself binds (a state name, a limit).
 */
export function prepared<A extends unknown[], R>(db: Kysely<Schema>, arity: A['length'], build: (...markers: A) => Compilable<R>): (...values: A) => Promise<R[]> {
  const markers = Array.from({ length: arity }, (_, index) => Object.freeze({ preparedParameter: index })) as unknown as A;
  let compiled: CompiledQuery<R> | undefined;
  let slots: number[] = [];
  return async (...values) => {
    if (!compiled) {
      compiled = build(...markers).compile();
      slots = compiled.parameters.map((parameter) => (markers as unknown[]).indexOf(parameter));
      if (new Set(slots.filter((slot) => slot >= 0)).size !== arity) throw new Error(`a prepared query must bind each of its ${arity} parameters: ${compiled.sql}`);
    }
    const constants = compiled.parameters;
    const parameters = slots.map((slot, i) => (slot >= 0 ? values[slot] : constants[i]));
    return (await db.executeQuery<R>({ ...compiled, parameters })).rows;
  };
}
