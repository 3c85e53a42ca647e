/**
 * Work that must happen once across replicas, on leases (store/lease-store.ts):
 * - `underLease` runs a one-off task (the first-start bootstrap) as the lease's holder,
 *   waiting while another replica holds it, and keeps the lease renewed while the task runs;
 * - `startMaintenance` makes one replica at a time the maintainer, who runs the periodic
 *   duties (expired-token purge, CRL renewal) each interval. A maintainer that dies stops
 *   renewing; within `ttlMs` another replica's tick takes the lease over.
 * - `startReplicaPresence` keeps a lease of this replica's own (`replica:<id>`) while it runs:
 *   the other replicas read it as "alive", and leave the pending rows it wrote alone.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../logger.js';
import type { LeaseStore } from '../store/lease-store.js';

/** This process among the replicas: unique per start, readable in the leases table. */
export const replicaId = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;

const WAIT_POLL_MS = 100;

export async function underLease<T>(leases: LeaseStore, name: string, ttlMs: number, task: () => Promise<T>): Promise<T> {
  while (!(await leases.tryAcquire(name, replicaId, ttlMs))) await new Promise((resolve) => setTimeout(resolve, WAIT_POLL_MS));
  const renew = setInterval(() => void leases.tryAcquire(name, replicaId, ttlMs).catch(() => undefined), ttlMs / 3);
  try {
    return await task();
  } finally {
    clearInterval(renew);
    await leases.release(name, replicaId).catch(() => undefined);
  }
}

export interface Duty {
  name: string;
  run(): Promise<void>;
}

export function startMaintenance(options: { leases: LeaseStore; intervalMs: number; ttlMs: number; duties: Duty[]; logger: Logger; onLeadership?: (leading: boolean) => void }) {
  const { leases, intervalMs, ttlMs, duties, logger } = options;
  let leading = false;
  let running: Promise<void> | undefined;
  const tick = async () => {
    const nowLeading = await leases.tryAcquire('maintenance', replicaId, ttlMs).catch((error: unknown) => {
      logger.warn({ err: error }, 'could not check the maintenance lease; skipping this round');
      return false;
    });
    if (nowLeading !== leading) {
      leading = nowLeading;
      options.onLeadership?.(leading);
      if (leading) logger.info({ replica: replicaId }, 'this replica now runs the periodic maintenance (token purge, CRL renewal)');
    }
    if (!leading) return;
    for (const duty of duties) {
      try {
        await duty.run();
      } catch (error) {
        logger.warn({ err: error, duty: duty.name }, 'a maintenance duty failed; will retry next round');
      }
    }
  };
  const timer = setInterval(() => {
    // Never two rounds at once: a slow store skips ticks instead of piling rounds up.
    running ??= tick().finally(() => (running = undefined));
  }, intervalMs);
  timer.unref();
  return {
    /** Runs a round now (first start, tests); resolves when it is done. */
    runNow(): Promise<void> {
      running ??= tick().finally(() => (running = undefined));
      return running;
    },
    async stop(): Promise<void> {
      clearInterval(timer);
      await running;
      // Hand over at once instead of making the others wait out the lease.
      if (leading) await leases.release('maintenance', replicaId).catch(() => undefined);
      leading = false;
      options.onLeadership?.(false);
    },
  };
}

/** Lease names that say "this replica is alive"; the holder is the replica id. */
export const REPLICA_PRESENCE_PREFIX = 'replica:';
/**
 * How long a replica counts as alive after its last renewal, and how often it renews. A
 * replica whose event loop or store stalls past the TTL may find its pending work undone by
 * another (its creation then answers 503, never a false success: KeyStore.activate).
 */
export const REPLICA_PRESENCE_TTL_MS = 20_000;
const REPLICA_PRESENCE_RENEW_MS = 5_000;

/** Holds this replica's presence lease until `stop` (which releases it, so a clean exit leaves nothing to wait out). */
export async function startReplicaPresence(leases: LeaseStore, logger: Logger) {
  const name = REPLICA_PRESENCE_PREFIX + replicaId;
  await leases.tryAcquire(name, replicaId, REPLICA_PRESENCE_TTL_MS);
  const timer = setInterval(() => {
    leases.tryAcquire(name, replicaId, REPLICA_PRESENCE_TTL_MS).catch((error: unknown) => logger.warn({ err: error }, 'could not renew this replica\'s presence in the store'));
  }, REPLICA_PRESENCE_RENEW_MS);
  timer.unref();
  return {
    async stop(): Promise<void> {
      clearInterval(timer);
      await leases.release(name, replicaId).catch(() => undefined);
    },
  };
}

/** Whether a pending row's writer is alive: false for a row without one, or one whose presence lease has lapsed. */
export async function liveOwners(leases: LeaseStore): Promise<(owner: string | null) => boolean> {
  const live = await leases.liveHolders(REPLICA_PRESENCE_PREFIX);
  return (owner) => owner !== null && live.has(owner);
}
