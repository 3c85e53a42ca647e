/**
 * Keeping the audit trail bounded, and the background work the maintenance lease holder does on
 * it (startAuditUpkeep): feeding the sink (audit-sink.ts) every audit.sinkIntervalMs and pruning
 * every audit.pruneIntervalMs. Only one process among all replicas does either at a time: the
 * one that holds the `maintenance` lease (services/leases.ts), told through setLeading.
 *
 * What a prune round removes: events past audit.retention (by time) or beyond audit.maxEvents
 * (by count), but only up to the highest signed checkpoint at or below that point, and never past
 * what the sink has exported while one is configured. Before it deletes anything it records an
 * `audit.prune` event (resourceId `FROM-TO`) through this process's audit writer and checks it
 * is stored, so the kept trail always says why it starts where it does (audit-chain.ts checks
 * that). Then it deletes from the start in small batches (each a short transaction of its own,
 * with a pause between, so the audit writers and the rest of the store are never held up for
 * long), and the checkpoints below the last seq pruned; the checkpoint of that seq stays, to
 * anchor the first kept event. A crash halfway leaves a trail that starts inside the recorded
 * range: still verifiable, and the next round goes on.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from '../logger.js';
import type { AuditStore } from '../store/audit-store.js';
import { PRUNE_ACTION } from './audit-chain.js';
import type { AuditService } from './audit-service.js';
import type { createSinkFeeder } from './audit-sink.js';

/** Events per DELETE, and the pause after each: a few milliseconds of lock at a time. */
const PRUNE_BATCH = 2000;
const PRUNE_PAUSE_MS = 5;
/** One round stops after this long and leaves the rest to the next. */
const PRUNE_ROUND_BUDGET_MS = 20_000;

export interface PruneResult {
  /** Events deleted this round. */
  pruned: number;
  /** The first and last seq kept after the round. */
  first: number;
  last: number;
  /** Events retention wants gone that are still kept (held back by the sink or by no checkpoint yet, or out of time or stopped). */
  overdue: number;
  /** Why `overdue` is not 0. */
  heldBy: 'sink' | 'checkpoint' | 'time' | null;
}

export function createAuditRetention(deps: {
  auditStore: AuditStore;
  audit: Pick<AuditService, 'record' | 'flush'>;
  logger: Logger;
  retentionMs: number | null;
  maxEvents: number | null;
  /** Whether a sink is configured: then nothing it has not exported is pruned. */
  sink: boolean;
  batch?: number;
  now?: () => number;
}): { run(keepGoing?: () => boolean): Promise<PruneResult> } {
  const { auditStore, audit, logger } = deps;
  const batch = deps.batch ?? PRUNE_BATCH;
  const now = deps.now ?? Date.now;
  return {
    async run(keepGoing = () => true) {
      const { first, last } = await auditStore.bounds();
      if (last === 0) return { pruned: 0, first, last, overdue: 0, heldBy: null };
      let wanted = 0;
      if (deps.maxEvents !== null) wanted = Math.max(wanted, last - deps.maxEvents);
      if (deps.retentionMs !== null) wanted = Math.max(wanted, await auditStore.lastSeqBefore(now() - deps.retentionMs));
      let allowed = wanted;
      let heldBy: PruneResult['heldBy'] = null;
      if (deps.sink) {
        const { exportedSeq } = await auditStore.sinkState();
        if (exportedSeq < allowed) [allowed, heldBy] = [exportedSeq, 'sink'];
      }
      const through = await auditStore.checkpointAtOrBelow(allowed);
      if (through < allowed) heldBy = 'checkpoint';
      const overdueAfter = (keptFrom: number) => Math.max(wanted - (keptFrom - 1), 0);
      if (through < first) return { pruned: 0, first, last, overdue: overdueAfter(first), heldBy: overdueAfter(first) > 0 ? heldBy : null };

      const range = `${first}-${through}`;
      // Shutting down: announce nothing that would then not be pruned. (A stop that comes after
      // the announcement leaves the rest of the range to the next round, which announces it again.)
      if (!keepGoing()) return { pruned: 0, first, last, overdue: overdueAfter(first), heldBy: 'time' };
      audit.record({ reqId: randomUUID(), identityId: null, action: PRUNE_ACTION, resourceType: 'audit', resourceId: range, statusCode: 200, clientAddress: null });
      await audit.flush();
      if ((await auditStore.findEvent(PRUNE_ACTION, range, through)) === undefined) {
        throw new Error(`could not record the ${PRUNE_ACTION} event for seq ${range}; nothing pruned`);
      }
      const started = Date.now();
      let pruned = 0;
      let from = first;
      while (from <= through) {
        if (Date.now() - started > PRUNE_ROUND_BUDGET_MS || !keepGoing()) {
          heldBy = 'time';
          break;
        }
        const to = Math.min(from + batch - 1, through);
        pruned += await auditStore.deleteEvents(from, to);
        from = to + 1;
        await new Promise((resolve) => setTimeout(resolve, PRUNE_PAUSE_MS));
      }
      if (from > through) await auditStore.deleteCheckpointsBelow(through);
      logger.info({ pruned, from: first, to: from - 1, retention: deps.retentionMs, maxEvents: deps.maxEvents }, 'pruned audit events past the retention');
      const overdue = overdueAfter(from);
      return { pruned, first: from, last, overdue, heldBy: overdue > 0 ? heldBy : null };
    },
  };
}

