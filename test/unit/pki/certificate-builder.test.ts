import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCertificate, SIGNATURE_ALGORITHMS, signatureAlgorithm, toPem, type CertificateSigner } from '../../../src/pki/certificate-builder.js';
import { newSerialNumber } from '../../../src/pki/serial.js';

const dir = mkdtempSync(join(tmpdir(), 'builder-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A software signer standing in for the token: the builder must not care which it gets. */
function softwareSigner(privateKey: KeyObject): CertificateSigner {
  const isRsa = privateKey.asymmetricKeyType === 'rsa';
  return {
    algorithm: signatureAlgorithm(isRsa ? SIGNATURE_ALGORITHMS.sha256WithRSAEncryption : SIGNATURE_ALGORITHMS.ecdsaWithSHA256),
    sign: async (tbs) => sign('sha256', tbs, isRsa ? privateKey : { key: privateKey, dsaEncoding: 'der' }),
  };
}

const spki = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });
const name = (dn: string) => Buffer.from(new x509.Name(dn).toArrayBuffer());
const KU = { digitalSignature: 1, keyEncipherment: 4, keyCertSign: 32, cRLSign: 64 };

describe('buildCertificate', () => {
  it('makes a root, an intermediate and a leaf that openssl verify -x509_strict accepts', async () => {
    const root = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const inter = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leaf = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const now = new Date(Date.now() - 60_000);
    const year = new Date(now.getTime() + 365 * 86_400_000);

    const rootDer = await buildCertificate(
      { serialNumber: newSerialNumber(), issuer: name('CN=Test Root,O=hsm-signer'), subject: name('CN=Test Root,O=hsm-signer'), notBefore: now, notAfter: year,
        subjectPublicKey: spki(root.publicKey), issuerPublicKey: spki(root.publicKey), ca: { pathLength: 1 }, keyUsages: KU.keyCertSign | KU.cRLSign },
      softwareSigner(root.privateKey),
    );
    const interDer = await buildCertificate(
      { serialNumber: newSerialNumber(), issuer: name('CN=Test Root,O=hsm-signer'), subject: name('CN=Test Intermediate,O=hsm-signer'), notBefore: now, notAfter: year,
        subjectPublicKey: spki(inter.publicKey), issuerPublicKey: spki(root.publicKey), ca: { pathLength: 0 }, keyUsages: KU.keyCertSign | KU.cRLSign,
        crlDistributionPoint: 'http://127.0.0.1:8080/crl/root.crl', caIssuersUrl: 'http://127.0.0.1:8080/ca/root.der' },
      softwareSigner(root.privateKey),
    );
    const serial = newSerialNumber();
    const leafDer = await buildCertificate(
      { serialNumber: serial, issuer: name('CN=Test Intermediate,O=hsm-signer'), subject: name('CN=api.svc.internal'), notBefore: now, notAfter: new Date(now.getTime() + 86_400_000),
        subjectPublicKey: spki(leaf.publicKey), issuerPublicKey: spki(inter.publicKey), keyUsages: KU.digitalSignature, extendedKeyUsages: ['1.3.6.1.5.5.7.3.1'],
        subjectAltNames: [{ type: 'dns', value: 'api.svc.internal' }, { type: 'ip', value: '10.1.2.3' }, { type: 'email', value: 'ops@example.com' }, { type: 'url', value: 'spiffe://example/api' }],
        crlDistributionPoint: 'http://127.0.0.1:8080/crl/inter.crl', caIssuersUrl: 'http://127.0.0.1:8080/ca/inter.der' },
      softwareSigner(inter.privateKey),
    );
    const files = { root: join(dir, 'root.pem'), inter: join(dir, 'inter.pem'), leaf: join(dir, 'leaf.pem') };
    writeFileSync(files.root, toPem(rootDer));
    writeFileSync(files.inter, toPem(interDer));
    writeFileSync(files.leaf, toPem(leafDer));
    const verified = execFileSync('openssl', ['verify', '-x509_strict', '-CAfile', files.root, '-untrusted', files.inter, files.leaf], { encoding: 'utf8' });
    expect(verified.trim()).toBe(`${files.leaf}: OK`);

    const text = execFileSync('openssl', ['x509', '-in', files.leaf, '-noout', '-serial', '-text'], { encoding: 'utf8' });
    expect(text).toContain(`serial=${serial.toString('hex').toUpperCase()}`);
    expect(text).toMatch(/DNS:api\.svc\.internal, IP Address:10\.1\.2\.3, email:ops@example\.com, URI:spiffe:\/\/example\/api/);
    expect(text).toContain('TLS Web Server Authentication');
    expect(text).toContain('CA Issuers - URI:http://127.0.0.1:8080/ca/inter.der');
    expect(text).toContain('URI:http://127.0.0.1:8080/crl/inter.crl');
    expect(new x509.X509Certificate(leafDer).publicKey.rawData).toEqual(new Uint8Array(spki(leaf.publicKey)).buffer);
  });

  it('produces a certificate openssl refuses when the signature is not the issuer\'s', async () => {
    const root = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const impostor = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = new Date(Date.now() - 60_000);
    const later = new Date(now.getTime() + 86_400_000);
    const rootDer = await buildCertificate(
      { serialNumber: newSerialNumber(), issuer: name('CN=R'), subject: name('CN=R'), notBefore: now, notAfter: later, subjectPublicKey: spki(root.publicKey), issuerPublicKey: spki(root.publicKey), ca: {}, keyUsages: KU.keyCertSign | KU.cRLSign },
      softwareSigner(root.privateKey),
    );
    const forged = await buildCertificate(
      { serialNumber: newSerialNumber(), issuer: name('CN=R'), subject: name('CN=leaf'), notBefore: now, notAfter: later, subjectPublicKey: spki(impostor.publicKey), issuerPublicKey: spki(root.publicKey), keyUsages: KU.digitalSignature },
      softwareSigner(impostor.privateKey),
    );
    writeFileSync(join(dir, 'r.pem'), toPem(rootDer));
    writeFileSync(join(dir, 'forged.pem'), toPem(forged));
    expect(() => execFileSync('openssl', ['verify', '-x509_strict', '-CAfile', join(dir, 'r.pem'), join(dir, 'forged.pem')], { stdio: 'pipe' })).toThrow();
  });
});
