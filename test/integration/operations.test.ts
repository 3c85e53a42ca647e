/**
 * What an operator sees: /metrics (checked by promtool), /healthz and /readyz, the per-identity
 * rate limit and login throttling (429 envelopes), and the security headers, on a real token
 * and real HTTP.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../helpers/cli.js';
import { expectSpecEnvelope } from '../helpers/envelope.js';
import { createIdentity, login, request } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { parseMetrics } from '../helpers/metrics.js';

const RATE = 20;
const BURST = 30;

let svc: TestService;
let adminToken: string;
let keyId: string;

beforeAll(async () => {
  svc = await startTestService({
    rateLimit: { perIdentityPerSecond: RATE, burst: BURST },
    auth: { loginThrottle: { maxFailuresPerClient: 3, maxFailuresPerAddress: 1000, windowSeconds: 2 } },
  });
  adminToken = await login(svc.url, svc.admin);
  const created = await request(svc.url, 'POST', '/api/v1/kms/keys', { token: adminToken, body: { projectId: svc.admin.projectId, name: 'ops-key' } });
  expect(created.status).toBe(200);
  keyId = created.body.key.id;
});

afterAll(async () => {
  await svc?.close();
});

function sum(all: Map<string, number>, prefix: string, ...labelParts: string[]): number {
  let total = 0;
  for (const [name, value] of all) if (name.startsWith(prefix) && labelParts.every((part) => name.includes(part))) total += value;
  return total;
}

describe('metrics', () => {
  it('are valid Prometheus text (promtool check metrics) and count what happened, with route templates as labels', async () => {
    // Give every family of metrics something to count: an encrypt, a refused request, a 404.
    const plaintext = Buffer.from('metrics').toString('base64');
    for (let i = 0; i < 3; i++) {
      expect((await request(svc.url, 'POST', `/api/v1/kms/keys/${keyId}/encrypt`, { token: adminToken, body: { plaintext } })).status).toBe(200);
    }
    expect((await request(svc.url, 'POST', `/api/v1/kms/keys/${keyId}/encrypt`, { token: adminToken, body: { plaintext: '%%%' } })).status).toBe(422);
    expect((await request(svc.url, 'GET', '/no/such/route/with-a-unique-path-1234', {})).status).toBe(404);

    const response = await fetch(`${svc.url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();

    const dir = mkdtempSync(join(tmpdir(), 'metrics-'));
    writeFileSync(join(dir, 'metrics.txt'), text);
    const check = run('sh', ['-c', `promtool check metrics < ${join(dir, 'metrics.txt')}`]);
    expect(check.status, `promtool: ${check.stdout}${check.stderr}`).toBe(0);

    const all = parseMetrics(text);
    const encryptRoute = 'route="/api/v1/kms/keys/:keyId/encrypt"';
    expect(sum(all, 'hsm_signer_http_request_duration_seconds_count', encryptRoute, 'status_code="200"', 'method="POST"')).toBeGreaterThanOrEqual(3);
    expect(sum(all, 'hsm_signer_http_request_duration_seconds_count', encryptRoute, 'status_code="422"')).toBe(1);
    expect(sum(all, 'hsm_signer_http_request_duration_seconds_count', 'route="unmatched"', 'status_code="404"')).toBeGreaterThanOrEqual(1);
    // Raw paths and ids never become label values.
    expect(text).not.toContain(keyId);
    expect(text).not.toContain('with-a-unique-path-1234');

    expect(sum(all, 'hsm_signer_pkcs11_operation_duration_seconds_count', 'operation="encrypt"', 'mechanism="CKM_AES_GCM"')).toBeGreaterThanOrEqual(3);
    expect(sum(all, 'hsm_signer_kms_operations_total', 'operation="encrypt"', 'outcome="success"')).toBeGreaterThanOrEqual(3);
    expect(sum(all, 'hsm_signer_kms_operations_total', 'operation="encrypt"', 'outcome="rejected"')).toBe(1);
    expect(all.get('hsm_signer_pkcs11_sessions')).toBe(svc.config.hsm.sessions);
    expect(all.get('hsm_signer_pkcs11_sessions_busy')).toBe(0);
    expect(all.get('hsm_signer_pkcs11_session_waiters')).toBe(0);
    expect(all.get('hsm_signer_token_up')).toBe(1);
    // Node's default process metrics are there too.
    expect(all.has('process_resident_memory_bytes')).toBe(true);
    expect(all.has('nodejs_eventloop_lag_seconds')).toBe(true);
  });

  it('count issued certificates by outcome', async () => {
    const before = parseMetrics(await (await fetch(`${svc.url}/metrics`)).text());
    const refused = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', {
      token: adminToken,
      body: { profileId: (svc.admin as unknown as { profileId: string }).profileId, csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----', ttl: '1d' },
    });
    expect(refused.status).toBe(400);
    const after = parseMetrics(await (await fetch(`${svc.url}/metrics`)).text());
    const key = 'hsm_signer_certificates_issued_total{outcome="rejected"}';
    expect((after.get(key) ?? 0) - (before.get(key) ?? 0)).toBe(1);
    // The refused CSR was read on a CSR thread, which is still there, idle and unharmed.
    const answers = 'hsm_signer_csr_thread_answers_total';
    expect((after.get(answers) ?? 0) - (before.get(answers) ?? 0)).toBe(1);
    expect(after.get('hsm_signer_csr_threads')).toBe(svc.config.pki.csrThreads);
    expect(svc.config.pki.csrThreads).toBeGreaterThan(0);
    expect(after.get('hsm_signer_csr_threads_in_flight')).toBe(0);
    expect(after.get('hsm_signer_csr_thread_failures_total')).toBe(0);
  });
});

describe('health', () => {
  it('/healthz and /readyz answer 200 while the token is up', async () => {
    const live = await request(svc.url, 'GET', '/healthz');
    expect(live.status).toBe(200);
    expect(live.body).toEqual({ status: 'ok' });
    const ready = await request(svc.url, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ready' });
  });

  it('/readyz makes a real PKCS#11 call on a pooled session', async () => {
    const before = parseMetrics(await (await fetch(`${svc.url}/metrics`)).text());
    expect((await request(svc.url, 'GET', '/readyz')).status).toBe(200);
    const after = parseMetrics(await (await fetch(`${svc.url}/metrics`)).text());
    const name = 'hsm_signer_pkcs11_operation_duration_seconds_count{operation="ping",mechanism="CKM_SHA256"}';
    expect((after.get(name) ?? 0) - (before.get(name) ?? 0)).toBe(1);
  });
});

describe('rate limits', () => {
  it('an identity past its burst gets 429 envelopes with Retry-After; another identity is not affected', async () => {
    const busy = await createIdentity(svc.url, adminToken, 'busy-client', [{ projectId: svc.admin.projectId, actions: ['read'] }]);
    const quiet = await createIdentity(svc.url, adminToken, 'quiet-client', [{ projectId: svc.admin.projectId, actions: ['read'] }]);
    const busyToken = await login(svc.url, busy);
    const quietToken = await login(svc.url, quiet);

    const statuses = await Promise.all(
      // Well past the burst: the bucket refills at RATE per second while these are answered,
      // and on a busy machine that takes a while.
      Array.from({ length: BURST + 60 }, () => request(svc.url, 'GET', `/api/v1/kms/keys/${keyId}`, { token: busyToken })),
    );
    const limited = statuses.filter((r) => r.status === 429);
    expect(statuses.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(BURST - 1);
    expect(limited.length).toBeGreaterThanOrEqual(15);
    expect(statuses.every((r) => r.status === 200 || r.status === 429)).toBe(true);
    for (const response of limited.slice(0, 3)) {
      expectSpecEnvelope(response);
      expect(response.body.error).toBe('RateLimitExceeded');
      expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
    expect((await request(svc.url, 'GET', `/api/v1/kms/keys/${keyId}`, { token: quietToken })).status).toBe(200);

    // The bucket refills at RATE per second.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect((await request(svc.url, 'GET', `/api/v1/kms/keys/${keyId}`, { token: busyToken })).status).toBe(200);
  });

  it('failed logins past the limit get 429 even with the right secret, until the window passes', async () => {
    const target = await createIdentity(svc.url, adminToken, 'guessed-client', [{ projectId: svc.admin.projectId, actions: ['read'] }]);
    const wrong = { clientId: target.clientId, clientSecret: 'f'.repeat(64) };
    for (let i = 0; i < 3; i++) expect((await request(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { body: wrong })).status).toBe(401);
    const throttled = await request(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { body: target });
    expect(throttled.status).toBe(429);
    expectSpecEnvelope(throttled);
    expect(throttled.body.message).not.toContain(target.clientSecret);
    // Other clients are not throttled by this one's failures.
    expect((await request(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { body: svc.admin })).status).toBe(200);

    await new Promise((resolve) => setTimeout(resolve, 2100));
    expect((await request(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { body: target })).status).toBe(200);
  });

  it('concurrent guesses count too: of 20 at once, no more than the limit reach the secret check', async () => {
    const target = await createIdentity(svc.url, adminToken, 'raced-client', [{ projectId: svc.admin.projectId, actions: ['read'] }]);
    const wrong = { clientId: target.clientId, clientSecret: 'e'.repeat(64) };
    const answers = await Promise.all(Array.from({ length: 20 }, () => request(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { body: wrong })));
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 401).length).toBe(3);
    expect(statuses.filter((s) => s === 429).length).toBe(17);
  });
});

describe('security headers', () => {
  it('API answers carry nosniff, a locked-down CSP, no-store and no X-Powered-By', async () => {
    const response = await request(svc.url, 'GET', `/api/v1/kms/keys/${keyId}`, { token: adminToken });
    expect(response.status).toBe(200);
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(response.headers.get('x-frame-options')).toBe('DENY');
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.headers.get('x-powered-by')).toBeNull();
    const denied = await request(svc.url, 'GET', `/api/v1/kms/keys/${keyId}`);
    expect(denied.status).toBe(401);
    expect(denied.headers.get('x-content-type-options')).toBe('nosniff');
  });
});
