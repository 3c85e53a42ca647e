/**
 * Soak mode (`npm run bench -- --soak`): a long mixed load on one service process, to see
 * whether it holds its memory and its sessions. Each connection cycles through a fixed mix
 * (signatures, AES both ways, certificates on both CAs, reads, and requests the service must
 * refuse); the first `warmup` requests let the heap, JIT and caches settle, then the process's
 * VmRSS, thread count and the pool's gauges from /metrics are read, the rest are sent, and
 * they are read again.
 */
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { runLoad, type LoadRequest, type LoadResult } from './load.js';
import { treeMemoryOf } from './procs.js';

export interface SoakMixEntry {
  label: string;
  /** The status a correct service answers; anything else is counted as unexpected. */
  expect: number;
  request: LoadRequest;
}

export interface SoakPoint {
  afterRequests: number;
  rssKiB: number;
  hwmKiB: number;
  threads: number;
  sessions: number;
  sessionsBusy: number;
  sessionsStuck: number;
  /** The audit trail at this point (SQLite store only). */
  audit?: { written: number; pruned: number; kept: number; storeBytes: number; auditBytes: number };
}

export interface SoakResult {
  requests: number;
  warmup: number;
  mix: SoakMixEntry[];
  warm?: LoadResult;
  main?: LoadResult;
  afterWarmup?: SoakPoint;
  end?: SoakPoint;
  /** VmRSS sampled every second after warm-up, in order. */
  rssSamplesKiB?: number[];
  /** Highest and lowest VmRSS sampled every second after warm-up. */
  rssMaxKiB?: number;
  rssMinKiB?: number;
  auditRetention?: string | null;
  /** Largest SQLite file + WAL sampled every second after warm-up. */
  storeMaxBytes?: number;
}

/** The store's file and its WAL, in bytes (0 for what does not exist). */
function storeBytes(path: string): number {
  let total = 0;
  for (const file of [path, `${path}-wal`]) {
    try {
      total += statSync(file).size;
    } catch {
      // not there (yet)
    }
  }
  return total;
}

/**
 * What the audit trail holds: events kept (rows) and the bytes of its table and indexes
 * (SQLite's dbstat, read-only beside the running service), with the counters from /metrics.
 */
function auditReading(path: string, metrics: string): NonNullable<SoakPoint['audit']> {
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
  const db = new Database(path, { readonly: true });
  try {
    const kept = (db.prepare('SELECT count(*) AS n FROM audit_events').get() as { n: number }).n;
    const auditBytes = (db.prepare(`SELECT coalesce(sum(pgsize), 0) AS bytes FROM dbstat WHERE name = 'audit_events' OR name LIKE 'audit_events_%'`).get() as { bytes: number }).bytes;
    return { written: read('hsm_signer_audit_events_written_total'), pruned: read('hsm_signer_audit_events_pruned_total'), kept, storeBytes: storeBytes(path), auditBytes };
  } finally {
    db.close();
  }
}

const GAUGES = { sessions: 'hsm_signer_pkcs11_sessions', sessionsBusy: 'hsm_signer_pkcs11_sessions_busy', sessionsStuck: 'hsm_signer_pkcs11_sessions_stuck' } as const;

async function metricsOf(base: string): Promise<string> {
  const response = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) });
  return response.text();
}

function gaugesOf(text: string): Record<keyof typeof GAUGES, number> {
  const read = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { sessions: read(GAUGES.sessions), sessionsBusy: read(GAUGES.sessionsBusy), sessionsStuck: read(GAUGES.sessionsStuck) };
}

/** Idle before a reading, so both readings see the heap after the same quiet spell, not mid-burst. */
const SETTLE_MS = 2_000;

