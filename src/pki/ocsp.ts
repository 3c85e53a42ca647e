/**
 * OCSP (RFC 6960) messages: the request read strictly with the DER reader of ./der.ts, the
 * BasicOCSPResponse assembled in DER and signed through the same pluggable signer as
 * certificates and CRLs (so the CA key stays in the token and ECDSA signatures arrive DER
 * encoded, never as raw r||s).
 *
 * Invariants the responder relies on:
 * - Each CertID is echoed byte for byte as the client sent it: clients match answers to their
 *   questions by comparing CertIDs, so re-encoding one (a serial with a leading zero, SHA-1
 *   parameters absent instead of NULL) would make a correct answer unusable.
 * - The serial a CertID names is read as the unsigned integer it encodes, whatever the
 *   encoding (leading zero octets included); a negative one can name no certificate here.
 * - Anything the reader does not understand is a `malformedRequest` (OcspRequestError), never
 *   an exception of another kind: the route turns it into an OCSP error status.
 * - Times are GeneralizedTime in whole seconds with no fraction (RFC 6960 §4.2.2.1 via RFC
 *   5280's profile of GeneralizedTime).
 */
import { createHash } from 'node:crypto';
import type { CertificateSigner } from './certificate-builder.js';
import { algorithmIdentifierDer } from './certificate-builder.js';
import { children, decodeOid, DerError, encodeOid, expectTag, only, sequence, TAG, tlv, type Tlv } from './der.js';

/** OCSPResponseStatus (RFC 6960 §4.2.1). */
export const OCSP_RESPONSE_STATUS = {
  successful: 0,
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  sigRequired: 5,
  unauthorized: 6,
} as const;
export type OcspErrorStatus = Exclude<keyof typeof OCSP_RESPONSE_STATUS, 'successful'>;

export class OcspRequestError extends Error {
  constructor(
    readonly status: OcspErrorStatus,
    message: string,
  ) {
    super(message);
  }
}

const malformed = (message: string) => new OcspRequestError('malformedRequest', message);

export const ID_PKIX_OCSP_BASIC = '1.3.6.1.5.5.7.48.1.1';
export const ID_PKIX_OCSP_NONCE = '1.3.6.1.5.5.7.48.1.2';
/** id-ad-ocsp, the accessMethod of an AIA entry naming a responder. */
export const ID_AD_OCSP = '1.3.6.1.5.5.7.48.1';

/** The hash algorithms a CertID may use, by OID. SHA-1 is what most clients send. */
const CERT_ID_HASHES: Record<string, CertIdHash> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
export type CertIdHash = 'sha1' | 'sha256' | 'sha384' | 'sha512';
const HASH_LENGTH: Record<CertIdHash, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

/**
 * RFC 9654 (which replaced RFC 8954's 32-octet ceiling): a nonce of 1 to 128 octets; a request
 * with an empty or longer one is refused with malformedRequest.
 */
export const MAX_NONCE_OCTETS = 128;
/** More CertIDs than this in one request is refused: each may cost a store read and the answer grows with them. */
export const MAX_CERT_IDS = 32;

export interface OcspCertId {
  /** The CertID exactly as the request carried it. */
  raw: Buffer;
  hash: CertIdHash;
  issuerNameHash: Buffer;
  issuerKeyHash: Buffer;
  /**
   * The serial as lowercase hex of its unsigned value without leading zero octets (how the
   * store keeps serials); undefined for a negative serial, which no certificate has.
   */
  serialHex: string | undefined;
}

export interface OcspRequest {
  certIds: OcspCertId[];
  /** The nonce extension's extnValue as sent (the DER OCTET STRING), to echo; absent when none was sent. */
  nonce?: Buffer;
}

/** Extensions ::= SEQUENCE OF Extension; Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue }. */
function readExtensions(explicit: Tlv): Array<{ oid: string; critical: boolean; value: Buffer }> {
  const list = children(expectTag(only(explicit.value), TAG.sequence).value);
  return list.map((extension) => {
    const parts = children(expectTag(extension, TAG.sequence).value);
    const oid = decodeOid(expectTag(parts[0], TAG.oid).value);
    let index = 1;
    let critical = false;
    if (parts[index]?.tag === TAG.boolean) {
      const flag = parts[index]!.value;
      if (flag.length !== 1) throw new DerError('malformed BOOLEAN');
      critical = flag[0] !== 0;
      index++;
    }
    const value = expectTag(parts[index], TAG.octetString).value;
    if (parts.length !== index + 1) throw new DerError('data after extnValue');
    return { oid, critical, value };
  });
}

