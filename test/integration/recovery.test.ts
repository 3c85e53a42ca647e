/**
 * The token fails under steady concurrent load, through the fault-injecting PKCS#11 shim
 * (test/fault-pkcs11) in front of the embedded SoftHSM2 token:
 *
 * - error faults (CKR_DEVICE_ERROR, CKR_SESSION_HANDLE_INVALID, CKR_TOKEN_NOT_PRESENT, the last
 *   also on every function so that reconnecting fails too until the fault clears): every
 *   request ends within the acquire timeout with a 503 (Retry-After, envelope) or a genuine
 *   200, never a 500 or a hang; after the fault clears the same service (no restart) serves
 *   again within 2 s, having opened sessions, logged in and looked key handles up again;
 * - a stalled C_Sign, and a stalled C_SignInit (on the token threads): requests end by the
 *   acquire timeout with 503, the threads stuck in the stalled calls are never handed a call
 *   again and retire (closing their sessions) when the calls return, replacements stay within
 *   the bound, and the service serves again within 2 s of the stall's end;
 * - a wrong PIN at start: the start fails with a message naming the PIN after exactly one
 *   C_Login.
 *
 * Every 200 is checked for real: signatures with Node's crypto against the served public key,
 * ciphertexts by decrypting them after the fault and comparing with what was encrypted.
 * Time is measured with performance.now() on the test's side of the HTTP connection.
 */
import { constants, createPublicKey, randomBytes, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startService, StartupError, type RunningService } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config/load.js';
import { createLogger } from '../../src/logger.js';
import { envelopeValidator } from '../helpers/envelope.js';
import { buildFaultModule, FaultControl, type FaultCounts } from '../helpers/fault-module.js';
import { login } from '../helpers/http.js';
import { newDataDir, type AdminCredentials } from '../helpers/service.js';
import { parseMetrics } from '../helpers/metrics.js';

const ACQUIRE_TIMEOUT_MS = 1000;
/** What a request may take beyond the acquire timeout: HTTP, auth, the store, JSON. */
const SLACK_MS = 250;
/** The service must serve again within this long after a fault ends. */
const RECOVERY_MS = 2000;
const LOOPS = 16;
/** A client backs off this long after a 503 (less than Retry-After, to measure recovery finely). */
const BACKOFF_AFTER_503_MS = 25;
/** A request that takes this long has hung: it is aborted and recorded as status 0. */
const HANG_MS = 15_000;
const WRONG_PIN_ENV = 'HSM_SIGNER_RECOVERY_TEST_WRONG_PIN';

const CKR = { DEVICE_ERROR: 0x30, SESSION_HANDLE_INVALID: 0xb3, TOKEN_NOT_PRESENT: 0xe0 } as const;
const HOT_FUNCTIONS = ['C_Sign', 'C_Encrypt', 'C_SignInit', 'C_EncryptInit'];

const now = () => performance.now();
const b64 = (bytes: Buffer) => bytes.toString('base64');

type Op = 'encrypt' | 'sign-rsa-pss' | 'sign-rsa-pkcs1' | 'sign-ec';
const OPS: readonly Op[] = ['encrypt', 'sign-ec', 'sign-rsa-pss', 'encrypt', 'sign-ec', 'sign-rsa-pkcs1'];
const SIGNING_ALGORITHM: Record<Exclude<Op, 'encrypt'>, string> = {
  'sign-rsa-pss': 'RSASSA_PSS_SHA_256',
  'sign-rsa-pkcs1': 'RSASSA_PKCS1_V1_5_SHA_256',
  'sign-ec': 'ECDSA_SHA_256',
};

interface Reply {
  start: number;
  end: number;
  /** 0: no answer (aborted after HANG_MS, or the connection failed). */
  status: number;
  retryAfter: string | null;
  requestId: string | null;
  body: any;
  error?: string;
}

interface Sample extends Reply {
  loop: number;
  op: Op;
  /** The plaintext or the data signed. */
  input: Buffer;
}

