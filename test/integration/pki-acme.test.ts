/**
 * ACME (RFC 8555) with real clients and at the protocol level, against one live service over
 * HTTPS (the clients trust its listener certificate through REQUESTS_CA_BUNDLE and
 * LEGO_CA_CERTIFICATES), with http-01 served on loopback (acme.http01Port, and acme.resolve
 * pinning the test names to 127.0.0.1):
 *
 * - certbot `certonly --standalone` on the demo profile (no EAB), and on a profile that requires
 *   EAB (refused without it, issued with `--eab-kid/--eab-hmac-key`);
 * - lego `run`, `renew` and `revoke`; the revoked serial is in the CA's CRL (openssl crl);
 * - every certificate verified with `openssl verify -x509_strict` against the profile's chain,
 *   and found in the certificate list as a normal record;
 * - refusals, with a client of the test's own on `jose`: a reused nonce, a wrong url, an unknown
 *   account, EAB with a wrong key, names the policy refuses, IP and wildcard identifiers, a CSR
 *   naming another identifier or a key the policy refuses, a name resolving to loopback (the
 *   validator's SSRF guard); each answers its problem type and changes nothing;
 * - two concurrent finalize calls issue one certificate; revocation with the certificate's own
 *   key; key change; account deactivation;
 * - a second replica (another process on the same store) serves steps of the same flow.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, exportJWK, FlattenedSign, generateKeyPair, importPKCS8, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openssl, run } from '../helpers/cli.js';
import { startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { startTestService, type TestService } from '../helpers/service.js';

const execFileAsync = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), 'pki-acme-'));
const file = (name: string) => join(work, name);
const write = (name: string, content: string | Buffer) => (writeFileSync(file(name), content), file(name));
const pemBlocks = (text: string): string[] => (text.match(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g) ?? []).map((pem) => `${pem.trim()}\n`);

/** A command run without blocking this process (which serves its requests). */
async function runAsync(command: string, args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; output: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { timeout: 120_000, env: { ...process.env, ...env }, maxBuffer: 16 * 1024 * 1024 });
    return { status: 0, output: `${stdout}${stderr}` };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof failed.code === 'number' ? failed.code : null, output: `${failed.stdout ?? ''}${failed.stderr ?? ''}` };
  }
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