export interface AuditUpkeepMetrics {
  pruned(n: number): void;
  sinkLag(events: number): void;
  storeEvents(events: number): void;
  overdue(events: number): void;
}

/** Prune rounds in a row in which the overdue events grew before that is worth a warning. */
const GROWING_ROUNDS_TO_WARN = 3;
/** While it keeps growing, the warning again every this many rounds. */
const GROWING_ROUNDS_TO_REPEAT = 30;

/**
 * The lease holder's loops: the sink every sinkIntervalMs (at once again after a full batch)
 * and pruning every pruneIntervalMs, each one round at a time. A warning is logged when the
 * events retention wants gone but cannot remove grew in GROWING_ROUNDS_TO_WARN rounds in a row:
 * the store then grows faster than retention removes (the sink is behind or failing, checkpoints
 * are not being signed, or more is written than a round can delete). Some are always overdue,
 * up to a sign interval's worth (pruning stops at a checkpoint), and that number moves with the
 * load; a single rise is not a trend.
 */
export function startAuditUpkeep(deps: {
  retention: ReturnType<typeof createAuditRetention>;
  feeder: ReturnType<typeof createSinkFeeder> | undefined;
  sinkIntervalMs: number;
  pruneIntervalMs: number;
  logger: Logger;
  metrics: AuditUpkeepMetrics;
}): { setLeading(leading: boolean): void; readonly leading: boolean; stop(): Promise<void> } {
  const { retention, feeder, logger, metrics } = deps;
  let leading = false;
  let stopped = false;
  let sinkTimer: NodeJS.Timeout | undefined;
  let pruneTimer: NodeJS.Timeout | undefined;
  let feeding: Promise<void> | undefined;
  let pruning: Promise<PruneResult | undefined> | undefined;
  let lastOverdue = 0;
  let growingRounds = 0;

  const feed = (): Promise<void> =>
    (feeding ??= (async () => {
      if (!feeder) return;
      try {
        for (;;) {
          const round = await feeder.round();
          metrics.sinkLag(round.lag);
          if (!round.more || !leading || stopped) break;
        }
      } catch (error) {
        logger.warn({ err: error }, 'feeding the audit sink failed; will retry');
      }
    })().finally(() => (feeding = undefined)));

  const prune = (): Promise<PruneResult | undefined> =>
    (pruning ??= (async () => {
      try {
        const result = await retention.run(() => leading && !stopped);
        if (result.pruned > 0) metrics.pruned(result.pruned);
        metrics.storeEvents(result.last === 0 ? 0 : result.last - result.first + 1);
        metrics.overdue(result.overdue);
        growingRounds = result.overdue > lastOverdue ? growingRounds + 1 : 0;
        if (growingRounds >= GROWING_ROUNDS_TO_WARN && (growingRounds - GROWING_ROUNDS_TO_WARN) % GROWING_ROUNDS_TO_REPEAT === 0) {
          logger.warn(
            { overdue: result.overdue, heldBy: result.heldBy, kept: result.last - result.first + 1, growingRounds },
            'the audit store grows faster than retention removes: events past audit.retention or audit.maxEvents are still kept',
          );
        }
        lastOverdue = result.overdue;
        return result;
      } catch (error) {
        logger.warn({ err: error }, 'pruning the audit trail failed; will retry');
        return undefined;
      }
    })().finally(() => (pruning = undefined)));

  const scheduleSink = () => {
    if (!feeder || !leading || stopped) return;
    sinkTimer = setTimeout(() => void feed().then(scheduleSink), deps.sinkIntervalMs);
    sinkTimer.unref();
  };
  const schedulePrune = () => {
    if (!leading || stopped) return;
    pruneTimer = setTimeout(() => void prune().then(schedulePrune), deps.pruneIntervalMs);
    pruneTimer.unref();
  };

  return {
    setLeading(now) {
      if (now === leading || stopped) return;
      leading = now;
      clearTimeout(sinkTimer);
      clearTimeout(pruneTimer);
      if (!leading) {
        metrics.sinkLag(0);
        metrics.storeEvents(0);
        metrics.overdue(0);
        return;
      }
      void feed().then(scheduleSink);
      void prune().then(schedulePrune);
    },
    get leading() {
      return leading;
    },
    async stop() {
      stopped = true;
      clearTimeout(sinkTimer);
      clearTimeout(pruneTimer);
      await Promise.all([feeding, pruning]);
    },
  };
}
