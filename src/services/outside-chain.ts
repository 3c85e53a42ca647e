/**
 * The certificate an outside parent signed for one of our CAs (made with a CSR for it), and the
 * chain above it, checked before the CA may use them: the certificate is for the CA's own key,
 * is a CA certificate and has not expired, and every certificate of the chain signs the one
 * below it. Pure: no store, no token.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { badRequest } from '../errors.js';
import { pemToDer } from '../pki/der.js';

export interface OutsideCertificate {
  der: Buffer;
  /** The chain as PEM, issuer first: what the CA serves above itself from now on. */
  outsideChain: string;
  /** The path length the outside parent allowed, when it set one. */
  pathLength: number | undefined;
}

export async function readOutsideCertificate(caPublicKey: Buffer, certificatePem: string, chainPem: string): Promise<OutsideCertificate> {
  const [der] = pemToDer(certificatePem, 'CERTIFICATE');
  if (!der) throw badRequest('certificate is not a PEM certificate');
  let certificate: x509.X509Certificate;
  let publicKey: Buffer;
  let basic: x509.BasicConstraintsExtension | null;
  try {
    // @peculiar/x509 parses the key and extensions lazily: read them here, where a
    // malformed one is the client's error.
    certificate = new x509.X509Certificate(der);
    publicKey = Buffer.from(certificate.publicKey.rawData);
    basic = certificate.getExtension(x509.BasicConstraintsExtension);
  } catch {
    throw badRequest('certificate cannot be parsed');
  }
  if (!publicKey.equals(caPublicKey)) throw badRequest("The certificate's public key is not this CA's key");
  if (!basic?.ca) throw badRequest('The certificate is not a CA certificate (BasicConstraints cA is not set)');
  // Every block must parse: skipping one that does not would import a chain nobody checked.
  const chain = pemToDer(chainPem, 'CERTIFICATE').map((item, index) => {
    try {
      return new x509.X509Certificate(item);
    } catch {
      throw badRequest(`certificateChain: certificate ${index + 1} cannot be parsed`);
    }
  });
  if (chain.length === 0) throw badRequest('certificateChain must hold the issuer certificate (and those above it)');
  let child = certificate;
  for (const issuer of chain) {
    // A key algorithm or size WebCrypto refuses fails as a throw (sometimes before any
    // promise exists), not a false.
    const verified = await (async () => child.verify({ publicKey: issuer.publicKey, signatureOnly: true }))().catch(() => false);
    if (!verified) throw badRequest('The certificate chain does not verify: each certificate must be signed by the next');
    child = issuer;
  }
  if (Date.now() > certificate.notAfter.getTime()) throw badRequest('The certificate has expired');
  return { der, outsideChain: chain.map((item) => item.toString('pem')).join('\n'), pathLength: basic.pathLength };
}
