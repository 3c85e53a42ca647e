/**
 * The real service on PostgreSQL (database.url): keys, encryption, signatures, a certificate
 * issued, revoked and in the CRL and OCSP, an EST enrollment, then a restart on the same database and token that finds
 * everything again, and the audit trail of both runs verified by `npm run audit:verify` with
 * DATABASE_URL set. Nothing here touches a SQLite file: the data directory holds the token.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, request, type ApiResponse } from '../helpers/http.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { newDataDir, startTestService, type TestService } from '../helpers/service.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const execFileAsync = promisify(execFile);
const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const VERIFY = join(ROOT, 'scripts', 'verify-audit.ts');
const KEYS = '/api/v1/kms/keys';
const work = mkdtempSync(join(tmpdir(), 'postgres-it-'));
const file = (name: string) => join(work, name);
const b64 = (text: string) => Buffer.from(text).toString('base64');

function ok(res: ApiResponse, status = 200): any {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 400)}`).toBe(status);
  return res.body;
}

function makeCsr(name: string): string {
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${name}.key`), '-subj', `/CN=${name}.svc.internal`, '-addext', `subjectAltName=DNS:${name}.svc.internal`, '-out', file(`${name}.csr`)], { stdio: 'ignore' });
  return readFileSync(file(`${name}.csr`), 'utf8');
}

/** `npm run audit:verify` as an operator runs it: the store named by DATABASE_URL alone. */
function verifyAudit(url: string, dataDir: string): { status: number | null; output: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, DATA_DIR: dataDir, LOG_LEVEL: 'silent' };
  delete env.DATABASE_PATH;
  const result = spawnSync(process.execPath, [TSX, VERIFY], { cwd: ROOT, encoding: 'utf8', env });
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
}

