/**
 * Issue 3, refusals of sign-certificate: each a 400 (or 403/404/422) in the spec's envelope
 * (validated with ajv against test/fixtures/spec-error-schemas.json `pki`), whose message names
 * every rule the request breaks; and a refused request issues nothing.
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Ajv, type ValidateFunction } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdentity, login, request, type ApiResponse } from '../helpers/http.js';
import { openssl } from '../helpers/cli.js';
import { startTestService, type TestService } from '../helpers/service.js';

// ---------------------------------------------------------------------------------------------
// Envelope checks against the spec's own error schemas
// ---------------------------------------------------------------------------------------------

type Schema = Record<string, unknown>;
const SPEC = JSON.parse(readFileSync(new URL('../fixtures/spec-error-schemas.json', import.meta.url), 'utf8')) as { pki: Record<string, Schema> };
const ajv = new Ajv({ allErrors: true, strict: false });
const validators = new Map<number, ValidateFunction>();
const ERROR_WORD: Record<number, string> = { 400: 'BadRequest', 401: 'UnauthorizedError', 403: 'PermissionDenied', 404: 'NotFound', 422: 'ValidationFailure' };

function expectError(res: ApiResponse, status: number, message?: RegExp): any {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 600)}`).toBe(status);
  let validate = validators.get(status);
  if (!validate) {
    validate = ajv.compile(SPEC.pki[String(status)]!);
    validators.set(status, validate);
  }
  expect(validate(res.body), `envelope of ${status}: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(res.body)?.slice(0, 600)}`).toBe(true);
  expect(res.body.error).toBe(ERROR_WORD[status]);
  expect(res.body.reqId.length).toBeGreaterThan(0);
  expect(res.headers.get('x-request-id')).toBe(res.body.reqId);
  if (status === 422) {
    expect(Array.isArray(res.body.message), 'a 422 lists every problem').toBe(true);
    for (const problem of res.body.message) expect(Object.keys(problem).sort()).toEqual(['message', 'path']);
  }
  if (message) {
    const text = typeof res.body.message === 'string' ? res.body.message : JSON.stringify(res.body.message);
    expect(text).toMatch(message);
  }
  return res.body;
}

// ---------------------------------------------------------------------------------------------
// CSRs
// ---------------------------------------------------------------------------------------------

const execFileAsync = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), 'pki-refusals-'));
const file = (name: string) => join(work, name);


let csrCount = 0;
/** A CSR from the openssl CLI with an existing key; `extensions` are -addext values. */
function csr(key: 'rsa2048' | 'rsa1024' | 'p256' | 'p384', subject: string, extensions: string[] = []): string {
  const out = file(`req-${csrCount++}.csr`);
  openssl('req', '-new', '-key', file(`${key}.key`), '-subj', subject, ...extensions.flatMap((ext) => ['-addext', ext]), '-out', out);
  return readFileSync(out, 'utf8');
}

