/**
 * The KMS operations: encrypt, decrypt, sign, verify, public key, signing algorithms.
 * The message is hashed here and only its digest goes to the token, for plain and `isDigest`
 * input alike (Ed25519 aside: pure EdDSA takes the message itself); results are encoded in
 * Infisical's byte formats (kms-encoding.ts).
 */
import { hash, randomBytes } from 'node:crypto';
import {
  CURVE_ORDER_BYTES,
  DIGEST_LENGTH,
  KEY_SPECS,
  SIGNING_SPECS,
  signingAlgorithmsFor,
  type SigningAlgorithm,
  type SigningAlgorithmSpec,
} from '../algorithms.js';
import { badRequest } from '../errors.js';
import { GCM_IV_BYTES } from '../pkcs11/mechanisms.js';
import { TokenError } from '../pkcs11/errors.js';
import type { Token } from '../pkcs11/token.js';
import { decodeCiphertext, ecdsaDerToRaw, encodeCiphertext } from './kms-encoding.js';
import type { KeyService, UsableKey } from './key-service.js';
import type { Principal } from './permissions.js';
import { signDigestDer } from './token-signature.js';

export interface SignInput {
  signingAlgorithm: SigningAlgorithm;
  isDigest: boolean;
  data: Buffer;
}

function signingSpecFor(usable: UsableKey, algorithm: SigningAlgorithm): SigningAlgorithmSpec {
  const spec = SIGNING_SPECS[algorithm];
  const keySpec = KEY_SPECS[usable.key.algorithm];
  if (spec.family !== keySpec.kind) {
    throw badRequest(`Signing algorithm ${algorithm} is not supported by ${usable.key.algorithm} keys; use one of ${signingAlgorithmsFor(usable.key.algorithm).join(', ')}`);
  }
  return spec;
}

/** Ed25519's signature: R || S, 32 bytes each (RFC 8032 §5.1.6). */
const ED25519_SIGNATURE_BYTES = 64;

/**
 * The digest the token signs: the data's hash, or the data itself when it is a digest of the
 * algorithm's length. For ECDSA it is cut to the curve order's length (FIPS 186-4 §6.4, and
 * what OpenSSL does), since CKM_ECDSA's own truncation is not to be relied on. Pure Ed25519
 * signs the message itself, so there is no digest a caller could hand in.
 */
function digestFor(usable: UsableKey, spec: SigningAlgorithmSpec, input: SignInput): Buffer {
  if (spec.scheme === 'eddsa') {
    if (input.isDigest) throw badRequest(`${input.signingAlgorithm} signs the message itself (pure EdDSA, which hashes inside the signature): send the data with isDigest false`);
    return input.data;
  }
  let digest: Buffer;
  if (input.isDigest) {
    if (input.data.length !== DIGEST_LENGTH[spec.hash]) {
      throw badRequest(`A ${spec.hash.toUpperCase()} digest is ${DIGEST_LENGTH[spec.hash]} bytes, but data is ${input.data.length} bytes`);
    }
    digest = input.data;
  } else {
    digest = hash(spec.hash, input.data, 'buffer');
  }
  const keySpec = KEY_SPECS[usable.key.algorithm];
  if (spec.scheme === 'ecdsa' && keySpec.kind === 'ec') digest = digest.subarray(0, CURVE_ORDER_BYTES[keySpec.curve]);
  return digest;
}

export function createCryptoService(deps: { keys: Pick<KeyService, 'usableKey'>; token: Pick<Token, 'encryptAesGcm' | 'decryptAesGcm' | 'signDigest' | 'verifyDigest'> }) {
  const { keys, token } = deps;

  return {
    async encrypt(principal: Principal, keyId: string, plaintext: Buffer): Promise<Buffer> {
      const usable = await keys.usableKey(principal, keyId, 'encrypt', 'encrypt-decrypt');
      // A fresh random IV every time: the token accepts a repeated IV, and a counter could
      // repeat after a restart.
      const iv = randomBytes(GCM_IV_BYTES);
      const sealed = await token.encryptAesGcm(usable.version.objectId, iv, plaintext);
      return encodeCiphertext(usable.version.version, iv, sealed);
    },

    async decrypt(principal: Principal, keyId: string, blob: Buffer): Promise<Buffer> {
      const decoded = decodeCiphertext(blob);
      // Look the key up first, so an unknown key is a 404 whatever the ciphertext.
      const current = await keys.usableKey(principal, keyId, 'decrypt', 'encrypt-decrypt');
      if (!decoded) throw badRequest('Invalid ciphertext: not a ciphertext of this service');
      const usable = decoded.version === current.version.version ? current : await keys.usableKey(principal, keyId, 'decrypt', 'encrypt-decrypt', decoded.version);
      try {
        return await token.decryptAesGcm(usable.version.objectId, decoded.iv, decoded.ciphertextAndTag);
      } catch (error) {
        // A failed GCM tag comes back as an operation error (SoftHSM2: CKR_GENERAL_ERROR);
        // session and device errors keep their own class and become a 503.
        if (error instanceof TokenError && error.errorClass === 'operation') throw badRequest('Invalid ciphertext: authentication failed');
        throw error;
      }
    },

    async sign(principal: Principal, keyId: string, input: SignInput): Promise<Buffer> {
      const usable = await keys.usableKey(principal, keyId, 'sign', 'sign-verify');
      const spec = signingSpecFor(usable, input.signingAlgorithm);
      return signDigestDer(token, usable.version.objectId, spec.scheme, spec.hash, digestFor(usable, spec, input));
    },

    async verify(principal: Principal, keyId: string, input: SignInput & { signature: Buffer }): Promise<boolean> {
      const usable = await keys.usableKey(principal, keyId, 'verify', 'sign-verify');
      const spec = signingSpecFor(usable, input.signingAlgorithm);
      const digest = digestFor(usable, spec, input);
      let signature: Buffer | undefined = input.signature;
      if (spec.scheme === 'ecdsa') {
        const keySpec = KEY_SPECS[usable.key.algorithm];
        signature = keySpec.kind === 'ec' ? ecdsaDerToRaw(input.signature, CURVE_ORDER_BYTES[keySpec.curve]) : undefined;
      }
      if (!signature || signature.length === 0) return false;
      if (spec.scheme === 'eddsa' && signature.length !== ED25519_SIGNATURE_BYTES) return false;
      return token.verifyDigest(usable.version.objectId, spec.scheme, spec.hash, digest, signature);
    },

    async publicKey(principal: Principal, keyId: string): Promise<Buffer> {
      const usable = await keys.usableKey(principal, keyId, 'read', 'sign-verify');
      return usable.version.publicKey!;
    },

    async signingAlgorithms(principal: Principal, keyId: string): Promise<SigningAlgorithm[]> {
      const usable = await keys.usableKey(principal, keyId, 'read', 'sign-verify');
      return signingAlgorithmsFor(usable.key.algorithm);
    },
  };
}

export type CryptoService = ReturnType<typeof createCryptoService>;
