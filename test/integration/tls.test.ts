/**
 * HTTPS and mutual TLS (server.tls), on certificates made for the test with the openssl CLI:
 * a throwaway CA, a server certificate for 127.0.0.1 (IP SAN), a client certificate, and a
 * look-alike client certificate from another CA with the same name. Also the security headers
 * of API answers.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openssl } from '../helpers/cli.js';
import { killGroup, spawnService, startChildService } from '../helpers/child-service.js';
import { newDataDir, startTestService, type TestService } from '../helpers/service.js';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: any;
  authorized: boolean | undefined;
}

interface TlsClient {
  ca?: string;
  cert?: string;
  key?: string;
}

/** One HTTPS request on a new connection (no agent: no TLS session is reused between tests). */
function httpsRequest(base: string, method: string, path: string, tls: TlsClient, options: { token?: string; body?: unknown } = {}): Promise<Answer> {
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  const headers: Record<string, string | number> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = Buffer.byteLength(body);
  }
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(path, base), { method, headers, agent: false, ...tls, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        const socket = res.socket as import('node:tls').TLSSocket | null;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, json, authorized: socket?.authorized });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** A plain-HTTP request to the given port: resolves with the answer, or rejects. */
function plainHttpRequest(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'GET', agent: false, timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Whatever the request ends in: an answer or the error that stopped it. */
async function settle<T>(promise: Promise<T>): Promise<{ answer?: T; error?: NodeJS.ErrnoException }> {
  try {
    return { answer: await promise };
  } catch (error) {
    return { error: error as NodeJS.ErrnoException };
  }
}

interface Pki {
  dir: string;
  caCert: string;
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCert: string;
  clientKey: string;
  rogueClientCert: string;
  rogueClientKey: string;
  /** An unrelated CA: a server certificate checked against it must fail. */
  rogueCaCert: string;
}

function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-tls-'));
  const p = (name: string) => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const makeCa = (prefix: string) =>
    openssl('req', '-x509', ...ec, '-keyout', p(`${prefix}.key`), '-out', p(`${prefix}.pem`), '-days', '2', '-subj', '/O=hsm-signer tests/CN=test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const issue = (prefix: string, ca: string, subject: string, extensions: string[]) => {
    openssl('req', '-new', ...ec, '-keyout', p(`${prefix}.key`), '-out', p(`${prefix}.csr`), '-subj', subject, ...extensions.flatMap((e) => ['-addext', e]));
    openssl('x509', '-req', '-in', p(`${prefix}.csr`), '-CA', p(`${ca}.pem`), '-CAkey', p(`${ca}.key`), '-days', '2', '-copy_extensions', 'copyall', '-out', p(`${prefix}.pem`));
  };
  makeCa('ca');
  // Same name as the real CA, another key: a client certificate from it must still be refused.
  makeCa('rogue-ca');
  issue('server', 'ca', '/CN=127.0.0.1', ['subjectAltName=IP:127.0.0.1', 'extendedKeyUsage=serverAuth', 'keyUsage=critical,digitalSignature']);
  issue('client', 'ca', '/CN=test client', ['extendedKeyUsage=clientAuth', 'keyUsage=critical,digitalSignature']);
  issue('rogue-client', 'rogue-ca', '/CN=test client', ['extendedKeyUsage=clientAuth', 'keyUsage=critical,digitalSignature']);
  // Sanity of the fixtures themselves, so a refusal below is the service's doing.
  expect(openssl('verify', '-CAfile', p('ca.pem'), '-purpose', 'sslclient', p('client.pem'))).toContain('OK');
  expect(openssl('verify', '-CAfile', p('rogue-ca.pem'), '-purpose', 'sslclient', p('rogue-client.pem'))).toContain('OK');
  const read = (name: string) => readFileSync(p(name), 'utf8');
  return {
    dir,
    caCert: read('ca.pem'),
    caFile: p('ca.pem'),
    serverCertFile: p('server.pem'),
    serverKeyFile: p('server.key'),
    clientCert: read('client.pem'),
    clientKey: read('client.key'),
    rogueClientCert: read('rogue-client.pem'),
    rogueClientKey: read('rogue-client.key'),
    rogueCaCert: read('rogue-ca.pem'),
  };
}

/** The connection error of a refused TLS handshake (or of the first read after it, in TLS 1.3). */
const HANDSHAKE_REFUSED = /certificate required|unknown ca|alert|handshake|ECONNRESET|socket hang up|EPIPE|bad certificate/i;

