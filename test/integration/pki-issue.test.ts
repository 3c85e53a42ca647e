/**
 * Issue 3, issuance: CSRs made by the openssl CLI (RSA-2048, RSA-4096, EC P-256, EC P-384;
 * DNS, IP, email and URI SANs; with and without requested key usages) are signed by CAs whose
 * keys live in the token, and every result is checked with tools other than the service's own
 * libraries: `openssl verify -x509_strict`, GnuTLS `certtool`, and openssl's own reading of
 * serial, public key, subject, SANs, key usages and validity. Also: the demo PKI of the first
 * start, the CA certificate endpoint, certificate records and their listing, the AIA and CRL
 * DP URLs named in issued certificates, and the CA keys' attributes in the token.
 */
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, request } from '../helpers/http.js';
import { openssl, run, type Run } from '../helpers/cli.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { tokenObjects } from '../helpers/token-objects.js';

// ---------------------------------------------------------------------------------------------
// openssl / certtool plumbing
// ---------------------------------------------------------------------------------------------

const execFileAsync = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), 'pki-issue-'));
const file = (name: string) => join(work, name);


const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----/g;
/** The PEM certificates in a text, each normalized to end in one newline. */
const pemBlocks = (text: string): string[] => (text.match(PEM_CERTIFICATE) ?? []).map((pem) => `${pem.replace(/\r/g, '').trim()}\n`);
const derOf = (pem: string) => new X509Certificate(pem).raw;

function writePem(name: string, pems: string[]): string {
  writeFileSync(file(name), pems.join(''));
  return file(name);
}

/** `openssl verify -x509_strict`; returns the run so a test can show why it failed. */
function opensslVerify(rootPem: string, untrusted: string[], leafPem: string, extra: string[] = []): Run {
  const tag = createHash('sha1').update(leafPem).digest('hex').slice(0, 12);
  const args = ['verify', '-x509_strict', ...extra, '-CAfile', writePem(`root-${tag}.pem`, [rootPem])];
  if (untrusted.length) args.push('-untrusted', writePem(`untrusted-${tag}.pem`, untrusted));
  args.push(writePem(`leaf-${tag}.pem`, [leafPem]));
  return run('openssl', args);
}

/** Reads one extension of a certificate as openssl prints it (the lines after the header). */
function extensionText(pem: string, name: string): { critical: boolean; values: string } | undefined {
  const tag = createHash('sha1').update(pem).digest('hex').slice(0, 12);
  const path = writePem(`ext-${tag}.pem`, [pem]);
  const out = run('openssl', ['x509', '-in', path, '-noout', '-ext', name]);
  if (out.status !== 0 || !out.stdout.trim()) return undefined;
  const [header, ...rest] = out.stdout.trim().split('\n');
  return { critical: /critical/.test(header ?? ''), values: rest.map((line) => line.trim()).join(' ') };
}

const splitList = (text: string | undefined) => (text ? text.split(/,\s*/).map((item) => item.trim()).filter(Boolean) : []);

// ---------------------------------------------------------------------------------------------
// The CSR matrix
// ---------------------------------------------------------------------------------------------

type KeyName = 'rsa2048' | 'rsa4096' | 'p256' | 'p384';
const KEY_ARGS: Record<KeyName, string[]> = {
  rsa2048: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  rsa4096: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:4096'],
  p256: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  p384: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
};

const KU_TEXT: Record<string, string> = {
  digitalSignature: 'Digital Signature',
  nonRepudiation: 'Non Repudiation',
  keyEncipherment: 'Key Encipherment',
  dataEncipherment: 'Data Encipherment',
  keyAgreement: 'Key Agreement',
};
const EKU_TEXT: Record<string, string> = {
  serverAuth: 'TLS Web Server Authentication',
  clientAuth: 'TLS Web Client Authentication',
  emailProtection: 'E-mail Protection',
  codeSigning: 'Code Signing',
};

