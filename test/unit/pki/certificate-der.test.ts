/**
 * The DER-assembled certificates against the asn1-x509 class encoding the builder used before:
 * for the same fields and the same signature, the bytes must be the same.
 */
import 'reflect-metadata';
import { createHash, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import * as asn from '@peculiar/asn1-x509';
import * as x509 from '@peculiar/x509';
import { describe, expect, it } from 'vitest';
import { buildCertificate, keyUsageDer, SIGNATURE_ALGORITHMS, signatureAlgorithm, type CertificateSigner, type CertificateTemplate } from '../../../src/pki/certificate-builder.js';
import { newSerialNumber } from '../../../src/pki/serial.js';

// ---- the asn1-x509 class builder, as it was, as the reference ------------------------------

const refExtension = (extnID: string, critical: boolean, value: unknown) => new asn.Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
const refKeyId = (spki: Buffer) => createHash('sha1').update(Buffer.from(AsnConvert.parse(spki, asn.SubjectPublicKeyInfo).subjectPublicKey)).digest();
function refGeneralName(name: { type: string; value: string }): asn.GeneralName {
  if (name.type === 'dns') return new asn.GeneralName({ dNSName: name.value });
  if (name.type === 'ip') return new asn.GeneralName({ iPAddress: name.value });
  if (name.type === 'email') return new asn.GeneralName({ rfc822Name: name.value });
  return new asn.GeneralName({ uniformResourceIdentifier: name.value });
}

async function referenceCertificate(template: CertificateTemplate, signer: CertificateSigner): Promise<Buffer> {
  const subject = AsnConvert.parse(template.subject, asn.Name);
  const extensions = [
    refExtension(asn.id_ce_basicConstraints, true, new asn.BasicConstraints(template.ca ? { cA: true, ...(template.ca.pathLength !== undefined ? { pathLenConstraint: template.ca.pathLength } : {}) } : { cA: false })),
    refExtension(asn.id_ce_keyUsage, true, new asn.KeyUsage(template.keyUsages)),
  ];
  if (template.extendedKeyUsages?.length) extensions.push(refExtension(asn.id_ce_extKeyUsage, false, new asn.ExtendedKeyUsage(template.extendedKeyUsages)));
  if (template.subjectAltNames?.length) extensions.push(refExtension(asn.id_ce_subjectAltName, subject.length === 0, new asn.SubjectAlternativeName(template.subjectAltNames.map(refGeneralName))));
  extensions.push(refExtension(asn.id_ce_subjectKeyIdentifier, false, new asn.SubjectKeyIdentifier(refKeyId(template.subjectPublicKey))));
  extensions.push(refExtension(asn.id_ce_authorityKeyIdentifier, false, new asn.AuthorityKeyIdentifier({ keyIdentifier: new asn.KeyIdentifier(template.issuerKeyId ?? refKeyId(template.issuerPublicKey)) })));
  if (template.crlDistributionPoint) {
    const point = new asn.DistributionPoint({ distributionPoint: new asn.DistributionPointName({ fullName: [new asn.GeneralName({ uniformResourceIdentifier: template.crlDistributionPoint })] }) });
    extensions.push(refExtension(asn.id_ce_cRLDistributionPoints, false, new asn.CRLDistributionPoints([point])));
  }
  const access: asn.AccessDescription[] = [];
  if (template.ocspUrl) access.push(new asn.AccessDescription({ accessMethod: '1.3.6.1.5.5.7.48.1', accessLocation: new asn.GeneralName({ uniformResourceIdentifier: template.ocspUrl }) }));
  if (template.caIssuersUrl) access.push(new asn.AccessDescription({ accessMethod: '1.3.6.1.5.5.7.48.2', accessLocation: new asn.GeneralName({ uniformResourceIdentifier: template.caIssuersUrl }) }));
  if (access.length) extensions.push(refExtension(asn.id_pe_authorityInfoAccess, false, new asn.AuthorityInfoAccessSyntax(access)));
  const tbsCertificate = new asn.TBSCertificate({
    version: asn.Version.v3,
    serialNumber: new Uint8Array(template.serialNumber).buffer,
    signature: signer.algorithm,
    issuer: AsnConvert.parse(template.issuer, asn.Name),
    validity: new asn.Validity({ notBefore: template.notBefore, notAfter: template.notAfter }),
    subject,
    subjectPublicKeyInfo: AsnConvert.parse(template.subjectPublicKey, asn.SubjectPublicKeyInfo),
    extensions: new asn.Extensions(extensions),
  });
  const signature = await signer.sign(Buffer.from(AsnConvert.serialize(tbsCertificate)));
  return Buffer.from(AsnConvert.serialize(new asn.Certificate({ tbsCertificate, signatureAlgorithm: signer.algorithm, signatureValue: new Uint8Array(signature).buffer })));
}

// ---------------------------------------------------------------------------------------------

/** A stand-in signature that depends on every byte signed, so a TBS difference shows twice. */
const digestSigner = (oid: string): CertificateSigner => ({ algorithm: signatureAlgorithm(oid), sign: async (tbs) => createHash('sha512').update(tbs).digest() });
const spki = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });
const name = (dn: string) => Buffer.from(new x509.Name(dn).toArrayBuffer());

