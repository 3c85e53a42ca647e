/**
 * sign-certificate in the benchmark: the fixed CSR every request carries, and the check of one
 * sample answer. The CSR is made once per run in this process: an EC P-256 key pair from
 * node:crypto's WebCrypto, CN=bench.svc.internal, SAN DNS:bench.svc.internal, self-signed with
 * ECDSA SHA-256 by @peculiar/x509. The key is thrown away; the service only needs the CSR.
 */
// @peculiar/x509 resolves its parts through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

export const BENCH_CSR_NAME = 'bench.svc.internal';
export const BENCH_CSR_TTL = '1d';

export interface BenchCsr {
  pem: string;
  /** DER SubjectPublicKeyInfo of the CSR's key: the issued certificate must carry it. */
  spki: Buffer;
}

export async function makeBenchCsr(): Promise<BenchCsr> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${BENCH_CSR_NAME}`,
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: BENCH_CSR_NAME }])],
  });
  return { pem: csr.toString('pem'), spki: Buffer.from(csr.publicKey.rawData) };
}

export interface SignCertificateAnswer {
  certificate?: unknown;
  issuingCaCertificate?: unknown;
  serialNumber?: unknown;
  certificateId?: unknown;
}

/**
 * Checks one sign-certificate answer: the certificate parses; its serial is the answer's
 * serialNumber; subject, SAN and public key are the CSR's; it lasts the requested day; its
 * signature algorithm is the CA's kind; and the signature verifies under the issuing CA
 * certificate's public key. Returns a one-line description; failures are named in capitals.
 */
export async function checkIssuedCertificate(answer: SignCertificateAnswer, csr: BenchCsr, caKind: 'RSA' | 'ECDSA'): Promise<string> {
  if (typeof answer.certificate !== 'string' || typeof answer.serialNumber !== 'string' || typeof answer.issuingCaCertificate !== 'string') {
    return `200, but the answer LACKS certificate/serialNumber/issuingCaCertificate: ${JSON.stringify(answer).slice(0, 200)}`;
  }
  let certificate: x509.X509Certificate;
  let issuer: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(answer.certificate);
    issuer = new x509.X509Certificate(answer.issuingCaCertificate);
  } catch (error) {
    return `200, but the certificate DOES NOT PARSE with @peculiar/x509: ${(error as Error).message}`;
  }
  const problems: string[] = [];
  const serial = certificate.serialNumber.toLowerCase();
  if (serial !== answer.serialNumber.toLowerCase()) problems.push(`SERIAL ${serial} ≠ serialNumber ${answer.serialNumber}`);
  if (certificate.subject !== `CN=${BENCH_CSR_NAME}`) problems.push(`SUBJECT "${certificate.subject}"`);
  const san = certificate.getExtension(x509.SubjectAlternativeNameExtension);
  const dns = san?.names.items.filter((n) => n.type === 'dns').map((n) => n.value) ?? [];
  if (dns.length !== 1 || dns[0] !== BENCH_CSR_NAME) problems.push(`SAN DNS ${JSON.stringify(dns)}`);
  if (!Buffer.from(certificate.publicKey.rawData).equals(csr.spki)) problems.push("PUBLIC KEY is not the CSR's");
  const lifetimeS = (certificate.notAfter.getTime() - certificate.notBefore.getTime()) / 1000;
  if (lifetimeS !== 86_400) problems.push(`LIFETIME ${lifetimeS} s, not 1 d`);
  const algorithm = certificate.signatureAlgorithm as { name: string; hash?: { name: string } };
  const expectedName = caKind === 'RSA' ? 'RSASSA-PKCS1-v1_5' : 'ECDSA';
  if (algorithm.name !== expectedName || algorithm.hash?.name !== 'SHA-256') problems.push(`SIGNATURE ALGORITHM ${algorithm.name}/${algorithm.hash?.name}`);
  let verifies = false;
  try {
    verifies = await certificate.verify({ publicKey: issuer, signatureOnly: true });
  } catch (error) {
    problems.push(`VERIFY THREW ${(error as Error).message}`);
  }
  if (!verifies) problems.push("SIGNATURE DOES NOT VERIFY under the issuing CA's key");
  const what = `serial ${serial.slice(0, 8)}… = serialNumber, ${algorithm.name} ${algorithm.hash?.name ?? ''}, CN and SAN ${BENCH_CSR_NAME}, 1 d, verifies under "${issuer.subject}"`;
  return problems.length === 0 ? `200, certificate parsed with @peculiar/x509: ${what}` : `200, but the certificate FAILED CHECKS: ${problems.join('; ')}`;
}