describe('the service on PostgreSQL', () => {
  let url: string;
  let dataDir: string;
  let svc: TestService;
  let token: string;
  const state: { aesKey?: string; signKey?: string; ciphertext?: string; signature?: string; certificateId?: string; serial?: string; crlUrl?: string } = {};

  beforeAll(async () => {
    url = await createTestDatabase();
    dataDir = newDataDir();
    svc = await startTestService({ database: { url } }, dataDir);
    token = await login(svc.url, svc.admin);
  });

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('keeps its store in PostgreSQL, not in a SQLite file', async () => {
    expect(existsSync(join(dataDir, 'hsm-signer.db'))).toBe(false);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ n: string }>('SELECT count(*) AS n FROM identities');
      expect(Number(rows[0]!.n)).toBe(1);
    } finally {
      await client.end();
    }
  });

  it('creates keys, encrypts and decrypts, signs and verifies', async () => {
    const aes = ok(await request(svc.url, 'POST', KEYS, { token, body: { projectId: 'default', name: 'pg-aes' } }));
    const ec = ok(await request(svc.url, 'POST', KEYS, { token, body: { projectId: 'default', name: 'pg-sign', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' } }));
    state.aesKey = aes.key.id;
    state.signKey = ec.key.id;
    const listed = ok(await request(svc.url, 'GET', `${KEYS}?projectId=default&search=PG-`, { token }));
    expect(listed.keys.map((k: any) => k.name).sort()).toEqual(['pg-aes', 'pg-sign']);

    const { ciphertext } = ok(await request(svc.url, 'POST', `${KEYS}/${state.aesKey}/encrypt`, { token, body: { plaintext: b64('on postgres') } }));
    state.ciphertext = ciphertext;
    expect(ok(await request(svc.url, 'POST', `${KEYS}/${state.aesKey}/decrypt`, { token, body: { ciphertext } })).plaintext).toBe(b64('on postgres'));

    const { signature } = ok(await request(svc.url, 'POST', `${KEYS}/${state.signKey}/sign`, { token, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('release') } }));
    state.signature = signature;
    const verified = ok(await request(svc.url, 'POST', `${KEYS}/${state.signKey}/verify`, { token, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('release'), signature } }));
    expect(verified.signatureValid).toBe(true);
  });

  it('answers a duplicate key name or profile slug with a 400, as on SQLite (PostgreSQL reports unique violations its own way)', async () => {
    const key = { projectId: 'default', name: 'twice', keyUsage: 'encrypt-decrypt', encryptionAlgorithm: 'aes-256-gcm' };
    expect((await request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: key })).status).toBe(200);
    const again = await request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: key });
    expect(again.status, JSON.stringify(again.body)).toBe(400);
    expect(again.body.message).toMatch(/already exists/);
    const profile = { projectId: 'default', caId: (svc.admin as { caId?: string }).caId, slug: 'tls-server', policy: { subject: [{ type: 'CN', allowed: ['**'] }], sans: { dns: ['**'] }, keyUsages: { always: ['digitalSignature'] }, extendedKeyUsages: { always: ['serverAuth'] }, keyAlgorithms: ['EC_prime256v1'], maxValidity: '30d' } };
    const duplicate = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: profile });
    expect(duplicate.status, JSON.stringify(duplicate.body)).toBe(400);
    expect(duplicate.body.message).toMatch(/already exists/);
  });

  it('issues a certificate, revokes it, and serves a CRL that lists it', async () => {
    const profileId = (svc.admin as any).profileId as string;
    const issued = ok(await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr: makeCsr('pg'), ttl: '7d' } }));
    state.certificateId = issued.certificateId;
    state.serial = issued.serialNumber;
    writeFileSync(file('leaf.pem'), issued.certificate);
    ok(await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${issued.certificateId}/revoke`, { token, body: { revocationReason: 'KEY_COMPROMISE' } }));
    state.crlUrl = /URI:(http\S+crl\.der)/.exec(execFileSync('openssl', ['x509', '-in', file('leaf.pem'), '-noout', '-ext', 'crlDistributionPoints'], { encoding: 'utf8' }))![1]!;
    const crl = await fetch(state.crlUrl);
    expect(crl.status).toBe(200);
    writeFileSync(file('crl.der'), Buffer.from(await crl.arrayBuffer()));
    const text = execFileSync('openssl', ['crl', '-inform', 'DER', '-in', file('crl.der'), '-noout', '-text'], { encoding: 'utf8' });
    expect(text.toLowerCase().replace(/[\s:]/g, '')).toContain(state.serial!.toLowerCase());
    // The CRL served is the one stored, under the number the store handed out for it.
    const number = Number(/X509v3 CRL Number:\s*\n\s*(\d+)/.exec(text)![1]);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ crl_number: string; crl_stored_number: string }>('SELECT crl_number, crl_stored_number FROM cas WHERE crl = $1', [readFileSync(file('crl.der'))]);
      expect(rows.map((row) => [Number(row.crl_number), Number(row.crl_stored_number)])).toEqual([[number, number]]);
    } finally {
      await client.end();
    }
  });

  it('OCSP answers the revocation from the store; EST enrolls under a profile whose passphrase PostgreSQL holds only as a hash', async () => {
    const issuing = ok(await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${(svc.admin as any).caId}/certificate`, { token }));
    writeFileSync(file('issuing.pem'), issuing.certificate);
    const ocspUrl = execFileSync('openssl', ['x509', '-in', file('leaf.pem'), '-noout', '-ocsp_uri'], { encoding: 'utf8' }).trim();
    // Asynchronous: the service answers from this process.
    const { stdout } = await execFileAsync('openssl', ['ocsp', '-url', ocspUrl, '-issuer', file('issuing.pem'), '-cert', file('leaf.pem'), '-VAfile', file('issuing.pem')]);
    expect(stdout).toContain(`${file('leaf.pem')}: revoked`);
    expect(stdout).toMatch(/Reason: keyCompromise/);

    const profileId = (svc.admin as any).profileId as string;
    const passphrase = 'enrollment passphrase on postgres';
    const profile = ok(await request(svc.url, 'PATCH', `/api/v1/cert-manager/certificate-profiles/${profileId}`, { token, body: { est: { enabled: true, passphrase } } }));
    expect(profile.certificateProfile.est).toEqual({ enabled: true, passphraseSet: true });
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ est_enabled: number; est_passphrase_hash: string }>('SELECT est_enabled, est_passphrase_hash FROM certificate_profiles WHERE id = $1', [profileId]);
      expect(rows[0]!.est_enabled).toBe(1);
      expect(rows[0]!.est_passphrase_hash).toMatch(/^scrypt\$/);
      expect(rows[0]!.est_passphrase_hash).not.toContain(passphrase);
    } finally {
      await client.end();
    }
    makeCsr('pg-est');
    const csr = execFileSync('openssl', ['req', '-in', file('pg-est.csr'), '-outform', 'DER'])
      .toString('base64');
    const enrolled = await fetch(`${svc.url}/.well-known/est/${profileId}/simpleenroll`, {
      method: 'POST',
      headers: { 'content-type': 'application/pkcs10', authorization: `Basic ${b64(`device:${passphrase}`)}` },
      body: csr,
    });
    expect(enrolled.status).toBe(200);
    expect(enrolled.headers.get('content-type')).toBe('application/pkcs7-mime; smime-type=certs-only');
  });

  it('after a restart on the same database and token: the keys, the certificate and the CRL are there, and the audit trail verifies', async () => {
    await svc.close({ keepData: true });
    svc = await startTestService({ database: { url } }, dataDir);
    // The credentials file of the first start still names the admin (no second bootstrap).
    token = await login(svc.url, svc.admin);
    const { plaintext } = ok(await request(svc.url, 'POST', `${KEYS}/${state.aesKey}/decrypt`, { token, body: { ciphertext: state.ciphertext } }));
    expect(plaintext).toBe(b64('on postgres'));
    const verified = ok(await request(svc.url, 'POST', `${KEYS}/${state.signKey}/verify`, { token, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('release'), signature: state.signature } }));
    expect(verified.signatureValid).toBe(true);
    const certificate = ok(await request(svc.url, 'GET', `/api/v1/cert-manager/certificates/${state.certificateId}`, { token }));
    expect(JSON.stringify(certificate)).toContain(state.serial!);

    const crl = Buffer.from(await (await fetch(state.crlUrl!.replace(/^http:\/\/[^/]+/, svc.url))).arrayBuffer());
    expect(crl.equals(readFileSync(file('crl.der')))).toBe(true);

    await svc.close({ keepData: true });
    const { status, output } = verifyAudit(url, dataDir);
    expect(output).toMatch(/^audit chain intact: \d+ events, \d+ signed checkpoints, last signed at seq \d+ /);
    expect(status).toBe(0);
    const [, events, , signedSeq] = /intact: (\d+) events, (\d+) signed checkpoints, last signed at seq (\d+)/.exec(output)!;
    // Both runs' events (logins, key operations, PKI) on one chain, signed to its head at close.
    expect(Number(events)).toBeGreaterThan(10);
    expect(signedSeq).toBe(events);

    // And it notices tampering there as it does on SQLite.
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query(`UPDATE audit_events SET req_id = 'forged' WHERE seq = 2`);
    } finally {
      await client.end();
    }
    const tampered = verifyAudit(url, dataDir);
    expect(tampered.output).toMatch(/^audit chain broken at seq 2 .*edited/);
    expect(tampered.status).toBe(1);
    svc = await startTestService({ database: { url } }, dataDir);
  });
});
