/**
 * The edge of the service, on the real service over real HTTP: which address counts for login
 * throttling, the per-address limit and the audit trail (X-Forwarded-For only from a trusted
 * proxy), the per-address limit before authentication, and that a flood of unauthenticated
 * requests leaves a bounded number of audit rows whose counts add up.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outcomeOf } from '../../src/services/audit-chain.js';
import { expectSpecEnvelope } from '../helpers/envelope.js';
import { login, request, type ApiResponse } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';

const LOGIN = '/api/v1/auth/universal-auth/login';
const KEYS = '/api/v1/kms/keys';
const LOOPBACK = /^127\.0\.0\.1$|^::1$/;

interface Row {
  seq: number;
  req_id: string;
  identity_id: string | null;
  action: string;
  resource_id: string | null;
  outcome: string;
  status_code: number;
  client_address: string | null;
}

function auditRows(dataDir: string): Row[] {
  const db = new Database(join(dataDir, 'hsm-signer.db'), { readonly: true });
  try {
    // The outcome is not stored (it follows from the status code): as the audit-logs API shows it.
    const rows = db.prepare('SELECT seq, req_id, identity_id, action, resource_id, status_code, client_address FROM audit_events ORDER BY seq').all() as Array<Omit<Row, 'outcome'>>;
    return rows.map((row) => ({ ...row, outcome: outcomeOf(row.status_code) }));
  } finally {
    db.close();
  }
}

function expectError(res: ApiResponse, status: number, error?: string): void {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 300)}`).toBe(status);
  expectSpecEnvelope(res);
  if (error) expect(res.body.error).toBe(error);
}

const failLogin = (svc: TestService, headers: Record<string, string>) =>
  request(svc.url, 'POST', LOGIN, { body: { clientId: randomUUID(), clientSecret: 'wrong' }, headers });

/** Runs `count` calls of `send`, `concurrency` at a time; returns the statuses. */
async function flood(count: number, concurrency: number, send: (i: number) => Promise<ApiResponse>): Promise<number[]> {
  const statuses: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        statuses.push((await send(i)).status);
      }
    }),
  );
  return statuses;
}

