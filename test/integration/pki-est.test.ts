/**
 * EST (RFC 7030) with curl and openssl: the CA certificates as PKCS#7 (`openssl pkcs7
 * -print_certs`), simpleenroll with HTTP Basic and the profile's passphrase (the certificate
 * then passes `openssl verify -x509_strict`, is recorded, revocable, in OCSP, audited),
 * simplereenroll with the client certificate (from a trusted proxy's header, and over mutual TLS
 * on a second replica sharing the store), and the refusals: a wrong passphrase 401, a CSR the
 * policy refuses 400 naming the rule. The passphrase is stored hashed and never shown.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openssl, run } from '../helpers/cli.js';
import { startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { login, request } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';

const execFileAsync = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), 'pki-est-'));
const file = (name: string) => join(work, name);
const write = (name: string, content: string | Buffer) => (writeFileSync(file(name), content), file(name));
const pemBlocks = (text: string): string[] => (text.match(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g) ?? []).map((pem) => `${pem.trim()}\n`);

/** curl, run without blocking this process (which serves the requests): status, headers, body. */
async function curl(args: string[]): Promise<{ status: number; headers: string; body: Buffer }> {
  const headers = file(`headers-${Math.random().toString(36).slice(2)}`);
  const out = file(`body-${Math.random().toString(36).slice(2)}`);
  const { stdout } = await execFileAsync('curl', ['-sS', '-o', out, '-D', headers, '-w', '%{http_code}', '--max-time', '30', ...args]);
  return { status: Number(stdout.trim()), headers: readFileSync(headers, 'utf8'), body: readFileSync(out) };
}

/** A PKCS#7 certs-only answer (base64) through openssl: the PEM certificates it holds. */
function certificatesOf(base64Body: Buffer): string[] {
  const b64 = write(`p7-${Math.random().toString(36).slice(2)}.b64`, base64Body);
  const der = file(`p7-${Math.random().toString(36).slice(2)}.der`);
  openssl('base64', '-d', '-in', b64, '-out', der);
  return pemBlocks(openssl('pkcs7', '-inform', 'DER', '-in', der, '-print_certs'));
}

const PROJECT = 'pki-est';
const PASSPHRASE = 'correct horse battery staple';
const POLICY = {
  subject: [{ type: 'CN', allowed: ['*.est.test'] }],
  sans: { dns: ['*.est.test'] },
  keyUsages: { allowed: [], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: [], always: ['clientAuth'] },
  keyAlgorithms: ['EC_prime256v1', 'RSA_2048'],
  maxValidity: '30d',
};

