/**
 * Leases: a named piece of work is done by one replica at a time, the lease's holder, until
 * the lease expires or is released (services/leases.ts runs the bootstrap and the periodic
 * maintenance under them). A holder that dies simply stops renewing, and after `ttlMs` another
 * replica takes over; work done under a lease must therefore be safe to do twice (it is: the
 * bootstrap re-checks the store, CRL renewal and the purge are idempotent).
 *
 * tryAcquire is one statement on both engines: an INSERT that, when the name is taken, updates
 * the row only if this holder already has it (a renewal) or it has expired (a takeover), and
 * RETURNING tells whether a row was written, i.e. whether `holder` holds the lease now. Two
 * replicas racing for a free or expired lease are serialized by the row (its primary key), so
 * exactly one of them wins.
 *
 * Time: on PostgreSQL the database's clock decides expiry, so replicas whose clocks disagree
 * still agree on who holds a lease; on SQLite every holder is on this machine and its clock is
 * the one there is. A holder should renew well within ttlMs, and treat a false as "stop".
 */
import { sql, type Expression } from 'kysely';
import type { Store } from './database.js';

export interface LeaseStore {
  /** Takes the lease if free or expired, renews it if `holder` has it; whether `holder` holds it now. */
  tryAcquire(name: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Gives the lease up if `holder` has it (so another can take it before it would expire). */
  release(name: string, holder: string): Promise<void>;
  /** The holders of every unexpired lease whose name starts with `namePrefix`. */
  liveHolders(namePrefix: string): Promise<Set<string>>;
}

export function createLeaseStore(store: Store): LeaseStore {
  const { db } = store;
  const now = (): Expression<number> =>
    store.engine === 'postgres' ? sql<number>`(extract(epoch from clock_timestamp()) * 1000)::bigint` : sql<number>`${Date.now()}`;
  return {
    async tryAcquire(name, holder, ttlMs) {
      if (!(ttlMs > 0)) throw new RangeError(`a lease needs a positive ttlMs, not ${ttlMs}`);
      const ttl = Math.ceil(ttlMs);
      const current = now();
      const row = await db
        .insertInto('leases')
        .values({ name, holder, expires_at: sql<number>`${current} + ${ttl}` })
        .onConflict((conflict) =>
          conflict
            .column('name')
            .doUpdateSet({ holder: (eb) => eb.ref('excluded.holder'), expires_at: (eb) => eb.ref('excluded.expires_at') })
            .where((eb) => eb.or([eb('leases.holder', '=', holder), eb('leases.expires_at', '<=', current)])),
        )
        .returning('holder')
        .executeTakeFirst();
      return row?.holder === holder;
    },
    async release(name, holder) {
      await db.deleteFrom('leases').where('name', '=', name).where('holder', '=', holder).execute();
    },
    async liveHolders(namePrefix) {
      const rows = await db
        .selectFrom('leases')
        .select('holder')
        // substr, not LIKE: a prefix is literal text, whatever `_` or `%` it holds.
        .where(sql<string>`substr(name, 1, ${namePrefix.length})`, '=', namePrefix)
        .where('expires_at', '>', now())
        .execute();
      return new Set(rows.map((row) => row.holder));
    },
  };
}
