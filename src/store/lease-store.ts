/**
 * Leases: a named piece of work is done by one replica at a time, the lease's holder, until
 * the lease expires or is released. A holder that dies simply stops renewing, and after
 * `ttlMs` another replica takes over; work done under a lease must therefore be safe to do
 * twice (it is: the bootstrap re-checks the store, CRL renewal and the purge are idempotent).
 * Taking, renewing and checking are one conditional upsert, atomic on the store's own locking.
 */
import type { Db } from './database.js';

export interface LeaseStore {
  /** Takes the lease if free or expired, renews it if `holder` has it; true when `holder` holds it now. */
  tryAcquire(name: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Gives the lease up early, if `holder` still has it. */
  release(name: string, holder: string): Promise<void>;
}

export function createLeaseStore(db: Db): LeaseStore {
  const upsert = db.prepare<[string, string, number, number]>(
    `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
     WHERE leases.holder = excluded.holder OR leases.expires_at <= ?`,
  );
  const holderOf = db.prepare<[string], { holder: string }>('SELECT holder FROM leases WHERE name = ?');
  const remove = db.prepare<[string, string]>('DELETE FROM leases WHERE name = ? AND holder = ?');
  return {
    async tryAcquire(name, holder, ttlMs) {
      const now = Date.now();
      return db.transaction(() => {
        upsert.run(name, holder, now + ttlMs, now);
        return holderOf.get(name)?.holder === holder;
      })();
    },
    async release(name, holder) {
      remove.run(name, holder);
    },
  };
}
