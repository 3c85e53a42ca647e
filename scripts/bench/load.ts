/**
 * One autocannon run, reduced to the figures the benchmark prints. autocannon ships no types,
 * so the small part of its API used here is typed locally. Latencies are collected from its
 * 'response' events (float milliseconds from process.hrtime) rather than its histogram, which
 * keeps whole milliseconds only: at 1-2 ms per request that rounding would hide everything.
 */
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { withTimeout } from './procs.js';

export interface LoadRequest {
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

interface AutocannonOptions {
  url: string;
  method: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string | Buffer;
  connections: number;
  duration?: number;
  amount?: number;
  overallRate?: number;
  requests?: LoadRequest[];
  pipelining?: number;
  timeout?: number;
}

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  resets: number;
  '2xx': number;
  statusCodeStats: Record<string, { count: number }>;
  requests: { total: number; sent: number };
}

interface AutocannonInstance extends EventEmitter, PromiseLike<AutocannonResult> {
  stop(): void;
}

const autocannon = createRequire(import.meta.url)('autocannon') as (options: AutocannonOptions) => AutocannonInstance;

export interface LoadSpec {
  url: string;
  /** POST when there is a body, GET otherwise; a Buffer for binary bodies (OCSP requests). */
  body?: string | Buffer;
  headers: Record<string, string>;
  connections: number;
  /** Length of the run; with `amount`, the longest it may take. */
  durationS: number;
  /** Stop after this many requests instead of after durationS. */
  amount?: number;
  /** Requests per second over all connections, for a probe beside a saturating load. */
  overallRate?: number;
  /** Each connection cycles through these (paths relative to url) instead of one request. */
  requests?: LoadRequest[];
}

export interface LoadResult {
  /** 2xx responses per second of the run. */
  okPerSec: number;
  ok: number;
  completed: number;
  non2xx: number;
  /** Socket errors, including timeouts. */
  errors: number;
  timeouts: number;
  resets: number;
  statusCodes: Record<string, number>;
  /** Latency of 2xx responses, milliseconds. */
  p50: number;
  p99: number;
  max: number;
  seconds: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))]!;
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  let latencies = new Float64Array(1 << 16);
  let count = 0;
  const instance = autocannon({
    url: spec.url,
    method: spec.body === undefined ? 'GET' : 'POST',
    headers: spec.body === undefined ? spec.headers : { 'content-type': 'application/json', ...spec.headers },
    body: spec.body,
    connections: spec.connections,
    ...(spec.amount === undefined ? { duration: spec.durationS } : { amount: spec.amount }),
    ...(spec.overallRate === undefined ? {} : { overallRate: spec.overallRate }),
    ...(spec.requests === undefined ? {} : { requests: spec.requests }),
    pipelining: 1,
    timeout: 10,
  });
  instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
    if (statusCode < 200 || statusCode >= 300) return;
    if (count === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2);
      bigger.set(latencies);
      latencies = bigger;
    }
    latencies[count++] = responseTime;
  });
  let result: AutocannonResult;
  try {
    result = await withTimeout(Promise.resolve(instance), (spec.durationS + 30) * 1000, `autocannon ${spec.url}`);
  } catch (error) {
    instance.stop();
    throw error;
  }
  const sorted = latencies.subarray(0, count).sort();
  const statusCodes: Record<string, number> = {};
  for (const [code, { count: n }] of Object.entries(result.statusCodeStats)) statusCodes[code] = n;
  return {
    okPerSec: result['2xx'] / result.duration,
    ok: result['2xx'],
    completed: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    resets: result.resets,
    statusCodes,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: count ? sorted[count - 1]! : NaN,
    seconds: result.duration,
  };
}
