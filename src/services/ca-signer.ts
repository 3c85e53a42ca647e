/**
 * A CA's key as the signer of what the CA signs (certificates, CRLs, CSRs, OCSP answers): the
 * key each CA key algorithm (algorithms.ts) means in the token, and the signature algorithm it
 * signs with (SHA-384 for P-384, SHA-256 otherwise), through the one token-signing helper.
 */
import type { CaKeyAlgorithm, KeySpec } from '../algorithms.js';
import { SIGNATURE_ALGORITHMS, signatureAlgorithm, type CertificateSigner } from '../pki/certificate-builder.js';
import type { Token } from '../pkcs11/token.js';
import type { CaRecord } from '../store/pki-store.js';
import { signMessageDer } from './token-signature.js';

export const CA_KEY_SPECS: Record<CaKeyAlgorithm, KeySpec> = {
  RSA_2048: { kind: 'rsa', bits: 2048 },
  RSA_3072: { kind: 'rsa', bits: 3072 },
  RSA_4096: { kind: 'rsa', bits: 4096 },
  EC_prime256v1: { kind: 'ec', curve: 'P-256' },
  EC_secp384r1: { kind: 'ec', curve: 'P-384' },
};

/** The CA's key as a certificate/CRL signer: hash here, sign the digest in the token. */
export function caSigner(token: Pick<Token, 'signDigest'>, ca: Pick<CaRecord, 'objectId' | 'keyAlgorithm'>): CertificateSigner {
  const spec = CA_KEY_SPECS[ca.keyAlgorithm as CaKeyAlgorithm];
  const hash = spec.kind === 'ec' && spec.curve === 'P-384' ? 'sha384' : 'sha256';
  const oid = spec.kind === 'rsa' ? SIGNATURE_ALGORITHMS.sha256WithRSAEncryption : hash === 'sha384' ? SIGNATURE_ALGORITHMS.ecdsaWithSHA384 : SIGNATURE_ALGORITHMS.ecdsaWithSHA256;
  return {
    algorithm: signatureAlgorithm(oid),
    sign: (tbs) => signMessageDer(token, ca.objectId, spec.kind === 'rsa' ? 'pkcs1' : 'ecdsa', hash, tbs),
  };
}
