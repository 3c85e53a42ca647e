/**
 * HTTP_WORKERS=2 (node:cluster), as `npm start` runs it, in a separate process group: first
 * start done once by the first worker, requests served by two worker processes (seen in their
 * debug access-log lines, which carry their pid), the primary free of the PKCS#11 module and
 * the store, the ops port answering for the workers, a SIGKILLed worker replaced, SIGTERM
 * draining every worker to exit 0, and a configuration no worker can start with ending in
 * exit 1 after one try.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LEVEL, newChildDataDir, spawnService, startChildService, type ListeningChildService, type LogLine } from '../helpers/child-service.js';
import { login, request } from '../helpers/http.js';
import { parseMetrics } from '../helpers/metrics.js';

/** One request on a connection of its own (no agent), so the cluster hands each to the next worker. */
function fresh(base: string, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, agent: false, headers, timeout: 20_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** Which process answered each of these request ids, from the workers' debug 'request' lines. */
async function servedBy(svc: ListeningChildService, reqIds: string[]): Promise<Map<string, number>> {
  const wanted = new Set(reqIds);
  // The line is written when the response closes, which may be just after the client has it.
  for (let attempt = 0; ; attempt++) {
    const byReqId = new Map<string, number>();
    for (const line of svc.logLines().lines) if (line.msg === 'request' && wanted.has(line.reqId as string)) byReqId.set(line.reqId as string, line.pid as number);
    if (byReqId.size === wanted.size) return byReqId;
    if (attempt === 500) throw new Error(`only ${byReqId.size} of ${wanted.size} requests found in the access log`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const mapsOf = (pid: number) => readFileSync(`/proc/${pid}/maps`, 'utf8');
const listeningWorkers = (svc: ListeningChildService) => svc.logLines().lines.filter((line) => line.msg === 'worker is listening').map((line) => line.pid as number);

describe('HTTP_WORKERS=2 (separate process)', () => {
  const dataDir = newChildDataDir('hsm-signer-cluster-');
  let svc: ListeningChildService;
  let ops: string;
  let token: string;

  beforeAll(async () => {
    svc = await startChildService(dataDir, { HTTP_WORKERS: '2', OPS_PORT: '0', LOG_LEVEL: 'debug', HSM_SESSIONS: '2' }, 120_000);
    ops = (await svc.waitForLog((line) => line.msg === 'hsm-signer is listening')).opsUrl as string;
    token = await login(svc.url, svc.admin);
  }, 150_000);
  afterAll(async () => {
    await svc?.kill();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('does the first start once, serves from two worker processes, and keeps PKCS#11 and the store out of the primary', async () => {
    const { lines } = svc.logLines();
    expect(lines.filter((line) => line.msg === 'created the embedded SoftHSM2 token')).toHaveLength(1);
    expect(lines.filter((line) => line.msg === 'created the admin machine identity; its credentials are in this file')).toHaveLength(1);
    expect(lines.filter((line) => line.msg === 'started a worker')).toHaveLength(2);

    const reqIds = Array.from({ length: 16 }, (_, i) => `cluster-${i}-${randomUUID().slice(0, 8)}`);
    for (const reqId of reqIds) expect((await fresh(svc.url, 'GET', '/healthz', { 'x-request-id': reqId })).status).toBe(200);
    const pids = new Set((await servedBy(svc, reqIds)).values());
    expect(pids.size).toBe(2);
    expect(pids.has(svc.child.pid!)).toBe(false);
    expect(new Set(listeningWorkers(svc))).toEqual(pids);

    // The token's module and SQLite are mapped in the workers, never in the primary.
    expect(mapsOf(svc.child.pid!)).not.toMatch(/libsofthsm2|better_sqlite3|pkcs11/);
    for (const pid of pids) expect(mapsOf(pid)).toMatch(/libsofthsm2/);

    // The API works across workers: a key made through one is used through the other.
    const created = await request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: { projectId: 'default', name: 'cluster-key' } });
    expect(created.status).toBe(200);
    for (let i = 0; i < 4; i++) {
      const answer = await fresh(svc.url, 'POST', `/api/v1/kms/keys/${created.body.key.id}/encrypt`, { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, JSON.stringify({ plaintext: 'aGk=' }));
      expect(answer.status, answer.body).toBe(200);
    }
  });

  it('answers the ops port for every worker: health, readiness, aggregated metrics', async () => {
    expect(JSON.parse((await fresh(ops, 'GET', '/healthz')).body)).toEqual({ status: 'ok' });
    expect(JSON.parse((await fresh(ops, 'GET', '/readyz')).body)).toEqual({ status: 'ready' });
    expect((await fresh(ops, 'GET', '/api/v1/kms/keys')).status).toBe(404);
    const metrics = parseMetrics((await fresh(ops, 'GET', '/metrics')).body);
    expect(metrics.get('hsm_signer_http_workers')).toBe(2);
    // Summed: 2 token threads in each worker; up only if up in both.
    expect(metrics.get('hsm_signer_pkcs11_sessions')).toBe(4);
    expect(metrics.get('hsm_signer_token_up')).toBe(1);
    // Both workers' /healthz answers (16 above), in one count.
    expect(metrics.get('hsm_signer_http_request_duration_seconds_count{method="GET",route="/healthz",status_code="200"}')).toBeGreaterThanOrEqual(16);
  });

  it('replaces a worker killed with SIGKILL, and keeps answering meanwhile', async () => {
    const [victim, survivor] = listeningWorkers(svc);
    process.kill(victim!, 'SIGKILL');
    const died = await svc.waitForLog((line) => line.msg === 'a worker died; starting another' && line.pid === victim);
    expect(died).toMatchObject({ signal: 'SIGKILL', level: LEVEL.error });
    expect(died.delayMs).toBeGreaterThan(0);
    // Once the primary knows, new connections go to the survivor while the replacement starts
    // (connections the victim held, or was being handed as it died, died with it).
    for (let i = 0; i < 4; i++) {
      const answer = await fresh(svc.url, 'GET', '/api/v1/kms/keys?projectId=default', { authorization: `Bearer ${token}` });
      expect(answer.status, answer.body).toBe(200);
    }
    // Keys being made on the survivor while the replacement starts: RSA-4096, so that pending
    // rows exist when the replacement undoes abandoned work. It must not take them for a crash's
    // leftovers (the survivor's presence lease says it is alive), so every creation succeeds.
    let replacing = true;
    const creations: number[] = [];
    const makeKeys = async () => {
      for (let i = 0; replacing; i++) {
        const name = `during-replacement-${randomUUID().slice(0, 8)}`;
        const body = JSON.stringify({ projectId: 'default', name, keyUsage: 'sign-verify', encryptionAlgorithm: 'RSA_4096' });
        creations.push((await fresh(svc.url, 'POST', '/api/v1/kms/keys', { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body)).status);
      }
    };
    const makers = [makeKeys(), makeKeys()];
    await svc.waitForLog((line) => line.msg === 'worker is listening' && line.pid !== victim && line.pid !== survivor, 60_000);
    replacing = false;
    await Promise.all(makers);
    expect(creations.length).toBeGreaterThan(0);
    expect(creations.filter((status) => status !== 200)).toEqual([]);
    const replacement = listeningWorkers(svc).at(-1)!;
    expect(svc.logLines().lines.filter((line) => line.pid === replacement && /reconciled|destroying a token object/.test(String(line.msg)))).toEqual([]);

    const reqIds = Array.from({ length: 16 }, (_, i) => `cluster-after-${i}-${randomUUID().slice(0, 8)}`);
    for (const reqId of reqIds) expect((await fresh(svc.url, 'GET', '/healthz', { 'x-request-id': reqId })).status).toBe(200);
    expect(new Set((await servedBy(svc, reqIds)).values())).toEqual(new Set([survivor, replacement]));
    const metrics = parseMetrics((await fresh(ops, 'GET', '/metrics')).body);
    expect(metrics.get('hsm_signer_worker_restarts_total')).toBe(1);
    expect(metrics.get('hsm_signer_http_workers')).toBe(2);
  });

  it('on SIGTERM to the primary, every worker drains (a request in flight gets its answer) and the primary exits 0', async () => {
    const created = await request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: { projectId: 'default', name: 'cluster-drain', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' } });
    expect(created.status).toBe(200);
    const body = JSON.stringify({ signingAlgorithm: 'ECDSA_SHA_256', data: Buffer.from('drain me').toString('base64') });
    // A request whose body is still arriving when the signal comes: in flight as long as the test
    // wants. It goes on a keep-alive connection a worker already answered on, so it is that
    // worker's whatever the primary does with new connections.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    await new Promise<void>((resolve, reject) => http.get(new URL('/healthz', svc.url), { agent }, (res) => res.resume().on('end', resolve)).on('error', reject));
    let finish!: () => void;
    let reused = false;
    const mayFinish = new Promise<void>((resolve) => (finish = resolve));
    const slow = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(new URL(`/api/v1/kms/keys/${created.body.key.id}/sign`, svc.url), {
        method: 'POST',
        agent,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-request-id': 'cluster-slow' },
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.on('socket', () => (reused = req.reusedSocket));
      req.write(body.slice(0, 10));
      void mayFinish.then(() => req.end(body.slice(10)));
    });
    // Time for the worker to read the headers, so the connection is busy, not idle, at the signal.
    await new Promise((r) => setTimeout(r, 300));
    expect(reused).toBe(true);

    const workers = new Set(listeningWorkers(svc).slice(-2));
    svc.signal('SIGTERM');
    await svc.waitForLog((line) => line.msg === 'stopping every worker');
    // Each worker began draining on the signal the primary passed on.
    for (const pid of workers) await svc.waitForLog((line) => line.msg === 'stopping' && line.pid === pid);
    finish();
    const answer = await slow;
    agent.destroy();
    expect(answer.status, answer.body).toBe(200);
    expect(JSON.parse(answer.body).signature).toEqual(expect.any(String));

    const exit = await svc.exited;
    expect(exit.code, svc.output()).toBe(0);
    const exits = svc.logLines().lines.filter((line) => line.msg === 'a worker exited');
    expect(exits.map((line) => line.code)).toEqual([0, 0]);
    expect(new Set(exits.map((line) => line.pid))).toEqual(workers);
    const errors = svc.logLines().lines.filter((line: LogLine) => line.level >= LEVEL.error && line.msg !== 'a worker died; starting another');
    expect(errors).toEqual([]);
  });
});

describe('HTTP_WORKERS=2 with a configuration no worker can start with', () => {
  it('exits 1 after the first worker fails, without starting it again', async () => {
    const dataDir = newChildDataDir('hsm-signer-cluster-bad-');
    try {
      const started = spawnService(dataDir, { HTTP_WORKERS: '2', TLS_CERT_FILE: '/nonexistent/cert.pem', TLS_KEY_FILE: '/nonexistent/key.pem' });
      const exit = await started.exited;
      expect(exit.code, started.output()).toBe(1);
      expect(started.stderr()).toMatch(/Cannot set up HTTPS/);
      const { lines } = started.logLines();
      expect(lines.filter((line) => line.msg === 'started a worker')).toHaveLength(1);
      expect(lines.find((line) => line.msg?.startsWith('a worker failed before it listened'))).toMatchObject({ level: LEVEL.fatal, code: 1 });
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