let baseUrl = '';
let accessToken = '';

async function call(method: string, path: string, body?: unknown): Promise<Reply> {
  const start = now();
  try {
    const response = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${accessToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(HANG_MS),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // Not JSON (/metrics): the text itself.
    }
    return { start, end: now(), status: response.status, retryAfter: response.headers.get('retry-after'), requestId: response.headers.get('x-request-id'), body: parsed };
  } catch (error) {
    return { start, end: now(), status: 0, retryAfter: null, requestId: null, body: undefined, error: String(error) };
  }
}

async function metrics(): Promise<Map<string, number>> {
  const reply = await call('GET', '/metrics');
  if (reply.status !== 200) throw new Error(`GET /metrics answered ${reply.status}: ${JSON.stringify(reply.body)?.slice(0, 300)}`);
  return parseMetrics(String(reply.body));
}

const tokenErrorsOf = (m: Map<string, number>, ckr: string) => m.get(`hsm_signer_pkcs11_errors_total{ckr="${ckr}"}`) ?? 0;
const delta = (after: FaultCounts, before: FaultCounts, fn: string) => (after[fn] ?? 0) - (before[fn] ?? 0);

/** N loops, each sending encrypt and sign requests back to back, every answer recorded. */
class Load {
  readonly samples: Sample[] = [];
  private stopped = false;
  private readonly loops: Promise<void>[] = [];

  constructor(private readonly keys: Keys) {}

  start(loops: number): this {
    for (let i = 0; i < loops; i++) this.loops.push(this.loop(i));
    return this;
  }

  private async loop(index: number): Promise<void> {
    for (let k = 0; !this.stopped; k++) {
      const op = OPS[(index + k) % OPS.length]!;
      const input = randomBytes(op === 'encrypt' ? 48 : 64);
      const reply =
        op === 'encrypt'
          ? await call('POST', `/api/v1/kms/keys/${this.keys.aes}/encrypt`, { plaintext: b64(input) })
          : await call('POST', `/api/v1/kms/keys/${op === 'sign-ec' ? this.keys.ec : this.keys.rsa}/sign`, { signingAlgorithm: SIGNING_ALGORITHM[op], data: b64(input) });
      this.samples.push({ ...reply, loop: index, op, input });
      if (reply.status !== 200) await sleep(BACKOFF_AFTER_503_MS);
    }
  }

  async stop(): Promise<Sample[]> {
    this.stopped = true;
    await Promise.all(this.loops);
    return this.samples;
  }
}

/** Calls `probe` every `intervalMs` until stopped, recording each answer with its times. */
function poller<T>(intervalMs: number, probe: () => Promise<T>) {
  const samples: Array<{ start: number; end: number; value?: T; error?: string }> = [];
  let stopped = false;
  const running = (async () => {
    while (!stopped) {
      const start = now();
      try {
        samples.push({ start, end: now(), value: await probe() });
        samples[samples.length - 1]!.end = now();
      } catch (error) {
        samples.push({ start, end: now(), error: String(error) });
      }
      await sleep(intervalMs);
    }
  })();
  return {
    samples,
    async stop() {
      stopped = true;
      await running;
      return samples;
    },
  };
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 10): Promise<boolean> {
  const deadline = now() + timeoutMs;
  while (now() < deadline) {
    if (await condition()) return true;
    await sleep(intervalMs);
  }
  return condition();
}

interface Keys {
  aes: string;
  rsa: string;
  ec: string;
}

let control: FaultControl;
let modulePath: string;
let dataDir: string;
let config: Config;
let service: RunningService;
let keys: Keys;
let admin: AdminCredentials;
const publicKeys = new Map<string, KeyObject>();
const logLines: string[] = [];
const logger = () => createLogger('warn', { write: (line: string) => void logLines.push(line) });

/** The last log lines at warn and above that are not the 503s of single requests, for failure messages. */
function notableLog(limit = 30): string {
  return logLines
    .filter((line) => !/"statusCode":503|retry shortly/.test(line))
    .slice(-limit)
    .map((line) => line.slice(0, 400))
    .join('\n');
}

