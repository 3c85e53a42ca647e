/**
 * The cluster primary (server.httpWorkers > 1): forks the workers, each a full replica running
 * startService on the shared port (node:cluster hands connections out round-robin, listen(0)
 * included), and supervises them. It never loads the PKCS#11 module or the store, so nothing
 * here imports src/app.ts or what it wires: one PKCS#11 login per worker, none in the primary.
 *
 * - Start: one worker first, the others once it listens. Its start does the once-only work
 *   (creating the embedded token, the admin identity), and a start that cannot succeed (a bad
 *   setting, a wrong PIN) fails once: a wrong PIN costs the token one try, not N.
 * - A worker that exits before it listened stops everything, exit 1: whatever stopped it would
 *   stop the next one too, and a restart loop would hide it (and spend PIN tries).
 * - A worker that dies after it listened is replaced, after a delay that doubles with each
 *   death in the last minute (RESTART_BASE_MS up to RESTART_MAX_MS), logged at error level.
 * - SIGHUP: passed to every worker (the audit sink file is reopened).
 * - SIGTERM/SIGINT: passed on (the same signal) to every worker, which drains as a single
 *   process does (after SIGTERM, server.shutdownDelayMs of serving with /readyz failing first);
 *   the primary exits 0 once all have exited 0 (1 otherwise, or if they outlast the delay and
 *   the grace period by STOP_MARGIN_MS, when they are killed).
 * - server.opsPort is served here, not by the workers: /metrics is every listening worker's
 *   registry summed by prom-client's AggregatorRegistry (see src/metrics.ts for the gauges
 *   that are not summed) plus the primary's own two metrics; /healthz and /readyz ask the
 *   listening workers over IPC (see primaryHealth for what they mean).
 */
import cluster, { type Worker } from 'node:cluster';
import type { Server } from 'node:http';
import { AggregatorRegistry, Counter, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Config } from '../config/schema.js';
import { serviceUnavailable } from '../errors.js';
import { createOpsApp, listenOps } from '../http/ops-app.js';
import type { HealthSource } from '../http/routes/health.js';
import type { Logger } from '../logger.js';
import { CHANNEL, isOurs, type FromWorker, type ToWorker } from './protocol.js';

const RESTART_BASE_MS = 250;
const RESTART_MAX_MS = 30_000;
/** Deaths within this window count towards the restart delay. */
const RESTART_WINDOW_MS = 60_000;
/** How long past server.shutdownDelayMs + shutdownGraceMs the primary waits for its workers before killing them. */
const STOP_MARGIN_MS = 15_000;
/** How long a worker may take to answer a liveness or metrics request. */
const ANSWER_TIMEOUT_MS = 2_000;

interface Entry {
  worker: Worker;
  pid: number | undefined;
  listening: boolean;
  /** Said listener-closed: at the end of its shutdown delay, its listener is closed. */
  listenerClosed?: boolean;
}

type Question = ToWorker extends infer Q ? (Q extends { id: number } ? Omit<Q, 'id' | 'channel'> : never) : never;

