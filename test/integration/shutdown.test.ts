/**
 * Graceful shutdown of the real service (a separate process, as `npm start` runs it): on
 * SIGTERM it stops accepting, finishes the requests in flight (bounded by
 * server.shutdownGraceMs), closes the sessions, finalizes the module and exits 0.
 */
import { createPublicKey, randomUUID, verify, type KeyObject } from 'node:crypto';
import { rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { LEVEL, newChildDataDir, startChildService, type ListeningChildService, type LogLine } from '../helpers/child-service.js';
import { login, request } from '../helpers/http.js';
import { send, type Outcome } from '../helpers/raw-http.js';

const SIGNING_ALGORITHM = 'RSASSA_PKCS1_V1_5_SHA_256';
const CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE']);

function signBody(data: Buffer): string {
  return JSON.stringify({ signingAlgorithm: SIGNING_ALGORITHM, data: data.toString('base64') });
}

function signatureVerifies(outcome: Outcome, data: Buffer, publicKey: KeyObject, keyId: string): boolean {
  if (outcome.status !== 200 || !outcome.complete || outcome.body === undefined) return false;
  let parsed: { signature?: unknown; keyId?: unknown; signingAlgorithm?: unknown };
  try {
    parsed = JSON.parse(outcome.body) as typeof parsed;
  } catch {
    return false;
  }
  if (typeof parsed.signature !== 'string' || parsed.keyId !== keyId || parsed.signingAlgorithm !== SIGNING_ALGORITHM) return false;
  return verify('sha256', data, publicKey, Buffer.from(parsed.signature, 'base64'));
}

async function createSigningKey(svc: ListeningChildService, token: string, algorithm: string): Promise<{ keyId: string; publicKey: KeyObject }> {
  const created = await request(svc.url, 'POST', '/api/v1/kms/keys', {
    token,
    body: { projectId: 'default', name: `shutdown-${randomUUID().slice(0, 8)}`, keyUsage: 'sign-verify', encryptionAlgorithm: algorithm },
  });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  const keyId = created.body.key.id as string;
  const pub = await request(svc.url, 'GET', `/api/v1/kms/keys/${keyId}/public-key`, { token });
  expect(pub.status).toBe(200);
  return { keyId, publicKey: createPublicKey({ key: Buffer.from(pub.body.publicKey as string, 'base64'), format: 'der', type: 'spki' }) };
}

/** Lines at error level or above, and the lines that are not pino JSON, for assertion messages. */
function problems(svc: ListeningChildService): { errors: LogLine[]; notJson: string[] } {
  const { lines, notJson } = svc.logLines();
  return { errors: lines.filter((line) => line.level >= LEVEL.error), notJson };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with what the socket received up to its close (or `timeoutMs`). */
function collect(socket: net.Socket, timeoutMs: number): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    const timer = setTimeout(() => resolve({ text, closed: false }), timeoutMs);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true });
    });
    socket.on('error', () => undefined);
  });
}