/** HTTPS to the service, trusting its listener certificate; `via` sends it to another replica than the URL names. */
function call(url: string, options: { method?: string; body?: unknown; contentType?: string; via?: string; headers?: Record<string, string>; raw?: (bytes: Buffer) => void } = {}): Promise<Answer> {
  const target = new URL(url);
  const physical = options.via ? new URL(options.via) : target;
  const body = options.body === undefined ? undefined : Buffer.from(typeof options.body === 'string' ? options.body : JSON.stringify(options.body));
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: physical.hostname,
        port: physical.port,
        path: `${target.pathname}${target.search}`,
        method: options.method ?? (body ? 'POST' : 'GET'),
        ca: readFileSync(file('tls.pem')),
        headers: { ...options.headers, ...(body ? { 'content-type': options.contentType ?? 'application/jose+json', 'content-length': String(body.length) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          options.raw?.(Buffer.concat(chunks));
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The service's JSON API over the same HTTPS listener (bearer token, JSON in and out). */
async function api(base: string, method: string, path: string, options: { token?: string; body?: unknown } = {}): Promise<{ status: number; body: any }> {
  const res = await call(`${base}${path}`, {
    method,
    ...(options.body !== undefined ? { body: options.body, contentType: 'application/json' } : {}),
    headers: options.token ? { authorization: `Bearer ${options.token}` } : {},
  });
  return { status: res.status, body: res.json };
}

interface Directory {
  newNonce: string;
  newAccount: string;
  newOrder: string;
  revokeCert: string;
  keyChange: string;
  meta: { externalAccountRequired: boolean };
}

const b64u = (bytes: Buffer | Uint8Array) => Buffer.from(bytes).toString('base64url');

/** A small ACME client on jose: signs what it is told, so tests can also sign what a client must not. */
class Client {
  kid: string | undefined;
  private nextNonce: string | undefined;
  /** The physical replica requests go to (the signed URLs stay the directory's). */
  via: string | undefined;

  constructor(
    readonly directory: Directory,
    public key: { privateKey: CryptoKey; jwk: JWK; alg: string },
  ) {}

  static async create(directoryUrl: string, alg = 'ES256'): Promise<Client> {
    const directory = (await call(directoryUrl)).json as Directory;
    return new Client(directory, await Client.newKey(alg));
  }

  static async newKey(alg = 'ES256') {
    const pair = await generateKeyPair(alg, { extractable: true });
    return { privateKey: pair.privateKey, jwk: await exportJWK(pair.publicKey), alg };
  }

  async nonce(): Promise<string> {
    if (this.nextNonce) {
      const nonce = this.nextNonce;
      this.nextNonce = undefined;
      return nonce;
    }
    const res = await call(this.directory.newNonce, { method: 'HEAD', ...(this.via ? { via: this.via } : {}) });
    return String(res.headers['replay-nonce']);
  }

  async sign(url: string, payload: unknown, options: { useJwk?: boolean; nonce?: string | null; signedUrl?: string; key?: Client['key']; kid?: string } = {}) {
    const key = options.key ?? this.key;
    const bytes = payload === '' ? new Uint8Array(0) : Buffer.from(JSON.stringify(payload));
    const header: Record<string, unknown> = { alg: key.alg, url: options.signedUrl ?? url };
    if (options.nonce !== null) header.nonce = options.nonce ?? (await this.nonce());
    if (options.useJwk) header.jwk = key.jwk;
    else header.kid = options.kid ?? this.kid;
    return new FlattenedSign(bytes).setProtectedHeader(header as never).sign(key.privateKey);
  }

  async post(url: string, payload: unknown, options: Parameters<Client['sign']>[2] = {}): Promise<Answer> {
    const res = await call(url, { body: await this.sign(url, payload, options), ...(this.via ? { via: this.via } : {}) });
    if (res.headers['replay-nonce']) this.nextNonce = String(res.headers['replay-nonce']);
    return res;
  }

  async register(payload: Record<string, unknown> = { termsOfServiceAgreed: true }): Promise<Answer> {
    const res = await this.post(this.directory.newAccount, payload, { useJwk: true });
    if (res.status === 201 || res.status === 200) this.kid = String(res.headers.location);
    return res;
  }

  async thumbprint(): Promise<string> {
    return calculateJwkThumbprint(this.key.jwk, 'sha256');
  }
}

const PROFILE_POLICY = {
  subject: [{ type: 'CN', allowed: ['*.acme.test'] }],
  sans: { dns: ['*.acme.test'] },
  keyUsages: { allowed: [], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: [], always: ['serverAuth'] },
  keyAlgorithms: ['EC_prime256v1'],
  maxValidity: '30d',
};

describe('ACME', () => {
  let svc: TestService;
  let token: string;
  let http01Port = 0;
  let demoProfileId = '';
  let demoCaId = '';
  let demoDirectory = '';
  let strictProfileId = '';
  let strictDirectory = '';
  /** Key authorizations the test's own http-01 server answers with, by token. */
  const served = new Map<string, string>();
  const hits: string[] = [];
  let challengeServer: Server | undefined;

  /** The profile's CA chain: root.pem (trust anchor) and the CAs below it (untrusted.pem). */
  async function chainFiles(caId: string, label: string): Promise<{ root: string; untrusted: string }> {
    const ca = await api(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${caId}/certificate`, { token });
    const above = pemBlocks(ca.body.certificateChain);
    const all = [...pemBlocks(ca.body.certificate), ...above];
    return { root: write(`${label}-root.pem`, all.at(-1)!), untrusted: write(`${label}-untrusted.pem`, all.slice(0, -1).join('')) };
  }

  function verify(certificate: string, chain: { root: string; untrusted: string }) {
    const result = run('openssl', ['verify', '-x509_strict', '-CAfile', chain.root, '-untrusted', chain.untrusted, certificate]);
    expect(result.stdout.trim(), result.stderr).toBe(`${certificate}: OK`);
  }

  const serialOf = (path: string) => /serial=([0-9A-F]+)/.exec(openssl('x509', '-in', path, '-noout', '-serial'))![1]!.toLowerCase();

  async function listed(serial: string) {
    const list = await api(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=default&limit=100`, { token });
    return (list.body.certificates as Array<{ serialNumber: string; profileId: string; status: string; id: string }>).find((c) => c.serialNumber === serial);
  }

  async function certificateCount(projectId: string): Promise<number> {
    return (await api(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=${projectId}&limit=1`, { token })).body.totalCount;
  }

  /** A key and a CSR for `names` (DER, base64url), with openssl. */
  function csrFor(label: string, names: string[], options: { cn?: string; curve?: string; subject?: string } = {}): { csr: string; key: string } {
    const key = file(`${label}.key`);
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${options.curve ?? 'P-256'}`, '-out', key);
    openssl('req', '-new', '-key', key, '-subj', options.subject ?? (options.cn ? `/CN=${options.cn}` : '/'), '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`, '-outform', 'DER', '-out', file(`${label}.csr`));
    return { csr: b64u(readFileSync(file(`${label}.csr`))), key };
  }

  /** newOrder, answer every http-01 challenge from the test's server, wait for `ready`. */
  async function readyOrder(client: Client, names: string[]): Promise<{ url: string; order: any }> {
    const created = await client.post(client.directory.newOrder, { identifiers: names.map((value) => ({ type: 'dns', value })) });
    expect(created.status, created.text).toBe(201);
    const url = String(created.headers.location);
    for (const authzUrl of created.json.authorizations as string[]) {
      const authz = await client.post(authzUrl, '');
      const challenge = (authz.json.challenges as Array<{ type: string; url: string; token: string }>).find((c) => c.type === 'http-01')!;
      served.set(challenge.token, `${challenge.token}.${await client.thumbprint()}`);
      const answered = await client.post(challenge.url, {});
      expect(answered.status, answered.text).toBe(200);
      expect(answered.json.status).toMatch(/processing|valid/);
    }
    return { url, order: await pollOrder(client, url, ['ready']) };
  }

  async function pollOrder(client: Client, url: string, until: string[]): Promise<any> {
    for (let i = 0; i < 100; i++) {
      const res = await client.post(url, '');
      if (until.includes(res.json.status)) return res.json;
      if (res.json.status === 'invalid' && !until.includes('invalid')) throw new Error(`order invalid: ${res.text}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`order ${url} never reached ${until.join('/')}`);
  }

  beforeAll(async () => {
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file('tls.key'), '-out', file('tls.pem'), '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost');
    // A free port for http-01: the clients' standalone servers, and the test's own, listen on it in turn.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    http01Port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    svc = await startTestService({
      server: { tls: { certFile: file('tls.pem'), keyFile: file('tls.key') } },
      acme: {
        http01Port,
        resolve: ['certbot.acme.test:127.0.0.1', 'certbot-eab.acme.test:127.0.0.1', 'lego.acme.test:127.0.0.1', 'jose.acme.test:127.0.0.1', 'www.acme.test:127.0.0.1', 'other.acme.test:127.0.0.1', 'replica.acme.test:127.0.0.1'],
        validationTimeoutMs: 2000,
        validationAttempts: 2,
      },
    });
    const admin = svc.admin as typeof svc.admin & { profileId: string; caId: string };
    demoProfileId = admin.profileId;
    demoCaId = admin.caId;
    token = (await api(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: svc.admin.clientId, clientSecret: svc.admin.clientSecret } })).body.accessToken;
    demoDirectory = `${svc.url}/api/v1/cert-manager/acme/profiles/${demoProfileId}/directory`;
    const strict = await api(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', {
      token,
      body: { projectId: 'default', caId: demoCaId, slug: 'acme-strict', policy: PROFILE_POLICY, acme: { enabled: true } },
    });
    expect(strict.status, JSON.stringify(strict.body)).toBe(200);
    strictProfileId = strict.body.certificateProfile.id;
    strictDirectory = `${svc.url}/api/v1/cert-manager/acme/profiles/${strictProfileId}/directory`;
  }, 120_000);

  afterAll(async () => {
    await new Promise<void>((resolve) => (challengeServer ? challengeServer.close(() => resolve()) : resolve()));
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  /** The test's own http-01 responder, up while the jose-driven tests run (the clients bring their own). */
  async function serveChallenges(): Promise<void> {
    if (challengeServer) return;
    challengeServer = createServer((req, res) => {
      hits.push(`${req.headers.host} ${req.url}`);
      const tokenPath = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
      const answer = tokenPath && served.get(tokenPath[1]!);
      res.writeHead(answer ? 200 : 404, { 'content-type': 'text/plain' }).end(answer ?? 'no such token');
    });
    await new Promise<void>((resolve) => challengeServer!.listen(http01Port, '127.0.0.1', resolve));
  }

  async function stopServingChallenges(): Promise<void> {
    const server = challengeServer;
    challengeServer = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  it('the directory, and nonces: HEAD 200 and GET 204 with Replay-Nonce, no-store and the index link; a profile without ACME is a 404 problem', async () => {
    const directory = await call(demoDirectory);
    expect(directory.status).toBe(200);
    const base = `${svc.url}/api/v1/cert-manager/acme/profiles/${demoProfileId}`;
    expect(directory.json).toEqual({
      newNonce: `${base}/new-nonce`,
      newAccount: `${base}/new-account`,
      newOrder: `${base}/new-order`,
      revokeCert: `${base}/revoke-cert`,
      keyChange: `${base}/key-change`,
      meta: { externalAccountRequired: false },
    });
    const head = await call(`${base}/new-nonce`, { method: 'HEAD' });
    const get = await call(`${base}/new-nonce`);
    expect([head.status, get.status]).toEqual([200, 204]);
    for (const res of [head, get]) {
      expect(res.headers['replay-nonce']).toMatch(/^[A-Za-z0-9_-]{16,}$/);
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.headers.link).toBe(`<${base}/directory>;rel="index"`);
    }
    expect(head.headers['replay-nonce']).not.toBe(get.headers['replay-nonce']);

    const plain = await api(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: 'default', caId: demoCaId, slug: 'acme-off', policy: PROFILE_POLICY } });
    expect(plain.body.certificateProfile.acme).toEqual({ enabled: false, requireEab: false });
    const off = await call(`${svc.url}/api/v1/cert-manager/acme/profiles/${plain.body.certificateProfile.id}/directory`);
    expect(off.status).toBe(404);
    expect(off.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(off.json.type).toBe('urn:ietf:params:acme:error:malformed');
  });

  describe('certbot', () => {
    const certbot = (label: string, domain: string, extra: string[] = []) =>
      runAsync(
        'certbot',
        [
          'certonly',
          '--standalone',
          '--http-01-port',
          String(http01Port),
          '--http-01-address',
          '127.0.0.1',
          '--server',
          extra.includes('--server') ? extra[extra.indexOf('--server') + 1]! : demoDirectory,
          '--config-dir',
          file(`${label}/config`),
          '--work-dir',
          file(`${label}/work`),
          '--logs-dir',
          file(`${label}/logs`),
          '--non-interactive',
          '--agree-tos',
          '-m',
          'admin@example.com',
          '-d',
          domain,
          ...extra.filter((_, i) => extra[i] !== '--server' && extra[i - 1] !== '--server'),
        ],
        { REQUESTS_CA_BUNDLE: file('tls.pem') },
      );

    it('certonly --standalone on the demo profile: the certificate verifies under the profile chain, is recorded and audited', async () => {
      mkdirSync(file('certbot'), { recursive: true });
      const result = await certbot('certbot', 'certbot.acme.test');
      expect(result.status, result.output).toBe(0);
      const live = file('certbot/config/live/certbot.acme.test');
      const chain = await chainFiles(demoCaId, 'demo');
      verify(join(live, 'cert.pem'), chain);
      // certbot's chain.pem is what the server sent after the leaf: the CAs below the root.
      expect(readFileSync(join(live, 'chain.pem'), 'utf8')).toBe(readFileSync(chain.untrusted, 'utf8'));
      expect(openssl('x509', '-in', join(live, 'cert.pem'), '-noout', '-ext', 'subjectAltName')).toContain('DNS:certbot.acme.test');
      const record = await listed(serialOf(join(live, 'cert.pem')));
      expect(record).toMatchObject({ profileId: demoProfileId, status: 'active' });
      const audit = await api(svc.url, 'GET', `/api/v1/audit-logs?action=pki.acme.certificate.issue&limit=10`, { token });
      expect((audit.body.auditLogs as Array<{ resourceId: string; outcome: string }>).some((event) => event.resourceId === record!.id && event.outcome === 'success')).toBe(true);
    }, 180_000);

    it('renew (--force-renewal) gives a new certificate with a new serial; revoke revokes it and its serial is in the CA CRL', async () => {
      const live = file('certbot/config/live/certbot.acme.test');
      const first = serialOf(join(live, 'cert.pem'));
      const dirs = ['--config-dir', file('certbot/config'), '--work-dir', file('certbot/work'), '--logs-dir', file('certbot/logs'), '--non-interactive'];
      const env = { REQUESTS_CA_BUNDLE: file('tls.pem') };
      // renew reads the server, the authenticator and the http-01 port from what certonly saved;
      // without a terminal it would first sleep a random while (up to 8 minutes).
      const renewed = await runAsync('certbot', ['renew', '--force-renewal', '--no-random-sleep-on-renew', '--cert-name', 'certbot.acme.test', ...dirs], env);
      expect(renewed.status, renewed.output).toBe(0);
      const second = serialOf(join(live, 'cert.pem'));
      expect(second).not.toBe(first);
      verify(join(live, 'cert.pem'), await chainFiles(demoCaId, 'demo'));
      const revoked = await runAsync('certbot', ['revoke', '--cert-name', 'certbot.acme.test', '--reason', 'superseded', '--no-delete-after-revoke', '--server', demoDirectory, ...dirs], env);
      expect(revoked.status, revoked.output).toBe(0);
      expect(await listed(second)).toMatchObject({ status: 'revoked' });
      expect(await listed(first)).toMatchObject({ status: 'active' });
      let der: Buffer = Buffer.alloc(0);
      await call(`${svc.url}/pki/ca/${demoCaId}/crl.der`, { raw: (bytes) => (der = bytes) });
      const text = openssl('crl', '-inform', 'DER', '-in', write('demo-certbot.crl', der), '-noout', '-text');
      expect(text.replace(/\s/g, '').toLowerCase()).toContain(`serialnumber:${second}`);
      expect(text).toMatch(/Superseded/);
    }, 180_000);

    it('a profile requiring EAB: refused without it (externalAccountRequired), issued with --eab-kid/--eab-hmac-key from the eab-secret route', async () => {
      const created = await api(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', {
        token,
        body: { projectId: 'default', caId: demoCaId, slug: 'acme-eab', policy: PROFILE_POLICY, acme: { enabled: true, requireEab: true } },
      });
      const profileId = created.body.certificateProfile.id;
      expect(created.body.certificateProfile.acme).toEqual({ enabled: true, requireEab: true });
      const server = `${svc.url}/api/v1/cert-manager/acme/profiles/${profileId}/directory`;
      expect((await call(server)).json.meta).toEqual({ externalAccountRequired: true });
      const eab = await api(svc.url, 'GET', `/api/v1/cert-manager/certificate-profiles/${profileId}/acme/eab-secret`, { token });
      expect(eab.status).toBe(200);
      expect(eab.body.eabKid).toBe(profileId);
      expect(eab.body.eabSecret).toMatch(/^[A-Za-z0-9_-]{43}$/);
      // The same key on every call; never in the profile itself.
      expect((await api(svc.url, 'GET', `/api/v1/cert-manager/certificate-profiles/${profileId}/acme/eab-secret`, { token })).body).toEqual(eab.body);
      const profile = await api(svc.url, 'GET', `/api/v1/cert-manager/certificate-profiles/${profileId}`, { token });
      expect(JSON.stringify(profile.body)).not.toContain(eab.body.eabSecret);

      mkdirSync(file('certbot-eab'), { recursive: true });
      const before = await certificateCount('default');
      const refused = await certbot('certbot-eab', 'certbot-eab.acme.test', ['--server', server]);
      expect(refused.status).not.toBe(0);
      expect(refused.output).toMatch(/external account binding/i);
      expect(await certificateCount('default')).toBe(before);

      const result = await certbot('certbot-eab', 'certbot-eab.acme.test', ['--server', server, '--eab-kid', eab.body.eabKid, '--eab-hmac-key', eab.body.eabSecret]);
      expect(result.status, result.output).toBe(0);
      const cert = file('certbot-eab/config/live/certbot-eab.acme.test/cert.pem');
      verify(cert, await chainFiles(demoCaId, 'demo'));
      expect(await listed(serialOf(cert))).toMatchObject({ profileId, status: 'active' });
      // The account is bound: a client with another key and a MAC made with a wrong key is refused, and no account is made.
      const client = await Client.create(server);
      const wrongKey = Buffer.alloc(32, 7);
      const binding = await new FlattenedSign(Buffer.from(JSON.stringify(client.key.jwk))).setProtectedHeader({ alg: 'HS256', kid: profileId, url: client.directory.newAccount }).sign(wrongKey);
      const wrong = await client.register({ termsOfServiceAgreed: true, externalAccountBinding: binding });
      expect(wrong.status).toBe(403);
      expect(wrong.json.type).toBe('urn:ietf:params:acme:error:unauthorized');
      const lookup = await client.post(client.directory.newAccount, { onlyReturnExisting: true }, { useJwk: true });
      expect(lookup.json.type).toBe('urn:ietf:params:acme:error:accountDoesNotExist');
      // The right key binds it.
      const right = await new FlattenedSign(Buffer.from(JSON.stringify(client.key.jwk))).setProtectedHeader({ alg: 'HS256', kid: profileId, url: client.directory.newAccount }).sign(Buffer.from(eab.body.eabSecret, 'base64url'));
      expect((await client.register({ termsOfServiceAgreed: true, externalAccountBinding: right })).status).toBe(201);
    }, 240_000);
  });

  describe('lego', () => {
    const lego = (args: string[]) =>
      runAsync('lego', ['--server', demoDirectory, '--path', file('lego'), '--email', 'admin@example.com', '--accept-tos', '--domains', 'lego.acme.test', '--http', '--http.port', `127.0.0.1:${http01Port}`, ...args], {
        LEGO_CA_CERTIFICATES: file('tls.pem'),
      });
    const certificate = () => file('lego/certificates/lego.acme.test.crt');
    let first = '';

    it('run: the certificate (with its issuer bundled) verifies under the profile chain', async () => {
      const result = await lego(['run']);
      expect(result.status, result.output).toBe(0);
      const chain = await chainFiles(demoCaId, 'demo');
      const [leaf, ...rest] = pemBlocks(readFileSync(certificate(), 'utf8'));
      expect(rest.join('')).toBe(readFileSync(chain.untrusted, 'utf8'));
      verify(write('lego-1.pem', leaf!), chain);
      first = serialOf(file('lego-1.pem'));
      expect(await listed(first)).toMatchObject({ profileId: demoProfileId, status: 'active' });
    }, 180_000);

    it('renew: a new certificate with a new serial', async () => {
      const result = await lego(['renew', '--days', '400', '--no-random-sleep']);
      expect(result.status, result.output).toBe(0);
      const renewed = write('lego-2.pem', pemBlocks(readFileSync(certificate(), 'utf8'))[0]!);
      verify(renewed, await chainFiles(demoCaId, 'demo'));
      expect(serialOf(renewed)).not.toBe(first);
      expect(await listed(serialOf(renewed))).toMatchObject({ status: 'active' });
    }, 180_000);

    it('revoke: the certificate is revoked and its serial is in the CA CRL', async () => {
      const serial = serialOf(file('lego-2.pem'));
      const result = await lego(['revoke']);
      expect(result.status, result.output).toBe(0);
      expect(await listed(serial)).toMatchObject({ status: 'revoked' });
      let der: Buffer = Buffer.alloc(0);
      await call(`${svc.url}/pki/ca/${demoCaId}/crl.der`, { raw: (bytes) => (der = bytes) });
      const text = openssl('crl', '-inform', 'DER', '-in', write('demo.crl', der), '-noout', '-text');
      expect(text.replace(/\s/g, '').toLowerCase()).toContain(`serialnumber:${serial}`);
      expect(text).not.toContain(`Serial Number: ${first.toUpperCase()}`);
    }, 180_000);
  });

  describe('at the protocol level (jose)', () => {
    let client: Client;

    beforeAll(async () => {
      await serveChallenges();
      client = await Client.create(strictDirectory);
      const created = await client.register({ termsOfServiceAgreed: true, contact: ['mailto:ops@example.com'] });
      expect(created.status, created.text).toBe(201);
      expect(created.json).toMatchObject({ status: 'valid', contact: ['mailto:ops@example.com'] });
      // The same key again is the same account (200, same Location).
      const again = await client.register();
      expect(again.status).toBe(200);
      expect(again.headers.location).toBe(client.kid);
    });

    const ordersOf = async (c: Client) => ((await c.post(`${c.kid}/orders`, '')).json.orders as string[]).length;

    it('a reused nonce is badNonce with a fresh Replay-Nonce, and changes nothing', async () => {
      const nonce = await client.nonce();
      const before = await ordersOf(client);
      const first = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'www.acme.test' }] }, { nonce });
      expect(first.status).toBe(201);
      const replay = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'www.acme.test' }] }, { nonce });
      expect(replay.status).toBe(400);
      expect(replay.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(replay.json.type).toBe('urn:ietf:params:acme:error:badNonce');
      expect(replay.headers['replay-nonce']).toMatch(/^[A-Za-z0-9_-]{16,}$/);
      expect(replay.headers['replay-nonce']).not.toBe(nonce);
      expect(await ordersOf(client)).toBe(before + 1);
      const made = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'www.acme.test' }] }, { nonce: 'never-issued-nonce' });
      expect(made.json.type).toBe('urn:ietf:params:acme:error:badNonce');
    });

    it('a JWS whose url is not the request URL is unauthorized; an unknown kid is accountDoesNotExist; a jwk where a kid belongs is malformed; nothing changes', async () => {
      const before = await ordersOf(client);
      const wrongUrl = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'www.acme.test' }] }, { signedUrl: client.directory.revokeCert });
      expect(wrongUrl.status).toBe(403);
      expect(wrongUrl.json.type).toBe('urn:ietf:params:acme:error:unauthorized');
      const unknown = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'www.acme.test' }] }, { kid: `${client.kid!.replace(/[^/]+$/, '')}00000000-0000-4000-8000-000000000000` });
      expect(unknown.status).toBe(400);
      expect(unknown.json.type).toBe('urn:ietf:params:acme:error:accountDoesNotExist');
      const jwkInstead = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'www.acme.test' }] }, { useJwk: true });
      expect(jwkInstead.json.type).toBe('urn:ietf:params:acme:error:malformed');
      // Signed by another key than the account's.
      const forged = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'www.acme.test' }] }, { key: await Client.newKey() });
      expect(forged.json.type).toBe('urn:ietf:params:acme:error:malformed');
      expect(forged.json.detail).toMatch(/signature/);
      expect(await ordersOf(client)).toBe(before);
      // Every accepted algorithm makes an account (RSA PKCS#1 v1.5 and PSS, P-384, Ed25519); HS256 is refused.
      for (const alg of ['RS256', 'PS256', 'ES384', 'EdDSA']) {
        const other = await Client.create(strictDirectory, alg);
        expect((await other.register()).status, alg).toBe(201);
      }
      const bad = await call(client.directory.newAccount, { body: { protected: b64u(Buffer.from(JSON.stringify({ alg: 'HS256', url: client.directory.newAccount, nonce: await client.nonce(), jwk: client.key.jwk }))), payload: '', signature: 'AA' } });
      expect(bad.json.type).toBe('urn:ietf:params:acme:error:badSignatureAlgorithm');
      expect(bad.json.algorithms).toContain('ES256');
      const notJose = await call(client.directory.newAccount, { body: await client.sign(client.directory.newAccount, {}, { useJwk: true }), contentType: 'application/json' });
      expect(notJose.status).toBe(415);
    });

    it('identifiers the server or the policy refuses: rejectedIdentifier (IP, wildcard, a name outside the policy), unsupportedIdentifier; no order is made', async () => {
      const before = await ordersOf(client);
      const cases: Array<[unknown, string, RegExp]> = [
        [[{ type: 'ip', value: '127.0.0.1' }], 'rejectedIdentifier', /RFC 8738/],
        [[{ type: 'dns', value: '*.acme.test' }], 'rejectedIdentifier', /dns-01/],
        [[{ type: 'dns', value: 'www.example.org' }], 'rejectedIdentifier', /does not match \*\.acme\.test/],
        [[{ type: 'dns', value: 'a.b.acme.test' }], 'rejectedIdentifier', /a\.b\.acme\.test does not match/],
        [[{ type: 'email', value: 'x@acme.test' }], 'unsupportedIdentifier', /email/],
        [[], 'malformed', /identifiers/],
      ];
      for (const [identifiers, type, detail] of cases) {
        const res = await client.post(client.directory.newOrder, { identifiers });
        expect(res.json.type, JSON.stringify(identifiers)).toBe(`urn:ietf:params:acme:error:${type}`);
        expect(res.json.detail).toMatch(detail);
      }
      expect(await ordersOf(client)).toBe(before);
    });

    it('finalize refuses a CSR naming another identifier and a key the policy refuses (badCSR naming the rule); the order stays ready, no certificate is made', async () => {
      const { url, order } = await readyOrder(client, ['jose.acme.test']);
      expect(hits.some((hit) => hit.startsWith('jose.acme.test '))).toBe(true);
      const before = await certificateCount('default');
      const other = csrFor('other-name', ['jose.acme.test', 'other.acme.test']);
      const refused = await client.post(order.finalize, { csr: other.csr });
      expect(refused.status).toBe(400);
      expect(refused.json.type).toBe('urn:ietf:params:acme:error:badCSR');
      expect(refused.json.detail).toContain('other.acme.test, which the order does not');
      const p384 = csrFor('p384', ['jose.acme.test'], { curve: 'P-384' });
      const policy = await client.post(order.finalize, { csr: p384.csr });
      expect(policy.json.type).toBe('urn:ietf:params:acme:error:badCSR');
      expect(policy.json.detail).toMatch(/key algorithm EC P-384 is not allowed/);
      const cn = csrFor('cn', ['jose.acme.test'], { cn: 'www.acme.test' });
      expect((await client.post(order.finalize, { csr: cn.csr })).json.detail).toMatch(/common name www\.acme\.test is not one of the order's names/);
      // Only the name was validated: an organization in the subject is not vouched for.
      const organization = csrFor('organization', ['jose.acme.test'], { subject: '/CN=jose.acme.test/O=Some Bank' });
      const withO = await client.post(order.finalize, { csr: organization.csr });
      expect(withO.json.type).toBe('urn:ietf:params:acme:error:badCSR');
      expect(withO.json.detail).toMatch(/subject names O, which ACME does not validate/);
      expect((await client.post(order.finalize, { csr: 'not-a-csr' })).json.type).toBe('urn:ietf:params:acme:error:badCSR');
      expect(await certificateCount('default')).toBe(before);
      expect((await client.post(url, '')).json.status).toBe('ready');

      // Two finalize calls at once: one certificate.
      const good = csrFor('good', ['jose.acme.test'], { cn: 'jose.acme.test' });
      const [a, b] = await Promise.all([client.post(order.finalize, { csr: good.csr }, { nonce: await client.nonce() }), client.post(order.finalize, { csr: good.csr }, { nonce: await client.nonce() })]);
      const statuses = [a.status, b.status].sort();
      expect(statuses, `${a.text} ${b.text}`).toEqual([200, 403]);
      expect([a, b].find((r) => r.status === 403)!.json.type).toBe('urn:ietf:params:acme:error:orderNotReady');
      expect(await certificateCount('default')).toBe(before + 1);
      const done = await pollOrder(client, url, ['valid']);
      const chain = await client.post(done.certificate, '');
      expect(chain.headers['content-type']).toBe('application/pem-certificate-chain');
      const leaf = write('jose-leaf.pem', pemBlocks(chain.text)[0]!);
      verify(leaf, await chainFiles(demoCaId, 'demo'));
      // Revocation signed with the certificate's own key (jwk), then again: alreadyRevoked.
      const certKey = { privateKey: await importPKCS8(openssl('pkcs8', '-topk8', '-nocrypt', '-in', good.key), 'ES256'), jwk: await exportJWK(await importPKCS8(openssl('pkcs8', '-topk8', '-nocrypt', '-in', good.key), 'ES256', { extractable: true })), alg: 'ES256' };
      certKey.jwk = { kty: certKey.jwk.kty!, crv: certKey.jwk.crv!, x: certKey.jwk.x!, y: certKey.jwk.y! };
      const der = b64u(Buffer.from(pemBlocks(chain.text)[0]!.replace(/-----[^-]+-----|\s/g, ''), 'base64'));
      const stranger = await client.post(client.directory.revokeCert, { certificate: der }, { useJwk: true, key: await Client.newKey() });
      expect(stranger.json.type).toBe('urn:ietf:params:acme:error:unauthorized');
      const revoked = await client.post(client.directory.revokeCert, { certificate: der, reason: 1 }, { useJwk: true, key: certKey });
      expect(revoked.status, revoked.text).toBe(200);
      expect(await listed(serialOf(leaf))).toMatchObject({ status: 'revoked' });
      expect((await client.post(client.directory.revokeCert, { certificate: der }, { useJwk: true, key: certKey })).json.type).toBe('urn:ietf:params:acme:error:alreadyRevoked');
    }, 120_000);

    it('a name that resolves to loopback through DNS is not validated (the SSRF guard): the challenge, its authorization and the order are invalid', async () => {
      const demo = await Client.create(demoDirectory);
      expect((await demo.register()).status).toBe(201);
      const created = await demo.post(demo.directory.newOrder, { identifiers: [{ type: 'dns', value: 'localhost' }] });
      expect(created.status, created.text).toBe(201);
      const authz = await demo.post(created.json.authorizations[0], '');
      const challenge = authz.json.challenges[0];
      served.set(challenge.token, `${challenge.token}.${await demo.thumbprint()}`);
      hits.length = 0;
      await demo.post(challenge.url, {});
      const order = await pollOrder(demo, String(created.headers.location), ['invalid']);
      expect(order.error.type).toBe('urn:ietf:params:acme:error:connection');
      expect(order.error.detail).toMatch(/localhost resolves to (127\.0\.0\.1|::1), which is not a public address/);
      const after = await demo.post(created.json.authorizations[0], '');
      expect(after.json.status).toBe('invalid');
      expect(after.json.challenges[0].status).toBe('invalid');
      expect(hits).toEqual([]);
      // An invalid order cannot be finalized.
      const csr = csrFor('localhost', ['localhost']);
      expect((await demo.post(order.finalize, { csr: csr.csr })).json.type).toBe('urn:ietf:params:acme:error:orderNotReady');
    }, 60_000);

    it('key change: the new key signs from then on, the old one no longer does; deactivation ends the account', async () => {
      const old = client.key;
      const next = await Client.newKey('ES384');
      const inner = await new FlattenedSign(Buffer.from(JSON.stringify({ account: client.kid, oldKey: old.jwk }))).setProtectedHeader({ alg: next.alg, jwk: next.jwk, url: client.directory.keyChange } as never).sign(next.privateKey);
      const changed = await client.post(client.directory.keyChange, inner);
      expect(changed.status, changed.text).toBe(200);
      client.key = next;
      expect((await client.post(client.kid!, '')).status).toBe(200);
      const withOld = await client.post(client.kid!, '', { key: old });
      expect(withOld.json.type).toBe('urn:ietf:params:acme:error:malformed');
      // The new key finds the account; the old one finds none.
      const found = await client.post(client.directory.newAccount, { onlyReturnExisting: true }, { useJwk: true });
      expect(found.headers.location).toBe(client.kid);
      expect((await client.post(client.directory.newAccount, { onlyReturnExisting: true }, { useJwk: true, key: old })).json.type).toBe('urn:ietf:params:acme:error:accountDoesNotExist');

      const deactivated = await client.post(client.kid!, { status: 'deactivated' });
      expect(deactivated.json.status).toBe('deactivated');
      // §7.3.6: 401 unauthorized, for the account's requests and for newAccount with its key.
      const after = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'www.acme.test' }] });
      expect(after.status).toBe(401);
      expect(after.json.type).toBe('urn:ietf:params:acme:error:unauthorized');
      const again = await client.post(client.directory.newAccount, {}, { useJwk: true });
      expect(again.status).toBe(401);
      expect(again.json.type).toBe('urn:ietf:params:acme:error:unauthorized');
    });

    it('a profile that comes to require EAB refuses the accounts made without it (externalAccountRequired)', async () => {
      const made = await api(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', {
        token,
        body: { projectId: 'default', caId: demoCaId, slug: 'acme-later-eab', policy: PROFILE_POLICY, acme: { enabled: true } },
      });
      expect(made.status, JSON.stringify(made.body)).toBe(200);
      const profileId = made.body.certificateProfile.id;
      const open = await Client.create(`${svc.url}/api/v1/cert-manager/acme/profiles/${profileId}/directory`);
      expect((await open.register()).status).toBe(201);
      expect((await open.post(open.directory.newOrder, { identifiers: [{ type: 'dns', value: 'jose.acme.test' }] })).status).toBe(201);
      const locked = await api(svc.url, 'PATCH', `/api/v1/cert-manager/certificate-profiles/${profileId}`, { token, body: { acme: { enabled: true, requireEab: true } } });
      expect(locked.status, JSON.stringify(locked.body)).toBe(200);
      const refused = await open.post(open.directory.newOrder, { identifiers: [{ type: 'dns', value: 'jose.acme.test' }] });
      expect(refused.status).toBeGreaterThanOrEqual(400);
      expect(refused.status).toBeLessThan(500);
      expect(refused.json.type).toBe('urn:ietf:params:acme:error:externalAccountRequired');
    });

    it('ids that are not the server\'s own (not uuids, NUL bytes) are not found, never a server error', async () => {
      const fresh = await Client.create(strictDirectory);
      expect((await fresh.register()).status).toBe(201);
      for (const id of ['not-a-uuid', '%00', `${randomUUID()}%00`]) {
        const answer = await fresh.post(`${fresh.directory.newOrder.replace(/new-order$/, 'orders')}/${id}`, '');
        expect(answer.status, answer.text).toBe(404);
        expect(answer.headers['content-type']).toMatch(/^application\/problem\+json/);
      }
      const profile = await api(svc.url, 'GET', '/api/v1/cert-manager/acme/profiles/%00/directory', {});
      expect(profile.status).toBe(404);
    });
  });

  describe('with a second replica on the same store', () => {
    let replica: ListeningChildService | undefined;

    beforeAll(async () => {
      await serveChallenges();
      // Both replicas name the first one's URL, as replicas behind one load balancer name its URL.
      replica = await startChildService(
        svc.dataDir,
        {
          TLS_CERT_FILE: file('tls.pem'),
          TLS_KEY_FILE: file('tls.key'),
          PUBLIC_BASE_URL: svc.url,
          ACME_HTTP01_PORT: String(http01Port),
          ACME_RESOLVE: 'replica.acme.test:127.0.0.1',
        },
        120_000,
      );
    }, 150_000);

    afterAll(async () => {
      await replica?.kill();
      await stopServingChallenges();
    });

    it('each step may go to either replica: a nonce from one is used at the other, the other validates and finalizes, and a nonce is used once across both', async () => {
      const client = await Client.create(strictDirectory);
      // The account is made on the child replica with a nonce from this one.
      const nonce = await client.nonce();
      client.via = replica!.url;
      expect((await client.post(client.directory.newAccount, { termsOfServiceAgreed: true }, { useJwk: true, nonce })).status).toBe(201);
      client.kid = String((await client.post(client.directory.newAccount, { onlyReturnExisting: true }, { useJwk: true })).headers.location);
      // Replayed at the first replica: used already.
      client.via = svc.url;
      expect((await client.post(client.directory.newAccount, { onlyReturnExisting: true }, { useJwk: true, nonce })).json.type).toBe('urn:ietf:params:acme:error:badNonce');

      // Ordered here, validated there (the child's validator fetches the challenge), finalized here.
      const created = await client.post(client.directory.newOrder, { identifiers: [{ type: 'dns', value: 'replica.acme.test' }] });
      expect(created.status).toBe(201);
      const authz = await client.post(created.json.authorizations[0], '');
      const challenge = authz.json.challenges[0];
      served.set(challenge.token, `${challenge.token}.${await client.thumbprint()}`);
      client.via = replica!.url;
      expect((await client.post(challenge.url, {})).status).toBe(200);
      client.via = svc.url;
      const order = await pollOrder(client, String(created.headers.location), ['ready']);
      const csr = csrFor('replica', ['replica.acme.test']);
      const finalized = await client.post(order.finalize, { csr: csr.csr });
      expect(finalized.status, finalized.text).toBe(200);
      client.via = replica!.url;
      const done = await pollOrder(client, String(created.headers.location), ['valid']);
      const chain = await client.post(done.certificate, '');
      verify(write('replica-leaf.pem', pemBlocks(chain.text)[0]!), await chainFiles(demoCaId, 'demo'));
    }, 120_000);
  });
});