/** What openssl prints for a SAN given in openssl config notation. */
function sanText(san: string): string {
  const [type, ...rest] = san.split(':');
  const value = rest.join(':');
  switch (type) {
    case 'DNS':
      return `DNS:${value}`;
    case 'email':
      return `email:${value}`;
    case 'URI':
      return `URI:${value}`;
    case 'IP': {
      if (!value.includes(':')) return `IP Address:${value}`;
      const [left = '', right = ''] = value.split('::');
      const l = left ? left.split(':') : [];
      const r = right ? right.split(':') : [];
      const groups = value.includes('::') ? [...l, ...Array(8 - l.length - r.length).fill('0'), ...r] : value.split(':');
      return `IP Address:${groups.map((g) => parseInt(g, 16).toString(16).toUpperCase()).join(':')}`;
    }
    default:
      throw new Error(`unknown SAN ${san}`);
  }
}

interface Case {
  name: string;
  key: KeyName;
  subject: string;
  sans: string[];
  keyUsages?: string[];
  kuCritical?: boolean;
  extendedKeyUsages?: string[];
  profile: 'deep' | 'mid';
  ttl: string;
  ttlSeconds: number;
}

const CASES: Case[] = [
  {
    name: 'rsa2048 with every SAN type and requested KU/EKU',
    key: 'rsa2048',
    subject: '/C=DE/O=Acme Corp/CN=rsa2048.issue.test',
    sans: ['DNS:rsa2048.issue.test', 'DNS:alt.rsa2048.issue.test', 'IP:10.1.2.3', 'email:ops@issue.test', 'URI:https://issue.test/rsa2048'],
    keyUsages: ['digitalSignature', 'keyEncipherment'],
    kuCritical: true,
    extendedKeyUsages: ['serverAuth', 'clientAuth'],
    profile: 'deep',
    ttl: '90d',
    ttlSeconds: 90 * 86400,
  },
  {
    name: 'rsa2048 without requested usages',
    key: 'rsa2048',
    subject: '/CN=plain.rsa2048.issue.test',
    sans: ['DNS:plain.rsa2048.issue.test'],
    profile: 'mid',
    ttl: '24h',
    ttlSeconds: 86400,
  },
  {
    name: 'rsa4096 with IPv6 SAN and requested KU',
    key: 'rsa4096',
    subject: '/O=Acme Corp/OU=Platform/CN=rsa4096.issue.test',
    sans: ['DNS:rsa4096.issue.test', 'IP:2001:db8::10'],
    keyUsages: ['digitalSignature', 'keyEncipherment', 'dataEncipherment'],
    profile: 'mid',
    ttl: '30m',
    ttlSeconds: 1800,
  },
  {
    name: 'rsa4096 with URI SAN, without requested usages',
    key: 'rsa4096',
    subject: '/CN=plain.rsa4096.issue.test',
    sans: ['URI:spiffe://issue.test/ns/default/sa/rsa4096', 'DNS:plain.rsa4096.issue.test'],
    profile: 'deep',
    ttl: '1y',
    ttlSeconds: 365.25 * 86400,
  },
  {
    name: 'P-256 with IP and email SANs and requested KU/EKU',
    key: 'p256',
    subject: '/CN=p256.issue.test',
    sans: ['DNS:p256.issue.test', 'IP:10.200.0.1', 'email:p256@issue.test'],
    keyUsages: ['digitalSignature', 'keyAgreement'],
    kuCritical: true,
    extendedKeyUsages: ['clientAuth'],
    profile: 'deep',
    ttl: '397d',
    ttlSeconds: 397 * 86400,
  },
  {
    name: 'P-256 without requested usages',
    key: 'p256',
    subject: '/CN=plain.p256.issue.test',
    sans: ['DNS:plain.p256.issue.test'],
    profile: 'mid',
    ttl: '7d',
    ttlSeconds: 7 * 86400,
  },
  {
    name: 'P-384 with email and URI SANs and requested KU/EKU',
    key: 'p384',
    subject: '/C=DE/CN=p384.issue.test',
    sans: ['email:p384@issue.test', 'DNS:p384.issue.test', 'URI:https://issue.test/p384'],
    keyUsages: ['digitalSignature', 'nonRepudiation'],
    extendedKeyUsages: ['emailProtection'],
    profile: 'mid',
    ttl: '36h',
    ttlSeconds: 36 * 3600,
  },
  {
    name: 'P-384 with IPv6 SAN, without requested usages',
    key: 'p384',
    subject: '/CN=plain.p384.issue.test',
    sans: ['DNS:plain.p384.issue.test', 'IP:2001:db8:0:1::7'],
    profile: 'deep',
    ttl: '1.5d',
    ttlSeconds: 1.5 * 86400,
  },
];

