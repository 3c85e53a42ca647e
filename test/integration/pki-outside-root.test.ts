/**
 * Issue 3, an intermediate for an outside root: the CA's key is made in the token, its CSR is
 * signed by a root the openssl CLI makes (`openssl x509 -req` with a CA extfile), the signed
 * certificate is imported with the root as its chain, and leaves issued under it verify with
 * `openssl verify -x509_strict -CAfile outsideRoot.pem -untrusted intermediate.pem`. Imports of
 * a certificate that does not fit (another key, not a CA, a chain that does not verify) are
 * refused.
 */
import { execFile } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Ajv, type ValidateFunction } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdentity, login, request, type ApiResponse } from '../helpers/http.js';
import { openssl, run, type Run } from '../helpers/cli.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { tokenObjects } from '../helpers/token-objects.js';

const SPEC = JSON.parse(readFileSync(new URL('../fixtures/spec-error-schemas.json', import.meta.url), 'utf8')) as { pki: Record<string, Record<string, unknown>> };
const ajv = new Ajv({ allErrors: true, strict: false });
const validators = new Map<number, ValidateFunction>();
function expectError(res: ApiResponse, status: number, message?: RegExp): void {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 500)}`).toBe(status);
  let validate = validators.get(status);
  if (!validate) validators.set(status, (validate = ajv.compile(SPEC.pki[String(status)]!)));
  expect(validate(res.body), `envelope: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(res.body)}`).toBe(true);
  if (message) expect(typeof res.body.message === 'string' ? res.body.message : JSON.stringify(res.body.message)).toMatch(message);
}

const execFileAsync = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), 'pki-outside-'));
const file = (name: string) => join(work, name);

const write = (name: string, content: string | Buffer) => {
  writeFileSync(file(name), content);
  return file(name);
};
const pemBlocks = (text: string): string[] => (text.match(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g) ?? []).map((pem) => `${pem.trim()}\n`);
const sameCertificate = (a: string, b: string) => new X509Certificate(a).raw.equals(new X509Certificate(b).raw);

/** The extfile the brief names for an outside root signing a CA. */
const CA_EXTFILE = ['basicConstraints=critical,CA:true', 'keyUsage=critical,keyCertSign,cRLSign', 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid:always'];

/** Makes a self-signed root with the openssl CLI. */
function makeOutsideRoot(name: string, keyFile: string, subject: string): string {
  write(
    `${name}.cnf`,
    ['[req]', 'distinguished_name = dn', '[dn]', '[v3_root]', 'basicConstraints = critical,CA:true', 'keyUsage = critical,keyCertSign,cRLSign', 'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid:always', ''].join('\n'),
  );
  openssl('req', '-x509', '-new', '-key', keyFile, '-subj', subject, '-days', '3650', '-sha384', '-config', file(`${name}.cnf`), '-extensions', 'v3_root', '-out', file(`${name}.pem`));
  return readFileSync(file(`${name}.pem`), 'utf8');
}

/** `openssl x509 -req`: the outside root signs a CSR with the given extensions. */
function outsideSign(name: string, csrPem: string, extensions: string[], root = 'outside-root', days = 730): string {
  write(`${name}.csr`, csrPem);
  write(`${name}.ext`, `${extensions.join('\n')}\n`);
  openssl(
    'x509', '-req', '-in', file(`${name}.csr`), '-CA', file(`${root}.pem`), '-CAkey', file(`${root}.key`),
    '-set_serial', `0x${randomBytes(16).toString('hex').replace(/^[89a-f]/, '1')}`, '-days', String(days), '-sha384', '-extfile', file(`${name}.ext`), '-out', file(`${name}.pem`),
  );
  return readFileSync(file(`${name}.pem`), 'utf8');
}

function opensslVerify(rootPath: string, untrusted: string[], leafPem: string, extra: string[] = []): Run {
  const tag = createHash('sha1').update(leafPem).digest('hex').slice(0, 10);
  const args = ['verify', '-x509_strict', ...extra, '-CAfile', rootPath];
  if (untrusted.length) args.push('-untrusted', write(`untrusted-${tag}.pem`, untrusted.join('')));
  return run('openssl', [...args, write(`leaf-${tag}.pem`, leafPem)]);
}

const PROJECT = 'pki-outside';
const POLICY = {
  subject: [{ type: 'CN', allowed: ['**.outside.test'] }],
  sans: { dns: ['**.outside.test'] },
  keyUsages: { allowed: ['keyEncipherment'], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: [], always: ['serverAuth'] },
  keyAlgorithms: ['RSA_2048', 'EC_prime256v1'],
  maxValidity: '5y',
};

describe('intermediate CA signed by an outside root', () => {
  let svc: TestService;
  let token: string;
  let rootPem = '';
  let caId = '';
  let csrPem = '';
  let interPem = '';
  let pendingProfile: string | undefined;
  let leafCount = 0;

  const api = (method: string, path: string, body?: unknown, as = token) => request(svc.url, method, `/api/v1/cert-manager${path}`, { token: as, body });
  const importCertificate = (id: string, certificate: string, certificateChain: string, as = token) => api('POST', `/ca/internal/${id}/import-certificate`, { certificate, certificateChain }, as);

  async function createOutsideCa(commonName: string, keyAlgorithm: string): Promise<{ id: string; csr: string }> {
    const created = await api('POST', '/ca/internal', { projectId: PROJECT, type: 'intermediate', commonName, organization: 'Inside Org', keyAlgorithm });
    if (created.status !== 200) throw new Error(`create: ${created.status} ${JSON.stringify(created.body)}`);
    const csr = await api('GET', `/ca/internal/${created.body.ca.id}/csr`);
    if (csr.status !== 200) throw new Error(`csr: ${csr.status} ${JSON.stringify(csr.body)}`);
    return { id: created.body.ca.id, csr: csr.body.csr };
  }

  async function issueUnder(profileId: string, ttl = '30d'): Promise<ApiResponse> {
    const name = `leaf${leafCount++}`;
    openssl('req', '-new', '-key', file('leaf.key'), '-subj', `/CN=${name}.outside.test`, '-addext', `subjectAltName=DNS:${name}.outside.test`, '-out', file(`${name}.csr`));
    return request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr: readFileSync(file(`${name}.csr`), 'utf8'), ttl } });
  }

  async function profileOn(id: string, slug: string): Promise<string> {
    const res = await api('POST', '/certificate-profiles', { projectId: PROJECT, caId: id, slug, policy: POLICY });
    if (res.status !== 200) throw new Error(`profile: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.certificateProfile.id;
  }

  beforeAll(async () => {
    const keys = Promise.all([
      execFileAsync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384', '-out', file('outside-root.key')]),
      execFileAsync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384', '-out', file('other-root.key')]),
      execFileAsync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', file('stranger.key')]),
      execFileAsync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file('leaf.key')]),
    ]);
    svc = await startTestService();
    await keys;
    token = await login(svc.url, svc.admin);
    rootPem = makeOutsideRoot('outside-root', file('outside-root.key'), '/O=Outside Org/CN=Outside Root CA');
    makeOutsideRoot('other-root', file('other-root.key'), '/O=Other Org/CN=Other Root CA');
  });

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('creates the intermediate without a parent: pending, with a CSR for a key in the token', async () => {
    const created = await api('POST', '/ca/internal', { projectId: PROJECT, type: 'intermediate', commonName: 'Inside Issuing CA', organization: 'Inside Org', keyAlgorithm: 'RSA_2048' });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const ca = created.body.ca;
    caId = ca.id;
    expect(ca).toMatchObject({ type: 'intermediate', status: 'pending-certificate', parentCaId: null, serialNumber: null, notAfter: null });

    const csr = await api('GET', `/ca/internal/${caId}/csr`);
    expect(csr.status).toBe(200);
    expect(Object.keys(csr.body)).toEqual(['csr']);
    csrPem = csr.body.csr;
    const path = write('inter.csr', csrPem);
    const verified = run('openssl', ['req', '-in', path, '-noout', '-verify']);
    expect(verified.status, verified.stderr).toBe(0);
    expect(verified.stdout + verified.stderr).toMatch(/verify OK|Certificate request self-signature verify OK/);
    expect(openssl('req', '-in', path, '-noout', '-subject', '-nameopt', 'RFC2253')).toMatch(/CN=Inside Issuing CA/);
    expect(openssl('req', '-in', path, '-noout', '-text')).toMatch(/CA:TRUE/);

    const objects = tokenObjects(svc).filter((object) => object.label === `hsm-signer:ca:${caId}`);
    const privateKey = objects.find((object) => object.class === 'private');
    expect(privateKey).toMatchObject({ sensitive: true, extractable: false, neverExtractable: true, alwaysSensitive: true });
    expect(privateKey!.valueReadable).not.toBe(true);
  });

  it('before the import: no certificate, no public DER or CRL, cannot be enabled or issue', async () => {
    expectError(await api('GET', `/ca/internal/${caId}/certificate`), 400);
    expectError(await request(svc.url, 'GET', `/pki/ca/${caId}/certificate.der`), 404);
    expectError(await request(svc.url, 'GET', `/pki/ca/${caId}/crl.der`), 404);
    expectError(await api('PATCH', `/ca/internal/${caId}`, { status: 'active' }), 400);
    const profile = await api('POST', '/certificate-profiles', { projectId: PROJECT, caId, slug: 'made-while-pending', policy: POLICY });
    if (profile.status === 200) {
      pendingProfile = profile.body.certificateProfile.id;
      expectError(await issueUnder(pendingProfile!), 400, /not active|pending|certificate/i);
    } else {
      expectError(profile, 400);
    }
  });

  describe('imports that do not fit are refused, and leave the CA pending', () => {
    it('a certificate for another key → 400', async () => {
      openssl('req', '-new', '-key', file('stranger.key'), '-subj', '/O=Inside Org/CN=Inside Issuing CA', '-out', file('stranger.csr'));
      const stranger = outsideSign('stranger-signed', readFileSync(file('stranger.csr'), 'utf8'), CA_EXTFILE);
      expectError(await importCertificate(caId, stranger, rootPem), 400, /key/i);
    });

    it('a certificate for the right key that is not a CA certificate → 400', async () => {
      const notCa = outsideSign('not-ca', csrPem, ['basicConstraints=critical,CA:false', 'keyUsage=critical,digitalSignature', 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid:always']);
      expectError(await importCertificate(caId, notCa, rootPem), 400, /CA/);
    });

    it('a chain that does not verify the certificate → 400', async () => {
      const good = outsideSign('good-for-chain-test', csrPem, CA_EXTFILE);
      expectError(await importCertificate(caId, good, readFileSync(file('other-root.pem'), 'utf8')), 400, /chain/i);
    });

    it('not a certificate → 400; a body without the chain → 422', async () => {
      expectError(await importCertificate(caId, 'not a certificate', rootPem), 400);
      expectError(await importCertificate(caId, `-----BEGIN CERTIFICATE-----\n${Buffer.from('junk').toString('base64')}\n-----END CERTIFICATE-----\n`, rootPem), 400);
      expectError(await api('POST', `/ca/internal/${caId}/import-certificate`, { certificate: rootPem }), 422, /certificateChain/);
    });

    it('an identity without manage-pki → 403', async () => {
      const reader = await createIdentity(svc.url, token, 'outside-reader', [{ projectId: PROJECT, actions: ['read', 'issue-certificate'] }]);
      const good = outsideSign('good-for-permission-test', csrPem, CA_EXTFILE);
      expectError(await importCertificate(caId, good, rootPem, await login(svc.url, reader)), 403);
    });

    it('the CA is still pending', async () => {
      const ca = await api('GET', `/ca/internal/${caId}`);
      expect(ca.body.ca.status).toBe('pending-certificate');
    });
  });

  it('imports the certificate the outside root signed', async () => {
    interPem = outsideSign('inter', csrPem, CA_EXTFILE);
    // The outside-signed certificate itself is sound.
    const strict = opensslVerify(file('outside-root.pem'), [], interPem);
    expect(strict.status, strict.stdout + strict.stderr).toBe(0);

    const imported = await importCertificate(caId, interPem, rootPem);
    expect(imported.status, JSON.stringify(imported.body)).toBe(200);
    const serial = openssl('x509', '-in', file('inter.pem'), '-noout', '-serial').trim().replace(/^serial=/, '').toLowerCase();
    expect(imported.body.ca).toMatchObject({ id: caId, status: 'active', serialNumber: serial });
    expect(Date.parse(imported.body.ca.notAfter)).toBe(Date.parse(new X509Certificate(interPem).validTo));

    expectError(await importCertificate(caId, interPem, rootPem), 400, /already/i);
  });

  it('serves the imported certificate with the outside root as its chain', async () => {
    const res = await api('GET', `/ca/internal/${caId}/certificate`);
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['certificate', 'certificateChain', 'serialNumber']);
    expect(sameCertificate(res.body.certificate, interPem)).toBe(true);
    const chain = pemBlocks(res.body.certificateChain);
    expect(chain).toHaveLength(1);
    expect(sameCertificate(chain[0]!, rootPem)).toBe(true);

    const der = await fetch(`${svc.url}/pki/ca/${caId}/certificate.der`);
    expect(der.status).toBe(200);
    expect(Buffer.from(await der.arrayBuffer()).equals(new X509Certificate(interPem).raw)).toBe(true);
    const crl = await fetch(`${svc.url}/pki/ca/${caId}/crl.der`);
    expect(crl.status).toBe(200);
    write('inter-crl.der', Buffer.from(await crl.arrayBuffer()));
    const crlVerified = run('openssl', ['crl', '-inform', 'DER', '-in', file('inter-crl.der'), '-noout', '-verify', '-CAfile', file('inter.pem')]);
    expect(crlVerified.status, crlVerified.stderr).toBe(0);
  });

  it('issues a leaf that openssl -x509_strict (and GnuTLS) accept with the outside root as the only anchor', async () => {
    const profileId = await profileOn(caId, 'outside-leaves');
    const res = await issueUnder(profileId);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const chain = pemBlocks(res.body.certificateChain);
    expect(chain).toHaveLength(2);
    expect(sameCertificate(chain[0]!, interPem)).toBe(true);
    expect(sameCertificate(chain[1]!, rootPem)).toBe(true);
    expect(sameCertificate(res.body.issuingCaCertificate, interPem)).toBe(true);

    const strict = opensslVerify(file('outside-root.pem'), [interPem], res.body.certificate);
    expect(strict.status, strict.stdout + strict.stderr).toBe(0);
    expect(strict.stdout).toMatch(/: OK/);
    // Not under another root.
    expect(opensslVerify(file('other-root.pem'), [interPem], res.body.certificate).status).not.toBe(0);
    const gnutls = run('certtool', ['--verify', '--load-ca-certificate', file('outside-root.pem'), '--infile', write('gnutls-outside.pem', `${res.body.certificate}${interPem}`)]);
    expect(gnutls.status, gnutls.stdout).toBe(0);
    expect(gnutls.stdout).toMatch(/Chain verification output: Verified\./);

    // The AIA URL serves the imported intermediate.
    const aia = /CA Issuers - URI:(\S+)/.exec(openssl('x509', '-in', write('outside-leaf.pem', res.body.certificate), '-noout', '-ext', 'authorityInfoAccess'))![1]!;
    const fetched = await fetch(aia);
    expect(Buffer.from(await fetched.arrayBuffer()).equals(new X509Certificate(interPem).raw)).toBe(true);

    // A profile made while the CA was pending works now.
    if (pendingProfile) expect((await issueUnder(pendingProfile)).status).toBe(200);
  });

  it("refuses a ttl past the imported certificate's expiry", async () => {
    const profileId = await profileOn(caId, 'outside-long');
    expectError(await issueUnder(profileId, '800d'), 400, /expir/i);
  });

  it('revocation under the imported CA shows in its CRL', async () => {
    const profileId = await profileOn(caId, 'outside-revoke');
    const issued = await issueUnder(profileId);
    expect(issued.status).toBe(200);
    expect((await api('POST', `/certificates/${issued.body.certificateId}/revoke`, { revocationReason: 'KEY_COMPROMISE' })).status).toBe(200);
    const crl = await fetch(`${svc.url}/pki/ca/${caId}/crl.der`);
    write('inter-crl2.der', Buffer.from(await crl.arrayBuffer()));
    openssl('crl', '-inform', 'DER', '-in', file('inter-crl2.der'), '-out', file('inter-crl2.pem'));
    expect(openssl('crl', '-in', file('inter-crl2.pem'), '-noout', '-text')).toContain(issued.body.serialNumber.toUpperCase());
    const checked = opensslVerify(file('outside-root.pem'), [interPem], issued.body.certificate, ['-crl_check', '-CRLfile', file('inter-crl2.pem')]);
    expect(checked.status).not.toBe(0);
    expect(checked.stdout + checked.stderr).toMatch(/certificate revoked/);
  });

  it('an intermediate made under the imported CA chains up to the outside root', async () => {
    const sub = await api('POST', '/ca/internal', { projectId: PROJECT, type: 'intermediate', commonName: 'Inside Sub CA', keyAlgorithm: 'EC_prime256v1', ttl: '1y', parentCaId: caId });
    expect(sub.status, JSON.stringify(sub.body)).toBe(200);
    const subCert = await api('GET', `/ca/internal/${sub.body.ca.id}/certificate`);
    const above = pemBlocks(subCert.body.certificateChain);
    expect(above).toHaveLength(2);
    expect(sameCertificate(above[0]!, interPem) && sameCertificate(above[1]!, rootPem)).toBe(true);

    const res = await issueUnder(await profileOn(sub.body.ca.id, 'sub-leaves'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const chain = pemBlocks(res.body.certificateChain);
    expect(chain).toHaveLength(3);
    expect(sameCertificate(chain[0]!, subCert.body.certificate)).toBe(true);
    expect(sameCertificate(chain[1]!, interPem)).toBe(true);
    expect(sameCertificate(chain[2]!, rootPem)).toBe(true);
    const strict = opensslVerify(file('outside-root.pem'), chain.slice(0, 2), res.body.certificate);
    expect(strict.status, strict.stdout + strict.stderr).toBe(0);
  });

  it("keeps the outside root's path length constraint (pathlen:0: no intermediate under it)", async () => {
    const { id, csr } = await createOutsideCa('Inside Pathlen Zero CA', 'EC_secp384r1');
    const signed = outsideSign('pathlen0', csr, ['basicConstraints=critical,CA:true,pathlen:0', 'keyUsage=critical,keyCertSign,cRLSign', 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid:always']);
    const imported = await importCertificate(id, signed, rootPem);
    expect(imported.status, JSON.stringify(imported.body)).toBe(200);
    expect(imported.body.ca.maxPathLength).toBe(0);
    expectError(await api('POST', '/ca/internal', { projectId: PROJECT, type: 'intermediate', commonName: 'Too Deep', keyAlgorithm: 'EC_prime256v1', ttl: '1y', parentCaId: id }), 400, /path/i);
    // Leaves are fine.
    const res = await issueUnder(await profileOn(id, 'pathlen0-leaves'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const strict = opensslVerify(file('outside-root.pem'), [signed], res.body.certificate);
    expect(strict.status, strict.stdout + strict.stderr).toBe(0);
  });

  it("leaves and CRLs name the imported certificate's own SKI when the outside root chose it (RFC 5280 §4.2.1.1)", async () => {
    // An outside CA may derive the SKI another way (e.g. RFC 7093, truncated SHA-256). The
    // leaf's AKI must then carry that value, or chain building fails (AKID/SKID mismatch).
    const { id, csr } = await createOutsideCa('Inside Own-SKI CA', 'EC_prime256v1');
    const spki = createPublicKey(openssl('req', '-in', write('own-ski.csr', csr), '-noout', '-pubkey')).export({ type: 'spki', format: 'der' });
    expect(spki.length).toBeGreaterThan(0);
    const ski = createHash('sha256').update(spki).digest().subarray(0, 20).toString('hex');
    const signed = outsideSign('own-ski', csr, ['basicConstraints=critical,CA:true', 'keyUsage=critical,keyCertSign,cRLSign', `subjectKeyIdentifier=${ski}`, 'authorityKeyIdentifier=keyid:always']);
    expect(openssl('x509', '-in', file('own-ski.pem'), '-noout', '-ext', 'subjectKeyIdentifier').replace(/[\s:]/g, '').toLowerCase()).toContain(ski);
    const imported = await importCertificate(id, signed, rootPem);
    expect(imported.status, JSON.stringify(imported.body)).toBe(200);

    const res = await issueUnder(await profileOn(id, 'own-ski-leaves'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const strict = opensslVerify(file('outside-root.pem'), [signed], res.body.certificate);
    expect(strict.status, strict.stdout + strict.stderr).toBe(0);
    const aki = openssl('x509', '-in', write('own-ski-leaf.pem', res.body.certificate), '-noout', '-ext', 'authorityKeyIdentifier').split('\n')[1]!.replace(/keyid:|[\s:]/g, '').toLowerCase();
    expect(aki).toBe(ski);

    const crl = await fetch(`${svc.url}/pki/ca/${id}/crl.der`);
    write('own-ski-crl.der', Buffer.from(await crl.arrayBuffer()));
    openssl('crl', '-inform', 'DER', '-in', file('own-ski-crl.der'), '-out', file('own-ski-crl.pem'));
    const withCrl = opensslVerify(file('outside-root.pem'), [signed], res.body.certificate, ['-crl_check', '-CRLfile', file('own-ski-crl.pem')]);
    expect(withCrl.status, withCrl.stdout + withCrl.stderr).toBe(0);
  });

  it('a CA made by the service (a root) has no CSR and takes no import', async () => {
    const root = await api('POST', '/ca/internal', { projectId: PROJECT, type: 'root', commonName: 'Inside Root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' });
    expect(root.status).toBe(200);
    expectError(await api('GET', `/ca/internal/${root.body.ca.id}/csr`), 400);
    expectError(await importCertificate(root.body.ca.id, interPem, rootPem), 400);
  });
});
