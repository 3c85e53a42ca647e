/** A software CertificateSigner standing in for the token in unit tests of the PKI builders. */
import { sign, type KeyObject } from 'node:crypto';
import { SIGNATURE_ALGORITHMS, signatureAlgorithm, type CertificateSigner } from '../../src/pki/certificate-builder.js';

export function softwareSigner(privateKey: KeyObject): CertificateSigner {
  const isRsa = privateKey.asymmetricKeyType === 'rsa';
  return {
    algorithm: signatureAlgorithm(isRsa ? SIGNATURE_ALGORITHMS.sha256WithRSAEncryption : SIGNATURE_ALGORITHMS.ecdsaWithSHA256),
    sign: async (tbs) => sign('sha256', tbs, isRsa ? privateKey : { key: privateKey, dsaEncoding: 'der' }),
  };
}