function makeCsr(c: Case, index: number): string {
  const args = ['req', '-new', '-key', file(`${c.key}.key`), '-subj', c.subject, '-addext', `subjectAltName=${c.sans.join(',')}`];
  if (c.keyUsages) args.push('-addext', `keyUsage=${c.kuCritical ? 'critical,' : ''}${c.keyUsages.join(',')}`);
  if (c.extendedKeyUsages) args.push('-addext', `extendedKeyUsage=${c.extendedKeyUsages.join(',')}`);
  args.push('-out', file(`case-${index}.csr`));
  openssl(...args);
  return readFileSync(file(`case-${index}.csr`), 'utf8');
}

const PROJECT = 'pki-issue';

const LEAF_POLICY = {
  subject: [
    { type: 'CN', required: true, allowed: ['**.issue.test'] },
    { type: 'O', allowed: ['Acme Corp'] },
    { type: 'OU', allowed: ['Platform'] },
    { type: 'C', allowed: ['DE'] },
  ],
  sans: {
    dns: ['**.issue.test'],
    ip: ['10.0.0.0/8', '2001:db8::/32'],
    emailDomains: ['issue.test'],
    uriPrefixes: ['https://issue.test/', 'spiffe://issue.test/'],
    required: true,
  },
  keyUsages: { allowed: ['keyEncipherment', 'keyAgreement', 'nonRepudiation', 'dataEncipherment'], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: ['clientAuth', 'emailProtection'], always: ['serverAuth'] },
  keyAlgorithms: ['RSA_2048', 'RSA_4096', 'EC_prime256v1', 'EC_secp384r1'],
  maxValidity: '397d',
};

// ---------------------------------------------------------------------------------------------