describe('EST enrollment', () => {
  let svc: TestService;
  let token: string;
  let rootId = '';
  let interId = '';
  let profileId = '';
  let base = '';

  /** A key and a CSR (base64 DER, as EST sends it), made with openssl. */
  function csr(label: string, subject: string, san: string | undefined, key = file(`${label}.key`)): string {
    if (key === file(`${label}.key`)) openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key);
    openssl('req', '-new', '-key', key, '-subj', subject, ...(san ? ['-addext', `subjectAltName=${san}`] : []), '-outform', 'DER', '-out', file(`${label}.csr.der`));
    openssl('base64', '-in', file(`${label}.csr.der`), '-out', file(`${label}.csr.b64`));
    return file(`${label}.csr.b64`);
  }

  const enroll = (operation: string, body: string, extra: string[] = []) =>
    curl(['-X', 'POST', '-H', 'Content-Type: application/pkcs10', '--data-binary', `@${body}`, ...extra, `${base}/${operation}`]);

  beforeAll(async () => {
    svc = await startTestService({ server: { trustedProxies: ['127.0.0.1'], estClientCertificateHeader: 'X-SSL-Client-Cert' } });
    token = await login(svc.url, svc.admin);
    const root = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', { token, body: { projectId: PROJECT, type: 'root', commonName: 'EST Root', keyAlgorithm: 'RSA_2048', ttl: '2y' } });
    rootId = root.body.ca.id;
    const inter = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', {
      token,
      body: { projectId: PROJECT, type: 'intermediate', commonName: 'EST Issuing', keyAlgorithm: 'EC_prime256v1', ttl: '1y', parentCaId: rootId },
    });
    interId = inter.body.ca.id;
    write('root.pem', pemBlocks((await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${rootId}/certificate`, { token })).body.certificate)[0]!);
    write('inter.pem', pemBlocks((await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${interId}/certificate`, { token })).body.certificate)[0]!);
  });

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('a profile opts in through the profile API; the passphrase is hashed, never returned, and needed to enable EST', async () => {
    const refused = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId: interId, slug: 'est-nopass', policy: POLICY, est: { enabled: true } } });
    expect(refused.status).toBe(400);
    expect(refused.body.message).toMatch(/passphrase/);
    const tooShort = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId: interId, slug: 'est-short', policy: POLICY, est: { enabled: true, passphrase: 'short' } } });
    expect(tooShort.status).toBe(422);
    expect(JSON.stringify(tooShort.body)).not.toContain('short"');

    const created = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId: interId, slug: 'devices', policy: POLICY, est: { enabled: true, passphrase: PASSPHRASE } } });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    profileId = created.body.certificateProfile.id;
    base = `${svc.url}/.well-known/est/${profileId}`;
    expect(created.body.certificateProfile.est).toEqual({ enabled: true, passphraseSet: true });
    const read = await request(svc.url, 'GET', `/api/v1/cert-manager/certificate-profiles/${profileId}`, { token });
    const listed = await request(svc.url, 'GET', `/api/v1/cert-manager/certificate-profiles?projectId=${PROJECT}`, { token });
    for (const body of [created.body, read.body, listed.body]) {
      expect(JSON.stringify(body)).not.toContain(PASSPHRASE);
      expect(JSON.stringify(body)).not.toContain('scrypt');
    }
    // Stored as an scrypt hash, not as the passphrase.
    const db = readFileSync(join(svc.dataDir, 'hsm-signer.db'));
    expect(db.includes(Buffer.from(PASSPHRASE))).toBe(false);

    const other = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId: interId, slug: 'no-est', policy: POLICY } });
    expect(other.body.certificateProfile.est).toEqual({ enabled: false, passphraseSet: false });
    const cacerts = await curl([`${svc.url}/.well-known/est/${other.body.certificateProfile.id}/cacerts`]);
    expect(cacerts.status).toBe(404);
  });

  it('cacerts: no credentials; PKCS#7 certs-only, base64; openssl pkcs7 -print_certs shows the issuing CA and the root', async () => {
    const res = await curl([`${base}/cacerts`]);
    expect(res.status).toBe(200);
    expect(res.headers).toMatch(/content-type: application\/pkcs7-mime; smime-type=certs-only\r\n/i);
    const certs = certificatesOf(res.body);
    expect(certs).toEqual([readFileSync(file('inter.pem'), 'utf8'), readFileSync(file('root.pem'), 'utf8')]);
  });

  let enrolled: { path: string; key: string; serial: string };

  it('simpleenroll with HTTP Basic: the certificate verifies with openssl verify -x509_strict, is recorded, audited, in OCSP', async () => {
    const body = csr('device1', '/CN=device1.est.test', 'DNS:device1.est.test');
    const res = await enroll('simpleenroll', body, ['-u', `any-user:${PASSPHRASE}`]);
    expect(res.status, res.body.toString()).toBe(200);
    expect(res.headers).toMatch(/content-type: application\/pkcs7-mime; smime-type=certs-only\r\n/i);
    const [leaf] = certificatesOf(res.body);
    const path = write('device1.pem', leaf!);
    const verified = run('openssl', ['verify', '-x509_strict', '-CAfile', file('root.pem'), '-untrusted', file('inter.pem'), path]);
    expect(verified.stdout.trim(), verified.stderr).toBe(`${path}: OK`);
    const text = openssl('x509', '-in', path, '-noout', '-subject', '-ext', 'subjectAltName,extendedKeyUsage', '-serial') + openssl('x509', '-in', path, '-noout', '-ocsp_uri');
    expect(text).toMatch(/subject=CN = device1\.est\.test/);
    expect(text).toContain('DNS:device1.est.test');
    expect(text).toContain('TLS Web Client Authentication');
    expect(text).toContain(`${svc.url}/api/v1/cert-manager/ocsp/${interId}`);
    const serial = /serial=([0-9A-F]+)/.exec(text)![1]!.toLowerCase();
    enrolled = { path, key: file('device1.key'), serial };

    const listed = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=${PROJECT}`, { token });
    const record = (listed.body.certificates as Array<{ id: string; serialNumber: string; profileId: string }>).find((item) => item.serialNumber === serial);
    expect(record?.profileId).toBe(profileId);

    const { stdout } = await execFileAsync('openssl', ['ocsp', '-url', `${svc.url}/api/v1/cert-manager/ocsp/${interId}`, '-issuer', file('inter.pem'), '-cert', path, '-CAfile', file('root.pem')]);
    expect(stdout).toContain(`${path}: good`);

    const audit = await request(svc.url, 'GET', '/api/v1/audit-logs?limit=100', { token });
    const event = (audit.body.auditLogs as Array<{ action: string; resourceId: string | null; outcome: string }>).find((item) => item.action === 'pki.est.enroll' && item.resourceId === record!.id);
    expect(event?.outcome).toBe('success');
  });

  it('takes a PEM body too', async () => {
    csr('device2', '/CN=device2.est.test', 'DNS:device2.est.test');
    openssl('req', '-in', file('device2.csr.der'), '-inform', 'DER', '-out', file('device2.csr.pem'));
    const res = await enroll('simpleenroll', file('device2.csr.pem'), ['-u', `:${PASSPHRASE}`]);
    expect(res.status, res.body.toString()).toBe(200);
    expect(certificatesOf(res.body)).toHaveLength(1);
  });

  it('a wrong or missing passphrase is 401 with a Basic challenge; the passphrase is never echoed', async () => {
    const body = csr('intruder', '/CN=intruder.est.test', 'DNS:intruder.est.test');
    for (const extra of [['-u', 'device:wrong passphrase entirely'], []]) {
      const res = await enroll('simpleenroll', body, extra);
      expect(res.status).toBe(401);
      expect(res.headers).toMatch(/www-authenticate: Basic realm="EST"/i);
      const envelope = JSON.parse(res.body.toString());
      expect(envelope.error).toBe('UnauthorizedError');
      expect(res.body.toString()).not.toContain('wrong passphrase');
    }
    const audit = await request(svc.url, 'GET', '/api/v1/audit-logs?limit=20', { token });
    expect((audit.body.auditLogs as Array<{ action: string; outcome: string }>).some((item) => item.action === 'pki.est.enroll' && item.outcome === 'denied')).toBe(true);
  });

  it('a CSR the profile refuses is 400 naming the rule; a body that is no CSR is 400', async () => {
    const outside = csr('outside', '/CN=printer.elsewhere.test', 'DNS:printer.elsewhere.test');
    const res = await enroll('simpleenroll', outside, ['-u', `x:${PASSPHRASE}`]);
    expect(res.status).toBe(400);
    const message = JSON.parse(res.body.toString()).message as string;
    expect(message).toMatch(/subject CN "printer\.elsewhere\.test" does not match \*\.est\.test/);
    expect(message).toMatch(/DNS name printer\.elsewhere\.test does not match/);
    const garbage = write('garbage.b64', 'bm90IGEgY3Ny\n');
    const bad = await enroll('simpleenroll', garbage, ['-u', `x:${PASSPHRASE}`]);
    expect(bad.status).toBe(400);
    const empty = write('empty.b64', '');
    expect((await enroll('simpleenroll', empty, ['-u', `x:${PASSPHRASE}`])).status).toBe(400);
  });

  it('hostile requests are 4xx envelopes, never a 500: oversized body, bad profile id, unknown profile, broken Basic, binary garbage', async () => {
    const huge = write('huge.b64', 'A'.repeat(100 * 1024));
    const tooLarge = await enroll('simpleenroll', huge, ['-u', `x:${PASSPHRASE}`]);
    expect(tooLarge.status).toBe(413);
    expect(JSON.parse(tooLarge.body.toString()).error).toBe('PayloadTooLarge');
    const badId = await curl(['-X', 'POST', '--data-binary', 'x', `${svc.url}/.well-known/est/not-a-uuid/simpleenroll`]);
    expect(badId.status).toBe(422);
    const unknown = await curl(['-X', 'POST', '-u', `x:${PASSPHRASE}`, '--data-binary', 'x', `${svc.url}/.well-known/est/00000000-0000-4000-8000-000000000000/simpleenroll`]);
    expect(unknown.status).toBe(404);
    const broken = await curl(['-X', 'POST', '-H', 'Authorization: Basic %%%', '--data-binary', 'x', `${base}/simpleenroll`]);
    expect(broken.status).toBe(401);
    const binary = write('binary.bin', Buffer.from([0x30, 0x82, 0xff, 0xff, 0x00, 0x01, 0x02]));
    const garbage = await enroll('simpleenroll', binary, ['-u', `x:${PASSPHRASE}`]);
    expect(garbage.status).toBe(400);
    expect(JSON.parse(garbage.body.toString()).error).toBe('BadRequest');
  });

  it('simplereenroll with the client certificate from a trusted proxy: same subject and SANs, new key; another subject is 400', async () => {
    const header = `X-SSL-Client-Cert: ${encodeURIComponent(readFileSync(enrolled.path, 'utf8'))}`;
    const body = csr('device1-next', '/CN=device1.est.test', 'DNS:device1.est.test');
    const res = await enroll('simplereenroll', body, ['-H', header]);
    expect(res.status, res.body.toString()).toBe(200);
    const renewed = write('device1-next.pem', certificatesOf(res.body)[0]!);
    expect(openssl('x509', '-in', renewed, '-noout', '-subject').trim()).toBe('subject=CN = device1.est.test');
    expect(openssl('x509', '-in', renewed, '-noout', '-ext', 'subjectAltName')).toContain('DNS:device1.est.test');
    expect(openssl('x509', '-in', renewed, '-noout', '-pubkey')).not.toBe(openssl('x509', '-in', enrolled.path, '-noout', '-pubkey'));
    expect(run('openssl', ['verify', '-x509_strict', '-CAfile', file('root.pem'), '-untrusted', file('inter.pem'), renewed]).status).toBe(0);

    const otherName = csr('device1-renamed', '/CN=device9.est.test', 'DNS:device9.est.test');
    const renamed = await enroll('simplereenroll', otherName, ['-H', header]);
    expect(renamed.status).toBe(400);
    expect(JSON.parse(renamed.body.toString()).message).toMatch(/keeps the subject of the certificate it renews/);

    // Without the certificate (and without a passphrase) it is 401.
    expect((await enroll('simplereenroll', body)).status).toBe(401);
    // A certificate this CA did not issue is no credential.
    openssl('req', '-x509', '-new', '-key', enrolled.key, '-subj', '/CN=device1.est.test', '-days', '1', '-out', file('self.pem'));
    const forged = await enroll('simplereenroll', body, ['-H', `X-SSL-Client-Cert: ${encodeURIComponent(readFileSync(file('self.pem'), 'utf8'))}`]);
    expect(forged.status).toBe(401);
  });

  it('a revoked certificate cannot re-enroll', async () => {
    const body = csr('device3', '/CN=device3.est.test', 'DNS:device3.est.test');
    const issued = await enroll('simpleenroll', body, ['-u', `x:${PASSPHRASE}`]);
    const path = write('device3.pem', certificatesOf(issued.body)[0]!);
    const serial = openssl('x509', '-in', path, '-noout', '-serial').trim().split('=')[1]!.toLowerCase();
    const listed = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=${PROJECT}`, { token });
    const id = (listed.body.certificates as Array<{ id: string; serialNumber: string }>).find((item) => item.serialNumber === serial)!.id;
    expect((await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${id}/revoke`, { token, body: { revocationReason: 'KEY_COMPROMISE' } })).status).toBe(200);
    const res = await enroll('simplereenroll', csr('device3-next', '/CN=device3.est.test', 'DNS:device3.est.test'), ['-H', `X-SSL-Client-Cert: ${encodeURIComponent(readFileSync(path, 'utf8'))}`]);
    expect(res.status).toBe(401);
  });

  describe('a second replica on the same store, over HTTPS asking for client certificates', () => {
    let replica: ListeningChildService | undefined;

    beforeAll(async () => {
      // The listener's own certificate, from a throwaway CA.
      openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file('tls-ca.key'), '-subj', '/CN=TLS Test CA', '-days', '1', '-out', file('tls-ca.pem'));
      openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file('tls.key'), '-subj', '/CN=127.0.0.1', '-out', file('tls.csr'));
      write('tls.ext', 'subjectAltName=IP:127.0.0.1\n');
      openssl('x509', '-req', '-in', file('tls.csr'), '-CA', file('tls-ca.pem'), '-CAkey', file('tls-ca.key'), '-CAcreateserial', '-days', '1', '-extfile', file('tls.ext'), '-out', file('tls.pem'));
      replica = await startChildService(svc.dataDir, { TLS_CERT_FILE: file('tls.pem'), TLS_KEY_FILE: file('tls.key'), TLS_REQUEST_CLIENT_CERTIFICATE: 'true', EST_CLIENT_CERTIFICATE_HEADER: 'X-SSL-Client-Cert' }, 120_000);
    }, 150_000);

    afterAll(async () => {
      await replica?.kill();
    });

    it('simplereenroll over mutual TLS with the certificate enrolled on the other replica', async () => {
      const url = `${replica!.url}/.well-known/est/${profileId}/simplereenroll`;
      const body = csr('device1-mtls', '/CN=device1.est.test', 'DNS:device1.est.test');
      const res = await curl(['--cacert', file('tls-ca.pem'), '--cert', enrolled.path, '--key', enrolled.key, '-X', 'POST', '-H', 'Content-Type: application/pkcs10', '--data-binary', `@${body}`, url]);
      expect(res.status, res.body.toString()).toBe(200);
      const renewed = write('device1-mtls.pem', certificatesOf(res.body)[0]!);
      expect(openssl('x509', '-in', renewed, '-noout', '-subject').trim()).toBe('subject=CN = device1.est.test');
      // Without a client certificate: 401 (the listener asks for one, it does not require it).
      const anonymous = await curl(['--cacert', file('tls-ca.pem'), '-X', 'POST', '-H', 'Content-Type: application/pkcs10', '--data-binary', `@${body}`, url]);
      expect(anonymous.status).toBe(401);
      // The header is configured there, but not believed from a client that is no trusted proxy (none is).
      const claimed = await curl(['--cacert', file('tls-ca.pem'), '-H', `X-SSL-Client-Cert: ${encodeURIComponent(readFileSync(enrolled.path, 'utf8'))}`, '-X', 'POST', '--data-binary', `@${body}`, url]);
      expect(claimed.status).toBe(401);
    });

    it('OCSP on the replica shows a revocation made on the other at once', async () => {
      const body = csr('device4', '/CN=device4.est.test', 'DNS:device4.est.test');
      const issued = await enroll('simpleenroll', body, ['-u', `x:${PASSPHRASE}`]);
      const path = write('device4.pem', certificatesOf(issued.body)[0]!);
      const replicaOcsp = async () => {
        // openssl ocsp speaks HTTPS with -url https://…; the replica's TLS CA is trusted for the transport only.
        const { stdout } = await execFileAsync('openssl', ['ocsp', '-url', `${replica!.url}/api/v1/cert-manager/ocsp/${interId}`, '-issuer', file('inter.pem'), '-cert', path, '-CAfile', file('root.pem'), '-no_nonce'], {
          env: { ...process.env, SSL_CERT_FILE: file('tls-ca.pem') },
        });
        return stdout;
      };
      expect(await replicaOcsp()).toContain(`${path}: good`);
      const serial = openssl('x509', '-in', path, '-noout', '-serial').trim().split('=')[1]!.toLowerCase();
      const listed = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=${PROJECT}`, { token });
      const id = (listed.body.certificates as Array<{ id: string; serialNumber: string }>).find((item) => item.serialNumber === serial)!.id;
      await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${id}/revoke`, { token, body: { revocationReason: 'AFFILIATION_CHANGED' } });
      const after = await replicaOcsp();
      expect(after).toContain(`${path}: revoked`);
      expect(after).toMatch(/Reason: affiliationChanged/);
    });
  });
});
