/**
 * X.509 v3 certificates, built field by field with @peculiar/asn1-x509 and signed by a
 * caller-supplied signer (the token, through the CA's key), so no private key is ever handed
 * to a library. The extensions follow RFC 5280 and what `openssl verify -x509_strict` checks:
 * SKI (SHA-1 of the subject key, method 1), AKI (the issuer's SKI), BasicConstraints and
 * KeyUsage critical, SAN critical only when the subject is empty.
 */
import 'reflect-metadata';
import { createHash } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import * as csrAsn from '@peculiar/asn1-csr';
import * as asn from '@peculiar/asn1-x509';

export type GeneralNameJson = { type: 'dns' | 'ip' | 'email' | 'url'; value: string };

export interface CertificateSigner {
  /** The signature AlgorithmIdentifier this signer produces. */
  readonly algorithm: asn.AlgorithmIdentifier;
  /** Signs the DER TBSCertificate (or TBSCertList); returns the signature as X.509 carries it. */
  sign(tbs: Buffer): Promise<Buffer>;
}

export interface CertificateTemplate {
  serialNumber: Buffer;
  /** DER Name of the issuer (the subject of the issuing CA certificate, byte for byte). */
  issuer: Buffer;
  /** DER Name of the subject. */
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  subjectPublicKey: Buffer;
  /** The issuer's SubjectPublicKeyInfo, for the AKI; the subject's own for a self-signed root. */
  issuerPublicKey: Buffer;
  /** The issuer certificate's own SKI when it has one (an outside parent may choose any). */
  issuerKeyId?: Buffer | undefined;
  /** Present for a CA certificate. */
  ca?: { pathLength?: number };
  /** KeyUsage bits (asn1-x509 KeyUsageFlags). */
  keyUsages: number;
  extendedKeyUsages?: string[];
  subjectAltNames?: GeneralNameJson[];
  crlDistributionPoint?: string;
  caIssuersUrl?: string;
}

export const SIGNATURE_ALGORITHMS = {
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  sha384WithRSAEncryption: '1.2.840.113549.1.1.12',
  sha512WithRSAEncryption: '1.2.840.113549.1.1.13',
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  ecdsaWithSHA384: '1.2.840.10045.4.3.3',
  ecdsaWithSHA512: '1.2.840.10045.4.3.4',
} as const;

