/**
 * The log during a flood (src/log-flood.ts): a token fault under steady concurrent load (the
 * fault-injecting PKCS#11 shim in front of SoftHSM2, as in recovery.test.ts) writes a number of
 * lines bounded by the fault's duration, not by the requests refused: the state changes (failed,
 * first failed reconnect, reconnected) and summaries at most one per interval per kind. The
 * summaries' counts add up exactly to the 503s the clients received, and so do the metrics; the
 * per-request line is still there at debug level. Floods of 401s and 429s are summarized the
 * same way.
 *
 * The service runs in this process with its pino JSON lines captured whole, at the default
 * level (info) unless a test raises it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startService, type RunningService } from '../../src/app.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger, type Logger } from '../../src/logger.js';
import { buildFaultModule, FaultControl } from '../helpers/fault-module.js';
import { createIdentity, login } from '../helpers/http.js';
import { parseMetrics } from '../helpers/metrics.js';
import { newDataDir, type AdminCredentials } from '../helpers/service.js';

const SUMMARY_INTERVAL_MS = 1000;
const LOOPS = 16;
const CKR = { DEVICE_ERROR: 0x30, TOKEN_NOT_PRESENT: 0xe0 } as const;
const HOT_FUNCTIONS = ['C_Sign', 'C_Encrypt', 'C_SignInit', 'C_EncryptInit'];

interface Line {
  level: number;
  time: number;
  msg?: string;
  [key: string]: unknown;
}

let control: FaultControl;
let dataDir: string;
let service: RunningService;
let logger: Logger;
let baseUrl = '';
let accessToken = '';
let admin: AdminCredentials;
const keys = { aes: '', ec: '' };
const lines: Line[] = [];

/** `token`: '' sends none. */
async function call(method: string, path: string, body?: unknown, token: string = accessToken): Promise<{ status: number; body: any }> {
  try {
    const response = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // /metrics
    }
    return { status: response.status, body: parsed };
  } catch {
    return { status: 0, body: undefined };
  }
}

/** 16 loops of encrypt and ECDSA sign requests, every status recorded. */
function load() {
  const statuses: number[] = [];
  let stopped = false;
  const loops = Array.from({ length: LOOPS }, async (_, index) => {
    for (let k = 0; !stopped; k++) {
      const data = randomBytes(32).toString('base64');
      const reply =
        (index + k) % 2 === 0
          ? await call('POST', `/api/v1/kms/keys/${keys.aes}/encrypt`, { plaintext: data })
          : await call('POST', `/api/v1/kms/keys/${keys.ec}/sign`, { signingAlgorithm: 'ECDSA_SHA_256', data });
      statuses.push(reply.status);
      if (reply.status !== 200) await sleep(5);
    }
  });
  return {
    statuses,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return statuses;
    },
  };
}

const count = (statuses: number[], status: number) => statuses.filter((s) => s === status).length;

/** Sum of the request-duration histogram's counts for one status code, over every route. */
async function answeredWith(status: number): Promise<number> {
  const reply = await call('GET', '/metrics');
  let sum = 0;
  for (const [name, value] of parseMetrics(String(reply.body))) {
    if (name.startsWith('hsm_signer_http_request_duration_seconds_count{') && name.includes(`status_code="${status}"`)) sum += value;
  }
  return sum;
}

const summaries = (from: Line[], kind: string) => from.filter((line) => line.summary === kind);
/** The summed counts of `from`'s refused-request summaries for reasons starting with `prefix`. */
function refusedCounted(from: Line[], prefix: string): number {
  let sum = 0;
  for (const line of summaries(from, 'refused-requests')) {
    for (const [reason, n] of Object.entries(line.byReason as Record<string, number>)) if (reason.startsWith(prefix)) sum += n;
  }
  return sum;
}