describe('edge: client address, per-address limit, audit of refused requests', () => {
  describe('no trusted proxy: X-Forwarded-For is ignored', () => {
    let svc: TestService;
    let rows: Row[];
    beforeAll(async () => {
      svc = await startTestService({ auth: { loginThrottle: { maxFailuresPerAddress: 3, maxFailuresPerClient: 5, windowSeconds: 3600 } } });
    });
    afterAll(async () => {
      await svc?.close();
    });

    it('a spoofed X-Forwarded-For neither escapes login throttling nor changes the audited address', async () => {
      for (let i = 0; i < 3; i++) {
        expectError(await failLogin(svc, { 'x-forwarded-for': `203.0.113.${i + 1}`, 'x-request-id': `spoof-${i}` }), 401, 'UnauthorizedError');
      }
      // Another made-up address every time: still the same peer, so the fourth is throttled.
      expectError(await failLogin(svc, { 'x-forwarded-for': '198.51.100.99', 'x-request-id': 'spoof-3' }), 429, 'RateLimitExceeded');
      expectError(await failLogin(svc, { 'x-forwarded-for': 'garbage, 198.51.100.98' }), 429, 'RateLimitExceeded');

      await svc.close({ keepData: true });
      rows = auditRows(svc.dataDir);
      const spoofed = rows.filter((row) => row.req_id.startsWith('spoof-') && row.action === 'auth.login');
      expect(spoofed.map((row) => row.req_id)).toEqual(['spoof-0', 'spoof-1', 'spoof-2']);
      for (const row of spoofed) expect(row.client_address).toMatch(LOOPBACK);
      // The throttled ones are counted in one summary from the peer's address.
      const throttled = rows.filter((row) => row.action === 'auth.denied' && row.status_code === 429);
      expect(throttled).toHaveLength(1);
      expect(throttled[0]).toMatchObject({ resource_id: '2', req_id: 'spoof-3', outcome: 'denied' });
      expect(throttled[0]!.client_address).toMatch(LOOPBACK);
    });
  });

  describe('loopback as trusted proxy: X-Forwarded-For is believed', () => {
    let svc: TestService;
    beforeAll(async () => {
      svc = await startTestService({
        // The service sees the test's loopback peer as a proxy, 10/8 as an inner proxy hop.
        server: { trustedProxies: ['127.0.0.0/8', '::1', '10.0.0.0/8'] },
        auth: { loginThrottle: { maxFailuresPerAddress: 3, maxFailuresPerClient: 5, windowSeconds: 3600 } },
        // A refill far slower than any test run: exactly `burst` requests per address pass.
        rateLimit: { perAddressPerSecond: 0.0001, perAddressBurst: 12 },
      });
    });
    afterAll(async () => {
      await svc?.close();
    });

    it('throttles logins per forwarded address and audits the forwarded address', async () => {
      const a = { 'x-forwarded-for': '198.51.100.1, 10.0.0.1' };
      for (let i = 0; i < 3; i++) expectError(await failLogin(svc, { ...a, 'x-request-id': `fwd-a-${i}` }), 401);
      expectError(await failLogin(svc, a), 429, 'RateLimitExceeded');
      // Another client behind the same proxy is not throttled for the first one's failures.
      expectError(await failLogin(svc, { 'x-forwarded-for': '2001:db8::77', 'x-request-id': 'fwd-b' }), 401);
      // A malformed entry from the proxy: the proxy's own address counts, never a 500.
      expectError(await failLogin(svc, { 'x-forwarded-for': 'not-an-address', 'x-request-id': 'fwd-bad' }), 401);
      const token = await login(svc.url, svc.admin);
      expect((await request(svc.url, 'GET', `${KEYS}?projectId=default`, { token, headers: { 'x-forwarded-for': '::ffff:192.0.2.44', 'x-request-id': 'fwd-c' } })).status).toBe(200);

      const audit = await request(svc.url, 'GET', '/api/v1/audit-logs?limit=100', { token });
      expect(audit.status).toBe(200);
      const byReqId = new Map<string, { clientAddress: string }>(audit.body.auditLogs.map((event: { reqId: string; clientAddress: string }) => [event.reqId, event]));
      for (let i = 0; i < 3; i++) expect(byReqId.get(`fwd-a-${i}`)?.clientAddress).toBe('198.51.100.1');
      expect(byReqId.get('fwd-b')?.clientAddress).toBe('2001:db8::77');
      expect(byReqId.get('fwd-bad')?.clientAddress).toMatch(LOOPBACK);
      expect(byReqId.get('fwd-c')?.clientAddress).toBe('192.0.2.44');
    });

    it('limits requests per client address before authentication, with a 429 in the envelope', async () => {
      const d = { 'x-forwarded-for': '198.51.100.200' };
      for (let i = 0; i < 12; i++) expectError(await request(svc.url, 'GET', `${KEYS}?projectId=default`, { headers: d }), 401, 'UnauthorizedError');
      const limited = await request(svc.url, 'GET', `${KEYS}?projectId=default`, { headers: d });
      expectError(limited, 429, 'RateLimitExceeded');
      expect(limited.body.message).toMatch(/client address/);
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // Before authentication: a valid token does not get past it either, nor a login.
      const token = await login(svc.url, svc.admin);
      expectError(await request(svc.url, 'GET', `${KEYS}?projectId=default`, { token, headers: d }), 429, 'RateLimitExceeded');
      expectError(await request(svc.url, 'POST', LOGIN, { body: svc.admin, headers: d }), 429, 'RateLimitExceeded');
      // Other addresses are not affected; probes are never limited.
      expectError(await request(svc.url, 'GET', `${KEYS}?projectId=default`, { headers: { 'x-forwarded-for': '198.51.100.201' } }), 401);
      expect((await request(svc.url, 'GET', '/healthz', { headers: d })).status).toBe(200);
      expect((await request(svc.url, 'GET', '/readyz', { headers: d })).status).toBe(200);
    });
  });

  describe('a flood of unauthenticated requests', () => {
    let svc: TestService;
    beforeAll(async () => {
      svc = await startTestService({ rateLimit: { perAddressPerSecond: 0.0001, perAddressBurst: 2000 } });
    });
    afterAll(async () => {
      await svc?.close();
    });

    it('adds a bounded number of audit rows whose counts add up; authenticated actions keep one row each', async () => {
      // Authenticated first (each takes a token from the loopback's bucket: 1 login + 3 = 4).
      const token = await login(svc.url, svc.admin);
      const created = await request(svc.url, 'POST', KEYS, { token, body: { projectId: 'default', name: 'edge-flood' }, headers: { 'x-request-id': 'flood-create' } });
      expect(created.status).toBe(200);
      const keyId = created.body.key.id as string;
      for (let i = 0; i < 2; i++) {
        const encrypted = await request(svc.url, 'POST', `${KEYS}/${keyId}/encrypt`, { token, body: { plaintext: 'aGk=' }, headers: { 'x-request-id': `flood-encrypt-${i}` } });
        expect(encrypted.status).toBe(200);
      }

      // 1996 tokens left: 998 without a token, 998 with a bad one (401), then 1000 limited (429).
      const noToken = await flood(998, 8, (i) => request(svc.url, 'GET', `${KEYS}?projectId=default`, { headers: { 'x-request-id': `flood-none-${i}` } }));
      const badToken = await flood(998, 8, () => request(svc.url, 'POST', `${KEYS}/${keyId}/encrypt`, { token: `hss.${randomUUID()}`, body: { plaintext: 'aGk=' } }));
      const limited = await flood(1000, 8, () => request(svc.url, 'GET', `${KEYS}?projectId=default`));
      expect(new Set([...noToken, ...badToken])).toEqual(new Set([401]));
      expect(new Set(limited)).toEqual(new Set([429]));

      await svc.close({ keepData: true });
      const rows = auditRows(svc.dataDir);
      const summaries = rows.filter((row) => row.action === 'auth.denied');
      expect(summaries.map((row) => ({ status: row.status_code, count: Number(row.resource_id), outcome: row.outcome })).sort((x, y) => x.status - y.status)).toEqual([
        { status: 401, count: 1996, outcome: 'denied' },
        { status: 429, count: 1000, outcome: 'denied' },
      ]);
      for (const row of summaries) expect(row.client_address).toMatch(LOOPBACK);
      // Its request id is the first one counted, to find it in the access log.
      expect(summaries.find((row) => row.status_code === 401)!.req_id).toMatch(/^flood-none-\d+$/);
      // Everything else in the table: the admin's login and its three actions, one row each.
      const others = rows.filter((row) => row.action !== 'auth.denied');
      expect(others.map((row) => [row.action, row.status_code])).toEqual([
        ['auth.login', 200],
        ['kms.key.create', 200],
        ['kms.key.encrypt', 200],
        ['kms.key.encrypt', 200],
      ]);
      expect(others.slice(1).every((row) => row.identity_id === others[0]!.identity_id && row.identity_id !== null)).toBe(true);
      expect(rows.length).toBe(6);
    });
  });
});