/** RSA signature algorithms carry an explicit NULL parameter; ECDSA ones carry none (RFC 5758). */
export function signatureAlgorithm(oid: string): asn.AlgorithmIdentifier {
  const isRsa = oid.startsWith('1.2.840.113549.1.1.');
  return new asn.AlgorithmIdentifier({ algorithm: oid, ...(isRsa ? { parameters: null } : {}) });
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value. */
export function keyIdentifier(spki: Buffer): Buffer {
  const parsed = AsnConvert.parse(spki, asn.SubjectPublicKeyInfo);
  return createHash('sha1').update(Buffer.from(parsed.subjectPublicKey)).digest();
}

export function extension(extnID: string, critical: boolean, value: unknown): asn.Extension {
  return new asn.Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

export function toGeneralName(name: GeneralNameJson): asn.GeneralName {
  switch (name.type) {
    case 'dns':
      return new asn.GeneralName({ dNSName: name.value });
    case 'ip':
      return new asn.GeneralName({ iPAddress: name.value });
    case 'email':
      return new asn.GeneralName({ rfc822Name: name.value });
    case 'url':
      return new asn.GeneralName({ uniformResourceIdentifier: name.value });
  }
}

const ID_AD_CA_ISSUERS = '1.3.6.1.5.5.7.48.2';
/** PKCS#9 extensionRequest. */
const ID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';

function extensionsOf(template: CertificateTemplate): asn.Extension[] {
  const subject = AsnConvert.parse(template.subject, asn.Name);
  const extensions = [
    extension(asn.id_ce_basicConstraints, true, new asn.BasicConstraints(template.ca ? { cA: true, ...(template.ca.pathLength !== undefined ? { pathLenConstraint: template.ca.pathLength } : {}) } : { cA: false })),
    extension(asn.id_ce_keyUsage, true, new asn.KeyUsage(template.keyUsages)),
  ];
  if (template.extendedKeyUsages?.length) extensions.push(extension(asn.id_ce_extKeyUsage, false, new asn.ExtendedKeyUsage(template.extendedKeyUsages)));
  if (template.subjectAltNames?.length) {
    extensions.push(extension(asn.id_ce_subjectAltName, subject.length === 0, new asn.SubjectAlternativeName(template.subjectAltNames.map(toGeneralName))));
  }
  extensions.push(extension(asn.id_ce_subjectKeyIdentifier, false, new asn.SubjectKeyIdentifier(keyIdentifier(template.subjectPublicKey))));
  extensions.push(extension(asn.id_ce_authorityKeyIdentifier, false, new asn.AuthorityKeyIdentifier({ keyIdentifier: new asn.KeyIdentifier(template.issuerKeyId ?? keyIdentifier(template.issuerPublicKey)) })));
  if (template.crlDistributionPoint) {
    const point = new asn.DistributionPoint({
      distributionPoint: new asn.DistributionPointName({ fullName: [new asn.GeneralName({ uniformResourceIdentifier: template.crlDistributionPoint })] }),
    });
    extensions.push(extension(asn.id_ce_cRLDistributionPoints, false, new asn.CRLDistributionPoints([point])));
  }
  if (template.caIssuersUrl) {
    const access = new asn.AccessDescription({ accessMethod: ID_AD_CA_ISSUERS, accessLocation: new asn.GeneralName({ uniformResourceIdentifier: template.caIssuersUrl }) });
    extensions.push(extension(asn.id_pe_authorityInfoAccess, false, new asn.AuthorityInfoAccessSyntax([access])));
  }
  return extensions;
}

/** Builds, signs and DER-encodes the certificate. */
export async function buildCertificate(template: CertificateTemplate, signer: CertificateSigner): Promise<Buffer> {
  const tbsCertificate = new asn.TBSCertificate({
    version: asn.Version.v3,
    serialNumber: new Uint8Array(template.serialNumber).buffer,
    signature: signer.algorithm,
    issuer: AsnConvert.parse(template.issuer, asn.Name),
    validity: new asn.Validity({ notBefore: template.notBefore, notAfter: template.notAfter }),
    subject: AsnConvert.parse(template.subject, asn.Name),
    subjectPublicKeyInfo: AsnConvert.parse(template.subjectPublicKey, asn.SubjectPublicKeyInfo),
    extensions: new asn.Extensions(extensionsOf(template)),
  });
  const tbs = Buffer.from(AsnConvert.serialize(tbsCertificate));
  const signature = await signer.sign(tbs);
  const certificate = new asn.Certificate({ tbsCertificate, signatureAlgorithm: signer.algorithm, signatureValue: new Uint8Array(signature).buffer });
  return Buffer.from(AsnConvert.serialize(certificate));
}

export function toPem(der: Buffer, label = 'CERTIFICATE'): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/**
 * A PKCS#10 request for a CA key held in the token (an intermediate to be signed by an
 * outside root): the subject, the key, and an extensionRequest for CA BasicConstraints and
 * keyCertSign/cRLSign, signed by the same key as proof of possession.
 */
export async function buildCaCsr(subject: Buffer, subjectPublicKey: Buffer, pathLength: number | undefined, signer: CertificateSigner): Promise<Buffer> {
  const requested = new asn.Extensions([
    extension(asn.id_ce_basicConstraints, true, new asn.BasicConstraints({ cA: true, ...(pathLength !== undefined ? { pathLenConstraint: pathLength } : {}) })),
    extension(asn.id_ce_keyUsage, true, new asn.KeyUsage(asn.KeyUsageFlags.keyCertSign | asn.KeyUsageFlags.cRLSign)),
    extension(asn.id_ce_subjectKeyIdentifier, false, new asn.SubjectKeyIdentifier(keyIdentifier(subjectPublicKey))),
  ]);
  const info = new csrAsn.CertificationRequestInfo({
    version: 0,
    subject: AsnConvert.parse(subject, asn.Name),
    subjectPKInfo: AsnConvert.parse(subjectPublicKey, asn.SubjectPublicKeyInfo),
    attributes: new csrAsn.Attributes([new asn.Attribute({ type: ID_EXTENSION_REQUEST, values: [AsnConvert.serialize(requested)] })]),
  });
  const signature = await signer.sign(Buffer.from(AsnConvert.serialize(info)));
  return Buffer.from(
    AsnConvert.serialize(new csrAsn.CertificationRequest({ certificationRequestInfo: info, signatureAlgorithm: signer.algorithm, signature: new Uint8Array(signature).buffer })),
  );
}
