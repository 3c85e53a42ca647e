/**
 * A certificate signing request, parsed and checked: PEM decoded, its signature verified
 * (proof that the requester holds the private key), and what it asks for read out (subject,
 * public key, SANs, key usages, extended key usages, CA-ness). Anything unusable is a 400.
 */
// @peculiar/x509 resolves its parts through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { createPublicKey } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { badRequest } from '../errors.js';

export type CsrKeyAlgorithm = { kind: 'rsa'; bits: number } | { kind: 'ec'; curve: string };

export interface SubjectAttribute {
  /** Short name as OpenSSL prints it: CN, O, OU, C, L, ST, emailAddress... or the dotted OID. */
  type: string;
  value: string;
}

export interface ParsedCsr {
  subject: SubjectAttribute[];
  /** The subject exactly as encoded in the CSR, to copy into the certificate. */
  subjectDer: Buffer;
  publicKeySpki: Buffer;
  keyAlgorithm: CsrKeyAlgorithm;
  sans: x509.JsonGeneralName[];
  /** KeyUsage bits requested, if the CSR carries the extension. */
  keyUsages?: number;
  extendedKeyUsages?: string[];
  requestsCa: boolean;
  requestedPathLength?: number;
}

/** @peculiar/x509 short names that OpenSSL (and so profile authors) spell otherwise. */
const ATTRIBUTE_ALIASES: Record<string, string> = { E: 'emailAddress' };

const CURVE_NAMES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

function keyAlgorithmOf(spki: Buffer): CsrKeyAlgorithm {
  let key;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch {
    throw badRequest('The CSR public key cannot be read');
  }
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') return { kind: 'rsa', bits: details.modulusLength ?? 0 };
  if (key.asymmetricKeyType === 'ec') return { kind: 'ec', curve: CURVE_NAMES[details.namedCurve ?? ''] ?? details.namedCurve ?? 'unknown' };
  throw badRequest(`The CSR public key type ${key.asymmetricKeyType ?? 'unknown'} is not supported (RSA or EC only)`);
}

export async function parseCsr(pem: string): Promise<ParsedCsr> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch {
    throw badRequest('The csr is not a PEM-encoded PKCS#10 certificate signing request');
  }
  let signatureValid = false;
  try {
    signatureValid = await csr.verify();
  } catch {
    signatureValid = false;
  }
  if (!signatureValid) throw badRequest('The CSR signature is invalid (no proof of possession of the private key)');

  const publicKeySpki = Buffer.from(csr.publicKey.rawData);
  const subject: SubjectAttribute[] = [];
  for (const rdn of csr.subjectName.toJSON()) {
    for (const [type, values] of Object.entries(rdn)) for (const value of values) subject.push({ type: ATTRIBUTE_ALIASES[type] ?? type, value });
  }

  const parsed: ParsedCsr = {
    subject,
    subjectDer: Buffer.from(csr.subjectName.toArrayBuffer()),
    publicKeySpki,
    keyAlgorithm: keyAlgorithmOf(publicKeySpki),
    sans: [],
    requestsCa: false,
  };
  try {
    for (const extension of csr.extensions) {
      if (extension instanceof x509.SubjectAlternativeNameExtension) parsed.sans.push(...extension.names.toJSON());
      else if (extension instanceof x509.KeyUsagesExtension) parsed.keyUsages = extension.usages;
      else if (extension instanceof x509.ExtendedKeyUsageExtension) parsed.extendedKeyUsages = extension.usages.map(String);
      else if (extension instanceof x509.BasicConstraintsExtension) {
        parsed.requestsCa = extension.ca;
        if (extension.pathLength !== undefined) parsed.requestedPathLength = extension.pathLength;
      }
    }
  } catch {
    throw badRequest('The CSR carries an extension that cannot be read');
  }
  return parsed;
}
