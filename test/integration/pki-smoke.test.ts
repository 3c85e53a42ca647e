/**
 * The PKI path end to end on the demo PKI of the first start: an openssl CSR is signed in the
 * token, the result passes openssl -x509_strict and GnuTLS, and a revocation shows in the CRL
 * that the certificate's own CRL distribution point serves.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, request } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';

const dir = mkdtempSync(join(tmpdir(), 'pki-smoke-'));
const file = (name: string) => join(dir, name);

function makeCsr(name: string, subject: string, san: string): string {
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${name}.key`), '-subj', subject, '-addext', `subjectAltName=${san}`, '-out', file(`${name}.csr`)], { stdio: 'ignore' });
  return readFileSync(file(`${name}.csr`), 'utf8');
}

describe('PKI on the demo profile', () => {
  let svc: TestService;
  let token: string;
  beforeAll(async () => {
    svc = await startTestService();
    token = await login(svc.url, svc.admin);
  });
  afterAll(async () => {
    await svc?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('issues, verifies with OpenSSL and GnuTLS, and revokes into the CRL', async () => {
    const profileId = (svc.admin as any).profileId as string;
    const issue = (name: string) =>
      request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr: makeCsr(name, `/CN=${name}.svc.internal`, `DNS:${name}.svc.internal`), ttl: '7d' } });
    const first = await issue('one');
    expect(first.status).toBe(200);
    expect(first.body.serialNumber).toMatch(/^[0-9a-f]{40}$/);
    const [issuing, root] = (first.body.certificateChain as string).split(/(?<=-----END CERTIFICATE-----)\n?/).filter((pem) => pem.includes('BEGIN'));
    expect(issuing!.trim()).toBe(first.body.issuingCaCertificate.trim());
    writeFileSync(file('one.pem'), first.body.certificate);
    writeFileSync(file('inter.pem'), issuing!);
    writeFileSync(file('root.pem'), root!);
    expect(execFileSync('openssl', ['verify', '-x509_strict', '-CAfile', file('root.pem'), '-untrusted', file('inter.pem'), file('one.pem')], { encoding: 'utf8' })).toContain('OK');
    writeFileSync(file('bundle.pem'), `${first.body.certificate}${issuing}\n${root}\n`);
    expect(execFileSync('certtool', ['--verify-chain', '--infile', file('bundle.pem')], { encoding: 'utf8' })).toMatch(/Chain verification output: Verified/);
    const serial = execFileSync('openssl', ['x509', '-in', file('one.pem'), '-noout', '-serial'], { encoding: 'utf8' }).trim();
    expect(serial).toBe(`serial=${first.body.serialNumber.toUpperCase()}`);

    const second = await issue('two');
    writeFileSync(file('two.pem'), second.body.certificate);
    const revoked = await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${first.body.certificateId}/revoke`, { token, body: { revocationReason: 'KEY_COMPROMISE' } });
    expect(revoked.status).toBe(200);
    expect(revoked.body.serialNumber).toBe(first.body.serialNumber);

    const crlUrl = /URI:(http\S+crl\.der)/.exec(execFileSync('openssl', ['x509', '-in', file('one.pem'), '-noout', '-ext', 'crlDistributionPoints'], { encoding: 'utf8' }))![1]!;
    const crl = await fetch(crlUrl);
    expect(crl.status).toBe(200);
    writeFileSync(file('crl.der'), Buffer.from(await crl.arrayBuffer()));
    execFileSync('openssl', ['crl', '-inform', 'DER', '-in', file('crl.der'), '-out', file('crl.pem')]);
    expect(execFileSync('openssl', ['crl', '-in', file('crl.pem'), '-CAfile', file('inter.pem'), '-verify', '-noout'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })).toBe('');
    const check = (leaf: string) =>
      execFileSync('openssl', ['verify', '-crl_check', '-CAfile', file('root.pem'), '-untrusted', file('inter.pem'), '-CRLfile', file('crl.pem'), leaf], { stdio: 'pipe' }).toString();
    expect(() => check(file('one.pem'))).toThrow(/revoked/);
    expect(check(file('two.pem'))).toContain('OK');
  });

  it('refuses a CSR outside the policy with a 400 naming each rule, and a bad body with a 422', async () => {
    const profileId = (svc.admin as any).profileId as string;
    const csr = makeCsr('bad', '/CN=bad.svc.internal/OU=not-in-policy-x', 'email:x@example.com');
    const refused = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr, ttl: '500d' } });
    expect(refused.status).toBe(400);
    expect(refused.body.message).toMatch(/email addresses are not allowed/);
    expect(refused.body.message).toMatch(/longer than the profile's maximum validity/);
    const withNotBefore = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr, ttl: '1d', notBefore: '2030-01-01' } });
    expect(withNotBefore.status).toBe(422);
  });
});
