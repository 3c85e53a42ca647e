/**
 * One way to sign with a key in the token, for every signer of the service (KMS sign, CA
 * certificates and CRLs, audit checkpoints): the message is hashed here so only the digest
 * crosses the PKCS#11 boundary, the token signs the digest, and an ECDSA signature comes back
 * as PKCS#11's r||s and leaves as the DER ECDSA-Sig-Value that X.509, CMS and the KMS API carry.
 * EdDSA is the exception: its pure form signs the message itself, which the caller passes as it is.
 */
import { hash as digestOf } from 'node:crypto';
import type { HashName, SignatureScheme } from '../algorithms.js';
import type { Token } from '../pkcs11/token.js';
import { ecdsaRawToDer } from './kms-encoding.js';

type Signer = Pick<Token, 'signDigest'>;

/** Signs a digest the caller made (or, for EdDSA, the message); ECDSA's answer in DER. */
export async function signDigestDer(token: Signer, objectId: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer): Promise<Buffer> {
  const raw = await token.signDigest(objectId, scheme, hash, digest);
  return scheme === 'ecdsa' ? ecdsaRawToDer(raw) : raw;
}

/** Hashes `message` with `hash`, signs the digest in the token; ECDSA's answer in DER. */
export function signMessageDer(token: Signer, objectId: Buffer, scheme: Exclude<SignatureScheme, 'eddsa'>, hash: HashName, message: Buffer | Uint8Array): Promise<Buffer> {
  return signDigestDer(token, objectId, scheme, hash, digestOf(hash, message, 'buffer'));
}
