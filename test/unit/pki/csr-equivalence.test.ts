/**
 * The DER-walking CSR reader against the @peculiar/x509 reading it replaced: on ordinary CSRs
 * from the openssl CLI and on the hostile-input suite's forged ones (strange subjects, SANs,
 * key usages, basic constraints, attributes; each properly signed), both must read the same
 * subject, names, key, usages and CA request, or both refuse.
 */
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as asn from '@peculiar/asn1-x509';
import * as x509 from '@peculiar/x509';
import { afterAll, describe, expect, it } from 'vitest';
import { parseCsr } from '../../../src/pki/csr.js';
import { forgedCsrs } from '../../helpers/hostile.js';

const dir = mkdtempSync(join(tmpdir(), 'csr-eq-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** CSRs with extension contents the new reader may refuse though x509 read them (see `strict`). */
const strictlyRefusable = new Set<string>();

/** What the x509-based parser returned; undefined when it refused the CSR. */
async function x509Reading(pem: string) {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch {
    return undefined;
  }
  if (!(await csr.verify().catch(() => false))) return undefined;
  const subject: Array<{ type: string; value: string }> = [];
  for (const rdn of csr.subjectName.toJSON()) for (const [type, values] of Object.entries(rdn)) for (const value of values) subject.push({ type: type === 'E' ? 'emailAddress' : type, value });
  const out = { subject, subjectDn: csr.subjectName.toString(), subjectDer: Buffer.from(csr.subjectName.toArrayBuffer()).toString('hex'), spki: Buffer.from(csr.publicKey.rawData).toString('hex'), sans: [] as unknown[], keyUsages: undefined as number | undefined, extendedKeyUsages: undefined as string[] | undefined, requestsCa: false, requestedPathLength: undefined as number | undefined };
  // Only the four extensions the service reads: x509 also parsed (and refused) ones it ignores.
  const requested = AsnConvert.parse(csr.rawData, CertificationRequest).certificationRequestInfo.attributes.find((attribute) => attribute.type === '1.2.840.113549.1.9.14');
  let extensions: asn.Extension[] = [];
  try {
    extensions = requested?.values[0] ? AsnConvert.parse(requested.values[0], asn.Extensions) : [];
  } catch {
    // x509 fell back to a plain attribute, and so read no extensions at all.
  }
  let strict = false;
  try {
    for (const extension of extensions) {
      const raw = AsnConvert.serialize(extension);
      const content = Buffer.from(extension.extnValue.buffer);
      const type = { [asn.id_ce_subjectAltName]: asn.SubjectAlternativeName, [asn.id_ce_keyUsage]: asn.KeyUsage, [asn.id_ce_extKeyUsage]: asn.ExtendedKeyUsage, [asn.id_ce_basicConstraints]: asn.BasicConstraints }[extension.extnID];
      // The new reader may refuse what is not DER (asn1js also took BER, e.g. indefinite
      // lengths) and path lengths that are not INTEGERs of up to 6 octets.
      if (type) {
        try {
          if (!Buffer.from(AsnConvert.serialize(AsnConvert.parse(content, type as never))).equals(content)) strict = true;
        } catch {
          strict = true;
        }
      }
      if (extension.extnID === asn.id_ce_basicConstraints && /^30..(?:0101..)?02(0[7-9a-f]|[1-7].)/.test(content.toString('hex'))) strict = true;
      if (extension.extnID === asn.id_ce_subjectAltName) out.sans.push(...new x509.SubjectAlternativeNameExtension(raw).names.toJSON());
      else if (extension.extnID === asn.id_ce_keyUsage) out.keyUsages = new x509.KeyUsagesExtension(raw).usages;
      else if (extension.extnID === asn.id_ce_extKeyUsage) out.extendedKeyUsages = new x509.ExtendedKeyUsageExtension(raw).usages.map(String);
      else if (extension.extnID === asn.id_ce_basicConstraints) {
        const basic = new x509.BasicConstraintsExtension(raw);
        out.requestsCa = basic.ca;
        out.requestedPathLength = basic.pathLength;
      }
    }
  } catch {
    return 'extension refused' as const;
  }
  if (strict) strictlyRefusable.add(pem);
  // Deliberate differences: usages are compared on the nine bits KeyUsage defines (the only
  // ones a policy reads); a big OID arc is written in decimal, not as asn1js's {hex}; and the
  // new reader refuses outright what x509 read as nonsense (an EKU element that is no OID, a
  // path length that is not a small non-negative INTEGER).
  out.keyUsages = out.keyUsages === undefined ? undefined : Number(out.keyUsages) & 511;
  out.extendedKeyUsages = out.extendedKeyUsages?.map((oid) => oid.replace(/\{([0-9a-f]+)\}/g, (_, hex: string) => [...Buffer.from(hex, 'hex')].reduce((value, digit) => value * 128n + BigInt(digit & 0x7f), 0n).toString()));
  if (out.extendedKeyUsages?.some((oid) => !/^\d+(\.\d+)+$/.test(oid))) return 'extension refused' as const;
  if (out.requestedPathLength !== undefined && !(Number.isSafeInteger(out.requestedPathLength) && out.requestedPathLength >= 0)) return 'extension refused' as const;
  return out;
}

async function ourReading(pem: string) {
  try {
    const csr = await parseCsr(pem);
    return {
      subject: csr.subject,
      subjectDn: csr.subjectDn,
      subjectDer: csr.subjectDer.toString('hex'),
      spki: csr.publicKeySpki.toString('hex'),
      sans: csr.sans,
      keyUsages: csr.keyUsages === undefined ? undefined : csr.keyUsages & 511,
      extendedKeyUsages: csr.extendedKeyUsages,
      requestsCa: csr.requestsCa,
      requestedPathLength: csr.requestedPathLength,
    };
  } catch (error) {
    return (error as Error).message.includes('extension') ? ('extension refused' as const) : undefined;
  }
}

function opensslCsr(label: string, keyArgs: string[], extraArgs: string[]): string {
  const key = join(dir, `${label}.key`);
  const csr = join(dir, `${label}.csr`);
  execFileSync('openssl', ['genpkey', ...keyArgs, '-out', key], { stdio: 'ignore' });
  execFileSync('openssl', ['req', '-new', '-key', key, '-out', csr, ...extraArgs], { stdio: 'ignore' });
  return readFileSync(csr, 'utf8');
}

describe('parseCsr reads what @peculiar/x509 read', () => {
  it('on CSRs from the openssl CLI (RSA, RSA-PSS signed, P-256, P-384, CA requests, escapes)', async () => {
    const rsa = ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'];
    const pems = [
      opensslCsr('rsa', rsa, ['-subj', '/CN=api.svc.internal/O=Example, Inc./C=DE/emailAddress=ops@example.com', '-addext', 'subjectAltName=DNS:api.svc.internal,IP:10.0.0.7,IP:fd00::7,email:ops@example.com,URI:spiffe://example/api', '-addext', 'keyUsage=critical,digitalSignature,keyEncipherment,decipherOnly', '-addext', 'extendedKeyUsage=serverAuth,clientAuth']),
      opensslCsr('pss', rsa, ['-subj', '/CN=pss.example', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32', '-sha256']),
      opensslCsr('p256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-subj', '/CN=ca.example/OU=a+OU=b', '-multivalue-rdn', '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:2', '-addext', 'keyUsage=keyCertSign,cRLSign']),
      opensslCsr('p384', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['-subj', '/CN= #lead,comma\\;semi/L=München', '-utf8']),
    ];
    for (const pem of pems) {
      const expected = await x509Reading(pem);
      expect(expected).toBeTypeOf('object');
      expect(await ourReading(pem)).toEqual(expected);
    }
  });

  it('on 300 forged CSRs from the hostile-input generator, or both refuse', async () => {
    const csrs = await forgedCsrs(300, 8);
    expect(csrs.length).toBeGreaterThan(250);
    let read = 0;
    let stricter = 0;
    for (const { label, pem } of csrs) {
      const expected = await x509Reading(pem);
      const ours = await ourReading(pem);
      if (typeof expected === 'object') read++;
      if (ours === 'extension refused' && typeof expected === 'object' && strictlyRefusable.has(pem)) {
        stricter++;
        continue;
      }
      expect({ label, reading: ours }).toEqual({ label, reading: expected });
    }
    // Most of them must have been read, or the comparison proves little.
    expect(read).toBeGreaterThan(100);
    expect(stricter).toBeLessThan(read / 4);
  });
});
