/**
 * Hostile input, property-based (fast-check): at least 10,000 generated bad requests across
 * every route — wrong JSON types, huge and deep JSON, broken base64, odd unicode, truncated or
 * garbage PEM and DER, CSRs with strange extensions, path traversal in ids, bad query
 * parameters, bad or missing tokens — and for each answer:
 *
 * - a 4xx (never a 5xx), in the spec's error envelope for its status (kms or pki schema family,
 *   test/fixtures/spec-error-schemas.json), with `reqId` equal to the X-Request-Id header (and
 *   to the caller's own id when it sent a sane one);
 * - afterwards the process still answers /healthz and /readyz and still encrypts and decrypts;
 * - no key, key version, CA, profile, certificate, identity or client secret changed (SQLite
 *   rows compared before and after, read-only), and the token holds the same objects.
 *
 * Every generated request is invalid by construction (test/helpers/hostile.ts): a broken or
 * missing required field, a caller without the right, an id that names nothing, a body that is
 * not JSON. A request that the service accepted would show up twice: as a 2xx here and as a
 * changed row in the snapshot.
 *
 * The seed is printed; HOSTILE_SEED=<n> replays a run, HOSTILE_SCALE=<x> scales the counts.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../helpers/cli.js';
import { envelopeValidator } from '../helpers/envelope.js';
import { createIdentity, login, request } from '../helpers/http.js';
import { aimedRoutes, forgedCertificate, forgedCsrs, hostileRoutes, NO_SUCH_ROUTE, x509, type Fixtures, type HostileRequest } from '../helpers/hostile.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { tokenObjects } from '../helpers/token-objects.js';

const SEED = process.env.HOSTILE_SEED ? Number(process.env.HOSTILE_SEED) : Date.now() % 2 ** 31;
const SCALE = process.env.HOSTILE_SCALE ? Number(process.env.HOSTILE_SCALE) : 1;
const MIN_REQUESTS = 10_000;
const CONCURRENCY = 16;
const PROJECT = 'default';
const LOW_PROJECT = 'hostile-low';
const OTHER_PROJECT = 'hostile-other';

const work = mkdtempSync(join(tmpdir(), 'hostile-'));
const file = (name: string) => join(work, name);

// ---------------------------------------------------------------------------------------------
// Sending: raw paths (no client-side normalization), keep-alive, bounded concurrency
// ---------------------------------------------------------------------------------------------

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  error?: string;
}

function send(base: URL, agent: http.Agent, hostile: HostileRequest): Promise<Answer> {
  return new Promise((resolve) => {
    const body = hostile.body === undefined ? undefined : Buffer.isBuffer(hostile.body) ? hostile.body : Buffer.from(hostile.body, 'utf8');
    const headers: Record<string, string> = { ...hostile.headers };
    if (body) headers['content-length'] = String(body.length);
    let req: http.ClientRequest;
    try {
      req = http.request({ host: base.hostname, port: base.port, method: hostile.method, path: hostile.path, headers, agent, timeout: 60_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (error) => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: '', error: `response: ${error.message}` }));
      });
    } catch (error) {
      // The client itself refused to send it (a header or path it cannot write): not a request.
      resolve({ status: -1, headers: {}, text: '', error: `client refused: ${(error as Error).message}` });
      return;
    }
    req.on('timeout', () => req.destroy(new Error('timed out after 60 s')));
    req.on('error', (error) => resolve({ status: 0, headers: {}, text: '', error: error.message }));
    req.end(body);
  });
}

async function sendAll(base: URL, requests: HostileRequest[], onAnswer: (request: HostileRequest, answer: Answer) => void): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  let next = 0;
  const worker = async () => {
    while (next < requests.length) {
      const request = requests[next++]!;
      onAnswer(request, await send(base, agent, request));
    }
  };
  try {
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  } finally {
    agent.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// What must not change
// ---------------------------------------------------------------------------------------------

/** Tables of things that must not change, and the columns that may (a CRL renewed on its timer). */
const GUARDED: Record<string, string[]> = {
  identities: [],
  client_secrets: [],
  kms_keys: [],
  kms_key_versions: [],
  cas: ['crl', 'crl_number', 'crl_next_update', 'updated_at'],
  certificate_profiles: [],
  certificates: [],
  settings: [],
};

