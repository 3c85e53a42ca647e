/**
 * Issue 3, revocation: a revoked certificate shows in the issuing CA's next CRL, served as DER
 * without auth at the URL the certificate names; openssl accepts the CRL's signature, rejects
 * the revoked certificate under -crl_check and accepts another; the CRL number increases;
 * thisUpdate <= now < nextUpdate; each revocation reason shows.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Ajv, type ValidateFunction } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdentity, login, request, type ApiResponse } from '../helpers/http.js';
import { openssl, run, type Run } from '../helpers/cli.js';
import { startTestService, type TestService } from '../helpers/service.js';

const SPEC = JSON.parse(readFileSync(new URL('../fixtures/spec-error-schemas.json', import.meta.url), 'utf8')) as { pki: Record<string, Record<string, unknown>> };
const ajv = new Ajv({ allErrors: true, strict: false });
const validators = new Map<number, ValidateFunction>();
function expectError(res: ApiResponse, status: number, message?: RegExp): void {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 500)}`).toBe(status);
  let validate = validators.get(status);
  if (!validate) validators.set(status, (validate = ajv.compile(SPEC.pki[String(status)]!)));
  expect(validate(res.body), `envelope: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(res.body)}`).toBe(true);
  expect(res.headers.get('x-request-id')).toBe(res.body.reqId);
  if (message) expect(typeof res.body.message === 'string' ? res.body.message : JSON.stringify(res.body.message)).toMatch(message);
}

const execFileAsync = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), 'pki-revocation-'));
const file = (name: string) => join(work, name);


const pemBlocks = (text: string): string[] => (text.match(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g) ?? []).map((pem) => `${pem.trim()}\n`);
const write = (name: string, content: string | Buffer) => {
  writeFileSync(file(name), content);
  return file(name);
};

/** What openssl prints for each revocation reason of the API (docs/contract.md). */
const REASON_TEXT: Record<string, string> = {
  UNSPECIFIED: 'Unspecified',
  KEY_COMPROMISE: 'Key Compromise',
  CA_COMPROMISE: 'CA Compromise',
  AFFILIATION_CHANGED: 'Affiliation Changed',
  SUPERSEDED: 'Superseded',
  CESSATION_OF_OPERATION: 'Cessation Of Operation',
  CERTIFICATE_HOLD: 'Certificate Hold',
  PRIVILEGE_WITHDRAWN: 'Privilege Withdrawn',
  A_A_COMPROMISE: 'AA Compromise',
};

interface Crl {
  der: Buffer;
  pemPath: string;
  number: number;
  thisUpdate: number;
  nextUpdate: number;
  fetchedAt: number;
  /** serial (lowercase hex) → {date, reason} as openssl prints them. */
  entries: Map<string, { revokedAt: number; reason: string | undefined }>;
  text: string;
}

let crlCount = 0;
/** Fetches a CRL without credentials and reads it with openssl. */
async function fetchCrl(url: string): Promise<Crl> {
  const res = await fetch(url);
  const fetchedAt = Date.now();
  expect(res.status, url).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/pkix-crl/);
  const der = Buffer.from(await res.arrayBuffer());
  const n = crlCount++;
  const derPath = write(`crl-${n}.der`, der);
  const pemPath = file(`crl-${n}.pem`);
  openssl('crl', '-inform', 'DER', '-in', derPath, '-out', pemPath);
  const text = openssl('crl', '-in', pemPath, '-noout', '-text');
  const fields = openssl('crl', '-in', pemPath, '-noout', '-crlnumber', '-lastupdate', '-nextupdate');
  const number = parseInt(/crlNumber=(?:0x)?([0-9A-Fa-f]+)/.exec(fields)![1]!, 16);
  const thisUpdate = Date.parse(/lastUpdate=(.+)/.exec(fields)![1]!.trim());
  const nextUpdate = Date.parse(/nextUpdate=(.+)/.exec(fields)![1]!.trim());
  const entries = new Map<string, { revokedAt: number; reason: string | undefined }>();
  const revokedSection = text.split('Revoked Certificates:')[1] ?? '';
  for (const chunk of revokedSection.split(/Serial Number:\s*/).slice(1)) {
    const serial = /^([0-9A-Fa-f]+)/.exec(chunk)![1]!.toLowerCase();
    const revokedAt = Date.parse(/Revocation Date:\s*(.+)/.exec(chunk)![1]!.trim());
    const reason = /X509v3 CRL Reason Code:\s*\n\s*(.+)/.exec(chunk)?.[1]?.trim();
    entries.set(serial, { revokedAt, reason });
  }
  return { der, pemPath, number, thisUpdate, nextUpdate, fetchedAt, entries, text };
}

