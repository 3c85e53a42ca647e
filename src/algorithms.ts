/**
 * The algorithm vocabulary of the KMS API and what each name means in terms a token and an
 * independent verifier share. A leaf: services, the token layer and tests all read it.
 */

export type HashName = 'sha256' | 'sha384' | 'sha512';
export type EcCurve = 'P-256' | 'P-384' | 'P-521';

export type KeySpec =
  | { kind: 'aes'; bits: 128 | 256 }
  | { kind: 'rsa'; bits: 2048 | 3072 | 4096 }
  | { kind: 'ec'; curve: EcCurve }
  | { kind: 'ed25519' };

export const SYMMETRIC_ALGORITHMS = ['aes-256-gcm', 'aes-128-gcm'] as const;
export const ASYMMETRIC_ALGORITHMS = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'ECC_NIST_P256', 'ECC_NIST_P384', 'ECC_NIST_P521', 'ED25519'] as const;
export const KEY_ALGORITHMS = [...SYMMETRIC_ALGORITHMS, ...ASYMMETRIC_ALGORITHMS] as const;
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

export const KEY_USAGES = ['encrypt-decrypt', 'sign-verify'] as const;
export type KeyUsage = (typeof KEY_USAGES)[number];

export const KEY_SPECS: Record<KeyAlgorithm, KeySpec> = {
  'aes-256-gcm': { kind: 'aes', bits: 256 },
  'aes-128-gcm': { kind: 'aes', bits: 128 },
  RSA_2048: { kind: 'rsa', bits: 2048 },
  RSA_3072: { kind: 'rsa', bits: 3072 },
  RSA_4096: { kind: 'rsa', bits: 4096 },
  ECC_NIST_P256: { kind: 'ec', curve: 'P-256' },
  ECC_NIST_P384: { kind: 'ec', curve: 'P-384' },
  ECC_NIST_P521: { kind: 'ec', curve: 'P-521' },
  ED25519: { kind: 'ed25519' },
};

export function usageOf(algorithm: KeyAlgorithm): KeyUsage {
  return KEY_SPECS[algorithm].kind === 'aes' ? 'encrypt-decrypt' : 'sign-verify';
}

/** Signing algorithms, in the order `signing-algorithms` lists them (Infisical's nine, then Ed25519). */
export const SIGNING_ALGORITHMS = [
  'RSASSA_PSS_SHA_512',
  'RSASSA_PSS_SHA_384',
  'RSASSA_PSS_SHA_256',
  'RSASSA_PKCS1_V1_5_SHA_512',
  'RSASSA_PKCS1_V1_5_SHA_384',
  'RSASSA_PKCS1_V1_5_SHA_256',
  'ECDSA_SHA_512',
  'ECDSA_SHA_384',
  'ECDSA_SHA_256',
  'ED25519',
] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

/**
 * `eddsa` is pure Ed25519 (RFC 8032): the token is given the message itself and hashes it with
 * SHA-512 inside the signature, so there is no digest to sign and `isDigest` cannot apply.
 */
export type SignatureScheme = 'pss' | 'pkcs1' | 'ecdsa' | 'eddsa';

export interface SigningAlgorithmSpec {
  scheme: SignatureScheme;
  /** The hash the service applies before the token signs; for `eddsa` the one inside the scheme. */
  hash: HashName;
  /** The key family this algorithm needs. */
  family: Exclude<KeySpec['kind'], 'aes'>;
}

export const SIGNING_SPECS: Record<SigningAlgorithm, SigningAlgorithmSpec> = {
  RSASSA_PSS_SHA_512: { scheme: 'pss', hash: 'sha512', family: 'rsa' },
  RSASSA_PSS_SHA_384: { scheme: 'pss', hash: 'sha384', family: 'rsa' },
  RSASSA_PSS_SHA_256: { scheme: 'pss', hash: 'sha256', family: 'rsa' },
  RSASSA_PKCS1_V1_5_SHA_512: { scheme: 'pkcs1', hash: 'sha512', family: 'rsa' },
  RSASSA_PKCS1_V1_5_SHA_384: { scheme: 'pkcs1', hash: 'sha384', family: 'rsa' },
  RSASSA_PKCS1_V1_5_SHA_256: { scheme: 'pkcs1', hash: 'sha256', family: 'rsa' },
  ECDSA_SHA_512: { scheme: 'ecdsa', hash: 'sha512', family: 'ec' },
  ECDSA_SHA_384: { scheme: 'ecdsa', hash: 'sha384', family: 'ec' },
  ECDSA_SHA_256: { scheme: 'ecdsa', hash: 'sha256', family: 'ec' },
  ED25519: { scheme: 'eddsa', hash: 'sha512', family: 'ed25519' },
};

export const DIGEST_LENGTH: Record<HashName, number> = { sha256: 32, sha384: 48, sha512: 64 };

/** Byte length of each curve's group order: the longest digest ECDSA uses on that curve. */
export const CURVE_ORDER_BYTES: Record<EcCurve, number> = { 'P-256': 32, 'P-384': 48, 'P-521': 66 };

export function signingAlgorithmsFor(algorithm: KeyAlgorithm): SigningAlgorithm[] {
  const spec = KEY_SPECS[algorithm];
  if (spec.kind === 'aes') return [];
  return SIGNING_ALGORITHMS.filter((name) => SIGNING_SPECS[name].family === spec.kind);
}