describe('PKI issuance', () => {
  let svc: TestService;
  let token: string;
  /** CA ids and certificates (PEM) of the hierarchy made here: root (RSA-4096) → mid (P-384) → issuing (RSA-2048). */
  const ca = { root: '', mid: '', issuing: '' };
  const caPem = { root: '', mid: '', issuing: '' };
  const profiles = { deep: '', mid: '' };
  const csrs: string[] = [];
  const issued: Array<{ case: Case; body: any; requestedAt: number; answeredAt: number }> = [];

  beforeAll(async () => {
    // Keys once each (RSA-4096 takes a moment), while the service starts.
    const keys = Promise.all((Object.keys(KEY_ARGS) as KeyName[]).map((name) => execFileAsync('openssl', ['genpkey', ...KEY_ARGS[name], '-out', file(`${name}.key`)])));
    svc = await startTestService();
    await keys;
    token = await login(svc.url, svc.admin);

    const createCa = async (body: Record<string, unknown>) => {
      const res = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', { token, body: { projectId: PROJECT, ...body } });
      if (res.status !== 200) throw new Error(`create CA: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.ca.id as string;
    };
    ca.root = await createCa({ type: 'root', commonName: 'Issue Test Root', organization: 'Acme Corp', country: 'DE', keyAlgorithm: 'RSA_4096', ttl: '10y' });
    ca.mid = await createCa({ type: 'intermediate', commonName: 'Issue Test Mid', organization: 'Acme Corp', keyAlgorithm: 'EC_secp384r1', ttl: '5y', parentCaId: ca.root });
    ca.issuing = await createCa({ type: 'intermediate', commonName: 'Issue Test Issuing', organization: 'Acme Corp', keyAlgorithm: 'RSA_2048', ttl: '3y', parentCaId: ca.mid });
    for (const name of ['root', 'mid', 'issuing'] as const) {
      const res = await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${ca[name]}/certificate`, { token });
      if (res.status !== 200) throw new Error(`CA certificate: ${res.status} ${JSON.stringify(res.body)}`);
      caPem[name] = pemBlocks(res.body.certificate)[0]!;
    }
    const createProfile = async (slug: string, caId: string) => {
      const res = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId, slug, policy: LEAF_POLICY } });
      if (res.status !== 200) throw new Error(`create profile: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.certificateProfile.id as string;
    };
    profiles.deep = await createProfile('deep', ca.issuing);
    profiles.mid = await createProfile('mid', ca.mid);
    CASES.forEach((c, index) => csrs.push(makeCsr(c, index)));
  });

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const expectedChain = (profile: Case['profile']) => (profile === 'deep' ? [caPem.issuing, caPem.mid, caPem.root] : [caPem.mid, caPem.root]);

  describe.each(CASES.map((c, index) => ({ ...c, index })))('$name', (c) => {
    let body: any;
    let leaf: string;

    it('is signed: 200 with exactly the spec fields', async () => {
      const requestedAt = Date.now();
      const res = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId: profiles[c.profile], csr: csrs[c.index], ttl: c.ttl } });
      const answeredAt = Date.now();
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(Object.keys(res.body).sort()).toEqual(['certificate', 'certificateChain', 'certificateId', 'issuingCaCertificate', 'serialNumber']);
      for (const value of Object.values(res.body)) expect(typeof value).toBe('string');
      expect(res.body.certificateId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      body = res.body;
      expect(pemBlocks(body.certificate)).toHaveLength(1);
      leaf = pemBlocks(body.certificate)[0]!;
      issued.push({ case: c, body, requestedAt, answeredAt });
    });

    it('passes openssl verify -x509_strict against root + chain (and as a TLS server)', () => {
      const chain = pemBlocks(body.certificateChain);
      const root = chain[chain.length - 1]!;
      const result = opensslVerify(root, chain, leaf);
      expect(result.status, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toMatch(/: OK\s*$/);
      // serverAuth is always set by the profile and digitalSignature always: a TLS server cert.
      const asServer = opensslVerify(root, chain, leaf, ['-purpose', 'sslserver']);
      expect(asServer.status, asServer.stdout + asServer.stderr).toBe(0);
    });

    it('passes GnuTLS certtool --verify-chain and --verify against the root alone', () => {
      const chain = pemBlocks(body.certificateChain);
      const bundle = writePem(`bundle-${c.index}.pem`, [leaf, ...chain]);
      const chainRun = run('certtool', ['--verify-chain', '--infile', bundle]);
      expect(chainRun.status, chainRun.stdout + chainRun.stderr).toBe(0);
      expect(chainRun.stdout).toMatch(/Chain verification output: Verified\./);
      expect(chainRun.stdout).not.toMatch(/Not verified/);

      const root = writePem(`gnutls-root-${c.index}.pem`, [chain[chain.length - 1]!]);
      const leafAndIntermediates = writePem(`gnutls-leaf-${c.index}.pem`, [leaf, ...chain.slice(0, -1)]);
      const dns = c.sans.find((san) => san.startsWith('DNS:'))!.slice(4);
      const anchored = run('certtool', ['--verify', '--verify-profile=medium', '--load-ca-certificate', root, '--infile', leafAndIntermediates, `--verify-hostname=${dns}`]);
      expect(anchored.status, anchored.stdout + anchored.stderr).toBe(0);
      expect(anchored.stdout).toMatch(/Chain verification output: Verified\. The certificate is trusted\./);
      // The same check must be able to fail: a name the certificate does not carry.
      const wrongName = run('certtool', ['--verify', '--load-ca-certificate', root, '--infile', leafAndIntermediates, '--verify-hostname=not-in.issue.invalid']);
      expect(wrongName.status).not.toBe(0);
    });

    it("carries the CSR's public key and subject", () => {
      const certKey = openssl('x509', '-in', writePem(`pk-${c.index}.pem`, [leaf]), '-noout', '-pubkey');
      const csrKey = openssl('req', '-in', file(`case-${c.index}.csr`), '-noout', '-pubkey');
      expect(certKey).toBe(csrKey);
      const keyFileKey = openssl('pkey', '-in', file(`${c.key}.key`), '-pubout');
      expect(certKey).toBe(keyFileKey);
      const certSubject = openssl('x509', '-in', file(`pk-${c.index}.pem`), '-noout', '-subject', '-nameopt', 'RFC2253');
      const csrSubject = openssl('req', '-in', file(`case-${c.index}.csr`), '-noout', '-subject', '-nameopt', 'RFC2253');
      expect(certSubject.replace(/^subject=/, '').trim()).toBe(csrSubject.replace(/^subject=/, '').trim());
    });

    it('returns serialNumber = the certificate serial, 40 lowercase hex, positive', () => {
      expect(body.serialNumber).toMatch(/^[0-7][0-9a-f]{39}$/);
      const printed = openssl('x509', '-in', writePem(`serial-${c.index}.pem`, [leaf]), '-noout', '-serial').trim();
      expect(printed).toBe(`serial=${body.serialNumber.toUpperCase()}`);
    });

    it('has the chain as specified: issuing CA first, up to the root, leaf excluded', () => {
      const chain = pemBlocks(body.certificateChain);
      expect(chain).toEqual(expectedChain(c.profile));
      expect(pemBlocks(body.issuingCaCertificate)).toEqual([chain[0]]);
      expect(chain).not.toContain(leaf);
      // Each certificate is issued by the next; the last is self-signed.
      const parsed = [leaf, ...chain].map((pem) => new X509Certificate(pem));
      for (let i = 0; i + 1 < parsed.length; i++) {
        expect(parsed[i]!.checkIssued(parsed[i + 1]!), `certificate ${i} issued by ${i + 1}`).toBe(true);
        expect(parsed[i]!.verify(parsed[i + 1]!.publicKey), `signature of ${i} by ${i + 1}`).toBe(true);
      }
      const root = parsed[parsed.length - 1]!;
      expect(root.checkIssued(root) && root.verify(root.publicKey)).toBe(true);
    });

    it('is valid for exactly ttl, from the time of the request', () => {
      const entry = issued.find((item) => item.case.name === c.name)!;
      const certificate = new X509Certificate(leaf);
      const notBefore = Date.parse(certificate.validFrom);
      const notAfter = Date.parse(certificate.validTo);
      expect((notAfter - notBefore) / 1000).toBe(c.ttlSeconds);
      expect(notBefore).toBeGreaterThanOrEqual(Math.floor(entry.requestedAt / 1000) * 1000);
      expect(notBefore).toBeLessThanOrEqual(entry.answeredAt);
    });

    it('has the SANs, key usages, extended key usages and basic constraints asked for', () => {
      const san = extensionText(leaf, 'subjectAltName');
      expect(san).toBeDefined();
      expect(splitList(san!.values).sort()).toEqual(c.sans.map(sanText).sort());
      // A subject is present, so the SAN extension is not critical (RFC 5280 §4.2.1.6).
      expect(san!.critical).toBe(false);

      const ku = extensionText(leaf, 'keyUsage');
      expect(ku?.critical).toBe(true);
      const wantedKu = new Set(['digitalSignature', ...(c.keyUsages ?? [])]);
      expect(splitList(ku!.values).sort()).toEqual([...wantedKu].map((name) => KU_TEXT[name]).sort());

      const eku = extensionText(leaf, 'extendedKeyUsage');
      const wantedEku = new Set(['serverAuth', ...(c.extendedKeyUsages ?? [])]);
      expect(splitList(eku?.values).sort()).toEqual([...wantedEku].map((name) => EKU_TEXT[name]).sort());

      const basic = extensionText(leaf, 'basicConstraints');
      expect(basic).toEqual({ critical: true, values: 'CA:FALSE' });
      expect(extensionText(leaf, 'subjectKeyIdentifier')).toBeDefined();
      // The AKI names the issuing CA's SKI.
      const aki = extensionText(leaf, 'authorityKeyIdentifier')!.values.replace(/^keyid:/, '');
      expect(aki).toBe(extensionText(pemBlocks(body.issuingCaCertificate)[0]!, 'subjectKeyIdentifier')!.values);
    });
  });

  it('negative control: the same openssl and certtool checks refuse a leaf whose signature was altered', () => {
    const { body } = issued[0]!;
    const der = Buffer.from(derOf(body.certificate));
    der[der.length - 5]! ^= 0x01;
    const tampered = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
    const chain = pemBlocks(body.certificateChain);
    const strict = opensslVerify(chain[chain.length - 1]!, chain, tampered);
    expect(strict.status).not.toBe(0);
    expect(strict.stdout + strict.stderr).toMatch(/signature failure/i);
    const gnutls = run('certtool', ['--verify-chain', '--infile', writePem('tampered-bundle.pem', [tampered, ...chain])]);
    expect(gnutls.stdout).toMatch(/Not verified/);
    // And a leaf of one hierarchy does not verify under another root (the demo root).
    const other = opensslVerify(caPem.mid, [], body.certificate);
    expect(other.status).not.toBe(0);
  });

  it('GET certificate body returns what sign-certificate returned', async () => {
    expect(issued).toHaveLength(CASES.length);
    for (const { body } of issued) {
      const res = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates/${body.certificateId}/certificate`, { token });
      expect(res.status).toBe(200);
      expect(Object.keys(res.body).sort()).toEqual(['certificate', 'certificateChain', 'serialNumber']);
      expect(pemBlocks(res.body.certificate)).toEqual(pemBlocks(body.certificate));
      expect(pemBlocks(res.body.certificateChain)).toEqual(pemBlocks(body.certificateChain));
      expect(res.body.serialNumber).toBe(body.serialNumber);
    }
  });

  it('GET certificate record has subject, SANs, serial, validity, status and fingerprints', async () => {
    for (const { body, case: c } of issued) {
      const res = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates/${body.certificateId}`, { token });
      expect(res.status).toBe(200);
      const record = res.body.certificate;
      const certificate = new X509Certificate(body.certificate);
      expect(record.id).toBe(body.certificateId);
      expect(record.projectId).toBe(PROJECT);
      expect(record.caId).toBe(c.profile === 'deep' ? ca.issuing : ca.mid);
      expect(record.profileId).toBe(profiles[c.profile]);
      expect(record.serialNumber).toBe(body.serialNumber);
      expect(record.status).toBe('active');
      expect(record.revokedAt ?? null).toBeNull();
      expect(new Date(record.notBefore).getTime()).toBe(Date.parse(certificate.validFrom));
      expect(new Date(record.notAfter).getTime()).toBe(Date.parse(certificate.validTo));
      // Subject: every attribute value of the CSR subject is named.
      const cn = /CN=([^/]+)/.exec(c.subject)![1]!;
      expect(record.subject).toContain(`CN=${cn}`);
      if (c.subject.includes('O=Acme Corp')) expect(record.subject).toContain('O=Acme Corp');
      // SANs: each one as {type, value}.
      expect(Array.isArray(record.subjectAltNames)).toBe(true);
      expect(record.subjectAltNames).toHaveLength(c.sans.length);
      for (const san of c.sans) {
        const value = san.slice(san.indexOf(':') + 1);
        const found = record.subjectAltNames.some((item: { type: string; value: string }) => {
          if (typeof item.value !== 'string') return false;
          if (san.startsWith('IP:') && value.includes(':')) return sanText(`IP:${item.value}`) === sanText(san);
          return item.value === value;
        });
        expect(found, `${san} in ${JSON.stringify(record.subjectAltNames)}`).toBe(true);
      }
      // Fingerprints: the real digests of the DER (compared without separators or case).
      const hex = (text: string) => text.replace(/:/g, '').toLowerCase();
      expect(hex(record.fingerprints.sha256)).toBe(createHash('sha256').update(certificate.raw).digest('hex'));
      expect(hex(record.fingerprints.sha1)).toBe(createHash('sha1').update(certificate.raw).digest('hex'));
    }
  });

  it('lists certificates with pagination (offset/limit, totalCount, no repeats, no gaps)', async () => {
    const all = new Set(issued.map((item) => item.body.certificateId as string));
    const seen: string[] = [];
    for (let offset = 0; offset < all.size + 3; offset += 3) {
      const res = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=${PROJECT}&offset=${offset}&limit=3`, { token });
      expect(res.status).toBe(200);
      expect(res.body.totalCount).toBe(all.size);
      expect(res.body.certificates.length).toBe(Math.max(0, Math.min(3, all.size - offset)));
      seen.push(...res.body.certificates.map((item: { id: string }) => item.id));
    }
    expect(seen).toHaveLength(all.size);
    expect(new Set(seen)).toEqual(all);
    const bad = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates?projectId=${PROJECT}&limit=101`, { token });
    expect(bad.status).toBe(422);
    const other = await request(svc.url, 'GET', '/api/v1/cert-manager/certificates?projectId=some-other-project', { token });
    expect(other.status).toBe(200);
    expect(other.body).toEqual({ certificates: [], totalCount: 0 });
  });

  it('serves each issuing CA certificate at the DER URL named in the AIA extension, without auth', async () => {
    for (const { body } of issued) {
      const aia = extensionText(body.certificate, 'authorityInfoAccess');
      const url = /CA Issuers - URI:(\S+)/.exec(aia?.values ?? '')?.[1];
      expect(url, aia?.values).toMatch(new RegExp(`^${svc.url.replace(/[.]/g, '\\.')}/`));
      const res = await fetch(url!);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^application\/pkix-cert/);
      expect(Buffer.from(await res.arrayBuffer()).equals(derOf(body.issuingCaCertificate))).toBe(true);
    }
    // The intermediates name their parent the same way.
    for (const [child, parent] of [
      ['issuing', 'mid'],
      ['mid', 'root'],
    ] as const) {
      const url = /CA Issuers - URI:(\S+)/.exec(extensionText(caPem[child], 'authorityInfoAccess')?.values ?? '')?.[1];
      const res = await fetch(url!);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(derOf(caPem[parent]))).toBe(true);
    }
  });

  it('names a CRL distribution point that serves a CRL signed by the issuing CA', async () => {
    for (const profile of ['deep', 'mid'] as const) {
      const { body } = issued.find((item) => item.case.profile === profile)!;
      const cdp = extensionText(body.certificate, 'crlDistributionPoints');
      const url = /URI:(\S+)/.exec(cdp?.values ?? '')?.[1];
      expect(url).toBeDefined();
      const res = await fetch(url!);
      expect(res.status).toBe(200);
      writeFileSync(file(`cdp-${profile}.der`), Buffer.from(await res.arrayBuffer()));
      const verified = run('openssl', ['crl', '-inform', 'DER', '-in', file(`cdp-${profile}.der`), '-noout', '-verify', '-CAfile', writePem(`cdp-issuer-${profile}.pem`, [pemBlocks(body.issuingCaCertificate)[0]!])]);
      expect(verified.status, verified.stderr).toBe(0);
      expect(verified.stderr).toMatch(/verify OK/);
    }
  });

  it('CA certificate endpoint returns {certificate, certificateChain, serialNumber} for each CA', async () => {
    const above = { root: [] as string[], mid: [caPem.root], issuing: [caPem.mid, caPem.root] };
    for (const name of ['root', 'mid', 'issuing'] as const) {
      const res = await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${ca[name]}/certificate`, { token });
      expect(res.status).toBe(200);
      expect(Object.keys(res.body).sort()).toEqual(['certificate', 'certificateChain', 'serialNumber']);
      expect(pemBlocks(res.body.certificate)).toEqual([caPem[name]]);
      // The chain above the CA, its issuer first; a root has nothing above it.
      const chain = pemBlocks(res.body.certificateChain).filter((pem) => pem !== caPem[name] || name !== 'root');
      expect(chain).toEqual(above[name]);
      const printed = openssl('x509', '-in', writePem(`ca-${name}.pem`, [caPem[name]]), '-noout', '-serial').trim();
      expect(res.body.serialNumber).toMatch(/^[0-9a-f]+$/);
      expect(printed).toBe(`serial=${res.body.serialNumber.toUpperCase()}`);
      const record = await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${ca[name]}`, { token });
      expect(record.status).toBe(200);
      expect(record.body.ca.serialNumber).toBe(res.body.serialNumber);
      expect(record.body.ca.status).toBe('active');
    }
    // The CA certificates themselves: CA:TRUE, keyCertSign + cRLSign, and strict verification.
    for (const name of ['root', 'mid', 'issuing'] as const) {
      expect(extensionText(caPem[name], 'basicConstraints')?.critical).toBe(true);
      expect(extensionText(caPem[name], 'basicConstraints')?.values).toMatch(/^CA:TRUE/);
      expect(splitList(extensionText(caPem[name], 'keyUsage')?.values).sort()).toEqual(['CRL Sign', 'Certificate Sign']);
    }
    const strict = opensslVerify(caPem.root, [caPem.mid], caPem.issuing);
    expect(strict.status, strict.stdout + strict.stderr).toBe(0);
  });

  it('issues under the demo PKI of the first start (profileId and caId from admin-credentials.json)', async () => {
    const { profileId, caId } = svc.admin as unknown as { profileId: string; caId: string };
    expect(profileId).toMatch(/^[0-9a-f-]{36}$/);
    openssl('req', '-new', '-key', file('p256.key'), '-subj', '/CN=demo.example.net', '-addext', 'subjectAltName=DNS:demo.example.net,IP:192.0.2.10', '-out', file('demo.csr'));
    const res = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr: readFileSync(file('demo.csr'), 'utf8'), ttl: '90d' } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const chain = pemBlocks(res.body.certificateChain);
    expect(chain).toHaveLength(2);
    const caCert = await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${caId}/certificate`, { token });
    expect(pemBlocks(caCert.body.certificate)).toEqual([chain[0]]);
    const leaf = pemBlocks(res.body.certificate)[0]!;
    const strict = opensslVerify(chain[1]!, chain, leaf);
    expect(strict.status, strict.stdout + strict.stderr).toBe(0);
    const gnutls = run('certtool', ['--verify-chain', '--infile', writePem('demo-bundle.pem', [leaf, ...chain])]);
    expect(gnutls.status, gnutls.stdout).toBe(0);
    expect(gnutls.stdout).toMatch(/Chain verification output: Verified\./);
    const certificate = new X509Certificate(leaf);
    expect((Date.parse(certificate.validTo) - Date.parse(certificate.validFrom)) / 1000).toBe(90 * 86400);
  });

  it('an empty subject with a SAN gets a critical SAN extension and passes -x509_strict (demo profile)', async () => {
    const { profileId } = svc.admin as unknown as { profileId: string };
    openssl('req', '-new', '-key', file('p256.key'), '-subj', '/', '-addext', 'subjectAltName=DNS:nameless.example.net', '-out', file('nameless.csr'));
    const res = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr: readFileSync(file('nameless.csr'), 'utf8'), ttl: '1d' } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const leaf = pemBlocks(res.body.certificate)[0]!;
    expect(openssl('x509', '-in', writePem('nameless.pem', [leaf]), '-noout', '-subject').trim()).toBe('subject=');
    expect(extensionText(leaf, 'subjectAltName')).toEqual({ critical: true, values: 'DNS:nameless.example.net' });
    const chain = pemBlocks(res.body.certificateChain);
    const strict = opensslVerify(chain[chain.length - 1]!, chain, leaf);
    expect(strict.status, strict.stdout + strict.stderr).toBe(0);
  });

  it('accepts an emailAddress subject attribute when the profile allows emailAddress', async () => {
    // policy.ts documents subject rule types as OpenSSL names them (CN, O, ..., emailAddress).
    const policy = { ...LEAF_POLICY, subject: [...LEAF_POLICY.subject, { type: 'emailAddress', allowed: ['*@issue.test'] }] };
    const created = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId: ca.issuing, slug: 'with-email-subject', policy } });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    openssl('req', '-new', '-key', file('p256.key'), '-subj', '/CN=mail.issue.test/emailAddress=admin@issue.test', '-addext', 'subjectAltName=DNS:mail.issue.test', '-out', file('email-subject.csr'));
    const res = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', {
      token,
      body: { profileId: created.body.certificateProfile.id, csr: readFileSync(file('email-subject.csr'), 'utf8'), ttl: '1d' },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const subject = openssl('x509', '-in', writePem('email-subject.pem', [res.body.certificate]), '-noout', '-subject', '-nameopt', 'RFC2253');
    expect(subject).toContain('emailAddress=admin@issue.test');
  });

  it("keeps every CA's private key in the token sensitive and never extractable", () => {
    const { caId: demoIssuing } = svc.admin as unknown as { caId: string };
    const objects = tokenObjects(svc).filter((object) => object.label.startsWith('hsm-signer:ca:'));
    const privateKeys = objects.filter((object) => object.class === 'private');
    for (const id of [ca.root, ca.mid, ca.issuing, demoIssuing]) {
      const key = privateKeys.find((object) => object.label === `hsm-signer:ca:${id}`);
      expect(key, `private key of CA ${id}`).toBeDefined();
    }
    // The demo root too: two demo CAs plus the three made here.
    expect(privateKeys.length).toBeGreaterThanOrEqual(5);
    for (const key of privateKeys) {
      expect(key, key.label).toMatchObject({ token: true, sensitive: true, extractable: false, private: true, neverExtractable: true, alwaysSensitive: true });
      expect(key.valueReadable, key.label).not.toBe(true);
    }
    // No secret (symmetric) key or other object carries a CA label.
    expect(objects.every((object) => object.class === 'private' || object.class === 'public')).toBe(true);
  });
});
