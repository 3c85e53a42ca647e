/**
 * X.509 v3 certificates, assembled in DER from precomputed pieces and signed by a
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
import { children, DER_NULL, DER_TRUE, encodeOid, encodeTime, expectTag, only, sequence, TAG, tlv } from './der.js';

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
  /** The issuer's OCSP responder, named in AIA before caIssuers. */
  ocspUrl?: string;
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
const ID_AD_OCSP = '1.3.6.1.5.5.7.48.1';
/** PKCS#9 extensionRequest. */
const ID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';

// ---------------------------------------------------------------------------------------------
// DER pieces. Certificates are assembled from these rather than through asn1-schema's classes,
// which cost hundreds of µs per certificate; test/unit/pki/certificate-builder.test.ts checks
// the bytes against the asn1-x509 encoding of the same fields.
// ---------------------------------------------------------------------------------------------

const OID = {
  basicConstraints: encodeOid(asn.id_ce_basicConstraints),
  keyUsage: encodeOid(asn.id_ce_keyUsage),
  extKeyUsage: encodeOid(asn.id_ce_extKeyUsage),
  subjectAltName: encodeOid(asn.id_ce_subjectAltName),
  subjectKeyIdentifier: encodeOid(asn.id_ce_subjectKeyIdentifier),
  authorityKeyIdentifier: encodeOid(asn.id_ce_authorityKeyIdentifier),
  crlDistributionPoints: encodeOid(asn.id_ce_cRLDistributionPoints),
  authorityInfoAccess: encodeOid(asn.id_pe_authorityInfoAccess),
  caIssuers: encodeOid(ID_AD_CA_ISSUERS),
  ocsp: encodeOid(ID_AD_OCSP),
};

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
function extensionDer(id: Buffer, critical: boolean, value: Buffer): Buffer {
  return critical ? sequence(id, DER_TRUE, tlv(TAG.octetString, value)) : sequence(id, tlv(TAG.octetString, value));
}

const oidCache = new Map<string, Buffer>();
function oidDer(oid: string): Buffer {
  let der = oidCache.get(oid);
  if (!der) {
    der = encodeOid(oid);
    // OIDs here are the few EKUs and signature algorithms: the bound only guards against misuse.
    if (oidCache.size < 256) oidCache.set(oid, der);
  }
  return der;
}

/** AlgorithmIdentifier as asn1-x509 encodes it: NULL for `parameters: null`, none when absent. */
export function algorithmIdentifierDer(algorithm: asn.AlgorithmIdentifier): Buffer {
  const parameters = algorithm.parameters;
  if (parameters === null) return sequence(oidDer(algorithm.algorithm), DER_NULL);
  if (parameters === undefined) return sequence(oidDer(algorithm.algorithm));
  return sequence(oidDer(algorithm.algorithm), Buffer.from(parameters));
}

/** KeyUsage BIT STRING in DER: as few octets as the highest bit needs, trailing zero bits unused. */
export function keyUsageDer(bits: number): Buffer {
  const bitLength = Math.max(1, 32 - Math.clz32(bits));
  const octets = Buffer.alloc(Math.ceil(bitLength / 8));
  for (let bit = 0; bit < bitLength; bit++) if (bits & (1 << bit)) octets[bit >> 3]! |= 0x80 >> (bit & 7);
  return tlv(TAG.bitString, Buffer.from([octets.length * 8 - bitLength]), octets);
}

