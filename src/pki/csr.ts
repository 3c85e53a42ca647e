/**
 * A certificate signing request, parsed and checked: PEM decoded, its signature verified with
 * node:crypto (proof that the requester holds the private key), and what it asks for read out
 * (subject, public key, SANs, key usages, extended key usages, CA-ness). Anything unusable is a
 * 400.
 *
 * The request is walked with the small DER reader in ./der.ts rather than @peculiar/x509 or
 * @peculiar/asn1-schema: those cost ~3.5 ms and ~160 µs per CSR, this ~15 µs. What it reads
 * out is what @peculiar/x509 read out before (same short names, value strings, SAN types and
 * text, KeyUsage bits), so profiles and refusal messages mean what they meant; the rare SAN
 * forms (IP addresses that are not a plain v4 or v6 address) still go through asn1-x509.
 */
import { constants, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { isMainThread } from 'node:worker_threads';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as asn from '@peculiar/asn1-x509';
import { AppError, badRequest } from '../errors.js';
import { children, decodeOid, decodeSmallInteger, DerError, expectTag, only, TAG, type Tlv } from './der.js';

export type CsrKeyAlgorithm = { kind: 'rsa'; bits: number } | { kind: 'ec'; curve: string } | { kind: 'ed25519' };

export interface SubjectAttribute {
  /** Short name as OpenSSL prints it: CN, O, OU, C, L, ST, emailAddress... or the dotted OID. */
  type: string;
  value: string;
}

/** A subject alternative name as the API shows it (dns, ip, email, url; dn, id, guid, upn are read but no profile admits them). */
export interface CsrGeneralName {
  type: string;
  value: string;
}

export interface ParsedCsr {
  subject: SubjectAttribute[];
  /** The subject exactly as encoded in the CSR, to copy into the certificate. */
  subjectDer: Buffer;
  publicKeySpki: Buffer;
  keyAlgorithm: CsrKeyAlgorithm;
  sans: CsrGeneralName[];
  /** KeyUsage bits requested, if the CSR carries the extension. */
  keyUsages?: number;
  extendedKeyUsages?: string[];
  requestsCa: boolean;
  requestedPathLength?: number;
}

export interface ReadCsr extends ParsedCsr {
  /** The subject as an RFC 4514-style string (as @peculiar/x509 prints it), for records. */
  subjectDn: string;
}

const NOT_A_CSR = 'The csr is not a PEM-encoded PKCS#10 certificate signing request';

/** Attribute short names @peculiar/x509 uses, with E spelled as OpenSSL spells it. */
const ATTRIBUTE_NAMES: Record<string, string> = {
  '2.5.4.3': 'CN',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '2.5.4.6': 'C',
  '0.9.2342.19200300.100.1.25': 'DC',
  '1.2.840.113549.1.9.1': 'E',
  '2.5.4.42': 'G',
  '2.5.4.43': 'I',
  '2.5.4.4': 'SN',
  '2.5.4.12': 'T',
};
const ATTRIBUTE_ALIASES: Record<string, string> = { E: 'emailAddress' };

const CURVES: Record<string, string> = { '1.2.840.10045.3.1.7': 'P-256', '1.3.132.0.34': 'P-384', '1.3.132.0.35': 'P-521' };
const CURVE_NAMES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };
const ID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const ID_RSA_ENCRYPTION = '1.2.840.113549.1.1.1';

const ID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const ID_SAN = '2.5.29.17';
const ID_KEY_USAGE = '2.5.29.15';
const ID_EXT_KEY_USAGE = '2.5.29.37';
const ID_BASIC_CONSTRAINTS = '2.5.29.19';

// ---------------------------------------------------------------------------------------------
// Text: PEM and ASN.1 strings
// ---------------------------------------------------------------------------------------------