function readCertId(request: Tlv): OcspCertId {
  // Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
  const [certIdTlv, singleExtensions, ...rest] = children(expectTag(request, TAG.sequence).value);
  if (rest.length > 0 || (singleExtensions && singleExtensions.tag !== 0xa0)) throw new DerError('unexpected element in Request');
  if (singleExtensions) for (const extension of readExtensions(singleExtensions)) if (extension.critical) throw malformed(`unsupported critical request extension ${extension.oid}`);
  const certId = expectTag(certIdTlv, TAG.sequence);
  const [algorithm, nameHash, keyHash, serial, ...extra] = children(certId.value);
  if (extra.length > 0) throw new DerError('data after CertID serialNumber');
  const [algorithmOid, parameters, ...more] = children(expectTag(algorithm, TAG.sequence).value);
  if (more.length > 0 || (parameters && (parameters.tag !== TAG.null || parameters.value.length !== 0))) throw new DerError('unexpected hash algorithm parameters');
  const hash = CERT_ID_HASHES[decodeOid(expectTag(algorithmOid, TAG.oid).value)];
  if (!hash) throw malformed('CertID hash algorithm not supported (SHA-1, SHA-256, SHA-384 or SHA-512)');
  const issuerNameHash = expectTag(nameHash, TAG.octetString).value;
  const issuerKeyHash = expectTag(keyHash, TAG.octetString).value;
  if (issuerNameHash.length !== HASH_LENGTH[hash] || issuerKeyHash.length !== HASH_LENGTH[hash]) throw malformed('CertID hashes do not have the length of their algorithm');
  const serialValue = expectTag(serial, TAG.integer).value;
  if (serialValue.length === 0) throw new DerError('empty INTEGER');
  let serialHex: string | undefined;
  if ((serialValue[0]! & 0x80) === 0) {
    let start = 0;
    while (start < serialValue.length - 1 && serialValue[start] === 0) start++;
    serialHex = serialValue.subarray(start).toString('hex');
  }
  return { raw: Buffer.from(certId.raw), hash, issuerNameHash: Buffer.from(issuerNameHash), issuerKeyHash: Buffer.from(issuerKeyHash), serialHex };
}

/**
 * Reads an OCSPRequest (RFC 6960 §4.1.1). The optional requestor name and signature are read
 * past, not checked: this responder answers anyone (signed requests are not required).
 */
export function parseOcspRequest(der: Buffer): OcspRequest {
  try {
    const [tbsRequest, signature, ...rest] = children(only(der, TAG.sequence).value);
    if (rest.length > 0 || (signature && signature.tag !== 0xa0)) throw new DerError('unexpected element in OCSPRequest');
    const parts = children(expectTag(tbsRequest, TAG.sequence).value);
    let index = 0;
    if (parts[index]?.tag === 0xa0) {
      const version = expectTag(only(parts[index]!.value), TAG.integer).value;
      if (version.length !== 1 || version[0] !== 0) throw malformed('only OCSP version 1 requests are understood');
      index++;
    }
    if (parts[index]?.tag === 0xa1) index++; // requestorName
    const requestList = children(expectTag(parts[index++], TAG.sequence).value);
    let nonce: Buffer | undefined;
    if (parts[index]?.tag === 0xa2) {
      for (const extension of readExtensions(parts[index]!)) {
        if (extension.oid === ID_PKIX_OCSP_NONCE) {
          if (nonce) throw malformed('more than one nonce extension');
          // Nonce ::= OCTET STRING (RFC 9654); extnValue holds its DER.
          const inner = only(extension.value, TAG.octetString).value;
          if (inner.length < 1 || inner.length > MAX_NONCE_OCTETS) throw malformed(`the nonce must be 1 to ${MAX_NONCE_OCTETS} octets long (got ${inner.length})`);
          nonce = Buffer.from(extension.value);
        } else if (extension.critical) throw malformed(`unsupported critical request extension ${extension.oid}`);
      }
      index++;
    }
    if (index !== parts.length) throw new DerError('unexpected element in TBSRequest');
    if (requestList.length === 0) throw malformed('the request names no certificate');
    if (requestList.length > MAX_CERT_IDS) throw malformed(`the request names more than ${MAX_CERT_IDS} certificates`);
    return { certIds: requestList.map(readCertId), ...(nonce ? { nonce } : {}) };
  } catch (error) {
    if (error instanceof OcspRequestError) throw error;
    throw malformed('the OCSP request is not DER that RFC 6960 describes');
  }
}

// ---------------------------------------------------------------------------------------------
// The issuer a CertID names
// ---------------------------------------------------------------------------------------------

/** What identifies a CA in CertIDs: the hash of its Name and of its public key's BIT STRING value. */
export interface OcspIssuer {
  /** DER Name of the CA (its certificate's subject). */
  name: Buffer;
  /** The CA's SubjectPublicKeyInfo. */
  publicKey: Buffer;
}

/** The subjectPublicKey BIT STRING's value without its unused-bits octet (RFC 6960 §4.1.1 issuerKeyHash). */
function publicKeyBits(spki: Buffer): Buffer {
  const [, bits] = children(only(spki, TAG.sequence).value);
  return expectTag(bits, TAG.bitString).value.subarray(1);
}

/**
 * Answers "does this CertID name this CA?" without hashing per request: the CA's hashes are
 * made once per algorithm.
 */
