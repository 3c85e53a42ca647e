/**
 * Ed25519 end to end, checked by verifiers that owe nothing to the service: KMS keys made in
 * the token as CKK_EC_EDWARDS (sensitive, never extractable), pure EdDSA signatures verified by
 * `openssl pkeyutl -verify -rawin` and node:crypto, the verify endpoint, and the refusals
 * (`isDigest`, algorithm/key family mismatches). Then PKI: a profile admitting ED25519 signs an
 * openssl-made Ed25519 CSR, and `openssl verify -x509_strict` and GnuTLS `certtool` accept the
 * chain; usages an Ed25519 key cannot have, and profiles without ED25519, are refused.
 */
import { createPublicKey, randomBytes, verify as nodeVerify, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openssl, run } from '../helpers/cli.js';
import { login, request, type ApiResponse } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { tokenObjects } from '../helpers/token-objects.js';

/** CKK_EC_EDWARDS (PKCS#11 3.0). */
const CKK_EC_EDWARDS = 0x40;

const b64 = (bytes: Buffer) => bytes.toString('base64');
const work = mkdtempSync(join(tmpdir(), 'ed25519-'));
const file = (name: string) => join(work, name);
let fileCounter = 0;

function expectEnvelope(response: ApiResponse, status: number, messagePattern: RegExp) {
  expect(response.status, JSON.stringify(response.body)).toBe(status);
  expect(Object.keys(response.body).sort()).toEqual(['error', 'message', 'reqId', 'statusCode']);
  expect(response.body.statusCode).toBe(status);
  expect(response.body.message).toMatch(messagePattern);
}

/** `openssl pkeyutl -verify -rawin`: pure Ed25519 over the data itself. */
function opensslVerifies(publicKeyPem: string, data: Buffer, signature: Buffer): boolean {
  const n = fileCounter++;
  writeFileSync(file(`data-${n}.bin`), data);
  writeFileSync(file(`sig-${n}.bin`), signature);
  const result = run('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', publicKeyPem, '-rawin', '-in', file(`data-${n}.bin`), '-sigfile', file(`sig-${n}.bin`)]);
  const verified = /Signature Verified Successfully/.test(result.stdout);
  expect(verified, result.stdout + result.stderr).toBe(result.status === 0);
  return verified;
}