beforeAll(async () => {
  control = FaultControl.create();
  const modulePath = buildFaultModule();
  dataDir = newDataDir();
  const config = loadConfig(
    {
      dataDir,
      server: { host: '127.0.0.1', port: 0 },
      logLevel: 'info',
      logSummaryIntervalMs: SUMMARY_INTERVAL_MS,
      hsm: { modulePath, embedded: true, acquireTimeoutMs: 1000 },
      rateLimit: { perIdentityPerSecond: 0 },
    },
    { NODE_ENV: 'test' },
  );
  logger = createLogger(config.logLevel, { write: (text: string) => void lines.push(JSON.parse(text) as Line) });
  service = await startService(config, logger);
  baseUrl = service.url;
  admin = JSON.parse(readFileSync(join(dataDir, 'admin-credentials.json'), 'utf8')) as AdminCredentials;
  accessToken = await login(baseUrl, admin);
  for (const [name, body] of [
    ['aes', { name: 'flood-aes' }],
    ['ec', { name: 'flood-ec', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' }],
  ] as const) {
    const created = await call('POST', '/api/v1/kms/keys', { projectId: 'default', ...body });
    expect(created.status).toBe(200);
    keys[name] = created.body.key.id;
  }
}, 120_000);

afterAll(async () => {
  control?.clear();
  await service?.close().catch(() => undefined);
  control?.dispose();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('the log under a token fault and load', () => {
  const faults = [
    { name: 'CKR_DEVICE_ERROR on the hot functions (reconnects succeed, the next call fails again)', ckr: CKR.DEVICE_ERROR, functions: HOT_FUNCTIONS, ckrName: 'CKR_DEVICE_ERROR' },
    { name: 'CKR_TOKEN_NOT_PRESENT on every function (reconnects fail too)', ckr: CKR.TOKEN_NOT_PRESENT, functions: '*' as const, ckrName: 'CKR_TOKEN_NOT_PRESENT' },
  ];
  for (const fault of faults) {
    it(`${fault.name}: state changes and summaries only, whose counts are the 503s the clients saw`, async () => {
      const metric503Before = await answeredWith(503);
      const traffic = load();
      await sleep(500);
      const firstLine = lines.length;
      const injectedAt = Date.now();
      control.inject({ functions: fault.functions, ckr: fault.ckr, forMs: 10_000 });
      await sleep(2000);
      control.clear();
      // Serving again, then a little more load.
      const recoveredBy = Date.now() + 5000;
      while (Date.now() < recoveredBy && !lines.slice(firstLine).some((line) => line.msg === 'reconnected to the HSM')) await sleep(50);
      await sleep(300);
      const statuses = await traffic.stop();
      const endedAt = Date.now();
      // Every refusal is counted by the time the summary interval has passed.
      await sleep(SUMMARY_INTERVAL_MS + 300);
      const written = lines.slice(firstLine);
      const clients503 = count(statuses, 503);
      const report = {
        fault: fault.name,
        requests: statuses.length,
        clients503,
        statuses: Object.fromEntries([...new Set(statuses)].map((s) => [s, count(statuses, s)])),
        lines: written.length,
        messages: written.map((line) => `${line.level} ${line.msg}${line.summary ? ` ${line.count}` : ''}`),
      };
      console.log(JSON.stringify(report));

      // A flood happened: hundreds of 503s, only 200s and 503s.
      expect(clients503).toBeGreaterThan(200);
      expect(count(statuses, 200) + clients503).toBe(statuses.length);
      // The summaries add up to them exactly, and so does the metric.
      expect(refusedCounted(written, '503 ')).toBe(clients503);
      expect(refusedCounted(written, '')).toBe(clients503);
      expect((await answeredWith(503)) - metric503Before).toBe(clients503);
      // The reasons are the CKR code and the pool's own (down, timeouts), from a fixed set.
      const reasons = new Set(summaries(written, 'refused-requests').flatMap((line) => Object.keys(line.byReason as object)));
      expect([...reasons].every((reason) => /^503 (CKR_[A-Z_]+|POOL_DOWN|POOL_TIMEOUT|OPERATION_TIMEOUT)$/.test(reason)), [...reasons].join(', ')).toBe(true);
      expect(reasons.has(`503 ${fault.ckrName}`) || reasons.has('503 POOL_DOWN')).toBe(true);

      // The state changes, one line each: failed (with the CKR), then reconnected (with how long).
      const failed = written.filter((line) => line.msg === 'the HSM failed; answering 503 while reconnecting');
      const reconnected = written.filter((line) => line.msg === 'reconnected to the HSM');
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ level: 50, ckr: fault.ckrName });
      expect(reconnected).toHaveLength(1);
      expect(reconnected[0]!.downMs).toBeGreaterThanOrEqual(1500);
      if (fault.functions === '*') {
        expect(written.filter((line) => line.msg === 'reconnecting to the HSM failed; will retry')).toHaveLength(1);
        expect(reconnected[0]!.failedReconnects).toBeGreaterThan(2);
      }
      // No line per request, and nothing else: the number of lines is bounded by the duration
      // (state changes + at most one summary per interval per kind), not by the 503s.
      expect(written.filter((line) => line.msg === 'The HSM is unavailable; retry shortly')).toEqual([]);
      const others = written.filter((line) => !line.summary && ![failed[0], reconnected[0]].includes(line) && line.msg !== 'reconnecting to the HSM failed; will retry');
      expect(others.map((line) => line.msg)).toEqual([]);
      const intervals = Math.ceil((endedAt - injectedAt) / SUMMARY_INTERVAL_MS) + 2;
      expect(summaries(written, 'refused-requests').length).toBeLessThanOrEqual(intervals);
      expect(summaries(written, 'token-failures').length).toBeLessThanOrEqual(intervals);
      expect(written.length).toBeLessThanOrEqual(3 + 2 * intervals);
      expect(written.length * 10).toBeLessThan(clients503);
      // Summaries with 503s are warnings; each names its span.
      for (const line of summaries(written, 'refused-requests')) {
        expect(line.level).toBe(40);
        expect(Date.parse(line.until as string)).toBeGreaterThanOrEqual(Date.parse(line.since as string));
      }
    });
  }

  it('at debug level, every 503 still has its own line (with its reason), besides the summaries', async () => {
    logger.level = 'debug';
    try {
      const firstLine = lines.length;
      const traffic = load();
      await sleep(300);
      control.inject({ functions: HOT_FUNCTIONS, ckr: CKR.DEVICE_ERROR, forMs: 10_000 });
      await sleep(700);
      control.clear();
      await sleep(1500);
      const statuses = await traffic.stop();
      await sleep(SUMMARY_INTERVAL_MS + 300);
      const written = lines.slice(firstLine);
      const perRequest = written.filter((line) => line.level === 20 && line.statusCode === 503);
      expect(count(statuses, 503)).toBeGreaterThan(20);
      expect(perRequest).toHaveLength(count(statuses, 503));
      expect(perRequest.every((line) => typeof line.reqId === 'string' && typeof line.reason === 'string')).toBe(true);
      expect(refusedCounted(written, '503 ')).toBe(count(statuses, 503));
    } finally {
      logger.level = 'info';
    }
  });
});

describe('the log under a flood of 401s and 429s', () => {
  it('summarizes them at info level with exact counts, one line per interval at most', async () => {
    const app = await createIdentity(baseUrl, accessToken, 'flood-app', [{ projectId: 'default', actions: ['read'] }]);
    await sleep(SUMMARY_INTERVAL_MS + 300);
    const firstLine = lines.length;
    const statuses: number[] = [];
    // No token, a forged token: 401. Wrong secrets for one clientId: 401 until the login
    // throttle's limit (5), then 429 for every further login.
    await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        for (let k = 0; k < 40; k++) {
          const reply =
            i < 4
              ? await call('GET', `/api/v1/kms/keys/${keys.aes}`, undefined, i % 2 === 0 ? '' : 'forged-token')
              : await call('POST', '/api/v1/auth/universal-auth/login', { clientId: app.clientId, clientSecret: 'wrong' }, '');
          statuses.push(reply.status);
        }
      }),
    );
    await sleep(SUMMARY_INTERVAL_MS + 300);
    const written = lines.slice(firstLine);
    expect(count(statuses, 401) + count(statuses, 429), JSON.stringify(Object.fromEntries([...new Set(statuses)].map((s) => [s, count(statuses, s)])))).toBe(statuses.length);
    expect(count(statuses, 429)).toBeGreaterThan(100);
    expect(refusedCounted(written, '401 ')).toBe(count(statuses, 401));
    expect(refusedCounted(written, '429 login')).toBe(count(statuses, 429));
    expect(written.every((line) => line.summary === 'refused-requests' && line.level === 30)).toBe(true);
    expect(written.length).toBeGreaterThanOrEqual(1);
    expect(written.length).toBeLessThanOrEqual(3);
  });
});
