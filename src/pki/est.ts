/**
 * The message formats of EST (RFC 7030, with RFC 8951's clarifications): certificates go out
 * as a degenerate CMS SignedData ("certs-only": no content, no signers, only certificates),
 * base64 encoded; certificate requests come in as base64 of the DER PKCS#10 (PEM is accepted
 * too, and so is bare DER, which some clients send despite the RFC).
 */
import 'reflect-metadata';
import * as cms from '@peculiar/asn1-cms';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as asn from '@peculiar/asn1-x509';
import { badRequest } from '../errors.js';
import { children, DerError, expectTag, only, TAG } from './der.js';

/** The media type of EST's certificate answers (RFC 7030 §4.1.3, §4.2.3). */
export const EST_CERTS_ONLY_TYPE = 'application/pkcs7-mime; smime-type=certs-only';

/**
 * ContentInfo { signedData, SignedData { version 1, no digest algorithms, id-data without
 * content, the certificates, no signerInfos } } in DER (RFC 5652 §5, RFC 7030 §4.1.3).
 */
export function certsOnly(certificates: Buffer[]): Buffer {
  const signedData = new cms.SignedData({
    version: cms.CMSVersion.v1,
    digestAlgorithms: new cms.DigestAlgorithmIdentifiers([]),
    encapContentInfo: new cms.EncapsulatedContentInfo({ eContentType: cms.id_data }),
    certificates: new cms.CertificateSet(certificates.map((der) => new cms.CertificateChoices({ certificate: AsnConvert.parse(der, asn.Certificate) }))),
    signerInfos: new cms.SignerInfos([]),
  });
  return Buffer.from(AsnConvert.serialize(new cms.ContentInfo({ contentType: cms.id_signedData, content: AsnConvert.serialize(signedData) })));
}

/** Base64 in lines of 64 characters, as `openssl base64 -d` reads without -A. */
export function base64Lines(der: Buffer): string {
  return `${(der.toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n`;
}

/** Printable ASCII and the whitespace base64 and PEM bodies carry. */
const TEXT = /^[\x20-\x7e\r\n\t]*$/;

/**
 * The CSR of a simpleenroll/simplereenroll body as text that parseCsr reads (PEM or base64).
 * Bare DER is recognised by a byte outside printable ASCII and re-encoded; anything else that
 * is not a CSR fails in parseCsr with its usual 400.
 */
export function estCsrText(body: Buffer): string {
  if (body.length === 0) throw badRequest('The request body is empty: send the PKCS#10 request, base64 encoded (application/pkcs10)');
  const latin1 = body.toString('latin1');
  return TEXT.test(latin1) ? latin1 : body.toString('base64');
}

/**
 * The serial (lowercase hex of its unsigned value, no leading zero octets: how the store keeps
 * serials) and the DER subject of a certificate, read with the strict DER reader; undefined
 * when the input is not a certificate.
 */
export function certificateIdentity(der: Buffer): { serialHex: string; subject: Buffer } | undefined {
  try {
    const [tbs] = children(only(der, TAG.sequence).value);
    const fields = children(expectTag(tbs, TAG.sequence).value);
    const offset = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] EXPLICIT version, absent for v1
    const serial = expectTag(fields[offset], TAG.integer).value;
    const subject = expectTag(fields[offset + 4], TAG.sequence);
    if (serial.length === 0 || (serial[0]! & 0x80) !== 0) return undefined;
    let start = 0;
    while (start < serial.length - 1 && serial[start] === 0) start++;
    return { serialHex: serial.subarray(start).toString('hex'), subject: Buffer.from(subject.raw) };
  } catch (error) {
    if (error instanceof DerError) return undefined;
    throw error;
  }
}