export async function runPrimary(config: Config, logger: Logger, count: number): Promise<void> {
  const entries = new Map<number, Entry>();
  const pendingRestarts = new Set<NodeJS.Timeout>();
  let deaths: number[] = [];
  let stopping = false;
  let exitCode = 0;
  let announced = false;
  let forkedTheRest = false;
  let url: string | undefined;
  let ops: { server: Server; url: string } | undefined;

  // The primary's own metrics, beside the workers' aggregated ones.
  const own = new Registry();
  new Gauge({ name: 'hsm_signer_http_workers', help: 'Worker processes listening (cluster mode).', registers: [own], collect() {
    this.set(listening().length);
  } });
  const restarts = new Counter({ name: 'hsm_signer_worker_restarts_total', help: 'Workers started again after one died (cluster mode).', registers: [own] });

  const listening = () => [...entries.values()].filter((entry) => entry.listening);

  // Requests to workers, answered by id.
  let nextId = 0;
  const answers = new Map<number, (message: FromWorker) => void>();
  function ask(entry: Entry, question: Question, timeoutMs: number): Promise<FromWorker | undefined> {
    const id = ++nextId;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        answers.delete(id);
        resolve(undefined);
      }, timeoutMs);
      answers.set(id, (message) => {
        clearTimeout(timer);
        answers.delete(id);
        resolve(message);
      });
      try {
        entry.worker.send({ ...question, id, channel: CHANNEL } as ToWorker);
      } catch {
        // The worker is exiting: no answer, as if it timed out.
      }
    });
  }

  function fork(): void {
    const worker = cluster.fork();
    const entry: Entry = { worker, pid: worker.process.pid, listening: false };
    entries.set(worker.id, entry);
    logger.info({ worker: worker.id, pid: entry.pid }, 'started a worker');
  }

  function finishIfDone(): void {
    if (!stopping || entries.size > 0) return;
    const exit = () => {
      logger.info({ exitCode }, 'every worker has exited');
      process.exit(exitCode);
    };
    if (!ops) return exit();
    ops.server.close(() => exit());
    ops.server.closeAllConnections();
  }

  /** The signal workers get: SIGTERM drains for the shutdown delay first, SIGINT does not. */
  let stopSignal: 'SIGTERM' | 'SIGINT' = 'SIGTERM';

  function stop(reason: string, signal: 'SIGTERM' | 'SIGINT' = 'SIGTERM'): void {
    if (stopping) return;
    stopping = true;
    // A worker failed to start: nothing is being served that a balancer must move away from,
    // so the workers stop at once (SIGINT skips the shutdown delay).
    stopSignal = exitCode === 0 ? signal : 'SIGINT';
    for (const timer of pendingRestarts) clearTimeout(timer);
    pendingRestarts.clear();
    const delayMs = stopSignal === 'SIGTERM' ? config.server.shutdownDelayMs : 0;
    logger.info({ reason, workers: entries.size, delayMs }, 'stopping every worker');
    for (const entry of entries.values()) entry.worker.process.kill(stopSignal);
    const deadline = setTimeout(() => {
      logger.error({ workers: [...entries.values()].map((entry) => entry.pid) }, 'workers still running past the shutdown delay and grace period; killing them');
      exitCode = 1;
      for (const entry of entries.values()) entry.worker.process.kill('SIGKILL');
    }, delayMs + config.server.shutdownGraceMs + STOP_MARGIN_MS);
    deadline.unref();
    finishIfDone();
  }

  /**
   * Once every listening worker has closed its listener (node:cluster closes the shared socket
   * when the last one has, on the message each sent before its listener-closed), each may let
   * out the answers it held back; see allListenersClosed in worker.ts.
   */
  function releaseIfAllListenersClosed(): void {
    const open = listening();
    if (open.length === 0 || open.some((entry) => !entry.listenerClosed)) return;
    for (const entry of open) {
      try {
        entry.worker.send({ channel: CHANNEL, type: 'listeners-closed' } satisfies ToWorker);
      } catch {
        // Exiting already.
      }
    }
  }

  cluster.on('message', (worker, message: unknown) => {
    if (!isOurs<FromWorker>(message)) return;
    if (message.type === 'listener-closed') {
      const entry = entries.get(worker.id);
      if (entry) entry.listenerClosed = true;
      releaseIfAllListenersClosed();
      return;
    }
    if (message.type !== 'listening') {
      answers.get(message.id)?.(message);
      return;
    }
    const entry = entries.get(worker.id);
    if (!entry) return;
    entry.listening = true;
    url = message.url;
    logger.info({ worker: worker.id, pid: entry.pid }, 'a worker is listening');
    if (stopping) {
      // It missed the signal sent while it was starting (it had no handler yet).
      entry.worker.process.kill(stopSignal);
      return;
    }
    if (!forkedTheRest) {
      forkedTheRest = true;
      for (let i = 1; i < count; i++) fork();
    }
    if (!announced && listening().length === count) {
      announced = true;
      logger.info({ url, workers: count, ...(ops ? { opsUrl: ops.url } : {}) }, 'hsm-signer is listening');
    }
  });

  cluster.on('exit', (worker, code, signal) => {
    const entry = entries.get(worker.id);
    entries.delete(worker.id);
    const pid = entry?.pid;
    if (stopping) {
      // A worker still starting when the signal came has nothing to drain: its end is no failure.
      const clean = code === 0 || (!entry?.listening && signal === stopSignal);
      if (!clean) exitCode = 1;
      logger[clean ? 'info' : 'error']({ worker: worker.id, pid, code, signal }, 'a worker exited');
      // The others may have been waiting for this one's listener.
      releaseIfAllListenersClosed();
      finishIfDone();
      return;
    }
    if (!entry?.listening) {
      logger.fatal({ worker: worker.id, pid, code, signal }, 'a worker failed before it listened; stopping every worker and exiting 1, without a restart (what stopped it would stop the next one)');
      exitCode = 1;
      stop('a worker failed to start');
      return;
    }
    const now = Date.now();
    deaths = [...deaths.filter((at) => now - at < RESTART_WINDOW_MS), now];
    const delayMs = Math.min(RESTART_BASE_MS * 2 ** (deaths.length - 1), RESTART_MAX_MS);
    logger.error({ worker: worker.id, pid, code, signal, delayMs }, 'a worker died; starting another');
    const timer = setTimeout(() => {
      pendingRestarts.delete(timer);
      if (stopping) return;
      restarts.inc();
      fork();
    }, delayMs);
    pendingRestarts.add(timer);
  });

  const onSignal = (signal: string) => {
    if (stopping) return;
    logger.info({ signal }, 'stopping');
    stop(signal, signal === 'SIGINT' ? 'SIGINT' : 'SIGTERM');
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  // logrotate signals the primary: every worker reopens its audit sink file (only the one that
  // feeds the sink has it open).
  process.on('SIGHUP', () => {
    for (const entry of entries.values()) entry.worker.process.kill('SIGHUP');
  });

  if (config.server.opsPort !== null) {
    const health = primaryHealth({ listening, ask, stopping: () => stopping, readyTimeoutMs: config.hsm.readyTimeoutMs, own, logger });
    try {
      ops = await listenOps(createOpsApp(health, { logger, draining: () => stopping }), config.server.host, config.server.opsPort);
    } catch (error) {
      logger.fatal({ err: error }, 'cannot listen on the ops port');
      console.error(`hsm-signer: Cannot listen on the ops port ${config.server.opsPort}: ${(error as Error).message}`);
      process.exit(1);
    }
  }
  logger.info({ workers: count, ...(ops ? { opsUrl: ops.url } : {}) }, 'cluster primary started; starting the first worker');
  fork();
}