describe('graceful shutdown on SIGTERM (separate process)', () => {
  const dataDirs: string[] = [];
  afterAll(() => {
    for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
  });

  it('under steady load: every accepted request gets its full answer, requests in flight at the signal finish, exit 0 within the grace period', async () => {
    const graceMs = 8000;
    const dataDir = newChildDataDir('hsm-signer-shutdown-');
    dataDirs.push(dataDir);
    // No per-identity rate limit and a long acquire timeout: a 429 or a 503 from an overloaded
    // machine would say nothing about shutdown.
    const env = { SHUTDOWN_GRACE_MS: String(graceMs), RATE_LIMIT_PER_SECOND: '0', HSM_ACQUIRE_TIMEOUT_MS: '15000' };
    const svc = await startChildService(dataDir, env);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    try {
      const token = await login(svc.url, svc.admin);
      const { keyId, publicKey } = await createSigningKey(svc, token, 'RSA_4096');

      const LOOPS = 32;
      const results: Array<{ outcome: Outcome; data: Buffer }> = [];
      let signalAt = Number.POSITIVE_INFINITY;
      const loop = async (i: number) => {
        for (let n = 0; ; n++) {
          const data = Buffer.from(`loop ${i} request ${n} ${randomUUID()}`);
          const outcome = await send(svc.url, agent, 'POST', `/api/v1/kms/keys/${keyId}/sign`, { token, body: signBody(data) });
          results.push({ outcome, data });
          // A loop ends at its first connection error (or at a failure before the signal,
          // which fails the test below).
          if (outcome.error || outcome.status !== 200) return;
          if (Date.now() - signalAt > 30_000) throw new Error(`loop ${i} still gets answers 30 s after SIGTERM`);
        }
      };
      const loops = Array.from({ length: LOOPS }, (_, i) => loop(i));

      // Steady load first: at least a second and 100 answers.
      const loadStart = Date.now();
      while (Date.now() - loadStart < 1000 || results.length < 100) {
        if (Date.now() - loadStart > 30_000) throw new Error(`only ${results.length} answers in 30 s of load`);
        if (results.some((r) => r.outcome.error || r.outcome.status !== 200)) break;
        await sleep(20);
      }
      const beforeSignal = results.filter((r) => r.outcome.endedAt < Date.now());
      expect(
        beforeSignal.filter((r) => r.outcome.error || r.outcome.status !== 200).map((r) => r.outcome.error?.message ?? `${r.outcome.status} ${r.outcome.body}`),
        'failures before the signal',
      ).toEqual([]);

      signalAt = svc.signal('SIGTERM');
      await Promise.all(loops);
      const exit = await svc.exited;
      const stopMs = exit.at - signalAt;

      expect(exit.code, svc.output()).toBe(0);
      const stopping = svc.logLines().lines.find((line) => line.msg === 'stopping' && line.signal === 'SIGTERM');
      expect(stopping, 'the service logged "stopping" for SIGTERM').toBeDefined();
      const stoppingAt = stopping!.time;

      const answered = results.filter((r) => r.outcome.responseStarted);
      const failedConnections = results.filter((r) => !r.outcome.responseStarted);
      // Every HTTP answer, before or after the signal, is a complete 200 whose signature verifies.
      const bad = answered.filter((r) => !signatureVerifies(r.outcome, r.data, publicKey, keyId));
      expect(
        bad.map((r) => ({ status: r.outcome.status, complete: r.outcome.complete, error: r.outcome.error?.message, body: r.outcome.body?.slice(0, 200), afterSignal: r.outcome.endedAt >= signalAt })),
        'answers that are not a complete 200 with a valid signature',
      ).toEqual([]);
      // Requests with no answer at all: only connection errors, only after the signal.
      expect(
        failedConnections
          .filter((r) => !CONNECTION_ERRORS.has(r.outcome.error?.code ?? '') || r.outcome.endedAt < signalAt)
          .map((r) => ({ code: r.outcome.error?.code, message: r.outcome.error?.message, msBeforeSignal: signalAt - r.outcome.endedAt })),
        'requests that failed other than by a refused or reset connection after SIGTERM',
      ).toEqual([]);
      // Every loop ended on a connection error: the service stopped accepting.
      expect(failedConnections.length).toBe(LOOPS);
      expect(results.filter((r) => (r.outcome.status ?? 0) >= 500)).toEqual([]);

      // Draining is proven by requests that were on the wire when the service began stopping and
      // still got their full, valid answer after it.
      const inFlightAtStop = answered.filter((r) => r.outcome.startedAt < stoppingAt && r.outcome.endedAt > stoppingAt);
      const okBeforeSignal = answered.filter((r) => r.outcome.endedAt < signalAt);
      const okAfterSignal = answered.filter((r) => r.outcome.endedAt >= signalAt);
      const refused = failedConnections.filter((r) => r.outcome.error?.code === 'ECONNREFUSED').length;
      const reset = failedConnections.length - refused;
      console.info(
        `shutdown under load: ${okBeforeSignal.length} answers before SIGTERM, ${okAfterSignal.length} after it (${inFlightAtStop.length} in flight when "stopping" was logged), ` +
          `${refused} refused and ${reset} reset connections, stopped in ${stopMs} ms (grace ${graceMs} ms)`,
      );
      // Requests made after the service began stopping (on keep-alive connections it had not
      // closed yet) are answered with Connection: close, so their clients leave.
      const madeWhileDraining = answered.filter((r) => r.outcome.startedAt > stoppingAt + 1);
      expect(madeWhileDraining.filter((r) => r.outcome.headers?.connection !== 'close').map((r) => r.outcome.headers?.connection)).toEqual([]);
      console.info(`${madeWhileDraining.length} requests made after "stopping" were still answered on open keep-alive connections`);
      expect(okBeforeSignal.length).toBeGreaterThanOrEqual(100);
      expect(inFlightAtStop.length, 'requests in flight at the moment the service began stopping').toBeGreaterThan(0);

      expect(stopMs, 'stopping took less than the grace period').toBeLessThan(graceMs);
      const { errors, notJson } = problems(svc);
      expect(errors, 'log lines at error level or above').toEqual([]);
      expect(notJson, 'lines on stdout that are not pino JSON').toEqual([]);
      expect(svc.stderr(), 'stderr').toBe('');
      expect(svc.output()).not.toContain('requests still running at the end of the grace period');
    } finally {
      agent.destroy();
      await svc.kill();
    }

    // The token was left consistent: a second start on it signs with the same key, reconciles nothing.
    const again = await startChildService(dataDir, env);
    try {
      expect(again.output()).not.toMatch(/reconciled the store|destroying a token object/);
      expect((await request(again.url, 'GET', '/readyz')).status).toBe(200);
    } finally {
      again.signal('SIGTERM');
      expect((await again.exited).code).toBe(0);
    }
  });

  it('a slow request in flight at SIGTERM gets its full answer; meanwhile new connections are refused, /readyz answers 503, and the process exits right after the answer', async () => {
    const graceMs = 4000;
    const dataDir = newChildDataDir('hsm-signer-shutdown-');
    dataDirs.push(dataDir);
    const svc = await startChildService(dataDir, { SHUTDOWN_GRACE_MS: String(graceMs) });
    // A keep-alive client, as real clients are: it keeps its connection open after the answer.
    const agent = new http.Agent({ keepAlive: true });
    const readiness = new net.Socket();
    try {
      const token = await login(svc.url, svc.admin);
      const { keyId, publicKey } = await createSigningKey(svc, token, 'ECC_NIST_P256');
      const url = new URL(svc.url);

      // A request whose body is still arriving at the signal: slow without any fault, and in
      // flight as long as the test wants.
      const data = Buffer.from(`slow request ${randomUUID()}`);
      const body = JSON.stringify({ signingAlgorithm: 'ECDSA_SHA_256', data: data.toString('base64') });
      let finishBody!: () => void;
      const bodyMayFinish = new Promise<void>((resolve) => (finishBody = resolve));
      const slow = send(svc.url, agent, 'POST', `/api/v1/kms/keys/${keyId}/sign`, {
        token,
        body,
        parts: async (req) => {
          req.write(body.slice(0, 10));
          await bodyMayFinish;
          req.end(body.slice(10));
        },
      });
      // A connection that has sent half of its request headers: not idle, so it survives the
      // closing of idle connections, and its request is read after the signal.
      readiness.connect(Number(url.port), url.hostname);
      await new Promise((resolve) => readiness.once('connect', resolve));
      const readinessAnswer = collect(readiness, 10_000);
      readiness.write(`GET /readyz HTTP/1.1\r\nHost: ${url.host}\r\n`);
      await sleep(300);

      const signalAt = svc.signal('SIGTERM');
      await svc.waitForLog((line) => line.msg === 'stopping', 5000);

      // New connections are refused (server.close runs in the same tick as the log line).
      const fresh = await send(svc.url, new http.Agent({ keepAlive: false }), 'GET', '/healthz');
      expect(fresh.responseStarted, `a new connection after SIGTERM was answered ${fresh.status}`).toBe(false);
      expect(fresh.error?.code).toBe('ECONNREFUSED');

      // Readiness fails while draining.
      readiness.write('\r\n');
      const ready = await readinessAnswer;
      expect(ready.text).toMatch(/^HTTP\/1\.1 503 /);
      expect(ready.text).toMatch(/\r\nretry-after: 1\r\n/i);
      expect(ready.text).toMatch(/\r\nconnection: close\r\n/i);
      expect(ready.text).toContain('"status":"unavailable"');
      expect(ready.closed, 'the service closed the readiness connection after its answer').toBe(true);

      // The slow request is still in flight after a second of draining, and then gets its answer.
      await sleep(1000);
      expect(svc.child.exitCode, 'the service must not exit while a request is in flight').toBeNull();
      finishBody();
      const outcome = await slow;
      expect(outcome.error, outcome.error?.message).toBeUndefined();
      expect(outcome.status, outcome.body).toBe(200);
      expect(outcome.complete).toBe(true);
      const parsed = JSON.parse(outcome.body!) as { signature: string; keyId: string };
      expect(parsed.keyId).toBe(keyId);
      expect(verify('sha256', data, { key: publicKey, dsaEncoding: 'der' }, Buffer.from(parsed.signature, 'base64'))).toBe(true);
      const answeredAt = outcome.endedAt;

      const exit = await svc.exited;
      expect(exit.code, svc.output()).toBe(0);
      // With the last request answered nothing is left to wait for: the exit follows at once,
      // not when the grace period runs out or the idle keep-alive connection times out.
      const afterAnswerMs = exit.at - answeredAt;
      console.info(`slow request: answered ${answeredAt - signalAt} ms after SIGTERM, exit ${afterAnswerMs} ms after the answer (grace ${graceMs} ms)`);
      expect(svc.output(), 'the drain waited out the grace period and cut connections').not.toContain('requests still running at the end of the grace period');
      expect(afterAnswerMs, 'ms from the last answer to the exit').toBeLessThan(1500);
      expect(problems(svc).errors).toEqual([]);
    } finally {
      readiness.destroy();
      agent.destroy();
      await svc.kill();
    }
  });

  it('the grace period bounds the drain: a request still running when it ends has its connection cut, and the process still exits 0', async () => {
    const graceMs = 500;
    const dataDir = newChildDataDir('hsm-signer-shutdown-');
    dataDirs.push(dataDir);
    const svc = await startChildService(dataDir, { SHUTDOWN_GRACE_MS: String(graceMs) });
    const agent = new http.Agent({ keepAlive: true });
    try {
      const token = await login(svc.url, svc.admin);
      const { keyId } = await createSigningKey(svc, token, 'ECC_NIST_P256');
      const body = signBody(Buffer.from('never finished'));
      // A body that never finishes arriving: the request outlives any grace period.
      const stuck = send(svc.url, agent, 'POST', `/api/v1/kms/keys/${keyId}/sign`, {
        token,
        body,
        parts: async (req) => {
          req.write(body.slice(0, 10));
        },
      });
      await sleep(300);

      const signalAt = svc.signal('SIGTERM');
      const outcome = await stuck;
      const exit = await svc.exited;
      const stopping = await svc.waitForLog((line) => line.msg === 'stopping', 1000).catch(() => undefined);
      console.info(`grace ${graceMs} ms: connection cut ${outcome.endedAt - signalAt} ms after SIGTERM, exit after ${exit.at - signalAt} ms`);

      expect(exit.code, svc.output()).toBe(0);
      expect(stopping).toBeDefined();
      expect(outcome.responseStarted, `the stuck request got an answer: ${outcome.status} ${outcome.body}`).toBe(false);
      expect(CONNECTION_ERRORS.has(outcome.error?.code ?? ''), `error ${outcome.error?.code} ${outcome.error?.message}`).toBe(true);
      // Cut at the end of the grace period, not before: measured from the child's own log line.
      expect(outcome.endedAt - stopping!.time).toBeGreaterThanOrEqual(graceMs - 50);
      expect(exit.at - signalAt).toBeLessThan(graceMs + 3000);
      const warned = svc.logLines().lines.filter((line) => line.level === LEVEL.warn && line.msg === 'requests still running at the end of the grace period; cutting their connections');
      expect(warned).toHaveLength(1);
      expect(warned[0]!.graceMs).toBe(graceMs);
      expect(problems(svc).errors).toEqual([]);
    } finally {
      agent.destroy();
      await svc.kill();
    }
  });
});