const PEM_BLOCK = /-----BEGIN [^-\r\n]+-----([A-Za-z0-9+/=\s]+)-----END [^-\r\n]+-----/;
const HEX = /^(?:[0-9a-fA-F]{2})+$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** The first PEM block (any label), else hex, base64 or base64url text: what @peculiar/x509 took. */
function decodeText(text: string): Buffer {
  const block = PEM_BLOCK.exec(text);
  if (block) return Buffer.from(block[1]!.replace(/\s/g, ''), 'base64');
  const bare = text.replace(/\s/g, '');
  if (bare.length > 0 && HEX.test(bare)) return Buffer.from(bare, 'hex');
  if (bare.length > 0 && bare.length % 4 === 0 && BASE64.test(bare)) return Buffer.from(bare, 'base64');
  if (bare.length > 0 && BASE64URL.test(bare)) return Buffer.from(bare, 'base64url');
  throw badRequest(NOT_A_CSR);
}

/** An ASN.1 string's value as asn1js decodes it (so as @peculiar/x509 showed it). */
function decodeString(tlv: Tlv): string | undefined {
  switch (tlv.tag) {
    case TAG.utf8String:
      return tlv.value.toString('utf8');
    case TAG.printableString:
    case TAG.teletexString:
    case TAG.ia5String:
      return tlv.value.toString('latin1');
    case TAG.bmpString: {
      let out = '';
      for (let i = 0; i + 1 < tlv.value.length; i += 2) out += String.fromCharCode(tlv.value.readUInt16BE(i));
      return out;
    }
    case TAG.universalString: {
      let out = '';
      for (let i = 0; i + 3 < tlv.value.length; i += 4) out += String.fromCharCode(tlv.value.readUInt32BE(i) & 0xffff);
      return out;
    }
    default:
      return undefined;
  }
}