export function issuerMatcher(issuer: OcspIssuer): (certId: OcspCertId) => boolean {
  const bits = publicKeyBits(issuer.publicKey);
  const hashes = new Map<CertIdHash, { name: Buffer; key: Buffer }>();
  return (certId) => {
    let known = hashes.get(certId.hash);
    if (!known) hashes.set(certId.hash, (known = { name: createHash(certId.hash).update(issuer.name).digest(), key: createHash(certId.hash).update(bits).digest() }));
    return known.name.equals(certId.issuerNameHash) && known.key.equals(certId.issuerKeyHash);
  };
}

/** ResponderID byKey: SHA-1 of the responder's public key BIT STRING value (RFC 6960 §4.2.1). */
export function responderKeyHash(publicKey: Buffer): Buffer {
  return createHash('sha1').update(publicKeyBits(publicKey)).digest();
}

// ---------------------------------------------------------------------------------------------
// The response
// ---------------------------------------------------------------------------------------------

export type CertStatus = { kind: 'good' } | { kind: 'revoked'; revokedAt: Date; reason?: number } | { kind: 'unknown' };

export interface OcspResponseTemplate {
  /** ResponderID byKey of the signing key (responderKeyHash). */
  responderKeyHash: Buffer;
  producedAt: Date;
  thisUpdate: Date;
  nextUpdate: Date;
  responses: Array<{ certId: OcspCertId; status: CertStatus }>;
  /** The request's nonce extnValue, echoed in responseExtensions. */
  nonce?: Buffer | undefined;
  /** DER certificates for the `certs` field (the signer's, so clients can find it). */
  certificates?: Buffer[];
}

/** GeneralizedTime YYYYMMDDHHMMSSZ: UTC, whole seconds, no fraction. */
export function generalizedTime(date: Date): Buffer {
  const two = (n: number) => String(n).padStart(2, '0');
  const text = `${String(date.getUTCFullYear()).padStart(4, '0')}${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  return tlv(TAG.generalizedTime, Buffer.from(text, 'latin1'));
}

const GOOD = Buffer.from([0x80, 0x00]); // [0] IMPLICIT NULL
const UNKNOWN = Buffer.from([0x82, 0x00]); // [2] IMPLICIT UnknownInfo (NULL)
const NONCE_OID = encodeOid(ID_PKIX_OCSP_NONCE);
const BASIC_OID = encodeOid(ID_PKIX_OCSP_BASIC);
const ENUMERATED = 0x0a;

function certStatusDer(status: CertStatus): Buffer {
  switch (status.kind) {
    case 'good':
      return GOOD;
    case 'unknown':
      return UNKNOWN;
    case 'revoked': {
      // [1] IMPLICIT RevokedInfo ::= SEQUENCE { revocationTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }
      const reason = status.reason === undefined ? [] : [tlv(0xa0, tlv(ENUMERATED, Buffer.from([status.reason])))];
      return tlv(0xa1, generalizedTime(status.revokedAt), ...reason);
    }
  }
}

/** The DER ResponseData (what is signed). */
export function responseDataDer(template: OcspResponseTemplate): Buffer {
  const singles = template.responses.map(({ certId, status }) =>
    sequence(certId.raw, certStatusDer(status), generalizedTime(template.thisUpdate), tlv(0xa0, generalizedTime(template.nextUpdate))),
  );
  const extensions = template.nonce ? [tlv(0xa1, sequence(sequence(NONCE_OID, tlv(TAG.octetString, template.nonce))))] : [];
  // version v1 is the DEFAULT, so it is absent (DER).
  return sequence(tlv(0xa2, tlv(TAG.octetString, template.responderKeyHash)), generalizedTime(template.producedAt), sequence(...singles), ...extensions);
}

/** A successful OCSPResponse holding a BasicOCSPResponse signed by `signer`. */
export async function buildOcspResponse(template: OcspResponseTemplate, signer: CertificateSigner): Promise<Buffer> {
  const tbs = responseDataDer(template);
  const signature = await signer.sign(tbs);
  const certs = template.certificates?.length ? [tlv(0xa0, sequence(...template.certificates))] : [];
  const basic = sequence(tbs, algorithmIdentifierDer(signer.algorithm), tlv(TAG.bitString, Buffer.from([0]), signature), ...certs);
  return sequence(tlv(ENUMERATED, Buffer.from([OCSP_RESPONSE_STATUS.successful])), tlv(0xa0, sequence(BASIC_OID, tlv(TAG.octetString, basic))));
}

/** An unsuccessful OCSPResponse: the status alone, unsigned (RFC 6960 §4.2.1). */
export function ocspErrorResponse(status: OcspErrorStatus): Buffer {
  return sequence(tlv(ENUMERATED, Buffer.from([OCSP_RESPONSE_STATUS[status]])));
}

/**
 * The request a GET carries in its last path segments: base64 of the DER request, URL-encoded
 * (RFC 6960 appendix A.1). Clients differ on whether they encode '/' and '+', so both the raw
 * and the percent-encoded forms are taken, as is base64url.
 */
export function decodeGetRequest(encoded: string): Buffer {
  let text: string;
  try {
    text = decodeURIComponent(encoded);
  } catch {
    throw malformed('the request in the URL has malformed percent-encoding');
  }
  if (text.length === 0 || text.length > 8192 || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) throw malformed('the request in the URL is not base64');
  return Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}