async function createKey(body: Record<string, unknown>): Promise<string> {
  const created = await call('POST', '/api/v1/kms/keys', { projectId: 'default', ...body });
  if (created.status !== 200) throw new Error(`creating key ${JSON.stringify(body)}: ${created.status} ${JSON.stringify(created.body)}`);
  return created.body.key.id as string;
}

function signatureVerifies(sample: Sample): boolean {
  const signature = Buffer.from(sample.body.signature, 'base64');
  if (sample.op === 'sign-ec') return nodeVerify('sha256', sample.input, { key: publicKeys.get(keys.ec)!, dsaEncoding: 'der' }, signature);
  const padding = sample.op === 'sign-rsa-pss' ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } : { padding: constants.RSA_PKCS1_PADDING };
  return nodeVerify('sha256', sample.input, { key: publicKeys.get(keys.rsa)!, ...padding }, signature);
}

/**
 * Checks every 200 for real: each signature against the public key, each ciphertext by
 * decrypting it now (the token is back) and comparing with what was encrypted.
 */
async function verifySuccesses(samples: Sample[]): Promise<{ signatures: number; ciphertexts: number }> {
  const ok = samples.filter((s) => s.status === 200);
  const badSignatures = ok.filter((s) => s.op !== 'encrypt' && (s.body.keyId !== (s.op === 'sign-ec' ? keys.ec : keys.rsa) || s.body.signingAlgorithm !== SIGNING_ALGORITHM[s.op] || !signatureVerifies(s)));
  expect(badSignatures.map((s) => ({ op: s.op, body: s.body })).slice(0, 5), 'signatures answered 200 that do not verify').toEqual([]);

  const encrypted = ok.filter((s) => s.op === 'encrypt');
  const failures: unknown[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < encrypted.length) {
        const sample = encrypted[next++]!;
        const decrypted = await call('POST', `/api/v1/kms/keys/${keys.aes}/decrypt`, { ciphertext: sample.body.ciphertext });
        if (decrypted.status !== 200 || decrypted.body.plaintext !== b64(sample.input)) failures.push({ status: decrypted.status, body: decrypted.body, at: sample.start });
      }
    }),
  );
  expect(failures.slice(0, 5), `ciphertexts answered 200 that do not decrypt to their plaintext (${failures.length} of ${encrypted.length})`).toEqual([]);
  return { signatures: ok.length - encrypted.length, ciphertexts: encrypted.length };
}

const validate503 = envelopeValidator(503);

/** Every answer is a verified-later 200 or a 503 with Retry-After and a valid envelope; none hung. */
function expectOnly200Or503(samples: Sample[]): void {
  const unexpected = samples.filter((s) => s.status !== 200 && s.status !== 503);
  expect(
    unexpected.slice(0, 5).map((s) => ({ op: s.op, status: s.status, body: s.body, error: s.error, ms: Math.round(s.end - s.start) })),
    `answers other than 200/503 (${unexpected.length} of ${samples.length}); log:\n${notableLog()}`,
  ).toEqual([]);
  const bad503 = samples.filter(
    (s) => s.status === 503 && !(s.body?.error === 'ServiceUnavailable' && s.body?.reqId === s.requestId && /^[1-9]\d*$/.test(s.retryAfter ?? '') && validate503(s.body)),
  );
  expect(bad503.slice(0, 5).map((s) => ({ body: s.body, retryAfter: s.retryAfter })), '503s without Retry-After or a valid envelope').toEqual([]);
}

function expectWithinAcquireTimeout(samples: Sample[]): number {
  const slow = samples.filter((s) => s.end - s.start > ACQUIRE_TIMEOUT_MS + SLACK_MS);
  expect(
    slow.slice(0, 5).map((s) => ({ op: s.op, status: s.status, ms: Math.round(s.end - s.start), body: s.body })),
    `requests slower than ${ACQUIRE_TIMEOUT_MS} + ${SLACK_MS} ms (${slow.length} of ${samples.length})`,
  ).toEqual([]);
  return Math.max(0, ...samples.map((s) => s.end - s.start));
}

