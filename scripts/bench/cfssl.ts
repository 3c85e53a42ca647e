/**
 * The peer: `cfssl serve` (Debian's golang-cfssl; Go, CA key in a file, no authentication)
 * signing the benchmark's CSR at POST /api/v1/cfssl/sign, measured in the same run as the
 * service's sign-certificate so that HTTP/cfssl is a ratio of one run, not of two machines.
 *
 * Each CA is made by cfssl itself (`gencert -initca`) in a temporary directory; the signing
 * profile is the service run's: server auth, digital signature, one day.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BENCH_CSR_NAME, type BenchCsr } from './certificates.js';
import { track } from './procs.js';

export type CfsslCaKind = 'rsa' | 'p256';

export const CFSSL_SIGN_PATH = '/api/v1/cfssl/sign';

/** The service's run asks for ttl 1d; cfssl's expiry is the same day. */
const CONFIG = {
  signing: {
    default: { expiry: '24h', usages: ['digital signature', 'server auth'] },
  },
};

const CA_REQUEST: Record<CfsslCaKind, object> = {
  rsa: { CN: 'cfssl bench RSA-2048 root CA', key: { algo: 'rsa', size: 2048 } },
  p256: { CN: 'cfssl bench P-256 root CA', key: { algo: 'ecdsa', size: 256 } },
};

export interface CfsslCa {
  kind: CfsslCaKind;
  certPem: string;
  certPath: string;
  keyPath: string;
  configPath: string;
}

export async function makeCfsslCa(kind: CfsslCaKind, dir: string): Promise<CfsslCa> {
  const requestPath = join(dir, `${kind}-ca-csr.json`);
  writeFileSync(requestPath, JSON.stringify(CA_REQUEST[kind]));
  const { stdout } = await promisify(execFile)('cfssl', ['gencert', '-initca', requestPath], { timeout: 60_000, maxBuffer: 1 << 20 });
  const made = JSON.parse(stdout) as { cert: string; key: string };
  const certPath = join(dir, `${kind}-ca.pem`);
  const keyPath = join(dir, `${kind}-ca-key.pem`);
  const configPath = join(dir, 'config.json');
  writeFileSync(certPath, made.cert);
  writeFileSync(keyPath, made.key, { mode: 0o600 });
  writeFileSync(configPath, JSON.stringify(CONFIG));
  return { kind, certPem: made.cert, certPath, keyPath, configPath };
}

/** Starts `cfssl serve` on 127.0.0.1:port; its log level is warning, like the service's. */
export function startCfssl(ca: CfsslCa, port: number): ChildProcess {
  return track(
    spawn('cfssl', ['serve', '-address', '127.0.0.1', '-port', String(port), '-ca', ca.certPath, '-ca-key', ca.keyPath, '-config', ca.configPath, '-loglevel', '2'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    }),
  );
}

export const cfsslSignBody = (csr: BenchCsr) => JSON.stringify({ certificate_request: csr.pem });

/**
 * Checks one cfssl answer: success, a certificate for the CSR's name and key, server auth,
 * issued by the CA, whose signature verifies under the CA's key (node:crypto).
 */
export function checkCfsslAnswer(answer: unknown, csr: BenchCsr, ca: CfsslCa): string {
  const result = (answer as { success?: boolean; result?: { certificate?: unknown } } | undefined) ?? {};
  if (result.success !== true || typeof result.result?.certificate !== 'string') return `200, but cfssl's answer LACKS a certificate: ${JSON.stringify(answer).slice(0, 200)}`;
  let certificate: X509Certificate;
  const issuer = new X509Certificate(ca.certPem);
  try {
    certificate = new X509Certificate(result.result.certificate);
  } catch (error) {
    return `200, but the certificate DOES NOT PARSE with node:crypto: ${(error as Error).message}`;
  }
  const problems: string[] = [];
  if (!certificate.subject.split('\n').includes(`CN=${BENCH_CSR_NAME}`)) problems.push(`SUBJECT "${certificate.subject}"`);
  if (certificate.subjectAltName !== `DNS:${BENCH_CSR_NAME}`) problems.push(`SAN "${certificate.subjectAltName}"`);
  if (!certificate.publicKey.export({ type: 'spki', format: 'der' }).equals(csr.spki)) problems.push("PUBLIC KEY is not the CSR's");
  if (!(certificate.keyUsage ?? []).includes('1.3.6.1.5.5.7.3.1')) problems.push('NO SERVER AUTH');
  if (!certificate.checkIssued(issuer)) problems.push('NOT ISSUED by the CA');
  if (!certificate.verify(issuer.publicKey)) problems.push("SIGNATURE DOES NOT VERIFY under the CA's key");
  const lifetimeH = (Date.parse(certificate.validTo) - Date.parse(certificate.validFrom)) / 3_600_000;
  const what = `CN and SAN ${BENCH_CSR_NAME}, server auth, ${lifetimeH.toFixed(2)} h, verifies under "${issuer.subject}" (node:crypto)`;
  return problems.length === 0 ? `200, ${what}` : `200, but cfssl's certificate FAILED CHECKS: ${problems.join('; ')}`;
}
