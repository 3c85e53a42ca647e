/**
 * Every attribute template the service hands the token, in one place. Private and secret keys
 * are token objects, private, sensitive and never extractable: nothing ever reads a private
 * value out. CKA_ID ties each object to its metadata row; CKA_LABEL makes them findable by a
 * human with `pkcs11-tool --list-objects`.
 */
import pkcs11js from 'pkcs11js';
import type { EcCurve, KeySpec } from '../algorithms.js';
import { CKK_EC_EDWARDS } from './mechanisms.js';

/** DER-encoded named-curve OIDs for CKA_EC_PARAMS. */
export const EC_PARAMS: Record<EcCurve, Buffer> = {
  'P-256': Buffer.from('06082a8648ce3d030107', 'hex'),
  'P-384': Buffer.from('06052b81040022', 'hex'),
  'P-521': Buffer.from('06052b81040023', 'hex'),
};

/**
 * CKA_EC_PARAMS of an Ed25519 key: the DER OID id-Ed25519 (1.3.101.112, RFC 8410). PKCS#11 3.0
 * also allows the printable string "edwards25519"; SoftHSM2 2.6 takes only the OID.
 */
export const ED25519_PARAMS = Buffer.from('06032b6570', 'hex');

type KeyPairSpec = Exclude<KeySpec, { kind: 'aes' }>;
const CKK_OF_PAIR: Record<KeyPairSpec['kind'], number> = { rsa: pkcs11js.CKK_RSA, ec: pkcs11js.CKK_EC, ed25519: CKK_EC_EDWARDS };

/** Attributes every long-lived secret object carries. */
function protectedObject(id: Buffer, label: string): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    // CKA_MODIFIABLE stays true: C_CopyObject into a session copy (token.ts) needs it, and
    // the attributes that matter only move one way (SENSITIVE to true, EXTRACTABLE to false).
    { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_LABEL, value: label },
  ];
}

export function aesKeyTemplate(id: Buffer, label: string, bits: number): pkcs11js.Template {
  return [
    ...protectedObject(id, label),
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_VALUE_LEN, value: bits / 8 },
    /** CKA_ENCRYPT / CKA_DECRYPT: the key's whole purpose. */
    { type: pkcs11js.CKA_ENCRYPT, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: true },
    /** No wrapping: a key that can wrap could export another key. */
    { type: pkcs11js.CKA_WRAP, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_SIGN, value: false },
    { type: pkcs11js.CKA_VERIFY, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
}

/**
 * The public half stays in the token too (public, not private): verification runs there with
 * the same digest-in, mechanism-out path as signing, including for `isDigest` input, which
 * software verifiers cannot take for PSS and ECDSA.
 */
export function publicKeyTemplate(id: Buffer, label: string, spec: KeyPairSpec): pkcs11js.Template {
  const common: pkcs11js.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_VERIFY, value: true },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
    { type: pkcs11js.CKA_WRAP, value: false },
    { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_LABEL, value: label },
  ];
  if (spec.kind === 'rsa') {
    return [
      ...common,
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
      { type: pkcs11js.CKA_MODULUS_BITS, value: spec.bits },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([0x01, 0x00, 0x01]) },
    ];
  }
  const params = spec.kind === 'ec' ? EC_PARAMS[spec.curve] : ED25519_PARAMS;
  return [...common, { type: pkcs11js.CKA_KEY_TYPE, value: CKK_OF_PAIR[spec.kind] }, { type: pkcs11js.CKA_EC_PARAMS, value: params }];
}

export function privateKeyTemplate(id: Buffer, label: string, kind: KeyPairSpec['kind']): pkcs11js.Template {
  return [
    ...protectedObject(id, label),
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: CKK_OF_PAIR[kind] },
    /** CKA_SIGN only: no decrypt, unwrap or derive from a signing key. */
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
}

/** The template that finds every token object of this service's by its CKA_ID (session copies aside). */
export function tokenObjectsByIdTemplate(id: Buffer): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_TOKEN, value: true },
  ];
}

export type KeyObjectClass = 'private' | 'public' | 'secret';

const CKO_OF_CLASS: Record<KeyObjectClass, number> = {
  private: pkcs11js.CKO_PRIVATE_KEY,
  public: pkcs11js.CKO_PUBLIC_KEY,
  secret: pkcs11js.CKO_SECRET_KEY,
};

/** Finds the token object (not a session copy) of an id and class. */
export function keyObjectTemplate(id: Buffer, objectClass: KeyObjectClass): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_CLASS, value: CKO_OF_CLASS[objectClass] },
  ];
}