const keys = {
  rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
  p256: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey,
  p384: generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey,
};

describe('certificates assembled in DER', () => {
  const base = (): CertificateTemplate => ({
    serialNumber: newSerialNumber(),
    issuer: name('CN=Issuing CA,O=hsm-signer,C=DE'),
    subject: name('CN=api.svc.internal,O=Example'),
    notBefore: new Date('2025-03-04T05:06:07Z'),
    notAfter: new Date('2026-03-04T05:06:07Z'),
    subjectPublicKey: spki(keys.p256),
    issuerPublicKey: spki(keys.rsa),
    keyUsages: 1,
  });

  const cases: Array<[string, Partial<CertificateTemplate>, string]> = [
    ['a plain leaf', {}, SIGNATURE_ALGORITHMS.sha256WithRSAEncryption],
    ['a leaf with every SAN type, EKUs and issuer locations', {
      subjectAltNames: [{ type: 'dns', value: 'api.svc.internal' }, { type: 'ip', value: '10.1.2.3' }, { type: 'ip', value: 'fd00::1:2' }, { type: 'email', value: 'ops@example.com' }, { type: 'url', value: 'spiffe://example/api' }],
      extendedKeyUsages: ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'],
      crlDistributionPoint: 'http://127.0.0.1:8080/pki/ca/1/crl.der',
      caIssuersUrl: 'http://127.0.0.1:8080/pki/ca/1/certificate.der',
      ocspUrl: 'http://127.0.0.1:8080/api/v1/cert-manager/ocsp/1',
    }, SIGNATURE_ALGORITHMS.ecdsaWithSHA256],
    ['a leaf naming only an OCSP responder in AIA', { ocspUrl: 'http://127.0.0.1:8080/api/v1/cert-manager/ocsp/1' }, SIGNATURE_ALGORITHMS.sha256WithRSAEncryption],
    ['an empty subject (critical SAN)', { subject: name(''), subjectAltNames: [{ type: 'dns', value: 'only.san' }] }, SIGNATURE_ALGORITHMS.ecdsaWithSHA384],
    ['a root CA without a path length', { ca: {}, keyUsages: 32 | 64, subjectPublicKey: spki(keys.rsa) }, SIGNATURE_ALGORITHMS.sha256WithRSAEncryption],
    ['a CA with path length 0', { ca: { pathLength: 0 }, keyUsages: 32 | 64 }, SIGNATURE_ALGORITHMS.ecdsaWithSHA256],
    ['a CA with path length 200', { ca: { pathLength: 200 }, keyUsages: 32 | 64, subjectPublicKey: spki(keys.p384) }, SIGNATURE_ALGORITHMS.ecdsaWithSHA256],
    ['an issuer key id given by an outside parent', { issuerKeyId: Buffer.from('0102030405', 'hex') }, SIGNATURE_ALGORITHMS.sha256WithRSAEncryption],
    ['dates after 2049 (GeneralizedTime) and milliseconds', { notBefore: new Date('2049-12-31T23:59:59.999Z'), notAfter: new Date('2051-01-01T00:00:00Z') }, SIGNATURE_ALGORITHMS.sha256WithRSAEncryption],
  ];
  for (const [label, overrides, oid] of cases) {
    it(`is byte for byte what asn1-x509 encoded: ${label}`, async () => {
      const template = { ...base(), ...overrides };
      const ours = await buildCertificate(template, digestSigner(oid));
      expect(ours.toString('hex')).toBe((await referenceCertificate(template, digestSigner(oid))).toString('hex'));
      expect(new X509Certificate(ours).serialNumber.toLowerCase()).toBe(template.serialNumber.toString('hex'));
    });
  }

  it('encodes every KeyUsage combination as asn1-x509 does', () => {
    for (let bits = 1; bits < 512; bits++) expect(keyUsageDer(bits).toString('hex')).toBe(Buffer.from(AsnConvert.serialize(new asn.KeyUsage(bits))).toString('hex'));
  });
});