describe('Ed25519', () => {
  let svc: TestService;
  let token: string;
  let projectId: string;
  const keyIds: Record<'ed' | 'edOther' | 'p256', string> = { ed: '', edOther: '', p256: '' };
  let publicKey: KeyObject;
  let publicKeyPem: string;

  const createKey = (name: string, encryptionAlgorithm: string, keyUsage = 'sign-verify') =>
    request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: { projectId, name, keyUsage, encryptionAlgorithm } });
  const sign = (key: string, signingAlgorithm: string, data: Buffer, isDigest?: boolean) =>
    request(svc.url, 'POST', `/api/v1/kms/keys/${key}/sign`, { token, body: { signingAlgorithm, data: b64(data), ...(isDigest === undefined ? {} : { isDigest }) } });
  const verify = (key: string, signingAlgorithm: string, data: Buffer, signature: Buffer) =>
    request(svc.url, 'POST', `/api/v1/kms/keys/${key}/verify`, { token, body: { signingAlgorithm, data: b64(data), signature: b64(signature) } });

  beforeAll(async () => {
    svc = await startTestService();
    token = await login(svc.url, svc.admin);
    projectId = svc.admin.projectId;
    for (const [name, algorithm] of [
      ['ed', 'ED25519'],
      ['edOther', 'ED25519'],
      ['p256', 'ECC_NIST_P256'],
    ] as const) {
      const created = await createKey(`ed25519-test-${name.toLowerCase()}`, algorithm);
      if (created.status !== 200) throw new Error(`create ${name}: ${created.status} ${JSON.stringify(created.body)}`);
      keyIds[name] = created.body.key.id;
    }
    const served = await request(svc.url, 'GET', `/api/v1/kms/keys/${keyIds.ed}/public-key`, { token });
    if (served.status !== 200) throw new Error(`public key: ${served.status}`);
    const der = Buffer.from(served.body.publicKey, 'base64');
    writeFileSync(file('ed.der'), der);
    publicKeyPem = file('ed.pem');
    // openssl reads the served DER itself, so the PEM owes nothing to Node.
    openssl('pkey', '-pubin', '-inform', 'DER', '-in', file('ed.der'), '-out', publicKeyPem);
    publicKey = createPublicKey({ key: der, format: 'der', type: 'spki' });
  });

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  describe('KMS', () => {
    it('the key is in the token as CKK_EC_EDWARDS, private half sensitive and never extractable', async () => {
      const listed = await request(svc.url, 'GET', `/api/v1/kms/keys/${keyIds.ed}`, { token });
      expect(listed.status).toBe(200);
      expect(listed.body.key).toMatchObject({ encryptionAlgorithm: 'ED25519', keyUsage: 'sign-verify' });
      const objects = tokenObjects(svc).filter((object) => object.label.includes(keyIds.ed));
      expect(objects.map((object) => object.class).sort()).toEqual(['private', 'public']);
      for (const object of objects) expect(object.keyType).toBe(CKK_EC_EDWARDS);
      const privateHalf = objects.find((object) => object.class === 'private')!;
      expect(privateHalf).toMatchObject({ token: true, sensitive: true, extractable: false, private: true, neverExtractable: true, alwaysSensitive: true, valueReadable: false });
    });

    it('an Ed25519 key cannot be an encrypt-decrypt key', async () => {
      const response = await createKey('ed25519-encrypt', 'ED25519', 'encrypt-decrypt');
      expect(response.status).toBe(422);
      expect(response.body).toMatchObject({ statusCode: 422, error: 'ValidationFailure', message: [{ path: 'body/encryptionAlgorithm', message: 'ED25519 cannot be used for encrypt-decrypt keys' }] });
    });

    it('public key: DER SubjectPublicKeyInfo of an Ed25519 key, as openssl reads it', () => {
      expect(publicKey.asymmetricKeyType).toBe('ed25519');
      expect(openssl('pkey', '-pubin', '-in', publicKeyPem, '-noout', '-text')).toMatch(/ED25519 Public-Key/);
      expect(publicKey.export({ type: 'spki', format: 'der' }).length).toBe(44);
    });

    it('signing-algorithms lists ED25519 alone', async () => {
      const listed = await request(svc.url, 'GET', `/api/v1/kms/keys/${keyIds.ed}/signing-algorithms`, { token });
      expect(listed.status).toBe(200);
      expect(listed.body).toEqual({ signingAlgorithms: ['ED25519'] });
    });

    it.each([0, 1, 777, 1024 * 1024])('signs %i bytes with pure EdDSA: openssl pkeyutl -rawin and node:crypto verify', async (size) => {
      const data = randomBytes(size);
      const response = await sign(keyIds.ed, 'ED25519', data);
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      expect(response.body).toEqual({ keyId: keyIds.ed, signingAlgorithm: 'ED25519', signature: expect.any(String) });
      const signature = Buffer.from(response.body.signature, 'base64');
      expect(signature.length).toBe(64);
      // openssl pkeyutl cannot read an empty input ("Could not allocate 0 bytes"): node alone checks that one.
      if (size > 0) expect(opensslVerifies(publicKeyPem, data, signature)).toBe(true);
      expect(nodeVerify(null, data, publicKey, signature)).toBe(true);
      // The same verifiers refuse other data, so the checks above can fail.
      const other = Buffer.concat([data, Buffer.from('!')]);
      expect(opensslVerifies(publicKeyPem, other, signature)).toBe(false);
      expect(nodeVerify(null, other, publicKey, signature)).toBe(false);
    });

    it('Ed25519 is deterministic: the same data gives the same signature', async () => {
      const data = Buffer.from('the same message twice');
      const [first, second] = await Promise.all([sign(keyIds.ed, 'ED25519', data), sign(keyIds.ed, 'ED25519', data)]);
      expect(first.body.signature).toBe(second.body.signature);
    });

    it('verify: true for its own signature; false for flipped bit, other data, other key, wrong length', async () => {
      const data = randomBytes(100);
      const signature = Buffer.from((await sign(keyIds.ed, 'ED25519', data)).body.signature, 'base64');
      const otherKeys = Buffer.from((await sign(keyIds.edOther, 'ED25519', data)).body.signature, 'base64');
      const answer = async (bytes: Buffer, sig: Buffer) => {
        const response = await verify(keyIds.ed, 'ED25519', bytes, sig);
        expect(response.status, JSON.stringify(response.body)).toBe(200);
        expect(response.body).toEqual({ signatureValid: expect.any(Boolean), keyId: keyIds.ed, signingAlgorithm: 'ED25519' });
        return response.body.signatureValid as boolean;
      };
      expect(await answer(data, signature)).toBe(true);
      const flipped = Buffer.from(signature);
      flipped[10]! ^= 0x01;
      expect(await answer(data, flipped)).toBe(false);
      expect(await answer(Buffer.concat([data, Buffer.from([0])]), signature)).toBe(false);
      expect(await answer(data, otherKeys)).toBe(false);
      expect(await answer(data, signature.subarray(0, 63))).toBe(false);
      expect(await answer(data, Buffer.concat([signature, Buffer.from([0])]))).toBe(false);
    });

    it('isDigest true is a 400 naming why, for sign and verify', async () => {
      const digest = randomBytes(64);
      expectEnvelope(await sign(keyIds.ed, 'ED25519', digest, true), 400, /pure EdDSA.*isDigest/);
      const response = await request(svc.url, 'POST', `/api/v1/kms/keys/${keyIds.ed}/verify`, {
        token,
        body: { signingAlgorithm: 'ED25519', data: b64(digest), signature: b64(randomBytes(64)), isDigest: true },
      });
      expectEnvelope(response, 400, /pure EdDSA.*isDigest/);
    });

    it('algorithm and key family must match both ways', async () => {
      expectEnvelope(await sign(keyIds.ed, 'ECDSA_SHA_256', randomBytes(10)), 400, /not supported by ED25519 keys; use one of ED25519/);
      expectEnvelope(await sign(keyIds.p256, 'ED25519', randomBytes(10)), 400, /not supported by ECC_NIST_P256 keys/);
    });
  });

  describe('PKI', () => {
    let caId: string;
    let caPem: string;
    const profileIds: Record<'ed' | 'ecOnly', string> = { ed: '', ecOnly: '' };
    const policy = (keyAlgorithms: string[]) => ({
      subject: [{ type: 'CN', allowed: ['*.ed.test'] }],
      sans: { dns: ['*.ed.test'] },
      keyUsages: { allowed: ['keyEncipherment', 'keyAgreement', 'nonRepudiation'], always: ['digitalSignature'] },
      extendedKeyUsages: { allowed: ['clientAuth'], always: ['serverAuth'] },
      keyAlgorithms,
      maxValidity: '30d',
      allowCa: false,
    });
    const signCsr = (profileId: string, csr: string) => request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr, ttl: '7d' } });

    function makeCsr(name: string, extra: string[] = []): string {
      openssl('genpkey', '-algorithm', 'ed25519', '-out', file(`${name}.key`));
      openssl('req', '-new', '-key', file(`${name}.key`), '-subj', `/CN=${name}.ed.test`, '-addext', `subjectAltName=DNS:${name}.ed.test`, ...extra, '-out', file(`${name}.csr`));
      return readFileSync(file(`${name}.csr`), 'utf8');
    }

    beforeAll(async () => {
      const ca = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', {
        token,
        body: { projectId, type: 'root', commonName: 'Ed25519 test root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' },
      });
      if (ca.status !== 200) throw new Error(`create CA: ${ca.status} ${JSON.stringify(ca.body)}`);
      caId = ca.body.ca.id;
      caPem = (await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${caId}/certificate`, { token })).body.certificate;
      writeFileSync(file('root.pem'), caPem);
      for (const [slug, algorithms] of [
        ['ed', ['ED25519', 'EC_prime256v1']],
        ['ecOnly', ['EC_prime256v1']],
      ] as const) {
        const created = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId, caId, slug: `ed25519-${slug.toLowerCase()}`, policy: policy([...algorithms]) } });
        if (created.status !== 200) throw new Error(`create profile: ${created.status} ${JSON.stringify(created.body)}`);
        profileIds[slug] = created.body.certificateProfile.id;
      }
    });

    it('an openssl Ed25519 CSR is signed; openssl -x509_strict and certtool verify the certificate', async () => {
      const response = await signCsr(profileIds.ed, makeCsr('leaf'));
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      writeFileSync(file('leaf.pem'), response.body.certificate);
      const strict = run('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', file('root.pem'), file('leaf.pem')]);
      expect(strict.status, strict.stdout + strict.stderr).toBe(0);
      writeFileSync(file('bundle.pem'), `${response.body.certificate.trim()}\n${caPem.trim()}\n`);
      const gnutls = run('certtool', ['--verify', '--load-ca-certificate', file('root.pem'), '--infile', file('leaf.pem'), '--verify-hostname=leaf.ed.test']);
      expect(gnutls.status, gnutls.stdout + gnutls.stderr).toBe(0);
      expect(gnutls.stdout).toMatch(/Chain verification output: Verified\./);

      const text = openssl('x509', '-in', file('leaf.pem'), '-noout', '-text');
      expect(text).toMatch(/Public Key Algorithm: ED25519/);
      expect(openssl('x509', '-in', file('leaf.pem'), '-noout', '-ext', 'keyUsage')).toMatch(/Digital Signature\s*$/);
      // The certified key is the CSR's key.
      const certified = new X509Certificate(response.body.certificate).publicKey.export({ type: 'spki', format: 'der' });
      const requested = createPublicKey(readFileSync(file('leaf.key'))).export({ type: 'spki', format: 'der' });
      expect(certified.equals(requested)).toBe(true);

      // The negative control: the same checks refuse the leaf under another root.
      const otherRoot = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', { token, body: { projectId, type: 'root', commonName: 'Ed25519 test root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' } });
      const otherPem = (await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${otherRoot.body.ca.id}/certificate`, { token })).body.certificate;
      writeFileSync(file('other-root.pem'), otherPem);
      expect(run('openssl', ['verify', '-x509_strict', '-CAfile', file('other-root.pem'), file('leaf.pem')]).status).not.toBe(0);
    });

    it('usages an Ed25519 key cannot have are refused, naming the rule', async () => {
      for (const usage of ['keyEncipherment', 'keyAgreement']) {
        const response = await signCsr(profileIds.ed, makeCsr(`ku-${usage.toLowerCase()}`, ['-addext', `keyUsage=digitalSignature,${usage}`]));
        expectEnvelope(response, 400, new RegExp(`key usage ${usage} cannot be used with an Ed25519 key`));
      }
      // nonRepudiation is a signing usage: allowed.
      const signing = await signCsr(profileIds.ed, makeCsr('ku-nonrepudiation', ['-addext', 'keyUsage=digitalSignature,nonRepudiation']));
      expect(signing.status, JSON.stringify(signing.body)).toBe(200);
    });

    it('the demo tls-server profile of the first start admits Ed25519 keys', async () => {
      const { profileId } = svc.admin as unknown as { profileId: string };
      openssl('genpkey', '-algorithm', 'ed25519', '-out', file('demo.key'));
      openssl('req', '-new', '-key', file('demo.key'), '-subj', '/CN=demo.example.net', '-addext', 'subjectAltName=DNS:demo.example.net', '-out', file('demo.csr'));
      const response = await signCsr(profileId, readFileSync(file('demo.csr'), 'utf8'));
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      const chain: string[] = response.body.certificateChain.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g);
      writeFileSync(file('demo-root.pem'), `${chain.at(-1)}\n`);
      writeFileSync(file('demo-chain.pem'), `${chain.join('\n')}\n`);
      writeFileSync(file('demo-leaf.pem'), response.body.certificate);
      const strict = run('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', file('demo-root.pem'), '-untrusted', file('demo-chain.pem'), file('demo-leaf.pem')]);
      expect(strict.status, strict.stdout + strict.stderr).toBe(0);
    });

    it('a profile without ED25519 refuses an Ed25519 CSR and records nothing', async () => {
      const listCertificates = () => request(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=${projectId}`, { token });
      const before = await listCertificates();
      expect(before.status).toBe(200);
      const response = await signCsr(profileIds.ecOnly, makeCsr('refused'));
      expectEnvelope(response, 400, /key algorithm ED25519 is not allowed \(allowed: EC_prime256v1\)/);
      const after = await listCertificates();
      expect(after.body).toEqual(before.body);
    });
  });
});
