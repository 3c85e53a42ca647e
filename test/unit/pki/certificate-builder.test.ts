import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCertificate, toPem } from '../../../src/pki/certificate-builder.js';
import { buildCrl } from '../../../src/pki/crl.js';
import { softwareSigner } from '../../helpers/software-signer.js';
import { newSerialNumber } from '../../../src/pki/serial.js';

const dir = mkdtempSync(join(tmpdir(), 'builder-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

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

  it('makes CRLs that openssl crl -verify accepts and that revoke what they list', async () => {
    const root = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = new Date(Date.now() - 60_000);
    const later = new Date(now.getTime() + 86_400_000);
    const rootDer = await buildCertificate(
      { serialNumber: newSerialNumber(), issuer: name('CN=CRL Root'), subject: name('CN=CRL Root'), notBefore: now, notAfter: later, subjectPublicKey: spki(root.publicKey), issuerPublicKey: spki(root.publicKey), ca: {}, keyUsages: KU.keyCertSign | KU.cRLSign },
      softwareSigner(root.privateKey),
    );
    const leaves: string[] = [];
    const serials: string[] = [];
    for (const cn of ['revoked', 'kept']) {
      const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const serial = newSerialNumber();
      serials.push(serial.toString('hex'));
      const der = await buildCertificate(
        { serialNumber: serial, issuer: name('CN=CRL Root'), subject: name(`CN=${cn}`), notBefore: now, notAfter: later, subjectPublicKey: spki(key.publicKey), issuerPublicKey: spki(root.publicKey), keyUsages: KU.digitalSignature },
        softwareSigner(root.privateKey),
      );
      leaves.push(join(dir, `${cn}.pem`));
      writeFileSync(join(dir, `${cn}.pem`), toPem(der));
    }
    const crl = await buildCrl(
      { issuer: name('CN=CRL Root'), issuerPublicKey: spki(root.publicKey), crlNumber: 7, thisUpdate: now, nextUpdate: new Date(now.getTime() + 7 * 86_400_000), revoked: [{ serialNumber: serials[0]!, revokedAt: now, reason: 'KEY_COMPROMISE' }] },
      softwareSigner(root.privateKey),
    );
    writeFileSync(join(dir, 'crl-root.pem'), toPem(rootDer));
    writeFileSync(join(dir, 'root.crl'), toPem(crl, 'X509 CRL'));
    const text = execFileSync('openssl', ['crl', '-in', join(dir, 'root.crl'), '-CAfile', join(dir, 'crl-root.pem'), '-verify', '-noout', '-text'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(text).toContain(`Serial Number: ${serials[0]!.toUpperCase()}`);
    expect(text).toContain('Key Compromise');
    expect(text).toMatch(/X509v3 CRL Number:\s*\n\s*7/);
    const check = (leaf: string) => execFileSync('openssl', ['verify', '-crl_check', '-CAfile', join(dir, 'crl-root.pem'), '-CRLfile', join(dir, 'root.crl'), leaf], { stdio: 'pipe' });
    expect(() => check(leaves[0]!)).toThrow(/revoked/);
    expect(check(leaves[1]!).toString()).toContain('OK');
  });
});