/**
 * The ops port's answers in cluster mode, from the workers that listen:
 * - /healthz: 503 when a worker reports the one state no retry can leave (the token refused
 *   the PIN while reconnecting), else 200. Workers that died are the primary's to replace,
 *   and a worker slow to answer is busy, not dead: neither fails liveness.
 * - /readyz: 200 only when at least one worker listens, the primary is not stopping, and every
 *   listening worker passes its own readiness check (a real PKCS#11 call) within
 *   hsm.readyTimeoutMs (plus a margin for the message). The port hands each connection to any
 *   listening worker, so one that is not ready would fail its share of the traffic.
 * - /metrics: the listening workers' registries that answered within ANSWER_TIMEOUT_MS,
 *   aggregated, and the primary's own; 503 when none answered.
 */
function primaryHealth(deps: {
  listening: () => Entry[];
  ask: (entry: Entry, question: Question, timeoutMs: number) => Promise<FromWorker | undefined>;
  stopping: () => boolean;
  readyTimeoutMs: number;
  own: Registry;
  logger: Logger;
}): HealthSource {
  const probeAll = (probe: 'healthz' | 'readyz', timeoutMs: number) =>
    Promise.all(deps.listening().map(async (entry) => ({ entry, answer: await deps.ask(entry, { type: 'probe', probe }, timeoutMs) })));
  return {
    async failed() {
      for (const { entry, answer } of await probeAll('healthz', ANSWER_TIMEOUT_MS)) {
        if (answer?.type === 'probe' && answer.problem !== undefined) return `worker ${entry.pid}: ${answer.problem}`;
      }
      return undefined;
    },
    async notReady() {
      if (deps.stopping()) return 'Shutting down';
      const results = await probeAll('readyz', deps.readyTimeoutMs + 500);
      if (results.length === 0) return 'No worker is listening';
      for (const { entry, answer } of results) {
        if (answer?.type !== 'probe') return `worker ${entry.pid} did not answer in time`;
        if (answer.problem !== undefined) return `worker ${entry.pid}: ${answer.problem}`;
      }
      return undefined;
    },
    async metrics() {
      const answers = await Promise.all(deps.listening().map((entry) => deps.ask(entry, { type: 'metrics' }, ANSWER_TIMEOUT_MS)));
      const workers = answers.flatMap((answer) => (answer?.type === 'metrics' ? [answer.metrics] : []));
      if (workers.length === 0) throw serviceUnavailable('No worker answered with its metrics');
      const aggregated = AggregatorRegistry.aggregate(workers as Array<Array<MetricObjectWithValues<MetricValue<string>>>>);
      const merged = Registry.merge([aggregated as Registry, deps.own]);
      return { contentType: merged.contentType, text: await merged.metrics() };
    },
  };
}