function generalNameDer(name: GeneralNameJson): Buffer {
  switch (name.type) {
    case 'dns':
      return tlv(0x82, Buffer.from(name.value, 'latin1'));
    case 'email':
      return tlv(0x81, Buffer.from(name.value, 'latin1'));
    case 'url':
      return tlv(0x86, Buffer.from(name.value, 'latin1'));
    case 'ip': {
      const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(name.value);
      if (v4 && v4.slice(1).every((part) => Number(part) <= 255)) return tlv(0x87, Buffer.from(v4.slice(1).map(Number)));
      // IPv6 and address/mask forms are rare: asn1-x509 encodes them as it always did.
      return Buffer.from(AsnConvert.serialize(toGeneralName(name)));
    }
  }
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value. */
export function keyIdentifier(spki: Buffer): Buffer {
  const [, bits] = children(only(spki, TAG.sequence).value);
  const value = expectTag(bits, TAG.bitString).value;
  return createHash('sha1').update(value.subarray(1)).digest();
}

/** The AKI extension certificates and CRLs of one issuer carry. */
export function authorityKeyIdentifierDer(keyId: Buffer): Buffer {
  return extensionDer(OID.authorityKeyIdentifier, false, sequence(tlv(0x80, keyId)));
}

/**
 * CRL distribution point and AIA extensions, in that order; AIA names the OCSP responder first,
 * then the CA issuers URL (the order RFC 5280's example and most CAs use).
 */
export function issuerLocationsDer(crlDistributionPoint: string | undefined, caIssuersUrl: string | undefined, ocspUrl?: string): Buffer {
  const parts: Buffer[] = [];
  if (crlDistributionPoint) {
    const fullName = tlv(0xa0, tlv(0x86, Buffer.from(crlDistributionPoint, 'latin1')));
    parts.push(extensionDer(OID.crlDistributionPoints, false, sequence(sequence(tlv(0xa0, fullName)))));
  }
  const access: Buffer[] = [];
  if (ocspUrl) access.push(sequence(OID.ocsp, tlv(0x86, Buffer.from(ocspUrl, 'latin1'))));
  if (caIssuersUrl) access.push(sequence(OID.caIssuers, tlv(0x86, Buffer.from(caIssuersUrl, 'latin1'))));
  if (access.length) parts.push(extensionDer(OID.authorityInfoAccess, false, sequence(...access)));
  return Buffer.concat(parts);
}

/**
 * What every certificate one CA issues shares, made once per CA: its Name, the signature
 * AlgorithmIdentifier, the AKI extension and the CDP/AIA extensions.
 */
export interface IssuerParts {
  issuer: Buffer;
  algorithm: Buffer;
  authorityKeyIdentifier: Buffer;
  locations: Buffer;
}

/** What varies per certificate. */
export interface SubjectParts {
  serialNumber: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  subjectPublicKey: Buffer;
  ca?: { pathLength?: number } | undefined;
  keyUsages: number;
  extendedKeyUsages?: string[] | undefined;
  subjectAltNames?: GeneralNameJson[] | undefined;
}

const BASIC_CONSTRAINTS_LEAF = extensionDer(OID.basicConstraints, true, sequence());
const VERSION_3 = tlv(0xa0, tlv(TAG.integer, Buffer.from([2])));

/** DER TBSCertificate; extensions in the order openssl and the tests have always seen. */
export function tbsCertificateDer(issuer: IssuerParts, subject: SubjectParts): Buffer {
  const basicConstraints = subject.ca
    ? extensionDer(OID.basicConstraints, true, sequence(DER_TRUE, ...(subject.ca.pathLength !== undefined ? [integerDer(subject.ca.pathLength)] : [])))
    : BASIC_CONSTRAINTS_LEAF;
  const extensions = [basicConstraints, extensionDer(OID.keyUsage, true, keyUsageDer(subject.keyUsages))];
  if (subject.extendedKeyUsages?.length) extensions.push(extensionDer(OID.extKeyUsage, false, sequence(...subject.extendedKeyUsages.map(oidDer))));
  if (subject.subjectAltNames?.length) {
    const emptySubject = only(subject.subject, TAG.sequence).value.length === 0;
    extensions.push(extensionDer(OID.subjectAltName, emptySubject, sequence(...subject.subjectAltNames.map(generalNameDer))));
  }
  extensions.push(extensionDer(OID.subjectKeyIdentifier, false, tlv(TAG.octetString, keyIdentifier(subject.subjectPublicKey))));
  extensions.push(issuer.authorityKeyIdentifier, issuer.locations);
  return sequence(
    VERSION_3,
    tlv(TAG.integer, subject.serialNumber),
    issuer.algorithm,
    issuer.issuer,
    sequence(encodeTime(subject.notBefore), encodeTime(subject.notAfter)),
    subject.subject,
    subject.subjectPublicKey,
    tlv(0xa3, sequence(...extensions)),
  );
}

/** Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }. */
export function certificateDer(tbs: Buffer, algorithm: Buffer, signature: Buffer): Buffer {
  return sequence(tbs, algorithm, tlv(TAG.bitString, Buffer.from([0]), signature));
}

/** A small non-negative INTEGER (path lengths). */
function integerDer(value: number): Buffer {
  const bytes: number[] = [];
  for (let rest = value; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  if (bytes.length === 0 || bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(TAG.integer, Buffer.from(bytes));
}

export function issuerPartsOf(template: Pick<CertificateTemplate, 'issuer' | 'issuerPublicKey' | 'issuerKeyId' | 'crlDistributionPoint' | 'caIssuersUrl' | 'ocspUrl'>, algorithm: Buffer): IssuerParts {
  return {
    issuer: template.issuer,
    algorithm,
    authorityKeyIdentifier: authorityKeyIdentifierDer(template.issuerKeyId ?? keyIdentifier(template.issuerPublicKey)),
    locations: issuerLocationsDer(template.crlDistributionPoint, template.caIssuersUrl, template.ocspUrl),
  };
}

/** Builds, signs and DER-encodes the certificate. */
export async function buildCertificate(template: CertificateTemplate, signer: CertificateSigner): Promise<Buffer> {
  const algorithm = algorithmIdentifierDer(signer.algorithm);
  const tbs = tbsCertificateDer(issuerPartsOf(template, algorithm), template);
  return certificateDer(tbs, algorithm, await signer.sign(tbs));
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
