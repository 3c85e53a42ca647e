/**
 * Rolling restarts without client errors (server.shutdownDelayMs): the real service (a separate
 * process, one process and two cluster workers) under keep-alive load gets SIGTERM. /readyz
 * fails at once; for the delay it keeps accepting and answering, every answer with
 * `Connection: close`; then it stops accepting and closes each connection after its current
 * request, and exits 0 within delay + grace. The clients see only complete answers, and
 * refused connections once the delay is over: no request written to a connection is reset
 * unanswered (which the client could not tell from one that ran).
 *
 * The hammering clients do not stop when /readyz fails, as a balancer would: they connect
 * straight to the port, again right after each answer (every answer closes its connection),
 * until it is closed. That is the hard case for the moment the listener closes: a connection the
 * kernel completed but the process had not accepted yet would be reset, which is why the
 * service closes its listener in a pause it makes (app.ts). Clients behind a balancer (they
 * stop once /readyz fails) see no failure at all.
 */
import { createPublicKey, randomUUID, verify, type KeyObject } from 'node:crypto';
import { rmSync } from 'node:fs';
import http from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { LEVEL, newChildDataDir, startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { login, request } from '../helpers/http.js';
import { send, type Outcome } from '../helpers/raw-http.js';

const DELAY_MS = 2000;
const GRACE_MS = 8000;
const CLIENTS = 16;
/** Clients that stop when /readyz fails, as a load balancer's would. */
const BALANCED_CLIENTS = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function signBody(data: Buffer): string {
  return JSON.stringify({ signingAlgorithm: 'ECDSA_SHA_256', data: data.toString('base64') });
}

function verifies(outcome: Outcome, data: Buffer, publicKey: KeyObject, keyId: string): boolean {
  if (outcome.status !== 200 || !outcome.complete || outcome.body === undefined) return false;
  const parsed = JSON.parse(outcome.body) as { signature?: unknown; keyId?: unknown };
  return typeof parsed.signature === 'string' && parsed.keyId === keyId && verify('sha256', data, { key: publicKey, dsaEncoding: 'der' }, Buffer.from(parsed.signature, 'base64'));
}

interface Result {
  client: number;
  outcome: Outcome;
  data: Buffer;
}

describe('draining on SIGTERM (server.shutdownDelayMs)', () => {
  const dataDirs: string[] = [];
  afterAll(() => {
    for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
  });

  for (const workers of [1, 2]) {
    it(`HTTP_WORKERS=${workers}: keep-alive clients under load see only complete answers, then refused connections; /readyz fails at once; exit 0 within delay + grace`, async () => {
      const dataDir = newChildDataDir('hsm-signer-drain-');
      dataDirs.push(dataDir);
      const svc: ListeningChildService = await startChildService(dataDir, {
        SHUTDOWN_DELAY_MS: String(DELAY_MS),
        SHUTDOWN_GRACE_MS: String(GRACE_MS),
        HTTP_WORKERS: String(workers),
        OPS_PORT: '0',
        // Nothing but the drain may refuse a request here.
        RATE_LIMIT_PER_SECOND: '0',
        RATE_LIMIT_PER_ADDRESS_PER_SECOND: '0',
        HSM_ACQUIRE_TIMEOUT_MS: '15000',
      });
      const agents = Array.from({ length: CLIENTS }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
      const idleAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const slowAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const opsUrl = svc.logLines().lines.find((line) => line.msg === 'hsm-signer is listening')!.opsUrl as string;
        expect(opsUrl).toMatch(/^http:\/\//);
        const token = await login(svc.url, svc.admin);
        const created = await request(svc.url, 'POST', '/api/v1/kms/keys', {
          token,
          body: { projectId: 'default', name: `drain-${randomUUID().slice(0, 8)}`, keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' },
        });
        expect(created.status, JSON.stringify(created.body)).toBe(200);
        const keyId = created.body.key.id as string;
        const pub = await request(svc.url, 'GET', `/api/v1/kms/keys/${keyId}/public-key`, { token });
        const publicKey = createPublicKey({ key: Buffer.from(pub.body.publicKey as string, 'base64'), format: 'der', type: 'spki' });
        const path = `/api/v1/kms/keys/${keyId}/sign`;

        // A keep-alive connection used once and then left idle through the whole delay.
        const idle = await send(svc.url, idleAgent, 'GET', '/healthz');
        expect(idle.status).toBe(200);

        const results: Result[] = [];
        let signalAt = Number.POSITIVE_INFINITY;
        // Set when a /readyz probe first fails: what takes a replica out of a balancer's rotation.
        let outOfRotation = false;
        const loop = async (client: number) => {
          for (let n = 0; ; n++) {
            const data = Buffer.from(`client ${client} request ${n} ${randomUUID()}`);
            const outcome = await send(svc.url, agents[client]!, 'POST', path, { token, body: signBody(data) });
            results.push({ client, outcome, data });
            // A client stops at its first failure: a refused connection once the service has
            // stopped accepting, or anything else (which fails the test below).
            if (outcome.error || outcome.status !== 200) return;
            if (Date.now() - signalAt > DELAY_MS + GRACE_MS + 10_000) throw new Error(`client ${client} still answered long after SIGTERM`);
          }
        };
        const loops = Array.from({ length: CLIENTS }, (_, client) => loop(client));
        // Clients behind a balancer: they send until it takes the replica out of rotation.
        const balanced: Result[] = [];
        const balancedAgents = Array.from({ length: BALANCED_CLIENTS }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
        const balancedLoops = balancedAgents.map(async (agent, client) => {
          for (let n = 0; !outOfRotation; n++) {
            const data = Buffer.from(`balanced ${client} request ${n} ${randomUUID()}`);
            balanced.push({ client, outcome: await send(svc.url, agent, 'POST', path, { token, body: signBody(data) }), data });
          }
        });

        // /readyz on the ops port, every 50 ms, until the ops port is gone.
        const readiness: Array<{ at: number; status?: number; error?: string }> = [];
        const polling = (async () => {
          const probeAgent = new http.Agent({ keepAlive: false });
          for (;;) {
            const probe = await send(opsUrl, probeAgent, 'GET', '/readyz');
            readiness.push({ at: probe.endedAt, ...(probe.status ? { status: probe.status } : { error: probe.error?.code }) });
            if (probe.status !== 200) outOfRotation = true;
            if (probe.error) return;
            await sleep(50);
          }
        })();

        // Steady load first: a second and 100 answers, all of them 200.
        const loadStart = Date.now();
        while (Date.now() - loadStart < 1000 || results.length < 100) {
          if (Date.now() - loadStart > 30_000) throw new Error(`only ${results.length} answers in 30 s`);
          await sleep(20);
        }
        expect(results.filter((r) => r.outcome.status !== 200).map((r) => r.outcome.error?.code ?? r.outcome.status), 'failures before SIGTERM').toEqual([]);

        signalAt = svc.signal('SIGTERM');
        // A request in progress when the delay ends: its body arrives slowly, across the moment
        // the service stops accepting; it must still get its whole answer.
        const slowData = Buffer.from(`slow ${randomUUID()}`);
        const slowBody = signBody(slowData);
        await sleep(DELAY_MS - 600);
        const slow = send(svc.url, slowAgent, 'POST', path, {
          token,
          body: slowBody,
          parts: async (req) => {
            req.write(slowBody.slice(0, 10));
            await sleep(1200);
            req.end(slowBody.slice(10));
          },
        });

        await Promise.all([...loops, ...balancedLoops]);
        for (const agent of balancedAgents) agent.destroy();
        const slowOutcome = await slow;
        const exit = await svc.exited;
        await polling;
        const { lines } = svc.logLines();
        const stopMs = exit.at - signalAt;

        const answered = results.filter((r) => r.outcome.responseStarted);
        const failed = results.filter((r) => !r.outcome.responseStarted);
        const afterSignal = answered.filter((r) => r.outcome.startedAt > signalAt + 50);
        const summary = {
          workers,
          answeredBeforeSignal: answered.length - afterSignal.length,
          answeredAfterSignal: afterSignal.length,
          onNewConnectionsAfterSignal: afterSignal.filter((r) => !r.outcome.reusedSocket).length,
          balancedRequests: balanced.length,
          failures: failed.map((r) => `${r.outcome.error?.code} ${r.outcome.reusedSocket ? 'reused' : 'new'} +${r.outcome.endedAt - signalAt} ms`),
          slowAnsweredMs: slowOutcome.endedAt - signalAt,
          stopMs,
          firstReadyz503Ms: (readiness.find((p) => p.at > signalAt && p.status === 503)?.at ?? NaN) - signalAt,
        };
        console.info(JSON.stringify(summary));

        expect(exit.code, svc.output()).toBe(0);
        // Every answer is complete, a 200, and its signature verifies.
        expect(
          answered.filter((r) => !verifies(r.outcome, r.data, publicKey, keyId)).map((r) => ({ status: r.outcome.status, complete: r.outcome.complete, error: r.outcome.error?.code })),
          'answers that are not a complete, valid 200',
        ).toEqual([]);
        // No request failed but by a refused new connection: none reset (ECONNRESET, socket hang
        // up), none on a reused keep-alive connection.
        expect(
          failed
            .filter((r) => r.outcome.reusedSocket || r.outcome.error?.code !== 'ECONNREFUSED')
            .map((r) => ({ code: r.outcome.error?.code, message: r.outcome.error?.message, reused: r.outcome.reusedSocket, ms: r.outcome.endedAt - signalAt })),
          'requests that failed other than by a refused new connection',
        ).toEqual([]);
        // Every client went on being served through the delay, then was refused.
        expect(failed).toHaveLength(CLIENTS);
        for (const r of failed) expect(r.outcome.endedAt - signalAt, 'refused only once the delay was over').toBeGreaterThanOrEqual(DELAY_MS - 100);
        // Behind a balancer nothing fails: its clients stopped when /readyz failed, and every
        // request they had sent was answered in full.
        expect(balanced.length).toBeGreaterThan(20);
        expect(
          balanced.filter((r) => !verifies(r.outcome, r.data, publicKey, keyId)).map((r) => ({ status: r.outcome.status, error: r.outcome.error?.code, reused: r.outcome.reusedSocket })),
          'failures of the clients behind a balancer',
        ).toEqual([]);
        expect(afterSignal.length).toBeGreaterThanOrEqual(2 * CLIENTS);
        expect(afterSignal.filter((r) => r.outcome.headers?.connection !== 'close'), 'answers after SIGTERM without Connection: close').toEqual([]);
        // Answers during the delay went out on connections opened after the signal too.
        expect(afterSignal.filter((r) => !r.outcome.reusedSocket && r.outcome.endedAt < signalAt + DELAY_MS - 200).length).toBeGreaterThanOrEqual(CLIENTS);

        // The request in progress when the service stopped accepting got its whole answer.
        expect(slowOutcome.error?.message).toBeUndefined();
        expect(verifies(slowOutcome, slowData, publicKey, keyId)).toBe(true);
        expect(slowOutcome.headers?.connection).toBe('close');
        expect(slowOutcome.endedAt - signalAt).toBeGreaterThan(DELAY_MS);

        // Readiness: 200 before the signal, 503 from (nearly) the moment it was sent.
        expect(readiness.filter((p) => p.at < signalAt).every((p) => p.status === 200)).toBe(true);
        const firstNotReady = readiness.find((p) => p.at > signalAt && p.status !== 200);
        expect(firstNotReady?.status).toBe(503);
        expect(firstNotReady!.at - signalAt).toBeLessThan(500);
        expect(readiness.filter((p) => p.at > firstNotReady!.at && p.status === 200)).toEqual([]);

        // The delay was kept, and the whole stop fit in delay + grace; nothing waited for the idle
        // keep-alive connection's timeout once the last answer was out.
        expect(stopMs).toBeGreaterThanOrEqual(DELAY_MS);
        expect(stopMs).toBeLessThan(DELAY_MS + GRACE_MS);
        expect(exit.at - slowOutcome.endedAt, 'ms from the last answer to the exit').toBeLessThan(2000);
        expect(lines.filter((line) => line.msg?.startsWith('draining:')).length).toBe(workers);
        expect(lines.filter((line) => line.msg === 'stopped accepting connections; finishing the requests in progress').length).toBe(workers);
        expect(lines.filter((line) => line.level >= LEVEL.error)).toEqual([]);
        expect(svc.output()).not.toContain('requests still running at the end of the grace period');
      } finally {
        for (const agent of [...agents, idleAgent, slowAgent]) agent.destroy();
        await svc.kill();
      }
    });
  }
});