function escapeDn(data: string): string {
  return data
    .replace(/([,+"\\<>;])/g, '\\$1')
    .replace(/^([ #])/, '\\$1')
    .replace(/([ ]$)/, '\\$1')
    .replace(/([\r\n\t])/, (char) => `\\${Buffer.from(char, 'utf8').toString('hex').toUpperCase()}`);
}

interface NameAttribute {
  type: string;
  /** Undefined for a value that is not one of the DirectoryString / IA5String forms. */
  text: string | undefined;
  raw: Buffer;
}

/** RDNSequence → attributes per RDN, refusing anything that is not SET OF SEQUENCE { OID, ANY }. */
function readName(name: Tlv): NameAttribute[][] {
  expectTag(name, TAG.sequence);
  return children(name.value).map((rdn) => {
    expectTag(rdn, TAG.set);
    return children(rdn.value).map((pair) => {
      const [type, value, extra] = children(expectTag(pair, TAG.sequence).value);
      if (!value || extra) throw new DerError('malformed AttributeTypeAndValue');
      // asn1-schema reads a NULL value as an empty DirectoryString, and so did every profile.
      return { type: decodeOid(expectTag(type, TAG.oid).value), text: value.tag === TAG.null ? '' : decodeString(value), raw: value.raw };
    });
  });
}

const attributeValue = (attribute: NameAttribute) => (attribute.text === undefined ? `#${attribute.raw.toString('hex')}` : attribute.text);

function nameToString(rdns: NameAttribute[][]): string {
  return rdns
    .map((rdn) => rdn.map((a) => `${ATTRIBUTE_NAMES[a.type] ?? a.type}=${a.text === undefined ? attributeValue(a) : escapeDn(a.text)}`).join('+'))
    .join(', ');
}

// ---------------------------------------------------------------------------------------------
// The public key and the proof of possession
// ---------------------------------------------------------------------------------------------

/**
 * The request's public key: its algorithm when it is one a profile can admit (RSA, EC, Ed25519), its
 * type as node:crypto names it, and the key itself. An uncompressed point on a named curve is
 * kept as it is for WebCrypto (see signatureVerifies); any other key is a KeyObject.
 */
interface CsrKey {
  algorithm: CsrKeyAlgorithm | undefined;
  type: string;
  ecPoint?: { curve: string; point: Buffer; size: number };
  keyObject(): KeyObject;
}

function readPublicKey(spki: Tlv): CsrKey {
  // A DER error anywhere in here is the request's: parseCsr answers it as an unreadable key.
  const [algorithm, bits] = children(spki.value);
  const [oid, parameter] = children(expectTag(algorithm, TAG.sequence).value);
  const algorithmOid = decodeOid(expectTag(oid, TAG.oid).value);
  const keyBits = expectTag(bits, TAG.bitString).value;
  const decoded = (): KeyObject => {
    try {
      return createPublicKey({ key: spki.raw, format: 'der', type: 'spki' });
    } catch {
      throw badRequest('The CSR public key cannot be read');
    }
  };
  if (algorithmOid === ID_EC_PUBLIC_KEY && parameter?.tag === TAG.oid) {
    const curve = CURVES[decodeOid(parameter.value)];
    const size = curve === 'P-256' ? 32 : curve === 'P-384' ? 48 : 66;
    if (curve && keyBits[0] === 0 && keyBits[1] === 0x04 && keyBits.length === 2 + 2 * size) {
      let key: KeyObject | undefined;
      return { algorithm: { kind: 'ec', curve }, type: 'ec', ecPoint: { curve, point: keyBits.subarray(1), size }, keyObject: () => (key ??= decoded()) };
    }
  }
  if (algorithmOid === ID_RSA_ENCRYPTION && keyBits[0] === 0) {
    // A JWK import skips OpenSSL's generic decoders: ~8 µs instead of ~140 µs.
    try {
      const [n, e] = children(only(keyBits.subarray(1), TAG.sequence).value);
      const strip = (integer: Buffer) => (integer[0] === 0 ? integer.subarray(1) : integer);
      const modulus = strip(expectTag(n, TAG.integer).value);
      const key = createPublicKey({ key: { kty: 'RSA', n: modulus.toString('base64url'), e: strip(expectTag(e, TAG.integer).value).toString('base64url') }, format: 'jwk' });
      return { algorithm: { kind: 'rsa', bits: (modulus.length - 1) * 8 + (32 - Math.clz32(modulus[0]!)) }, type: 'rsa', keyObject: () => key };
    } catch {
      // the general decoder below has the last word
    }
  }
  const key = decoded();
  const details = key.asymmetricKeyDetails ?? {};
  const type = key.asymmetricKeyType ?? 'unknown';
  if (type === 'rsa') return { algorithm: { kind: 'rsa', bits: details.modulusLength ?? 0 }, type, keyObject: () => key };
  if (type === 'ec') return { algorithm: { kind: 'ec', curve: CURVE_NAMES[details.namedCurve ?? ''] ?? details.namedCurve ?? 'unknown' }, type, keyObject: () => key };
  if (type === 'ed25519') return { algorithm: { kind: 'ed25519' }, type, keyObject: () => key };
  return { algorithm: undefined, type, keyObject: () => key };
}

const RSA_PKCS1: Record<string, string> = {
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.14': 'sha224',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};
const ECDSA: Record<string, string> = {
  '1.2.840.10045.4.1': 'sha1',
  '1.2.840.10045.4.3.1': 'sha224',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};
const HASHES: Record<string, string> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.4': 'sha224',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
const ID_RSASSA_PSS = '1.2.840.113549.1.1.10';
const ID_MGF1 = '1.2.840.113549.1.1.8';
const EDWARDS = new Set(['1.3.101.112', '1.3.101.113']);

/** RSASSA-PSS-params (RFC 4055): hash, MGF1 with the same hash (all node:crypto verifies), salt length. */
function pssParameters(parameters: Tlv | undefined): { hash: string; saltLength: number } {
  let hash = 'sha1';
  let mgfHash = 'sha1';
  let saltLength = 20;
  for (const field of parameters ? children(expectTag(parameters, TAG.sequence).value) : []) {
    const inner = only(field.value);
    if (field.tag === 0xa0) hash = HASHES[decodeOid(expectTag(children(inner.value)[0], TAG.oid).value)] ?? '';
    else if (field.tag === 0xa1) {
      const [mgf, mgfParameters] = children(inner.value);
      if (decodeOid(expectTag(mgf, TAG.oid).value) !== ID_MGF1) mgfHash = '';
      else mgfHash = HASHES[decodeOid(expectTag(children(expectTag(mgfParameters, TAG.sequence).value)[0], TAG.oid).value)] ?? '';
    } else if (field.tag === 0xa2) saltLength = decodeSmallInteger(expectTag(inner, TAG.integer).value);
  }
  if (!hash || hash !== mgfHash || saltLength < 0) throw new Error('unsupported PSS parameters');
  return { hash, saltLength };
}

/**
 * The proof of possession. On the main thread ECDSA is verified with node:crypto's callback
 * form, which runs on libuv's thread pool, after a JWK import of the point: that takes the
 * P-256 arithmetic off the event loop (measured here: ~100 µs of main thread per CSR, against
 * ~190 synchronously and ~130 through WebCrypto's import and verify). On a CSR thread
 * (csr-threads.ts), already off the event loop, it is verified inline. RSA stays synchronous,
 * being cheaper than the hop (~45 µs for import and verify together).
 */
async function signatureVerifies(info: Buffer, algorithm: Tlv, signatureBits: Tlv, key: CsrKey): Promise<boolean> {
  try {
    const [oidTlv, parameters] = children(expectTag(algorithm, TAG.sequence).value);
    const oid = decodeOid(expectTag(oidTlv, TAG.oid).value);
    const bits = expectTag(signatureBits, TAG.bitString).value;
    if (bits[0] !== 0) return false;
    const signature = bits.subarray(1);
    const type = key.type;
    const ecdsaHash = ECDSA[oid];
    if (ecdsaHash && key.ecPoint) {
      const { curve, point, size } = key.ecPoint;
      const x = point.subarray(1, 1 + size).toString('base64url');
      const y = point.subarray(1 + size).toString('base64url');
      // Throws for a point off the curve: a CSR whose proof cannot hold.
      const publicKey = createPublicKey({ key: { kty: 'EC', crv: curve, x, y }, format: 'jwk' });
      const options = { key: publicKey, dsaEncoding: 'der' as const };
      // On the event loop the check goes to libuv's pool; on a CSR thread (csr-threads.ts),
      // already off the event loop, it runs here: the hop would only add two thread wake-ups.
      if (!isMainThread) return verify(ecdsaHash, info, options, signature);
      return await new Promise<boolean>((resolve) => verify(ecdsaHash, info, options, signature, (error, valid) => resolve(!error && valid)));
    }
    if (ecdsaHash && type === 'ec') return verify(ecdsaHash, info, { key: key.keyObject(), dsaEncoding: 'der' }, signature);
    if (RSA_PKCS1[oid] && type === 'rsa') return verify(RSA_PKCS1[oid], info, { key: key.keyObject(), padding: constants.RSA_PKCS1_PADDING }, signature);
    if (oid === ID_RSASSA_PSS && (type === 'rsa' || type === 'rsa-pss')) {
      const { hash, saltLength } = pssParameters(parameters);
      return verify(hash, info, { key: key.keyObject(), padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, signature);
    }
    if (EDWARDS.has(oid) && (type === 'ed25519' || type === 'ed448')) return verify(null, info, key.keyObject(), signature);
    return false;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Requested extensions
// ---------------------------------------------------------------------------------------------

function formatIpv6(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  let best = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j;
  }
  if (bestLength <= 1) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
}

/** Any other IP form (address and mask, odd lengths) as asn1-x509 prints it. */
function unusualIp(raw: Buffer): string {
  const name = AsnConvert.parse(raw, asn.GeneralName);
  if (name.iPAddress === undefined) throw new Error('not an IP address');
  return name.iPAddress;
}

const GUID = /^([0-9a-f]{8})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{12})$/i;
const ID_GUID = '1.3.6.1.4.1.311.25.1';
const ID_UPN = '1.3.6.1.4.1.311.20.2.3';

/**
 * One GeneralName; undefined for an otherName that is neither a UPN nor a well-formed GUID,
 * which @peculiar/x509 skipped without a word, so a request reads as it always did. Anything
 * else (x400Address and ediPartyName included, which asn1-x509 could not read either) is an
 * error.
 */
function readGeneralName(name: Tlv): CsrGeneralName | undefined {
  switch (name.tag) {
    case 0x81:
      return { type: 'email', value: name.value.toString('latin1') };
    case 0x82:
      return { type: 'dns', value: name.value.toString('latin1') };
    case 0x86:
      return { type: 'url', value: name.value.toString('latin1') };
    case 0x87:
      if (name.value.length === 4) return { type: 'ip', value: [...name.value].join('.') };
      if (name.value.length === 16) return { type: 'ip', value: formatIpv6(name.value) };
      return { type: 'ip', value: unusualIp(name.raw) };
    case 0x88: {
      // asn1js read a malformed registeredID as "": no profile admits this type anyway.
      let value = '';
      try {
        value = decodeOid(name.value);
      } catch {
        // stays ""
      }
      return { type: 'id', value };
    }
    case 0xa4:
      return { type: 'dn', value: nameToString(readName(only(name.value))) };
    case 0xa0: {
      const [typeId, explicit, extra] = children(name.value);
      if (!explicit || extra || explicit.tag !== 0xa0) throw new DerError('malformed otherName');
      const type = decodeOid(expectTag(typeId, TAG.oid).value);
      const inner = only(explicit.value);
      if (type === ID_UPN) return { type: 'upn', value: decodeString(inner) ?? '' };
      if (type !== ID_GUID || inner.tag !== TAG.octetString) return undefined;
      const match = GUID.exec(inner.value.toString('hex'));
      if (!match) return undefined;
      const swapped = match.slice(1).map((part, i) => (i < 3 ? Buffer.from(part, 'hex').reverse().toString('hex') : part));
      return { type: 'guid', value: swapped.join('-') };
    }
    default:
      throw new DerError('not a GeneralName');
  }
}

/** KeyUsage bits numbered as asn1-x509's KeyUsageFlags (digitalSignature = 1, ... decipherOnly = 256). */
function readKeyUsage(bitString: Tlv): number {
  const { value } = expectTag(bitString, TAG.bitString);
  const unused = value[0];
  if (unused === undefined || unused > 7 || (value.length === 1 && unused !== 0)) throw new Error('malformed BIT STRING');
  const count = (value.length - 1) * 8 - unused;
  let bits = 0;
  for (let bit = 0; bit < Math.min(count, 9); bit++) if (value[1 + (bit >> 3)]! & (0x80 >> (bit & 7))) bits |= 1 << bit;
  return bits;
}

interface RequestedExtension {
  id: string;
  content: Buffer;
}

/** Extensions ::= SEQUENCE OF Extension; undefined when the list itself is malformed. */
function readExtensionList(extensions: Tlv): RequestedExtension[] | undefined {
  try {
    return children(expectTag(extensions, TAG.sequence).value).map((extension) => {
      const fields = children(expectTag(extension, TAG.sequence).value);
      const id = decodeOid(expectTag(fields[0], TAG.oid).value);
      const critical = fields[1]?.tag === TAG.boolean;
      const content = expectTag(fields[critical ? 2 : 1], TAG.octetString).value;
      if (fields.length > (critical ? 3 : 2)) throw new DerError('malformed Extension');
      return { id, content };
    });
  } catch {
    return undefined;
  }
}

function applyExtensions(parsed: ParsedCsr, extensions: RequestedExtension[]): void {
  for (const { id, content } of extensions) {
    switch (id) {
      case ID_SAN:
        for (const name of children(only(content, TAG.sequence).value)) {
          const read = readGeneralName(name);
          if (read) parsed.sans.push(read);
        }
        break;
      case ID_KEY_USAGE:
        parsed.keyUsages = readKeyUsage(only(content));
        break;
      case ID_EXT_KEY_USAGE:
        parsed.extendedKeyUsages = children(only(content, TAG.sequence).value).map((oid) => decodeOid(expectTag(oid, TAG.oid).value));
        break;
      case ID_BASIC_CONSTRAINTS: {
        const [first, second] = children(only(content, TAG.sequence).value);
        const caFlag = first?.tag === TAG.boolean ? first : undefined;
        const pathLength = caFlag ? second : first;
        parsed.requestsCa = caFlag !== undefined && caFlag.value[0] !== 0;
        delete parsed.requestedPathLength;
        if (pathLength) {
          const value = decodeSmallInteger(expectTag(pathLength, TAG.integer).value);
          if (value < 0) throw new Error('negative path length');
          parsed.requestedPathLength = value;
        }
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

export async function parseCsr(pem: string): Promise<ReadCsr> {
  const der = decodeText(pem);
  let info: Tlv, algorithm: Tlv, signature: Tlv, subject: Tlv, spki: Tlv, attributes: Tlv | undefined, rdns: NameAttribute[][];
  try {
    const request = only(der, TAG.sequence);
    [info, algorithm, signature] = children(request.value) as [Tlv, Tlv, Tlv];
    expectTag(info, TAG.sequence);
    expectTag(algorithm, TAG.sequence);
    expectTag(signature, TAG.bitString);
    const [version, subjectTlv, spkiTlv, attributesTlv] = children(info.value);
    expectTag(version, TAG.integer);
    subject = expectTag(subjectTlv, TAG.sequence);
    spki = expectTag(spkiTlv, TAG.sequence);
    attributes = attributesTlv && expectTag(attributesTlv, 0xa0);
    rdns = readName(subject);
  } catch {
    throw badRequest(NOT_A_CSR);
  }
  let key: CsrKey;
  try {
    key = readPublicKey(spki);
  } catch (error) {
    // A malformed part of the key (a curve OID that does not end, say) is the request's fault.
    if (error instanceof AppError) throw error;
    throw badRequest('The CSR public key cannot be read');
  }
  const keyAlgorithm = key.algorithm;
  if (!(await signatureVerifies(info.raw, algorithm, signature, key))) throw badRequest('The CSR signature is invalid (no proof of possession of the private key)');
  if (!keyAlgorithm) throw badRequest(`The CSR public key type ${key.type} is not supported (RSA, EC or Ed25519 only)`);

  const subjectAttributes: SubjectAttribute[] = [];
  for (const rdn of rdns) {
    // Grouped by type within an RDN, as @peculiar/x509's Name.toJSON did.
    const byType = new Map<string, string[]>();
    for (const attribute of rdn) {
      const name = ATTRIBUTE_NAMES[attribute.type] ?? attribute.type;
      const values = byType.get(name) ?? [];
      values.push(attributeValue(attribute));
      byType.set(name, values);
    }
    for (const [type, values] of byType) for (const value of values) subjectAttributes.push({ type: ATTRIBUTE_ALIASES[type] ?? type, value });
  }

  const parsed: ReadCsr = {
    subject: subjectAttributes,
    subjectDn: nameToString(rdns),
    subjectDer: Buffer.from(subject.raw),
    publicKeySpki: Buffer.from(spki.raw),
    keyAlgorithm,
    sans: [],
    requestsCa: false,
  };
  try {
    for (const attribute of attributes ? children(attributes.value) : []) {
      const [type, values] = children(expectTag(attribute, TAG.sequence).value);
      if (decodeOid(expectTag(type, TAG.oid).value) !== ID_EXTENSION_REQUEST) continue;
      const first = children(expectTag(values, TAG.set).value)[0];
      // As @peculiar/x509 did: only the first extensionRequest counts, and a list that is not a
      // list of extensions is no extensions (the request is then read without any).
      const list = first && readExtensionList(first);
      if (list) applyExtensions(parsed, list);
      break;
    }
  } catch {
    throw badRequest('The CSR carries an extension that cannot be read');
  }
  return parsed;
}
