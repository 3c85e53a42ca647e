/**
 * Mechanisms, and the bytes around them. Hashing happens in the service and the token signs
 * the digest: one path for plain and `isDigest` input, and megabyte messages never cross the
 * PKCS#11 boundary. SoftHSM2 has no CKM_ECDSA_SHA*, and its CKM_*_RSA_PKCS_PSS needs explicit
 * parameters, so these raw forms are also the portable ones.
 */
import pkcs11js from 'pkcs11js';
import type { HashName, SignatureScheme } from '../algorithms.js';

/** DER prefixes of DigestInfo (RFC 8017 §9.2, note 1) that EMSA-PKCS1-v1_5 puts before a digest. */
const DIGEST_INFO_PREFIX: Record<HashName, Buffer> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex'),
};

const CKM_OF_HASH: Record<HashName, number> = { sha256: pkcs11js.CKM_SHA256, sha384: pkcs11js.CKM_SHA384, sha512: pkcs11js.CKM_SHA512 };
const MGF1_OF_HASH: Record<HashName, number> = { sha256: pkcs11js.CKG_MGF1_SHA256, sha384: pkcs11js.CKG_MGF1_SHA384, sha512: pkcs11js.CKG_MGF1_SHA512 };
const SALT_LENGTH: Record<HashName, number> = { sha256: 32, sha384: 48, sha512: 64 };

/**
 * PKCS#11 3.0 values that pkcs11js (written against 2.40) does not name. SoftHSM2 2.6 has them
 * when built against an OpenSSL with Ed25519, as Debian's is.
 */
export const CKK_EC_EDWARDS = 0x40;
export const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
export const CKM_EDDSA = 0x1057;

export interface SignRequest {
  mechanism: pkcs11js.Mechanism;
  /** What the token signs. */
  input: Buffer;
}

/**
 * The mechanism and input for signing `digest` under `scheme`. PSS salt length is the hash
 * length, with MGF1 of the same hash (Infisical's and AWS KMS's choice). ECDSA input must
 * already be cut to the curve order's length (CKM_ECDSA silently truncates otherwise). For
 * `eddsa`, `digest` is the message itself: CKM_EDDSA without parameters is pure Ed25519.
 */
export function signRequest(scheme: SignatureScheme, hash: HashName, digest: Buffer): SignRequest {
  switch (scheme) {
    case 'pkcs1':
      return { mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS }, input: Buffer.concat([DIGEST_INFO_PREFIX[hash], digest]) };
    case 'pss':
      return {
        mechanism: {
          mechanism: pkcs11js.CKM_RSA_PKCS_PSS,
          parameter: { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: CKM_OF_HASH[hash], mgf: MGF1_OF_HASH[hash], saltLen: SALT_LENGTH[hash] } satisfies pkcs11js.RsaPSS as pkcs11js.IParams,
        },
        input: digest,
      };
    case 'ecdsa':
      return { mechanism: { mechanism: pkcs11js.CKM_ECDSA }, input: digest };
    case 'eddsa':
      return { mechanism: { mechanism: CKM_EDDSA }, input: digest };
  }
}

export const GCM_IV_BYTES = 12;
export const GCM_TAG_BYTES = 16;

export function aesGcmMechanism(iv: Buffer): pkcs11js.Mechanism {
  return {
    mechanism: pkcs11js.CKM_AES_GCM,
    parameter: { type: pkcs11js.CK_PARAMS_AES_GCM, iv, ivBits: GCM_IV_BYTES * 8, tagBits: GCM_TAG_BYTES * 8 } satisfies pkcs11js.AesGCM as pkcs11js.IParams,
  };
}
