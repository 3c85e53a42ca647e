/**
 * Soak mode (`npm run bench -- --soak`): a long mixed load on one service process, to see
 * whether it holds its memory and its sessions. Each connection cycles through a fixed mix
 * (signatures, AES both ways, certificates on both CAs, reads, and requests the service must
 * refuse); the first `warmup` requests let the heap, JIT and caches settle, then the process's
 * VmRSS, thread count and the pool's gauges from /metrics are read, the rest are sent, and
 * they are read again.
 */
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
}

export interface SoakResult {
  requests: number;
  warmup: number;
  mix: SoakMixEntry[];
  warm?: LoadResult;
  main?: LoadResult;
  afterWarmup?: SoakPoint;
  end?: SoakPoint;
  /** Highest and lowest VmRSS sampled every second after warm-up. */
  rssMaxKiB?: number;
  rssMinKiB?: number;
}

const GAUGES = { sessions: 'hsm_signer_pkcs11_sessions', sessionsBusy: 'hsm_signer_pkcs11_sessions_busy', sessionsStuck: 'hsm_signer_pkcs11_sessions_stuck' } as const;

async function gaugesOf(base: string): Promise<Record<keyof typeof GAUGES, number>> {
  const response = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  const read = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { sessions: read(GAUGES.sessions), sessionsBusy: read(GAUGES.sessionsBusy), sessionsStuck: read(GAUGES.sessionsStuck) };
}

/** Idle before a reading, so both readings see the heap after the same quiet spell, not mid-burst. */
const SETTLE_MS = 2_000;

async function pointOf(base: string, pid: number, afterRequests: number): Promise<SoakPoint> {
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  const memory = treeMemoryOf(pid);
  if (!memory) throw new Error('soak: the service process is gone');
  return { afterRequests, rssKiB: memory.rssKiB, hwmKiB: memory.hwmKiB, threads: memory.threads, ...(await gaugesOf(base)) };
}

export async function runSoak(spec: { base: string; pid: number; connections: number; requests: number; warmup: number; mix: SoakMixEntry[]; log: (m: string) => void }, result: SoakResult): Promise<void> {
  const requests = spec.mix.map((entry) => entry.request);
  // Bounds only: far longer than 100,000 requests take at the slowest rate seen here.
  const boundS = (n: number) => 60 + n / 20;
  spec.log(`soak: ${spec.warmup.toLocaleString('en-US')} warm-up requests`);
  result.warm = await runLoad({ url: spec.base, headers: {}, connections: spec.connections, durationS: boundS(spec.warmup), amount: spec.warmup, requests });
  result.afterWarmup = await pointOf(spec.base, spec.pid, spec.warmup);
  const rest = spec.requests - spec.warmup;
  spec.log(`soak: after warm-up VmRSS ${(result.afterWarmup.rssKiB / 1024).toFixed(1)} MiB, ${result.afterWarmup.sessions} sessions; ${rest.toLocaleString('en-US')} more requests`);
  result.rssMaxKiB = result.afterWarmup.rssKiB;
  result.rssMinKiB = result.afterWarmup.rssKiB;
  const sampler = setInterval(() => {
    const rss = treeMemoryOf(spec.pid)?.rssKiB;
    if (rss === undefined || !Number.isFinite(rss)) return;
    result.rssMaxKiB = Math.max(result.rssMaxKiB!, rss);
    result.rssMinKiB = Math.min(result.rssMinKiB!, rss);
  }, 1_000);
  try {
    result.main = await runLoad({ url: spec.base, headers: {}, connections: spec.connections, durationS: boundS(rest), amount: rest, requests });
  } finally {
    clearInterval(sampler);
  }
  result.end = await pointOf(spec.base, spec.pid, spec.requests);
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