function snapshot(dbPath: string): Record<string, unknown[]> {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const out: Record<string, unknown[]> = {};
    for (const [table, moving] of Object.entries(GUARDED)) {
      const rows = db.prepare(`SELECT * FROM ${table} ORDER BY rowid`).all() as Record<string, unknown>[];
      out[table] = rows.map((row) => Object.fromEntries(Object.entries(row).filter(([column]) => !moving.includes(column)).map(([column, value]) => [column, Buffer.isBuffer(value) ? `hex:${value.toString('hex')}` : value])));
    }
    return out;
  } finally {
    db.close();
  }
}

const objectsOf = (svc: TestService) =>
  tokenObjects(svc)
    .map((object) => JSON.stringify(object))
    .sort();

// ---------------------------------------------------------------------------------------------
// Fixture CSRs from the openssl CLI
// ---------------------------------------------------------------------------------------------

/** CSRs the openssl CLI makes: odd keys, odd extensions, odd subjects. Ones this openssl refuses are skipped. */
function opensslCsrs(): Array<{ label: string; pem: string }> {
  const keys: Record<string, string[]> = {
    p256: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
    rsa2048: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
    rsa1024: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
    rsa512: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:512'],
    rsapss: ['-algorithm', 'RSA-PSS', '-pkeyopt', 'rsa_keygen_bits:2048'],
    ed25519: ['-algorithm', 'ED25519'],
    ed448: ['-algorithm', 'ED448'],
    secp256k1: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1'],
    brainpool: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:brainpoolP256r1'],
    p521: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521'],
  };
  const made = new Set<string>();
  for (const [name, args] of Object.entries(keys)) {
    if (run('openssl', ['genpkey', ...args, '-out', file(`${name}.key`)]).status === 0) made.add(name);
  }
  const sans = Array.from({ length: 150 }, (_, i) => `DNS:h${i}.example.test`).join(',');
  const specs: Array<[label: string, key: string, subject: string, extra: string[]]> = [
    ['openssl: good P-256', 'p256', '/CN=good.example.test', ['-addext', 'subjectAltName=DNS:good.example.test']],
    ['openssl: good RSA 2048', 'rsa2048', '/CN=rsa.example.test/O=Acme', ['-addext', 'subjectAltName=DNS:rsa.example.test']],
    ['openssl: unknown critical extension', 'p256', '/CN=crit.example.test', ['-addext', '1.2.3.4.5.6.7=critical,DER:05:00']],
    ['openssl: unknown critical extension, junk value', 'p256', '/CN=crit2.example.test', ['-addext', '1.3.6.1.4.1.99999.1=critical,DER:DE:AD:BE:EF']],
    ['openssl: 150 SANs', 'p256', '/CN=many.example.test', ['-addext', `subjectAltName=${sans}`]],
    ['openssl: CA with huge pathlen', 'p256', '/CN=ca.example.test', ['-addext', 'basicConstraints=critical,CA:TRUE,pathlen:2147483647']],
    ['openssl: every key usage', 'p256', '/CN=ku.example.test', ['-addext', 'keyUsage=critical,digitalSignature,nonRepudiation,keyEncipherment,dataEncipherment,keyAgreement,keyCertSign,cRLSign,encipherOnly,decipherOnly']],
    ['openssl: odd EKUs', 'p256', '/CN=eku.example.test', ['-addext', 'extendedKeyUsage=1.2.3.4,anyExtendedKeyUsage,codeSigning,OCSPSigning']],
    ['openssl: name constraints', 'p256', '/CN=nc.example.test', ['-addext', 'nameConstraints=critical,permitted;DNS:example.test']],
    ['openssl: every SAN type', 'p256', '/CN=san.example.test', ['-addext', 'subjectAltName=IP:0.0.0.0,IP:::,IP:255.255.255.255,email:a@b,URI:javascript:alert(1),otherName:1.2.3.4;UTF8:hello,RID:1.2.3.4,DNS:*.*']],
    ['openssl: UTF-8 subject with bidi and multi-valued RDN', 'p256', '/CN=\u00fcn\u00ef\u202ec\u00f8d\u00e9/O=a+OU=b/C=ZZ', ['-utf8']],
    ['openssl: empty-ish subject', 'p256', '/O=only-o', []],
    ['openssl: Ed25519 key', 'ed25519', '/CN=ed.example.test', []],
    ['openssl: Ed448 key', 'ed448', '/CN=ed448.example.test', []],
    ['openssl: RSA-PSS key', 'rsapss', '/CN=pss.example.test', []],
    ['openssl: PSS signature on an RSA key', 'rsa2048', '/CN=psssig.example.test', ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:-1']],
    ['openssl: secp256k1 key', 'secp256k1', '/CN=k1.example.test', []],
    ['openssl: brainpoolP256r1 key', 'brainpool', '/CN=bp.example.test', []],
    ['openssl: P-521 key', 'p521', '/CN=p521.example.test', []],
    ['openssl: RSA 1024 key', 'rsa1024', '/CN=rsa1024.example.test', []],
    ['openssl: RSA 512 key', 'rsa512', '/CN=rsa512.example.test', []],
    ['openssl: SHA-1 signature', 'rsa2048', '/CN=sha1.example.test', ['-sha1']],
    ['openssl: challenge password attribute', 'p256', '/CN=cp.example.test', ['-addext', 'subjectKeyIdentifier=hash']],
    ['openssl: SAN with NUL-ish and unicode DNS', 'p256', '/CN=x', ['-addext', 'subjectAltName=DNS:a\\x00b,DNS:b\u00fccher.example,DNS:-,DNS:.']],
  ];
  const out: Array<{ label: string; pem: string }> = [];
  specs.forEach(([label, key, subject, extra], index) => {
    if (!made.has(key)) return;
    const result = run('openssl', ['req', '-new', '-key', file(`${key}.key`), '-subj', subject, ...extra, '-out', file(`csr-${index}.pem`)]);
    if (result.status === 0) out.push({ label, pem: readFileSync(file(`csr-${index}.pem`), 'utf8') });
  });
  return out;
}

/** Self-signed certificates of odd kinds from the openssl CLI. */
function opensslCertificates(): Array<{ label: string; pem: string }> {
  const out: Array<{ label: string; pem: string }> = [];
  const specs: Array<[label: string, key: string, extra: string[]]> = [
    ['openssl: Ed25519 self-signed', 'ed25519', []],
    ['openssl: RSA-PSS self-signed', 'rsapss', []],
    ['openssl: secp256k1 self-signed CA', 'secp256k1', ['-addext', 'basicConstraints=critical,CA:TRUE']],
    ['openssl: RSA 512 self-signed', 'rsa512', []],
  ];
  specs.forEach(([label, key, extra], index) => {
    const result = run('openssl', ['req', '-x509', '-new', '-key', file(`${key}.key`), '-subj', `/CN=${key} self-signed`, '-days', '30', ...extra, '-out', file(`cert-${index}.pem`)]);
    if (result.status === 0) out.push({ label, pem: readFileSync(file(`cert-${index}.pem`), 'utf8') });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('hostile input', () => {
  let svc: TestService;
  let fx: Fixtures;
  let before: Record<string, unknown[]>;
  let objectsBefore: string[];

  const api = async (method: string, path: string, body?: unknown, token = fx?.adminToken) => {
    const res = await request(svc.url, method, path, { token, body });
    if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  };

  beforeAll(async () => {
    svc = await startTestService({
      rateLimit: { perIdentityPerSecond: 0 },
      auth: { loginThrottle: { maxFailuresPerClient: 1_000_000, maxFailuresPerAddress: 1_000_000 } },
    });
    const credentials = JSON.parse(readFileSync(join(svc.dataDir, 'admin-credentials.json'), 'utf8')) as { clientId: string; clientSecret: string; caId: string; profileId: string };
    const adminToken = await login(svc.url, svc.admin);
    const partial: Partial<Fixtures> = { adminToken, project: PROJECT, lowProject: LOW_PROJECT, otherProject: OTHER_PROJECT, adminClientId: credentials.clientId };
    fx = partial as Fixtures;

    // Keys.
    const createKey = async (name: string, extra: Record<string, unknown> = {}) => (await api('POST', '/api/v1/kms/keys', { projectId: PROJECT, name, ...extra })).key.id as string;
    fx.aesKeyName = 'hostile-aes';
    fx.rsaKeyName = 'hostile-rsa';
    fx.ecKeyName = 'hostile-ec';
    fx.aesKeyId = await createKey(fx.aesKeyName);
    fx.rsaKeyId = await createKey(fx.rsaKeyName, { keyUsage: 'sign-verify', encryptionAlgorithm: 'RSA_2048' });
    fx.ecKeyId = await createKey(fx.ecKeyName, { keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' });
    fx.disabledKeyId = await createKey('hostile-disabled');
    await api('PATCH', `/api/v1/kms/keys/${fx.disabledKeyId}`, { isDisabled: true });
    fx.aesCiphertext = (await api('POST', `/api/v1/kms/keys/${fx.aesKeyId}/encrypt`, { plaintext: Buffer.from('fixture').toString('base64') })).ciphertext;

    // Identities and tokens.
    const identities = (await api('GET', '/api/v1/identities')).identities as Array<{ id: string; clientId: string }>;
    fx.adminIdentityId = identities.find((identity) => identity.clientId === credentials.clientId)!.id;
    const second = await createIdentity(svc.url, adminToken, 'hostile-second', [{ projectId: PROJECT, actions: ['read', 'encrypt'] }]);
    fx.secondIdentityId = second.identityId;
    fx.secondClientId = second.clientId;
    fx.secondSecretId = (await api('GET', `/api/v1/identities/${second.identityId}/client-secrets`)).clientSecretData[0].id;
    const low = await createIdentity(svc.url, adminToken, 'hostile-low', [{ projectId: LOW_PROJECT, actions: ['read'] }]);
    fx.lowIdentityId = low.identityId;
    fx.lowToken = await login(svc.url, low);
    const doomed = await createIdentity(svc.url, adminToken, 'hostile-revoked', [{ projectId: PROJECT, actions: ['read'] }]);
    fx.revokedToken = await login(svc.url, doomed);
    await api('DELETE', `/api/v1/identities/${doomed.identityId}`);
    // An expired token: a real login whose row is moved into the past (it was never used, so
    // nothing in the service has it cached).
    const aging = await createIdentity(svc.url, adminToken, 'hostile-expired', [{ projectId: PROJECT, actions: ['*'] }]);
    fx.expiredToken = await login(svc.url, aging);
    {
      const db = new Database(join(svc.dataDir, 'hsm-signer.db'));
      const past = Date.now() - 3_600_000;
      const changed = db.prepare('UPDATE access_tokens SET expires_at = ?, max_expires_at = ? WHERE identity_id = ?').run(past, past, aging.identityId);
      db.close();
      expect(changed.changes).toBe(1);
    }
    expect((await request(svc.url, 'GET', '/api/v1/kms/keys?projectId=default', { token: fx.expiredToken })).status).toBe(401);

    // PKI: the demo CAs and profile, a pending CA, a disabled CA with a profile, another project's CA.
    fx.caId = credentials.caId;
    fx.profileId = credentials.profileId;
    fx.profileSlug = (await api('GET', `/api/v1/cert-manager/certificate-profiles/${fx.profileId}`)).certificateProfile.slug;
    const cas = (await api('GET', `/api/v1/cert-manager/ca/internal?projectId=${PROJECT}`)).cas as Array<{ id: string; type: string }>;
    fx.rootCaId = cas.find((ca) => ca.type === 'root')!.id;
    const pending = (await api('POST', '/api/v1/cert-manager/ca/internal', { projectId: PROJECT, type: 'intermediate', commonName: 'Hostile Pending CA', keyAlgorithm: 'EC_prime256v1' })).ca;
    fx.pendingCaId = pending.id;
    const pendingCsr = new x509.Pkcs10CertificateRequest((await api('GET', `/api/v1/cert-manager/ca/internal/${fx.pendingCaId}/csr`)).csr);
    fx.disabledCaId = (await api('POST', '/api/v1/cert-manager/ca/internal', { projectId: PROJECT, type: 'root', commonName: 'Hostile Disabled Root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' })).ca.id;
    const openPolicy = { subject: [{ type: 'CN', allowed: ['**'] }], sans: { dns: ['**'] }, maxValidity: '90d' };
    fx.disabledProfileId = (await api('POST', '/api/v1/cert-manager/certificate-profiles', { projectId: PROJECT, caId: fx.disabledCaId, slug: 'hostile-disabled', policy: openPolicy })).certificateProfile.id;
    await api('PATCH', `/api/v1/cert-manager/ca/internal/${fx.disabledCaId}`, { status: 'disabled' });
    fx.otherProjectCaId = (await api('POST', '/api/v1/cert-manager/ca/internal', { projectId: OTHER_PROJECT, type: 'root', commonName: 'Hostile Other Root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' })).ca.id;

    // CSRs: from openssl, and forged in process (strange subjects, extensions, attributes).
    const cliCsrs = opensslCsrs();
    const goodCsr = cliCsrs.find((csr) => csr.label === 'openssl: good P-256')!;
    const issued = await api('POST', '/api/v3/pki/certificates/sign-certificate', { profileId: fx.profileId, csr: goodCsr.pem, ttl: '30d' });
    fx.certificateId = issued.certificateId;
    fx.csrs = [...cliCsrs, ...(await forgedCsrs(Math.round(160 * Math.max(1, SCALE)), SEED))];

    // An outside root (key in this process) and what it signs for the pending CA's key.
    const ecKeys = () => webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']) as Promise<webcrypto.CryptoKeyPair>;
    const [rootKeys, strangerKeys] = await Promise.all([ecKeys(), ecKeys()]);
    const rootName = 'CN=Hostile Outside Root,O=Outside';
    fx.outsideRootPem = await forgedCertificate({ subject: rootName, publicKey: rootKeys.publicKey, signingKey: rootKeys.privateKey });
    fx.outsideRootPublicKey = Buffer.from(new x509.X509Certificate(fx.outsideRootPem).publicKey.rawData);
    fx.pendingCaPublicKey = Buffer.from(pendingCsr.publicKey.rawData);
    const pendingSubject = pendingCsr.subject;
    fx.pendingCaCertificatePem = await forgedCertificate({ subject: pendingSubject, issuer: rootName, publicKey: pendingCsr.publicKey, signingKey: rootKeys.privateKey });
    fx.expiredPendingCaCertificatePem = await forgedCertificate({
      subject: pendingSubject,
      issuer: rootName,
      publicKey: pendingCsr.publicKey,
      signingKey: rootKeys.privateKey,
      notBefore: new Date(Date.now() - 2 * 365 * 24 * 3600_000),
      notAfter: new Date(Date.now() - 24 * 3600_000),
    });
    fx.notCaPendingCertificatePem = await forgedCertificate({
      subject: pendingSubject,
      issuer: rootName,
      publicKey: pendingCsr.publicKey,
      signingKey: rootKeys.privateKey,
      extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
    });
    const caCertificate = async (caId: string) => (await api('GET', `/api/v1/cert-manager/ca/internal/${caId}/certificate`)).certificate as string;
    fx.certificates = [
      { label: 'demo intermediate', pem: await caCertificate(fx.caId) },
      { label: 'demo root', pem: await caCertificate(fx.rootCaId) },
      { label: 'issued leaf', pem: issued.certificate as string },
      { label: 'stranger CA signed by the outside root', pem: await forgedCertificate({ subject: 'CN=Stranger', issuer: rootName, publicKey: strangerKeys.publicKey, signingKey: rootKeys.privateKey }) },
      {
        label: 'self-signed with junk extensions',
        pem: await forgedCertificate({
          subject: 'CN=Junk Extensions',
          publicKey: strangerKeys.publicKey,
          signingKey: strangerKeys.privateKey,
          extensions: [
            new x509.Extension('2.5.29.19', true, Buffer.from([0x30, 0x03, 0x01, 0x01, 0x07])),
            new x509.Extension('2.5.29.19', true, Buffer.from([0x30, 0x00])),
            new x509.Extension('1.2.3.4.5', true, Buffer.from([0xde, 0xad])),
          ],
        }),
      },
      { label: 'expired CA for another key', pem: await forgedCertificate({ subject: 'CN=Expired', publicKey: strangerKeys.publicKey, signingKey: strangerKeys.privateKey, notBefore: new Date(Date.now() - 2 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) }) },
      ...opensslCertificates(),
    ];
    // None of the fixture certificates may complete the pending CA's import.
    for (const certificate of fx.certificates) expect(Buffer.from(new x509.X509Certificate(certificate.pem).publicKey.rawData).equals(fx.pendingCaPublicKey)).toBe(false);

    before = snapshot(join(svc.dataDir, 'hsm-signer.db'));
    objectsBefore = objectsOf(svc);
  }, 180_000);

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it(`answers ${MIN_REQUESTS}+ generated bad requests on every route with a 4xx in the spec's envelope, and changes nothing`, async () => {
    const started = Date.now();
    const routes = hostileRoutes(fx);
    const requests: HostileRequest[] = [];
    routes.forEach((route, index) => {
      requests.push(...fc.sample(route.arbitrary, { numRuns: Math.max(1, Math.round(route.count * SCALE)), seed: SEED + index }));
    });
    requests.push(...fixedRequests(fx));
    // Mix routes, so that slow requests (scrypt, token calls) run next to fast ones.
    const order = fc.sample(fc.shuffledSubarray(requests.map((_, i) => i), { minLength: requests.length, maxLength: requests.length }), { numRuns: 1, seed: SEED })[0]!;
    const shuffled = order.map((i) => requests[i]!);
    const generatedAt = Date.now();

    const byRoute = new Map<string, Map<number, number>>();
    const byCategory = new Map<string, Map<number, number>>();
    /** Failures grouped by what went wrong, where and from which generator; a few examples each. */
    const failures = new Map<string, { count: number; examples: string[] }>();
    let failureCount = 0;
    let sent = 0;
    let notSent = 0;
    const bump = (map: Map<string, Map<number, number>>, key: string, status: number) => {
      const counts = map.get(key) ?? new Map<number, number>();
      counts.set(status, (counts.get(status) ?? 0) + 1);
      map.set(key, counts);
    };
    const describeRequest = (hostile: HostileRequest) => {
      const body = hostile.body === undefined ? '' : Buffer.isBuffer(hostile.body) ? ` body(hex)=${hostile.body.subarray(0, 200).toString('hex')}${hostile.body.length > 200 ? `…(${hostile.body.length} bytes)` : ''}` : ` body=${JSON.stringify(hostile.body.slice(0, 400))}${hostile.body.length > 400 ? `…(${hostile.body.length} chars)` : ''}`;
      const headers = Object.fromEntries(Object.entries(hostile.headers).map(([k, v]) => [k, k === 'authorization' && v.length > 60 ? `${v.slice(0, 60)}…` : v]));
      return `[${hostile.category}] ${hostile.method} ${hostile.path.length > 300 ? `${hostile.path.slice(0, 300)}…(${hostile.path.length} chars)` : hostile.path} headers=${JSON.stringify(headers)}${body}`;
    };

    await sendAll(new URL(svc.url), shuffled, (hostile, answer) => {
      if (answer.status === -1) {
        notSent++;
        return;
      }
      sent++;
      bump(byRoute, hostile.route, answer.status);
      bump(byCategory, hostile.category.replace(/:.*/, ''), answer.status);
      const problems: string[] = [];
      if (answer.error) problems.push(`transport error: ${answer.error}`);
      else {
        if (answer.status < 400 || answer.status > 499) problems.push(`status ${answer.status}`);
        let body: any;
        try {
          body = JSON.parse(answer.text);
        } catch {
          problems.push(`not JSON: ${JSON.stringify(answer.text.slice(0, 200))}`);
        }
        if (body !== undefined) {
          const validate = envelopeValidator(answer.status, hostile.family);
          if (!validate(body)) problems.push(`not the ${hostile.family} ${answer.status} envelope: ${JSON.stringify(validate.errors)?.slice(0, 300)}`);
          if (!String(answer.headers['content-type'] ?? '').startsWith('application/json')) problems.push(`content-type ${answer.headers['content-type']}`);
          const header = answer.headers['x-request-id'];
          if (body?.reqId !== header) problems.push(`reqId ${JSON.stringify(body?.reqId)} != X-Request-Id ${JSON.stringify(header)}`);
          const sentId = hostile.headers['x-request-id'];
          if (sentId !== undefined && /^[A-Za-z0-9._:@/+=-]{1,128}$/.test(sentId) && header !== sentId) problems.push(`X-Request-Id ${JSON.stringify(header)} is not the caller's ${JSON.stringify(sentId)}`);
        }
      }
      if (problems.length > 0) {
        failureCount++;
        const kind = problems.map((problem) => problem.replace(/:.*/, '')).join(', ');
        const key = `${kind} | ${hostile.route} | ${hostile.category}`;
        const group = failures.get(key) ?? { count: 0, examples: [] };
        group.count++;
        // Anything answered 2xx may have changed something: show every one of those.
        if (group.examples.length < (answer.status >= 200 && answer.status < 300 ? 50 : 2)) {
          group.examples.push(`${describeRequest(hostile)}\n      -> ${problems.join('; ')}\n      answer: ${answer.status} ${answer.text.slice(0, 300)}`);
        }
        failures.set(key, group);
      }
    });
    const finished = Date.now();

    // The summary: per route and per generator family, how many got which status.
    const table = (title: string, map: Map<string, Map<number, number>>) => {
      const statuses = [...new Set([...map.values()].flatMap((counts) => [...counts.keys()]))].sort((a, b) => a - b);
      const width = Math.max(...[...map.keys()].map((key) => key.length), title.length);
      const lines = [`${title.padEnd(width)}  ${statuses.map((s) => String(s).padStart(5)).join(' ')}  total`];
      for (const [key, counts] of [...map.entries()].sort(([a], [b]) => a.localeCompare(b))) {
        const total = [...counts.values()].reduce((a, b) => a + b, 0);
        lines.push(`${key.padEnd(width)}  ${statuses.map((s) => String(counts.get(s) ?? '').padStart(5)).join(' ')}  ${total}`);
      }
      return lines.join('\n');
    };
    console.log(
      [
        `hostile input: seed ${SEED} (HOSTILE_SEED=${SEED} replays), ${requests.length} generated, ${sent} sent${notSent ? ` (${notSent} the client could not send)` : ''}, ${failureCount} failed`,
        `generation ${((generatedAt - started) / 1000).toFixed(1)} s, sending ${((finished - generatedAt) / 1000).toFixed(1)} s (${Math.round(sent / ((finished - generatedAt) / 1000))} req/s)`,
        table('route', byRoute),
        table('generator', byCategory),
      ].join('\n\n'),
    );

    const report = [...failures.entries()]
      .sort(([, a], [, b]) => b.count - a.count)
      .map(([key, group]) => `${group.count} × ${key}\n    ${group.examples.join('\n    ')}`)
      .join('\n');
    expect(sent).toBeGreaterThanOrEqual(MIN_REQUESTS * Math.min(1, SCALE));
    // Every route of the route table was aimed at (but those NOT_AIMED_AT names, with their
    // reasons), and paths/methods that are no route.
    expect([...new Set(routes.map((route) => route.route))].sort()).toEqual([...aimedRoutes(), NO_SUCH_ROUTE].sort());
    expect(aimedRoutes().length).toBe(43);
    expect([...byRoute.keys()].sort()).toEqual([...new Set(routes.map((route) => route.route))].sort());
    expect(failureCount, `${failureCount} of ${sent} answers broke the contract (seed ${SEED}), in ${failures.size} groups:\n${report}`).toBe(0);
  }, 600_000);

  it('the process is up, still works, and nothing changed', async () => {
    expect((await request(svc.url, 'GET', '/healthz')).status).toBe(200);
    expect((await request(svc.url, 'GET', '/readyz')).status).toBe(200);
    expect(snapshot(join(svc.dataDir, 'hsm-signer.db'))).toEqual(before);
    expect(objectsOf(svc)).toEqual(objectsBefore);
    // A real operation with the fixture key, and the fixture ciphertext still decrypts.
    const plaintext = randomBytes(64).toString('base64');
    const encrypted = await api('POST', `/api/v1/kms/keys/${fx.aesKeyId}/encrypt`, { plaintext });
    expect((await api('POST', `/api/v1/kms/keys/${fx.aesKeyId}/decrypt`, { ciphertext: encrypted.ciphertext })).plaintext).toBe(plaintext);
    expect((await api('POST', `/api/v1/kms/keys/${fx.aesKeyId}/decrypt`, { ciphertext: fx.aesCiphertext })).plaintext).toBe(Buffer.from('fixture').toString('base64'));
    expect(await login(svc.url, svc.admin)).toMatch(/^hss\./);
  }, 60_000);
});

/**
 * Requests every run sends whatever the seed: bodies just over the 2 MiB limit, the issue's
 * 10,000-level nesting, and very deep nesting under the limit.
 */
function fixedRequests(fx: Fixtures): HostileRequest[] {
  const limit = 2 * 1024 * 1024;
  const admin = { authorization: `Bearer ${fx.adminToken}` };
  const json = { 'content-type': 'application/json' };
  const out: HostileRequest[] = [];
  const over = (prefix: string, suffix: string) => prefix + 'A'.repeat(limit + 16 - prefix.length - suffix.length) + suffix;
  const targets: Array<[route: string, method: string, path: string, auth: boolean, family: 'kms' | 'pki', field: string]> = [
    ['POST /api/v1/kms/keys/:keyId/encrypt', 'POST', `/api/v1/kms/keys/${fx.aesKeyId}/encrypt`, true, 'kms', 'plaintext'],
    ['POST /api/v3/pki/certificates/sign-certificate', 'POST', '/api/v3/pki/certificates/sign-certificate', true, 'pki', 'csr'],
    ['POST /api/v1/auth/universal-auth/login', 'POST', '/api/v1/auth/universal-auth/login', false, 'kms', 'clientId'],
    ['PATCH /api/v1/cert-manager/certificate-profiles/:profileId', 'PATCH', `/api/v1/cert-manager/certificate-profiles/${fx.profileId}`, true, 'pki', 'description'],
    ['POST /api/v1/identities/', 'POST', '/api/v1/identities/', true, 'kms', 'name'],
  ];
  for (const [route, method, path, auth, family, field] of targets) {
    const headers = { ...json, ...(auth ? admin : {}) };
    out.push({ category: 'size: just over 2 MiB', route, method, path, headers, family, body: over(`{"${field}":"`, '"}') });
    out.push({ category: 'depth: 10,000 levels', route, method, path, headers, family, body: '['.repeat(10_000) + ']'.repeat(10_000) });
    out.push({ category: 'depth: 10,000 levels', route, method, path, headers, family, body: `{"${field}":${'['.repeat(10_000)}${']'.repeat(10_000)}}` });
    out.push({ category: 'depth: 10,000 levels', route, method, path, headers, family, body: `{"${field}":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}` });
    out.push({ category: 'depth: 500,000 levels', route, method, path, headers, family, body: '['.repeat(500_000) + ']'.repeat(500_000) });
    out.push({ category: 'depth: 200,000 levels', route, method, path, headers, family, body: `{"${field}":${'{"a":'.repeat(200_000)}1${'}'.repeat(200_000)}}` });
  }
  // Refused by Node's HTTP parser before any route: headers over its 16 KiB limit.
  for (const [route, path] of [
    ['GET /api/v1/kms/keys/:keyId', `/api/v1/kms/keys/${fx.aesKeyId}`],
    ['POST /api/v1/auth/universal-auth/login', '/api/v1/auth/universal-auth/login'],
  ] as const) {
    out.push({ category: 'transport: headers over 16 KiB', route, method: 'GET', path, headers: { authorization: `Bearer ${'A'.repeat(20_000)}` }, family: 'kms' });
    out.push({ category: 'transport: headers over 16 KiB', route, method: 'GET', path, headers: { ...admin, 'x-padding': 'p'.repeat(20_000) }, family: 'kms' });
  }
  return out;
}