const derOfPem = (pem: string) => Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s/g, ''), 'base64');
const pemOf = (der: Buffer, label: string) => `-----BEGIN ${label}-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;

const PROJECT = 'pki-refusals';

const STRICT_POLICY = {
  subject: [
    { type: 'CN', required: true, allowed: ['*.refusals.test'] },
    { type: 'O', allowed: ['Acme'] },
  ],
  sans: { dns: ['*.refusals.test'], ip: ['10.0.0.0/8'], emailDomains: ['refusals.test'], uriPrefixes: ['spiffe://refusals.test/'] },
  keyUsages: { allowed: ['keyEncipherment'], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: ['clientAuth'], always: ['serverAuth'] },
  keyAlgorithms: ['RSA_2048', 'EC_prime256v1'],
  maxValidity: '10y',
  allowCa: false,
};

describe('sign-certificate refusals', () => {
  let svc: TestService;
  let token: string;
  /** A root CA that expires in 60 days. */
  let shortCa = '';
  /** Profile on the short CA with a 10y maximum (so only the CA's expiry limits the ttl). */
  let strict = '';
  /** Same policy, 30d maximum. */
  let shortMax = '';
  let good = '';
  let issuedCount = 0;

  const sign = (body: Record<string, unknown>, as = token) => request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token: as, body });

  beforeAll(async () => {
    const keys = Promise.all(
      [
        ['rsa2048', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
        ['rsa1024', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
        ['p256', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
        ['p384', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
      ].map(([name, ...args]) => execFileAsync('openssl', ['genpkey', ...args, '-out', file(`${name}.key`)])),
    );
    svc = await startTestService();
    await keys;
    token = await login(svc.url, svc.admin);
    const created = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', {
      token,
      body: { projectId: PROJECT, type: 'root', commonName: 'Refusals Short Root', keyAlgorithm: 'EC_prime256v1', ttl: '60d' },
    });
    if (created.status !== 200) throw new Error(`create CA: ${JSON.stringify(created.body)}`);
    shortCa = created.body.ca.id;
    const profile = async (slug: string, policy: object) => {
      const res = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId: shortCa, slug, policy } });
      if (res.status !== 200) throw new Error(`create profile: ${JSON.stringify(res.body)}`);
      return res.body.certificateProfile.id as string;
    };
    strict = await profile('strict', STRICT_POLICY);
    shortMax = await profile('short-max', { ...STRICT_POLICY, maxValidity: '30d' });
    good = csr('rsa2048', '/O=Acme/CN=ok.refusals.test', ['subjectAltName=DNS:ok.refusals.test,IP:10.0.0.1']);
  });

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('control: a CSR within the policy is signed', async () => {
    const res = await sign({ profileId: strict, csr: good, ttl: '30d' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    issuedCount++;
  });

  describe('unusable CSRs → 400', () => {
    it('a CSR whose signature was altered', async () => {
      const der = derOfPem(good);
      der[der.length - 1]! ^= 0xff;
      expectError(await sign({ profileId: strict, csr: pemOf(der, 'CERTIFICATE REQUEST'), ttl: '1d' }), 400, /signature/i);
    });

    it('a CSR whose content was altered after signing (signature no longer covers it)', async () => {
      const der = derOfPem(good);
      const at = der.indexOf(Buffer.from('ok.refusals.test'));
      expect(at).toBeGreaterThan(0);
      der[at] = 'x'.charCodeAt(0);
      expectError(await sign({ profileId: strict, csr: pemOf(der, 'CERTIFICATE REQUEST'), ttl: '1d' }), 400, /signature/i);
    });

    it('not a CSR: text, a certificate, garbage between CSR armour', async () => {
      expectError(await sign({ profileId: strict, csr: 'hello, I am not a CSR', ttl: '1d' }), 400, /csr|certificate signing request/i);
      const caCert = await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${shortCa}/certificate`, { token });
      expectError(await sign({ profileId: strict, csr: caCert.body.certificate, ttl: '1d' }), 400, /csr|certificate signing request/i);
      const garbage = `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.from('definitely not DER').toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
      expectError(await sign({ profileId: strict, csr: garbage, ttl: '1d' }), 400, /csr|certificate signing request/i);
    });

    it('an RSA-1024 key, whatever the profile allows', async () => {
      const body = expectError(await sign({ profileId: strict, csr: csr('rsa1024', '/CN=weak.refusals.test', ['subjectAltName=DNS:weak.refusals.test']), ttl: '1d' }), 400);
      expect(body.message).toMatch(/1024/);
      expect(body.message).toMatch(/2048/);
    });

    it('a key algorithm the profile does not list (P-384)', async () => {
      expectError(await sign({ profileId: strict, csr: csr('p384', '/CN=p384.refusals.test', ['subjectAltName=DNS:p384.refusals.test']), ttl: '1d' }), 400, /P-384|secp384r1/);
    });
  });

  describe('requests outside the policy → 400 naming the rule', () => {
    const refused = async (subject: string, extensions: string[], pattern: RegExp, ttl = '1d') =>
      expectError(await sign({ profileId: strict, csr: csr('p256', subject, extensions), ttl }), 400, pattern);

    it('a CN outside the policy', async () => {
      await refused('/CN=www.evil.example', ['subjectAltName=DNS:ok.refusals.test'], /www\.evil\.example/);
      // `*` is one label: a deeper name is outside too.
      await refused('/CN=a.b.refusals.test', ['subjectAltName=DNS:ok.refusals.test'], /a\.b\.refusals\.test/);
    });

    it('a missing required CN, and a subject attribute the profile has no rule for', async () => {
      await refused('/O=Acme', ['subjectAltName=DNS:ok.refusals.test'], /CN/);
      await refused('/OU=Ops/CN=ok.refusals.test', ['subjectAltName=DNS:ok.refusals.test'], /OU/);
    });

    it('a DNS SAN outside the policy', async () => {
      await refused('/CN=ok.refusals.test', ['subjectAltName=DNS:ok.refusals.test,DNS:api.evil.example'], /api\.evil\.example/);
    });

    it('an IP SAN outside the policy', async () => {
      await refused('/CN=ok.refusals.test', ['subjectAltName=DNS:ok.refusals.test,IP:192.168.7.7'], /192\.168\.7\.7/);
    });

    it('an email SAN outside the policy', async () => {
      await refused('/CN=ok.refusals.test', ['subjectAltName=email:someone@evil.example'], /someone@evil\.example/);
    });

    it('a URI SAN outside the policy', async () => {
      await refused('/CN=ok.refusals.test', ['subjectAltName=URI:spiffe://evil.example/workload'], /spiffe:\/\/evil\.example\/workload/);
    });

    it('an extended key usage the profile denies', async () => {
      await refused('/CN=ok.refusals.test', ['subjectAltName=DNS:ok.refusals.test', 'extendedKeyUsage=codeSigning'], /codeSigning|code signing/i);
    });

    it('a key usage the profile denies', async () => {
      await refused('/CN=ok.refusals.test', ['subjectAltName=DNS:ok.refusals.test', 'keyUsage=digitalSignature,dataEncipherment'], /dataEncipherment/);
    });

    it('a CA certificate, which the profile denies', async () => {
      await refused('/CN=ok.refusals.test', ['subjectAltName=DNS:ok.refusals.test', 'basicConstraints=critical,CA:TRUE'], /\bCA\b/);
      await refused('/CN=ok.refusals.test', ['subjectAltName=DNS:ok.refusals.test', 'basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'], /\bCA\b/);
    });

    it('an empty subject without any SAN (RFC 5280 §4.1.2.6: such a certificate is invalid and fails -x509_strict)', async () => {
      // A profile where neither CN nor a SAN is required, on a CA of its own project so that a
      // wrongly issued certificate does not disturb the count below.
      const lenientCa = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', {
        token,
        body: { projectId: `${PROJECT}-lenient`, type: 'root', commonName: 'Refusals Lenient Root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' },
      });
      expect(lenientCa.status).toBe(200);
      const lenient = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', {
        token,
        body: { projectId: `${PROJECT}-lenient`, caId: lenientCa.body.ca.id, slug: 'lenient', policy: { ...STRICT_POLICY, subject: [{ type: 'CN', allowed: ['*.refusals.test'] }] } },
      });
      expect(lenient.status).toBe(200);
      const res = await sign({ profileId: lenient.body.certificateProfile.id, csr: csr('p256', '/'), ttl: '1d' });
      let why = '';
      if (res.status === 200) {
        const chain = (res.body.certificateChain as string).match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!;
        writeFileSync(file('empty-leaf.pem'), res.body.certificate);
        writeFileSync(file('empty-root.pem'), `${chain[chain.length - 1]}\n`);
        const verify = spawnSync('openssl', ['verify', '-x509_strict', '-CAfile', file('empty-root.pem'), file('empty-leaf.pem')], { encoding: 'utf8' });
        why = `issued a certificate with an empty subject and no SAN; openssl verify -x509_strict says: ${verify.stdout}${verify.stderr}`;
      }
      expect(res.status, why).toBe(400);
      expectError(res, 400, /subject|alternative name|SAN/i);
    });

    it("a ttl over the profile's maximum", async () => {
      expectError(await sign({ profileId: shortMax, csr: good, ttl: '31d' }), 400, /maximum|max/i);
      // The maximum itself is fine.
      const atMax = await sign({ profileId: shortMax, csr: good, ttl: '30d' });
      expect(atMax.status, JSON.stringify(atMax.body)).toBe(200);
      issuedCount++;
    });

    it("a ttl that runs past the CA's expiry", async () => {
      const body = expectError(await sign({ profileId: strict, csr: good, ttl: '61d' }), 400, /expir/i);
      expect(body.message).not.toMatch(/maximum/i);
    });

    it('an unparsable ttl', async () => {
      for (const ttl of ['soon', '100', '-5d', '0d']) expectError(await sign({ profileId: strict, csr: good, ttl }), 400, /ttl/);
    });

    it('a refusal names every violated rule at once', async () => {
      const everything = csr('p384', '/OU=Ops/CN=www.evil.example', [
        'subjectAltName=DNS:api.evil.example,IP:192.168.7.7,email:someone@evil.example,URI:https://evil.example/x',
        'keyUsage=critical,digitalSignature,dataEncipherment',
        'extendedKeyUsage=codeSigning',
        'basicConstraints=critical,CA:TRUE',
      ]);
      const body = expectError(await sign({ profileId: shortMax, csr: everything, ttl: '90d' }), 400);
      const rules: Array<[string, RegExp]> = [
        ['key algorithm', /P-384|secp384r1/],
        ['OU attribute', /\bOU\b/],
        ['CN', /www\.evil\.example/],
        ['DNS SAN', /api\.evil\.example/],
        ['IP SAN', /192\.168\.7\.7/],
        ['email SAN', /someone@evil\.example/],
        ['URI SAN', /https:\/\/evil\.example\/x/],
        ['key usage', /dataEncipherment/],
        ['extended key usage', /codeSigning|code signing/i],
        ['CA request', /\bCA certificates?\b|\bCA\b.*not allowed|cannot be requested/i],
        ['profile maximum', /maximum/i],
        ['CA expiry', /expir/i],
      ];
      const missing = rules.filter(([, pattern]) => !pattern.test(body.message)).map(([name]) => name);
      expect(missing, body.message).toEqual([]);
    });
  });

  describe('profile and CA state', () => {
    it('an unknown profile → 404', async () => {
      expectError(await sign({ profileId: randomUUID(), csr: good, ttl: '1d' }), 404);
    });

    it('a disabled CA → 400, and enabled again it signs', async () => {
      const created = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', {
        token,
        body: { projectId: PROJECT, type: 'root', commonName: 'Refusals Toggle Root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' },
      });
      expect(created.status).toBe(200);
      const caId = created.body.ca.id as string;
      const profile = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId, slug: 'toggle', policy: STRICT_POLICY } });
      expect(profile.status).toBe(200);
      const profileId = profile.body.certificateProfile.id as string;

      const disabled = await request(svc.url, 'PATCH', `/api/v1/cert-manager/ca/internal/${caId}`, { token, body: { status: 'disabled' } });
      expect(disabled.status).toBe(200);
      expect(disabled.body.ca.status).toBe('disabled');
      expectError(await sign({ profileId, csr: good, ttl: '1d' }), 400, /disabled/i);

      expectError(await request(svc.url, 'PATCH', `/api/v1/cert-manager/ca/internal/${caId}`, { token, body: { status: 'paused' } }), 422);
      const enabled = await request(svc.url, 'PATCH', `/api/v1/cert-manager/ca/internal/${caId}`, { token, body: { status: 'active' } });
      expect(enabled.status).toBe(200);
      const signed = await sign({ profileId, csr: good, ttl: '1d' });
      expect(signed.status, JSON.stringify(signed.body)).toBe(200);
      issuedCount++;
    });
  });

  describe('schema failures → 422', () => {
    it('a profileId that is not a uuid', async () => {
      expectError(await sign({ profileId: 'not-a-uuid', csr: good, ttl: '1d' }), 422, /profileId/);
    });

    it('a csr over 4096 characters', async () => {
      const long = good.replace('-----END CERTIFICATE REQUEST-----', `${'A'.repeat(4096)}\n-----END CERTIFICATE REQUEST-----`);
      expect(long.length).toBeGreaterThan(4096);
      expectError(await sign({ profileId: strict, csr: long, ttl: '1d' }), 422, /csr/);
      // 4096 characters exactly passes the schema (and then fails as a CSR: a 400, not a 422).
      expectError(await sign({ profileId: strict, csr: 'x'.repeat(4096), ttl: '1d' }), 400);
    });

    it('a missing ttl, csr or profileId; an empty csr', async () => {
      expectError(await sign({ profileId: strict, csr: good }), 422, /ttl/);
      expectError(await sign({ profileId: strict, ttl: '1d' }), 422, /csr/);
      expectError(await sign({ csr: good, ttl: '1d' }), 422, /profileId/);
      expectError(await sign({ profileId: strict, csr: '', ttl: '1d' }), 422, /csr/);
      expectError(await sign({ profileId: strict, csr: good, ttl: 86400 }), 422, /ttl/);
    });

    it('ttl together with notBefore or notAfter', async () => {
      const body = expectError(await sign({ profileId: strict, csr: good, ttl: '1d', notBefore: new Date().toISOString() }), 422);
      expect(JSON.stringify(body.message)).toMatch(/ttl|notBefore/);
      expectError(await sign({ profileId: strict, csr: good, ttl: '1d', notAfter: new Date(Date.now() + 86400000).toISOString() }), 422);
      // A schema failure wins over an unknown profile.
      expectError(await sign({ profileId: randomUUID(), csr: good, ttl: '1d', notBefore: '2030-01-01T00:00:00Z' }), 422);
    });
  });

  describe('permissions', () => {
    it('an identity without issue-certificate → 403 naming the action', async () => {
      const reader = await createIdentity(svc.url, token, 'refusals-reader', [{ projectId: PROJECT, actions: ['read', 'manage-pki'] }]);
      const readerToken = await login(svc.url, reader);
      const body = expectError(await sign({ profileId: strict, csr: good, ttl: '1d' }, readerToken), 403);
      expect(JSON.stringify(body)).toMatch(/issue-certificate/);
      // It can still read the profile: the refusal is about the action, not the project.
      expect((await request(svc.url, 'GET', `/api/v1/cert-manager/certificate-profiles/${strict}`, { token: readerToken })).status).toBe(200);
      // An unknown profile is still a 404 for it (existence is checked first).
      expectError(await sign({ profileId: randomUUID(), csr: good, ttl: '1d' }, readerToken), 404);
    });

    it("project B's identity cannot use project A's profile (403), but can issue in its own project", async () => {
      const b = await createIdentity(svc.url, token, 'refusals-project-b', [{ projectId: 'project-b', actions: ['*'] }]);
      const bToken = await login(svc.url, b);
      const body = expectError(await sign({ profileId: strict, csr: good, ttl: '1d' }, bToken), 403);
      expect(JSON.stringify(body)).toMatch(/issue-certificate/);
      expectError(await request(svc.url, 'GET', `/api/v1/cert-manager/certificate-profiles/${strict}`, { token: bToken }), 403);

      const bCa = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', { token: bToken, body: { projectId: 'project-b', type: 'root', commonName: 'Project B Root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' } });
      expect(bCa.status, JSON.stringify(bCa.body)).toBe(200);
      // Nor can it hang its own profile on project A's CA.
      expectError(
        await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token: bToken, body: { projectId: 'project-b', caId: shortCa, slug: 'borrowed', policy: STRICT_POLICY } }),
        400,
      );
      const bProfile = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', {
        token: bToken,
        body: { projectId: 'project-b', caId: bCa.body.ca.id, slug: 'own', policy: STRICT_POLICY },
      });
      expect(bProfile.status, JSON.stringify(bProfile.body)).toBe(200);
      const own = await sign({ profileId: bProfile.body.certificateProfile.id, csr: good, ttl: '1d' }, bToken);
      expect(own.status, JSON.stringify(own.body)).toBe(200);
    });

    it('no token → 401', async () => {
      expectError(await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { body: { profileId: strict, csr: good, ttl: '1d' } }), 401);
    });
  });

  it('refused requests issued nothing', async () => {
    const list = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=${PROJECT}&limit=100`, { token });
    expect(list.status).toBe(200);
    expect(list.body.totalCount).toBe(issuedCount);
  });
});