describe('HTTPS and mutual TLS', () => {
  let pki: Pki;
  const dataDir = newDataDir();
  beforeAll(() => {
    pki = makePki();
  });
  afterAll(() => {
    rmSync(dataDir, { recursive: true, force: true });
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  describe('HTTPS (no client certificate asked)', () => {
    let svc: TestService;
    beforeAll(async () => {
      svc = await startTestService({ server: { tls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile } } }, dataDir);
    });
    afterAll(async () => {
      await svc?.close({ keepData: true });
    });

    it('listens on https with the configured certificate, which verifies for 127.0.0.1', async () => {
      expect(svc.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const health = await httpsRequest(svc.url, 'GET', '/healthz', { ca: pki.caCert });
      expect(health.status).toBe(200);
      expect(health.json).toEqual({ status: 'ok' });
      // The server's certificate is the one configured: it fails against any other CA.
      const other = await settle(httpsRequest(svc.url, 'GET', '/healthz', { ca: pki.rogueCaCert }));
      expect(other.answer).toBeUndefined();
      expect(other.error?.code).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_SIGNATURE_FAILURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER_CERT/);
    });

    it('plain HTTP to the same port gets no answer', async () => {
      const port = Number(new URL(svc.url).port);
      const attempt = await settle(plainHttpRequest(port, '/healthz'));
      // Node's TLS server drops a connection that does not start with a ClientHello.
      expect(attempt.answer, `plain HTTP was answered: ${JSON.stringify(attempt.answer)}`).toBeUndefined();
      expect(attempt.error?.message).toMatch(/socket hang up|ECONNRESET|Parse Error/);
    });

    it('a login and an API call work over HTTPS; API answers carry the security headers', async () => {
      const login = await httpsRequest(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { ca: pki.caCert }, { body: { clientId: svc.admin.clientId, clientSecret: svc.admin.clientSecret } });
      expect(login.status, login.body).toBe(200);
      const token = login.json.accessToken as string;
      expect(token).toMatch(/^hss\./);

      const listed = await httpsRequest(svc.url, 'GET', '/api/v1/kms/keys?projectId=default', { ca: pki.caCert }, { token });
      expect(listed.status, listed.body).toBe(200);
      const refused = await httpsRequest(svc.url, 'GET', '/api/v1/kms/keys?projectId=default', { ca: pki.caCert }, { token: 'hss.not-a-token' });
      expect(refused.status).toBe(401);

      for (const answer of [login, listed, refused]) {
        const h = answer.headers;
        expect(h['x-content-type-options']).toBe('nosniff');
        const csp = String(h['content-security-policy'] ?? '');
        expect(csp).toMatch(/(^|;)\s*default-src 'none'\s*(;|$)/);
        expect(csp).toMatch(/frame-ancestors 'none'/);
        expect(h['cache-control']).toBe('no-store');
        const hsts = String(h['strict-transport-security'] ?? '');
        expect(hsts).toMatch(/max-age=(\d+)/);
        expect(Number(/max-age=(\d+)/.exec(hsts)![1])).toBeGreaterThan(0);
        expect(h['x-powered-by']).toBeUndefined();
        expect(h['x-frame-options']).toBe('DENY');
        expect(h['content-type']).toMatch(/^application\/json/);
      }
      // The health routes are not API data, but they must not advertise Express either.
      const health = await httpsRequest(svc.url, 'GET', '/healthz', { ca: pki.caCert });
      expect(health.headers['x-powered-by']).toBeUndefined();
      expect(health.headers['x-content-type-options']).toBe('nosniff');
    });
  });

  describe('mutual TLS (server.tls.clientCaFile)', () => {
    let svc: TestService;
    beforeAll(async () => {
      svc = await startTestService({ server: { tls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, clientCaFile: pki.caFile } } }, dataDir);
    });
    afterAll(async () => {
      await svc?.close({ keepData: true });
    });

    const good = (): TlsClient => ({ ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey });
    let token: string;
    beforeAll(async () => {
      const login = await httpsRequest(svc.url, 'POST', '/api/v1/auth/universal-auth/login', good(), { body: { clientId: svc.admin.clientId, clientSecret: svc.admin.clientSecret } });
      expect(login.status, login.body).toBe(200);
      token = login.json.accessToken as string;
    });

    /** A refused client's request must never reach the application: it would have made a key. */
    async function expectRefused(client: TlsClient, name: string) {
      const attempt = await settle(httpsRequest(svc.url, 'POST', '/api/v1/kms/keys', client, { token, body: { projectId: 'default', name } }));
      expect(attempt.answer, `answered: ${attempt.answer?.status} ${attempt.answer?.body}`).toBeUndefined();
      expect(`${attempt.error?.code} ${attempt.error?.message}`).toMatch(HANDSHAKE_REFUSED);
      const lookup = await httpsRequest(svc.url, 'GET', `/api/v1/kms/keys/key-name/${name}?projectId=default`, good(), { token });
      expect(lookup.status, `the refused request created key ${name}`).toBe(404);
      return attempt.error!;
    }

    it('refuses a client without a certificate (TLS alert "certificate required")', async () => {
      const error = await expectRefused({ ca: pki.caCert }, 'from-no-certificate');
      expect(`${error.code} ${error.message}`).toMatch(/CERTIFICATE_REQUIRED|certificate required|ECONNRESET/);
    });

    it('refuses a client certificate from another CA with the same name', async () => {
      await expectRefused({ ca: pki.caCert, cert: pki.rogueClientCert, key: pki.rogueClientKey }, 'from-foreign-certificate');
    });

    it('refuses a certificate of the right CA that is not for client authentication (serverAuth only)', async () => {
      await expectRefused({ ca: pki.caCert, cert: readFileSync(pki.serverCertFile, 'utf8'), key: readFileSync(pki.serverKeyFile, 'utf8') }, 'from-server-certificate');
    });

    it('accepts the right client certificate: /healthz, a login and an API call', async () => {
      const client = { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey };
      const health = await httpsRequest(svc.url, 'GET', '/healthz', client);
      expect(health.status).toBe(200);
      expect(health.json).toEqual({ status: 'ok' });
      const login = await httpsRequest(svc.url, 'POST', '/api/v1/auth/universal-auth/login', client, { body: { clientId: svc.admin.clientId, clientSecret: svc.admin.clientSecret } });
      expect(login.status, login.body).toBe(200);
      const created = await httpsRequest(svc.url, 'POST', '/api/v1/kms/keys', client, { token: login.json.accessToken, body: { projectId: 'default', name: 'over-mtls' } });
      expect(created.status, created.body).toBe(200);
      const encrypted = await httpsRequest(svc.url, 'POST', `/api/v1/kms/keys/${created.json.key.id}/encrypt`, client, {
        token: login.json.accessToken,
        body: { plaintext: Buffer.from('over mutual TLS').toString('base64') },
      });
      expect(encrypted.status, encrypted.body).toBe(200);
      expect(encrypted.headers['strict-transport-security']).toBeDefined();
    });

    it('plain HTTP to the mutual-TLS port gets no answer', async () => {
      const attempt = await settle(plainHttpRequest(Number(new URL(svc.url).port), '/healthz'));
      expect(attempt.answer).toBeUndefined();
    });
  });

  it('TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE configure the separate process the same way', async () => {
    const childDir = mkdtempSync(join(tmpdir(), 'hsm-signer-tls-child-'));
    const svc = await startChildService(childDir, { TLS_CERT_FILE: pki.serverCertFile, TLS_KEY_FILE: pki.serverKeyFile, TLS_CLIENT_CA_FILE: pki.caFile });
    try {
      expect(svc.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const health = await httpsRequest(svc.url, 'GET', '/healthz', { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey });
      expect(health.status).toBe(200);
      const anonymous = await settle(httpsRequest(svc.url, 'GET', '/healthz', { ca: pki.caCert }));
      expect(anonymous.answer).toBeUndefined();
      svc.signal('SIGTERM');
      expect((await svc.exited).code).toBe(0);
    } finally {
      await svc.kill();
      rmSync(childDir, { recursive: true, force: true });
    }
  });

  it('a TLS setting naming a missing file stops the start with exit 1 and a message naming HTTPS', async () => {
    const childDir = mkdtempSync(join(tmpdir(), 'hsm-signer-tls-child-'));
    const started = spawnService(childDir, { TLS_CERT_FILE: join(pki.dir, 'missing.pem'), TLS_KEY_FILE: pki.serverKeyFile });
    try {
      const exit = await Promise.race([started.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 30_000))]);
      expect(exit?.code, started.output()).toBe(1);
      expect(started.output()).toMatch(/Cannot set up HTTPS: .*missing\.pem/);
      expect(started.output()).not.toContain('hsm-signer is listening');
    } finally {
      await killGroup(started);
      rmSync(childDir, { recursive: true, force: true });
    }
  });
});