function statusCounts(samples: Array<{ status: number }>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) out[s.status] = (out[s.status] ?? 0) + 1;
  return out;
}

beforeAll(async () => {
  // Both before the module is loaded: the shim reads its environment when it is loaded.
  control = FaultControl.create();
  modulePath = buildFaultModule();
  dataDir = newDataDir();
  config = loadConfig(
    {
      dataDir,
      server: { host: '127.0.0.1', port: 0 },
      logLevel: 'warn',
      hsm: { modulePath, embedded: true, acquireTimeoutMs: ACQUIRE_TIMEOUT_MS },
      // The load sends thousands of requests a second during a fault: no 429s in the way.
      rateLimit: { perIdentityPerSecond: 0 },
    },
    { NODE_ENV: 'test' },
  );
  service = await startService(config, logger());
  baseUrl = service.url;
  admin = JSON.parse(readFileSync(join(dataDir, 'admin-credentials.json'), 'utf8')) as AdminCredentials;
  accessToken = await login(baseUrl, admin);
  keys = {
    aes: await createKey({ name: 'recovery-aes' }),
    rsa: await createKey({ name: 'recovery-rsa', keyUsage: 'sign-verify', encryptionAlgorithm: 'RSA_2048' }),
    ec: await createKey({ name: 'recovery-ec', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' }),
  };
  for (const id of [keys.rsa, keys.ec]) {
    const served = await call('GET', `/api/v1/kms/keys/${id}/public-key`);
    expect(served.status).toBe(200);
    publicKeys.set(id, createPublicKey({ key: Buffer.from(served.body.publicKey, 'base64'), format: 'der', type: 'spki' }));
  }
}, 120_000);

afterAll(async () => {
  control?.clear();
  await service?.close().catch(() => undefined);
  control?.dispose();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  delete process.env[WRONG_PIN_ENV];
});

describe('token faults under steady concurrent load', () => {
  it('runs the embedded SoftHSM2 token through the fault shim, and every operation works before any fault', async () => {
    const counts = await control.counts();
    // The shim made the token (first start) and logged in: it is the module in use.
    expect(counts.C_InitToken).toBe(1);
    expect(counts.C_Login).toBeGreaterThanOrEqual(1);
    // Use every key once, so its handle is cached before the faults.
    const load = new Load(keys).start(OPS.length);
    await sleep(300);
    const samples = await load.stop();
    expect(new Set(samples.filter((s) => s.status === 200).map((s) => s.op))).toEqual(new Set(OPS));
    expectOnly200Or503(samples);
    expect(statusCounts(samples)).toEqual({ 200: samples.length });
    await verifySuccesses(samples);
  });

  const errorFaults: Array<{ name: string; ckr: number; functions: string[] | '*'; ckrName: string }> = [
    { name: 'CKR_DEVICE_ERROR on the hot functions', ckr: CKR.DEVICE_ERROR, functions: HOT_FUNCTIONS, ckrName: 'CKR_DEVICE_ERROR' },
    { name: 'CKR_SESSION_HANDLE_INVALID on the hot functions', ckr: CKR.SESSION_HANDLE_INVALID, functions: HOT_FUNCTIONS, ckrName: 'CKR_SESSION_HANDLE_INVALID' },
    { name: 'CKR_TOKEN_NOT_PRESENT on the hot functions', ckr: CKR.TOKEN_NOT_PRESENT, functions: HOT_FUNCTIONS, ckrName: 'CKR_TOKEN_NOT_PRESENT' },
    { name: 'CKR_TOKEN_NOT_PRESENT on every function (reconnecting fails too)', ckr: CKR.TOKEN_NOT_PRESENT, functions: '*', ckrName: 'CKR_TOKEN_NOT_PRESENT' },
  ];

  for (const fault of errorFaults) {
    it(`${fault.name}: 503 within the acquire timeout during, serving again within 2 s after, same service`, async () => {
      const sameService = service;
      const sameToken = service.token;
      const load = new Load(keys).start(LOOPS);
      const readyz = poller(50, async () => (await call('GET', '/readyz')).status);
      const tokenUp = poller(100, async () => (await metrics()).get('hsm_signer_token_up'));
      await sleep(800);

      const countsBefore = await control.counts();
      const metricsBefore = await metrics();
      const injectedAt = now();
      control.inject({ functions: fault.functions, ckr: fault.ckr, forMs: 10_000 });
      await sleep(1500);
      control.clear();
      const clearedAt = now();

      const firstSuccess = () => load.samples.filter((s) => s.status === 200 && s.start >= clearedAt).sort((a, b) => a.end - b.end)[0];
      await waitFor(() => firstSuccess() !== undefined, RECOVERY_MS + 2000);
      await sleep(1000);
      const samples = await load.stop();
      const readyzSamples = await readyz.stop();
      const tokenUpSamples = await tokenUp.stop();
      const countsAfter = await control.counts();
      const metricsAfter = await metrics();

      const during = samples.filter((s) => s.start >= injectedAt && s.start <= clearedAt);
      const before = samples.filter((s) => s.end < injectedAt);
      const recovered = firstSuccess();
      const report = {
        fault: fault.name,
        requests: samples.length,
        statuses: statusCounts(samples),
        startedDuringFault: statusCounts(during),
        maxMsDuringFault: Math.round(Math.max(0, ...samples.filter((s) => s.end >= injectedAt && s.start <= clearedAt).map((s) => s.end - s.start))),
        maxMsOverall: Math.round(Math.max(...samples.map((s) => s.end - s.start))),
        firstSuccessAfterClearMs: recovered && Math.round(recovered.end - clearedAt),
        readyzDuringFault: statusCounts(readyzSamples.filter((s) => s.start >= injectedAt && s.end <= clearedAt).map((s) => ({ status: s.value ?? 0 }))),
        tokenUpDuringFault: [...new Set(tokenUpSamples.filter((s) => s.start >= injectedAt && s.end <= clearedAt).map((s) => s.value))],
        counts: Object.fromEntries(['C_Login', 'C_OpenSession', 'C_CloseSession', 'C_FindObjectsInit', 'C_Initialize', 'C_Finalize'].map((fn) => [fn, delta(countsAfter, countsBefore, fn)])),
        errorsMetric: tokenErrorsOf(metricsAfter, fault.ckrName) - tokenErrorsOf(metricsBefore, fault.ckrName),
      };
      console.log(JSON.stringify(report));

      // Steady load before the fault: every request succeeded.
      expect(before.length).toBeGreaterThan(50);
      expect(statusCounts(before)).toEqual({ 200: before.length });
      // During: only 503s (with Retry-After and an envelope) or 200s, each within the acquire timeout; no 500, no hang.
      expect(during.length).toBeGreaterThan(50);
      expect(during.some((s) => s.status === 503)).toBe(true);
      expectOnly200Or503(samples);
      report.maxMsOverall = Math.round(expectWithinAcquireTimeout(samples));

      // After clear(): a 200 within 2 s, then nothing but 200s.
      expect(recovered, `no 200 within ${RECOVERY_MS + 2000} ms of clearing the fault; log:\n${notableLog()}`).toBeDefined();
      expect(recovered!.end - clearedAt).toBeLessThanOrEqual(RECOVERY_MS);
      const afterRecovery = samples.filter((s) => s.start >= recovered!.end);
      expect(afterRecovery.length).toBeGreaterThan(50);
      expect(statusCounts(afterRecovery), `answers after the first success; log:\n${notableLog()}`).toEqual({ 200: afterRecovery.length });
      await verifySuccesses(samples);

      // /readyz: 503 while the token fails, 200 again after.
      expect(readyzSamples.some((s) => s.start >= injectedAt && s.end <= clearedAt && s.value === 503)).toBe(true);
      const readyAfter = readyzSamples.filter((s) => s.start >= recovered!.end);
      expect(readyAfter.length).toBeGreaterThan(0);
      expect(readyAfter.map((s) => s.value ?? s.error)).toEqual(readyAfter.map(() => 200));
      if (fault.functions === '*') {
        // Nothing answers while everything fails: after the first 503 every probe of the fault is a 503.
        const inFault = readyzSamples.filter((s) => s.start >= injectedAt && s.end <= clearedAt);
        const firstDown = inFault.findIndex((s) => s.value === 503);
        expect(inFault.slice(firstDown).map((s) => s.value)).toEqual(inFault.slice(firstDown).map(() => 503));
      }

      // Metrics: token_up 0 during, 1 after; the CKR counted.
      expect(tokenUpSamples.some((s) => s.start >= injectedAt && s.end <= clearedAt && s.value === 0)).toBe(true);
      expect(metricsAfter.get('hsm_signer_token_up')).toBe(1);
      expect(tokenUpSamples.filter((s) => s.start >= recovered!.end).map((s) => s.value)).not.toContain(0);
      expect(report.errorsMetric).toBeGreaterThan(0);

      // Recovery rebuilt the sessions, logged in again and looked the three keys' handles up again.
      expect(report.counts.C_OpenSession).toBeGreaterThan(0);
      expect(report.counts.C_Login).toBeGreaterThan(0);
      expect(report.counts.C_FindObjectsInit).toBeGreaterThanOrEqual(3);
      // No restart: the same service and token objects, on the same URL.
      expect(service).toBe(sameService);
      expect(service.token).toBe(sameToken);
      expect(service.server.listening).toBe(true);
      expect(service.token.poolStats).toMatchObject({ state: 'up', stuck: 0 });
    });
  }

  for (const stalled of ['C_Sign', 'C_SignInit']) {
    it(`a stalled ${stalled}: 503 by the acquire timeout, stuck threads never handed a call again, serving within 2 s after the stall`, async () => {
      // Counted while nothing runs, so that every C_SignInit counted has its C_Sign counted too
      // (under load a C_Sign may still be on its way to a token thread when the counters are read).
      expect(service.token.poolStats).toMatchObject({ state: 'up', busy: 0, stuck: 0 });
      const countsBefore = await control.counts();
      const metricsBefore = await metrics();
      const load = new Load(keys).start(LOOPS);
      // The operator's view (/metrics) and, finer grained, the pool's own (read in process).
      const gauges = poller(100, async () => {
        const m = await metrics();
        return { stuck: m.get('hsm_signer_pkcs11_sessions_stuck'), up: m.get('hsm_signer_token_up') };
      });
      const pool = poller(20, async () => service.token.poolStats);
      await sleep(800);

      const injectedAt = now();
      control.inject({ functions: [stalled], ckr: 'stall', forMs: 4000 });
      // Once the stuck calls hold every token thread they may, a login must still be quick: its
      // scrypt runs on libuv's thread pool, which no token call ever occupies.
      await sleep(1500);
      const loginStarted = now();
      await login(baseUrl, admin);
      const loginMs = now() - loginStarted;
      await sleep(1500);
      control.clear();
      const stallEndedAt = now();

      const firstSignSuccess = () => load.samples.filter((s) => s.op !== 'encrypt' && s.status === 200 && s.start >= stallEndedAt).sort((a, b) => a.end - b.end)[0];
      await waitFor(() => firstSignSuccess() !== undefined, RECOVERY_MS + 2000);
      let stuckGauge: number | undefined;
      await waitFor(async () => (stuckGauge = (await metrics()).get('hsm_signer_pkcs11_sessions_stuck')) === 0, RECOVERY_MS, 50);
      await sleep(1000);
      const samples = await load.stop();
      const poolSamples = await pool.stop();
      const gaugeSamples = await gauges.stop();
      const countsAfter = await control.counts();
      const metricsAfter = await metrics();

      const during = samples.filter((s) => s.start >= injectedAt && s.start <= stallEndedAt);
      const recovered = firstSignSuccess();
      const abandoned = tokenErrorsOf(metricsAfter, 'OPERATION_TIMEOUT') - tokenErrorsOf(metricsBefore, 'OPERATION_TIMEOUT');
      const report = {
        fault: `${stalled} stalled 3 s`,
        requests: samples.length,
        statuses: statusCounts(samples),
        startedDuringStall: statusCounts(during),
        signStartedDuringStall: statusCounts(during.filter((s) => s.op !== 'encrypt')),
        maxMsDuringStall: Math.round(Math.max(0, ...samples.filter((s) => s.end >= injectedAt && s.start <= stallEndedAt).map((s) => s.end - s.start))),
        firstSignSuccessAfterStallMs: recovered && Math.round(recovered.end - stallEndedAt),
        maxStuckSeen: Math.max(...poolSamples.map((s) => s.value?.stuck ?? 0)),
        maxStuckGaugeSeen: Math.max(...gaugeSamples.map((s) => s.value?.stuck ?? 0)),
        maxThreadsSeen: Math.max(...poolSamples.map((s) => (s.value?.live ?? 0) + (s.value?.stuck ?? 0))),
        tokenUpGaugeValues: [...new Set(gaugeSamples.map((s) => s.value?.up))],
        poolStates: [...new Set(poolSamples.map((s) => s.value?.state))],
        abandonedCalls: abandoned,
        poolTimeouts: tokenErrorsOf(metricsAfter, 'POOL_TIMEOUT') - tokenErrorsOf(metricsBefore, 'POOL_TIMEOUT'),
        operationActive: tokenErrorsOf(metricsAfter, 'CKR_OPERATION_ACTIVE') - tokenErrorsOf(metricsBefore, 'CKR_OPERATION_ACTIVE'),
        stuckGaugeAfter: stuckGauge,
        counts: Object.fromEntries(['C_SignInit', 'C_Sign', 'C_OpenSession', 'C_CloseSession', 'C_Login'].map((fn) => [fn, delta(countsAfter, countsBefore, fn)])),
      };
      console.log(JSON.stringify(report));

      // During: 503 (timeout or busy) or 200, all by the acquire timeout; none waited out the 3 s stall.
      expect(during.length).toBeGreaterThan(30);
      expect(during.some((s) => s.op !== 'encrypt' && s.status === 503)).toBe(true);
      expectOnly200Or503(samples);
      expectWithinAcquireTimeout(samples);

      // Stuck threads: some, each retired (its sessions closed) when its call returned, and never
      // handed a call again — a stuck thread's session reused would fail its next C_*Init with
      // CKR_OPERATION_ACTIVE (its sign operation is still active in the token) or, once closed,
      // CKR_SESSION_HANDLE_INVALID and take the pool down; and every C_SignInit was followed by
      // its C_Sign. Replacements stay within the bound: usable and stuck threads together never
      // exceed twice the pool's size, however long the token hangs.
      expect(report.maxStuckSeen).toBeGreaterThan(0);
      expect(report.maxThreadsSeen).toBeLessThanOrEqual(2 * config.hsm.sessions);
      expect(report.maxStuckGaugeSeen).toBeGreaterThan(0);
      expect(abandoned).toBeGreaterThanOrEqual(report.maxStuckSeen);
      expect(stuckGauge).toBe(0);
      expect(report.counts.C_CloseSession).toBeGreaterThanOrEqual(abandoned);
      expect(report.operationActive).toBe(0);
      for (const ckr of ['CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED', 'CKR_OPERATION_NOT_INITIALIZED']) {
        expect(tokenErrorsOf(metricsAfter, ckr) - tokenErrorsOf(metricsBefore, ckr), ckr).toBe(0);
      }
      // Both counted at rest (before the load, after it and the stuck calls ended): every
      // C_SignInit of this test was followed by its C_Sign, so none failed on an active operation.
      expect(report.counts.C_Sign).toBe(report.counts.C_SignInit);
      expect(loginMs, 'a login while the token was stalled').toBeLessThan(ACQUIRE_TIMEOUT_MS);
      // A stall is not a token failure: the pool stayed up and did not log in again.
      expect(report.poolStates).toEqual(['up']);
      expect(report.tokenUpGaugeValues).toEqual([1]);
      expect(report.counts.C_Login).toBe(0);

      // After: a signature within 2 s of the stall's end, then nothing but 200s, all genuine.
      expect(recovered, `no signature within ${RECOVERY_MS + 2000} ms of the stall's end; log:\n${notableLog()}`).toBeDefined();
      expect(recovered!.end - stallEndedAt).toBeLessThanOrEqual(RECOVERY_MS);
      const afterRecovery = samples.filter((s) => s.start >= recovered!.end);
      expect(afterRecovery.length).toBeGreaterThan(50);
      expect(statusCounts(afterRecovery)).toEqual({ 200: afterRecovery.length });
      await verifySuccesses(samples);
      expect(service.token.poolStats).toMatchObject({ state: 'up', stuck: 0, busy: 0 });
    });
  }
});

describe('a token without a key type', () => {
  it('CKR_MECHANISM_INVALID from key generation (an HSM without Ed25519) is a 400 naming it, and leaves no key', async () => {
    control.inject({ functions: ['C_GenerateKeyPair'], ckr: 0x70 /* CKR_MECHANISM_INVALID */, forMs: 5000 });
    try {
      const refused = await call('POST', '/api/v1/kms/keys', { projectId: 'default', name: 'recovery-no-ed25519', keyUsage: 'sign-verify', encryptionAlgorithm: 'ED25519' });
      expect(refused.status, JSON.stringify(refused.body)).toBe(400);
      expect(refused.body.message).toBe('This HSM cannot make ED25519 keys (CKR_MECHANISM_INVALID)');
    } finally {
      control.clear();
    }
    const listed = await call('GET', '/api/v1/kms/keys?projectId=default&search=recovery-no-ed25519');
    expect(listed.status).toBe(200);
    expect(listed.body.keys).toEqual([]);
    // The same name is free, and the token makes the key once the mechanism is there.
    const created = await call('POST', '/api/v1/kms/keys', { projectId: 'default', name: 'recovery-no-ed25519', keyUsage: 'sign-verify', encryptionAlgorithm: 'ED25519' });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
  });
});

describe('a wrong PIN at start', () => {
  it('stops the start with a message naming the PIN, after exactly one C_Login', async () => {
    // Hold the shim loaded across the services' own load/close, so its counters survive.
    const holder = new pkcs11js.PKCS11();
    holder.load(modulePath);
    try {
      await service.close();
      const before = await control.counts();
      process.env[WRONG_PIN_ENV] = 'not-the-user-pin';
      const wrong = { ...config, hsm: { ...config.hsm, pinSource: `env:${WRONG_PIN_ENV}` } };
      const started = startService(wrong, logger());
      await expect(started).rejects.toBeInstanceOf(StartupError);
      await expect(started).rejects.toThrow(/refused the user PIN \(CKR_PIN_INCORRECT\)\. Not retrying/);
      await expect(started).rejects.not.toThrow(/not-the-user-pin/);
      const after = await control.counts();
      expect(delta(after, before, 'C_Login')).toBe(1);
      // It gave the module back: finalized, no session left open.
      expect(delta(after, before, 'C_Finalize')).toBe(1);
      expect(delta(after, before, 'C_CloseSession')).toBe(delta(after, before, 'C_OpenSession'));

      // One wrong try did not lock the token: the right PIN still starts the service.
      service = await startService(config, logger());
      baseUrl = service.url;
      expect((await call('GET', '/readyz')).status).toBe(200);
    } finally {
      await service.close().catch(() => undefined);
      holder.close();
    }
  });
});