async function pointOf(base: string, pid: number, afterRequests: number, auditStore: string | undefined): Promise<SoakPoint> {
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  const memory = treeMemoryOf(pid);
  if (!memory) throw new Error('soak: the service process is gone');
  const metrics = await metricsOf(base);
  return { afterRequests, rssKiB: memory.rssKiB, hwmKiB: memory.hwmKiB, threads: memory.threads, ...gaugesOf(metrics), ...(auditStore ? { audit: auditReading(auditStore, metrics) } : {}) };
}

export async function runSoak(
  spec: { base: string; pid: number; connections: number; requests: number; warmup: number; mix: SoakMixEntry[]; log: (m: string) => void; auditStore?: string },
  result: SoakResult,
): Promise<void> {
  const requests = spec.mix.map((entry) => entry.request);
  // Bounds only: far longer than 100,000 requests take at the slowest rate seen here.
  const boundS = (n: number) => 60 + n / 20;
  spec.log(`soak: ${spec.warmup.toLocaleString('en-US')} warm-up requests`);
  result.warm = await runLoad({ url: spec.base, headers: {}, connections: spec.connections, durationS: boundS(spec.warmup), amount: spec.warmup, requests });
  result.afterWarmup = await pointOf(spec.base, spec.pid, spec.warmup, spec.auditStore);
  const rest = spec.requests - spec.warmup;
  spec.log(`soak: after warm-up VmRSS ${(result.afterWarmup.rssKiB / 1024).toFixed(1)} MiB, ${result.afterWarmup.sessions} sessions; ${rest.toLocaleString('en-US')} more requests`);
  result.rssMaxKiB = result.afterWarmup.rssKiB;
  result.rssMinKiB = result.afterWarmup.rssKiB;
  const sampler = setInterval(() => {
    const rss = treeMemoryOf(spec.pid)?.rssKiB;
    if (rss === undefined || !Number.isFinite(rss)) return;
    (result.rssSamplesKiB ??= []).push(rss);
    result.rssMaxKiB = Math.max(result.rssMaxKiB!, rss);
    result.rssMinKiB = Math.min(result.rssMinKiB!, rss);
    if (spec.auditStore) result.storeMaxBytes = Math.max(result.storeMaxBytes ?? 0, storeBytes(spec.auditStore));
  }, 1_000);
  try {
    result.main = await runLoad({ url: spec.base, headers: {}, connections: spec.connections, durationS: boundS(rest), amount: rest, requests });
  } finally {
    clearInterval(sampler);
  }
  result.end = await pointOf(spec.base, spec.pid, spec.requests, spec.auditStore);
}

/**
 * The trend of VmRSS after warm-up: the median of the last fifth of the per-second samples over
 * the median of the first fifth, minus one. Two single readings mostly measure where the V8
 * heap is in its collection cycle (under this load the main heap swings by 30–40 MiB between
 * major collections, over 10 % of VmRSS, with no trend); medians over stretches of a cycle or
 * more compare like with like, so what this reports is growth. Undefined with fewer than 10
 * samples.
 */
export function rssTrend(samples: readonly number[] | undefined): { first: number; last: number; growth: number } | undefined {
  if (!samples || samples.length < 10) return undefined;
  const window = Math.floor(samples.length / 5);
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const middle = sorted.length >> 1;
    return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
  };
  const first = median(samples.slice(0, window));
  const last = median(samples.slice(-window));
  return { first, last, growth: (last - first) / first };
}

/** Responses of each status over both phases, beside what the mix makes a correct service answer. */
export function soakStatusSummary(result: SoakResult): { observed: Record<string, number>; expected: Record<string, number> } {
  const observed: Record<string, number> = {};
  for (const phase of [result.warm, result.main]) {
    for (const [code, n] of Object.entries(phase?.statusCodes ?? {})) observed[code] = (observed[code] ?? 0) + n;
  }
  const total = Object.values(observed).reduce((a, b) => a + b, 0);
  const expected: Record<string, number> = {};
  for (const entry of result.mix) expected[entry.expect] = (expected[entry.expect] ?? 0) + total / result.mix.length;
  return { observed, expected };
}
