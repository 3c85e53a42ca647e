/**
 * The ops listener (server.opsPort) beside an API port on mutual TLS: Prometheus and probes
 * reach /metrics, /healthz and /readyz over plain HTTP without a client certificate; nothing
 * else is served there; the API port still wants its certificate; the listener closes on
 * shutdown. Certificates are made with the openssl CLI, as test/integration/tls.test.ts does.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openssl } from '../helpers/cli.js';
import { expectSpecEnvelope } from '../helpers/envelope.js';
import { parseMetrics } from '../helpers/metrics.js';
import { startTestService, type TestService } from '../helpers/service.js';

function plain(base: string, method: string, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

function tlsGet(base: string, path: string, tls: { ca: string; cert?: string; key?: string }): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(path, base), { method: 'GET', agent: false, timeout: 10_000, ...tls }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('ops port beside a mutual-TLS API port', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-ops-'));
  const p = (name: string) => join(dir, name);
  let svc: TestService;
  let ops: string;
  let ca: string;

  beforeAll(async () => {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl('req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2', '-subj', '/CN=ops test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
    for (const [name, subject, extensions] of [
      ['server', '/CN=127.0.0.1', ['subjectAltName=IP:127.0.0.1', 'extendedKeyUsage=serverAuth']],
      ['client', '/CN=ops test client', ['extendedKeyUsage=clientAuth']],
    ] as const) {
      openssl('req', '-new', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', subject, ...extensions.flatMap((e) => ['-addext', e]));
      openssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-days', '2', '-copy_extensions', 'copyall', '-out', p(`${name}.pem`));
    }
    ca = readFileSync(p('ca.pem'), 'utf8');
    svc = await startTestService({ server: { opsPort: 0, tls: { certFile: p('server.pem'), keyFile: p('server.key'), clientCaFile: p('ca.pem') } } });
    ops = svc.service.opsUrl!;
  });
  afterAll(async () => {
    await svc?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves /metrics, /healthz and /readyz over plain HTTP without a client certificate', async () => {
    expect(ops).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(ops).not.toBe(svc.url.replace('https:', 'http:'));
    const metrics = await plain(ops, 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.headers['content-type']).toMatch(/^text\/plain/);
    expect(parseMetrics(metrics.body).get('hsm_signer_token_up')).toBe(1);
    expect(JSON.parse((await plain(ops, 'GET', '/healthz')).body)).toEqual({ status: 'ok' });
    const ready = await plain(ops, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({ status: 'ready' });
  });

  it('serves nothing else: a 404 in the error envelope', async () => {
    for (const [method, path] of [
      ['GET', '/api/v1/kms/keys?projectId=default'],
      ['POST', '/api/v1/auth/universal-auth/login'],
      ['GET', '/pki/ca/x/certificate.der'],
      ['POST', '/metrics'],
      ['GET', '/'],
    ] as const) {
      const answer = await plain(ops, method, path);
      expect(answer.status, `${method} ${path}`).toBe(404);
      const body = JSON.parse(answer.body);
      expectSpecEnvelope({ status: 404, headers: new Headers({ 'x-request-id': String(answer.headers['x-request-id']) }), body });
      expect(body.error).toBe('NotFound');
    }
  });

  it('the API port still wants a client certificate, for /metrics too', async () => {
    await expect(tlsGet(svc.url, '/metrics', { ca })).rejects.toThrow();
    expect(await tlsGet(svc.url, '/metrics', { ca, cert: readFileSync(p('client.pem'), 'utf8'), key: readFileSync(p('client.key'), 'utf8') })).toBe(200);
  });

  it('closes with the service', async () => {
    await svc.close({ keepData: true });
    await expect(plain(ops, 'GET', '/healthz')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