const PROJECT = 'pki-revocation';
const POLICY = {
  subject: [{ type: 'CN', allowed: ['**.revocation.test'] }],
  sans: { dns: ['**.revocation.test'] },
  keyUsages: { allowed: [], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: [], always: ['serverAuth'] },
  keyAlgorithms: ['EC_prime256v1'],
  maxValidity: '90d',
};

describe('revocation and CRLs', () => {
  let svc: TestService;
  let token: string;
  let rootId = '';
  let interId = '';
  let rootPem = '';
  let interPem = '';
  let profileId = '';
  let crlUrl = '';
  let rootCrlUrl = '';
  let leafCount = 0;
  let lastNumber = -1;

  async function issue(): Promise<{ certificateId: string; serialNumber: string; certificate: string; path: string }> {
    const name = `leaf${leafCount++}`;
    // One key is enough: revocation is per certificate (serial), not per key.
    openssl('req', '-new', '-key', file('leaf.key'), '-subj', `/CN=${name}.revocation.test`, '-addext', `subjectAltName=DNS:${name}.revocation.test`, '-out', file(`${name}.csr`));
    const res = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr: readFileSync(file(`${name}.csr`), 'utf8'), ttl: '30d' } });
    if (res.status !== 200) throw new Error(`issue: ${res.status} ${JSON.stringify(res.body)}`);
    return { ...res.body, path: write(`${name}.pem`, res.body.certificate) };
  }

  const revoke = (certificateId: string, revocationReason: string, as = token) =>
    request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${certificateId}/revoke`, { token: as, body: { revocationReason } });

  function checkWithCrl(leafPath: string, crls: Crl[], all = false): Run {
    const bundle = write(`crls-${crlCount}.pem`, crls.map((crl) => readFileSync(crl.pemPath, 'utf8')).join(''));
    return run('openssl', ['verify', '-x509_strict', all ? '-crl_check_all' : '-crl_check', '-CAfile', file('root.pem'), '-untrusted', file('inter.pem'), '-CRLfile', bundle, leafPath]);
  }

  /** The CRL is signed by the issuing CA (openssl crl -verify) and is current. */
  function expectSoundCrl(crl: Crl, issuerPemPath: string): void {
    const verified = run('openssl', ['crl', '-in', crl.pemPath, '-noout', '-verify', '-CAfile', issuerPemPath]);
    expect(verified.status, verified.stderr).toBe(0);
    expect(verified.stderr).toMatch(/verify OK/);
    expect(crl.thisUpdate).toBeLessThanOrEqual(crl.fetchedAt);
    expect(crl.nextUpdate).toBeGreaterThan(crl.fetchedAt);
    expect(crl.text).toMatch(/Version 2/);
  }

  beforeAll(async () => {
    const key = execFileAsync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file('leaf.key')]);
    svc = await startTestService();
    await key;
    token = await login(svc.url, svc.admin);
    const root = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', { token, body: { projectId: PROJECT, type: 'root', commonName: 'Revocation Root', keyAlgorithm: 'EC_prime256v1', ttl: '2y' } });
    if (root.status !== 200) throw new Error(JSON.stringify(root.body));
    rootId = root.body.ca.id;
    const inter = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', {
      token,
      body: { projectId: PROJECT, type: 'intermediate', commonName: 'Revocation Issuing', keyAlgorithm: 'RSA_2048', ttl: '1y', parentCaId: rootId },
    });
    if (inter.status !== 200) throw new Error(JSON.stringify(inter.body));
    interId = inter.body.ca.id;
    rootPem = pemBlocks((await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${rootId}/certificate`, { token })).body.certificate)[0]!;
    interPem = pemBlocks((await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${interId}/certificate`, { token })).body.certificate)[0]!;
    write('root.pem', rootPem);
    write('inter.pem', interPem);
    const profile = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId: interId, slug: 'leaves', policy: POLICY } });
    if (profile.status !== 200) throw new Error(JSON.stringify(profile.body));
    profileId = profile.body.certificateProfile.id;
    crlUrl = `${svc.url}/pki/ca/${interId}/crl.der`;
    rootCrlUrl = `${svc.url}/pki/ca/${rootId}/crl.der`;
  });

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("names its CRL URL in issued certificates (and in the intermediate's certificate, the root's CRL)", async () => {
    const leaf = await issue();
    const cdp = openssl('x509', '-in', leaf.path, '-noout', '-ext', 'crlDistributionPoints');
    expect(/URI:(\S+)/.exec(cdp)?.[1]).toBe(crlUrl);
    const interCdp = openssl('x509', '-in', file('inter.pem'), '-noout', '-ext', 'crlDistributionPoints');
    expect(/URI:(\S+)/.exec(interCdp)?.[1]).toBe(rootCrlUrl);
  });

  it('a fresh CA serves an empty, signed, current CRL without credentials', async () => {
    const crl = await fetchCrl(crlUrl);
    expectSoundCrl(crl, file('inter.pem'));
    expect(crl.entries.size).toBe(0);
    expect(crl.number).toBeGreaterThanOrEqual(1);
    lastNumber = crl.number;
    // The CRL names its issuer and the issuer's key.
    expect(crl.text).toMatch(/Issuer: CN = Revocation Issuing/);
    const ski = openssl('x509', '-in', file('inter.pem'), '-noout', '-ext', 'subjectKeyIdentifier').split('\n')[1]!.trim();
    expect(crl.text).toContain(ski);
    const rootCrl = await fetchCrl(rootCrlUrl);
    expectSoundCrl(rootCrl, file('root.pem'));
    // The intermediate's CRL does not verify under the root's key.
    expect(run('openssl', ['crl', '-in', crl.pemPath, '-noout', '-verify', '-CAfile', file('root.pem')]).status).not.toBe(0);
  });

  it('a revoked certificate shows in the next CRL; openssl -crl_check rejects it and accepts another', async () => {
    const revoked = await issue();
    const kept = await issue();
    const before = await fetchCrl(crlUrl);
    // Before the revocation, both pass the CRL check.
    expect(checkWithCrl(revoked.path, [before]).status).toBe(0);

    const res = await revoke(revoked.certificateId, 'KEY_COMPROMISE');
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['message', 'revokedAt', 'serialNumber']);
    expect(res.body.serialNumber).toBe(revoked.serialNumber);
    const revokedAt = Date.parse(res.body.revokedAt);
    expect(Number.isNaN(revokedAt)).toBe(false);
    expect(Math.abs(revokedAt - Date.now())).toBeLessThan(10_000);

    const crl = await fetchCrl(crlUrl);
    expectSoundCrl(crl, file('inter.pem'));
    expect(crl.number).toBeGreaterThan(before.number);
    expect(crl.number).toBeGreaterThan(lastNumber);
    lastNumber = crl.number;
    expect([...crl.entries.keys()]).toEqual([revoked.serialNumber]);
    expect(crl.entries.get(revoked.serialNumber)).toEqual({ revokedAt, reason: 'Key Compromise' });
    expect(crl.entries.has(kept.serialNumber)).toBe(false);

    const rejected = checkWithCrl(revoked.path, [crl]);
    expect(rejected.status).not.toBe(0);
    expect(rejected.stdout + rejected.stderr).toMatch(/certificate revoked/);
    const accepted = checkWithCrl(kept.path, [crl]);
    expect(accepted.status, accepted.stdout + accepted.stderr).toBe(0);
    expect(accepted.stdout).toMatch(/: OK/);

    // With the root's CRL as well, the whole chain is checked (-crl_check_all).
    const rootCrl = await fetchCrl(rootCrlUrl);
    const all = checkWithCrl(kept.path, [crl, rootCrl], true);
    expect(all.status, all.stdout + all.stderr).toBe(0);
    expect(checkWithCrl(revoked.path, [crl, rootCrl], true).status).not.toBe(0);

    // GnuTLS agrees.
    const chainFile = write('gnutls-revoked.pem', readFileSync(revoked.path, 'utf8') + interPem);
    const gnutls = run('certtool', ['--verify', '--load-ca-certificate', file('root.pem'), '--load-crl', crl.pemPath, '--infile', chainFile]);
    expect(gnutls.status).not.toBe(0);
    expect(gnutls.stdout).toMatch(/revoked/i);
    const gnutlsKept = run('certtool', ['--verify', '--load-ca-certificate', file('root.pem'), '--load-crl', crl.pemPath, '--infile', write('gnutls-kept.pem', readFileSync(kept.path, 'utf8') + interPem)]);
    expect(gnutlsKept.status, gnutlsKept.stdout).toBe(0);

    // The record says so too.
    const record = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates/${revoked.certificateId}`, { token });
    expect(record.body.certificate).toMatchObject({ status: 'revoked', revocationReason: 'KEY_COMPROMISE' });
    expect(Date.parse(record.body.certificate.revokedAt)).toBe(revokedAt);
    const keptRecord = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates/${kept.certificateId}`, { token });
    expect(keptRecord.body.certificate.status).toBe('active');
  });

  it('every revocation reason shows in the CRL, and each revocation makes a CRL with a higher number', async () => {
    const byReason = new Map<string, { serialNumber: string; revokedAt: number }>();
    for (const reason of Object.keys(REASON_TEXT)) {
      const leaf = await issue();
      const res = await revoke(leaf.certificateId, reason);
      expect(res.status, `${reason}: ${JSON.stringify(res.body)}`).toBe(200);
      byReason.set(reason, { serialNumber: leaf.serialNumber, revokedAt: Date.parse(res.body.revokedAt) });
      const crl = await fetchCrl(crlUrl);
      expect(crl.number, `CRL number after revoking with ${reason}`).toBeGreaterThan(lastNumber);
      lastNumber = crl.number;
      expect(crl.entries.has(leaf.serialNumber), `${reason} in the next CRL`).toBe(true);
    }
    const crl = await fetchCrl(crlUrl);
    expectSoundCrl(crl, file('inter.pem'));
    for (const [reason, { serialNumber, revokedAt }] of byReason) {
      const entry = crl.entries.get(serialNumber);
      expect(entry, reason).toBeDefined();
      expect(entry!.revokedAt, reason).toBe(revokedAt);
      // RFC 5280 §5.3.1 lets an "unspecified" entry omit the reason code; any other must carry it.
      if (reason === 'UNSPECIFIED') expect([undefined, 'Unspecified']).toContain(entry!.reason);
      else expect(entry!.reason, reason).toBe(REASON_TEXT[reason]);
    }
    // The earlier revocation is still there.
    expect(crl.entries.size).toBe(1 + byReason.size);
  });

  it('the CRL is stable between revocations (number never goes down) and stays current', async () => {
    const first = await fetchCrl(crlUrl);
    const second = await fetchCrl(crlUrl);
    expect(second.number).toBeGreaterThanOrEqual(first.number);
    expect(first.number).toBeGreaterThanOrEqual(lastNumber);
    expect([...second.entries.keys()].sort()).toEqual([...first.entries.keys()].sort());
    expectSoundCrl(second, file('inter.pem'));
  });

  it('refused revocations: already revoked (400), unknown (404), bad reason or id (422), no permission (403); the CRL does not change', async () => {
    const leaf = await issue();
    expect((await revoke(leaf.certificateId, 'SUPERSEDED')).status).toBe(200);
    const before = await fetchCrl(crlUrl);
    lastNumber = before.number;
    expectError(await revoke(leaf.certificateId, 'KEY_COMPROMISE'), 400, /already revoked/i);
    expectError(await revoke(randomUUID(), 'KEY_COMPROMISE'), 404);
    expectError(await revoke(leaf.certificateId, 'BECAUSE'), 422, /revocationReason/);
    expectError(await revoke('not-a-uuid', 'KEY_COMPROMISE'), 422);
    expectError(await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${leaf.certificateId}/revoke`, { token, body: {} }), 422, /revocationReason/);

    const other = await issue();
    const outsider = await createIdentity(svc.url, token, 'revocation-outsider', [{ projectId: 'elsewhere', actions: ['*'] }]);
    const reader = await createIdentity(svc.url, token, 'revocation-reader', [{ projectId: PROJECT, actions: ['read'] }]);
    expectError(await revoke(other.certificateId, 'KEY_COMPROMISE', await login(svc.url, outsider)), 403);
    expectError(await revoke(other.certificateId, 'KEY_COMPROMISE', await login(svc.url, reader)), 403);
    expectError(await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${other.certificateId}/revoke`, { body: { revocationReason: 'KEY_COMPROMISE' } }), 401);

    const after = await fetchCrl(crlUrl);
    expect(after.entries.has(other.serialNumber)).toBe(false);
    expect([...after.entries.keys()].sort()).toEqual([...before.entries.keys()].sort());
    // The first reason stays: revoking again did not overwrite it.
    expect(after.entries.get(leaf.serialNumber)?.reason).toBe('Superseded');
    const record = await request(svc.url, 'GET', `/api/v1/cert-manager/certificates/${other.certificateId}`, { token });
    expect(record.body.certificate.status).toBe('active');
  });

  it("revocations under one CA do not show in another CA's CRL", async () => {
    const rootCrl = await fetchCrl(rootCrlUrl);
    expect(rootCrl.entries.size).toBe(0);
    const { caId: demoCaId } = svc.admin as unknown as { caId: string };
    const demoCrl = await fetchCrl(`${svc.url}/pki/ca/${demoCaId}/crl.der`);
    expect(demoCrl.entries.size).toBe(0);
  });

  it('the CRL URL: unknown CA → 404, bad id → 422, no credentials needed', async () => {
    expectError(await request(svc.url, 'GET', `/pki/ca/${randomUUID()}/crl.der`), 404);
    expectError(await request(svc.url, 'GET', '/pki/ca/not-a-uuid/crl.der'), 422);
    const res = await fetch(crlUrl, { headers: { authorization: 'Bearer not-a-real-token' } });
    expect(res.status).toBe(200);
  });

  it('concurrent revocations: all show in the CRL that follows, and no CRL number is reused for a different CRL or goes down', async () => {
    const leaves = [];
    for (let i = 0; i < 16; i++) leaves.push(await issue());
    const before = await fetchCrl(crlUrl);

    // Fetch the CRL continuously (raw DER only: no blocking work on this event loop) while
    // the revocations run; read everything with openssl afterwards.
    let done = false;
    const poll = async () => {
      const seen: Buffer[] = [];
      while (!done) seen.push(Buffer.from(await (await fetch(crlUrl)).arrayBuffer()));
      return seen;
    };
    const pollers = [poll(), poll(), poll()];
    const results = await Promise.all(leaves.map((leaf, i) => revoke(leaf.certificateId, i % 2 ? 'KEY_COMPROMISE' : 'CESSATION_OF_OPERATION')));
    done = true;
    const observed = await Promise.all(pollers);
    for (const res of results) expect(res.status, JSON.stringify(res.body)).toBe(200);

    const crl = await fetchCrl(crlUrl);
    expectSoundCrl(crl, file('inter.pem'));
    expect(crl.number).toBeGreaterThan(before.number);
    const missing = leaves.filter((leaf) => !crl.entries.has(leaf.serialNumber)).map((leaf) => leaf.serialNumber);
    expect(missing, `revoked (200) but absent from CRL number ${crl.number}`).toEqual([]);
    for (const leaf of leaves.slice(0, 3)) expect(checkWithCrl(leaf.path, [crl]).status).not.toBe(0);

    // RFC 5280 §5.2.3: the CRL number is a monotonically increasing sequence number; two
    // different CRLs (different revoked sets) must not carry the same number.
    const parsed = new Map<string, { number: number; serials: string }>();
    const readDer = (der: Buffer) => {
      const key = der.toString('base64');
      if (!parsed.has(key)) {
        const path = write(`polled-${parsed.size}.der`, der);
        const number = parseInt(/crlNumber=(?:0x)?([0-9A-Fa-f]+)/.exec(openssl('crl', '-inform', 'DER', '-in', path, '-noout', '-crlnumber'))![1]!, 16);
        const text = openssl('crl', '-inform', 'DER', '-in', path, '-noout', '-text');
        const serials = [...text.matchAll(/Serial Number:\s*([0-9A-Fa-f]+)/g)].map((m) => m[1]!.toLowerCase()).sort().join(',');
        parsed.set(key, { number, serials });
      }
      return parsed.get(key)!;
    };
    const byNumber = new Map<number, Set<string>>();
    const wentDown: string[] = [];
    const dropped: string[] = [];
    for (const sequence of observed) {
      let previous = -1;
      let previousSerials = new Set<string>();
      for (const der of sequence) {
        const { number, serials } = readDer(der);
        if (!byNumber.has(number)) byNumber.set(number, new Set());
        byNumber.get(number)!.add(serials);
        if (number < previous) wentDown.push(`${previous} then ${number}`);
        // Once a revoked serial is served, a later CRL never leaves it out.
        const current = new Set(serials.split(',').filter(Boolean));
        const gone = [...previousSerials].filter((serial) => !current.has(serial));
        if (gone.length) dropped.push(`CRL number ${number} left out ${gone.length} serial(s) an earlier CRL (number ${previous}) listed`);
        previous = number;
        previousSerials = current;
      }
    }
    const reused = [...byNumber].filter(([, sets]) => sets.size > 1).map(([number, sets]) => `CRL number ${number} served with ${sets.size} different revoked sets (${[...sets].map((set) => set.split(',').filter(Boolean).length).join(', ')} entries)`);
    expect({ reused, wentDown, dropped }, `${observed.reduce((n, seq) => n + seq.length, 0)} CRL fetches observed`).toEqual({ reused: [], wentDown: [], dropped: [] });
  });
});
