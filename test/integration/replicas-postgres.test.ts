/**
 * Two replicas on one PostgreSQL database (the run's throwaway cluster, test/helpers/postgres.ts)
 * and one token (the embedded SoftHSM2 token in a shared DATA_DIR, as two replicas on one
 * machine run), started at the same moment on both empty. What one replica writes the other
 * serves; a key disabled on A is refused by B within 1 s (the caches' bound); a certificate
 * revoked on A is in the CRL B serves; B killed with SIGKILL under load costs A nothing: every
 * request to A is answered without a 5xx and everything A acknowledged is in the store; and the
 * audit trail, written by both, verifies.
 */
import { spawnSync } from 'node:child_process';
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newChildDataDir, ROOT, startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { openssl } from '../helpers/cli.js';
import { login, request } from '../helpers/http.js';
import { createTestDatabase, psql } from '../helpers/postgres.js';

const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const VERIFY = join(ROOT, 'scripts', 'verify-audit.ts');
const REFUSED_WITHIN_MS = 1000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const databaseUrl = createTestDatabase();
const dataDir = newChildDataDir('hsm-signer-pg-replicas-');
const work = mkdtempSync(join(tmpdir(), 'hsm-signer-pg-replicas-work-'));
let a: ListeningChildService;
let b: ListeningChildService;
let onA: string;
let onB: string;

beforeAll(async () => {
  const configFile = join(work, 'config.json');
  writeFileSync(configFile, JSON.stringify({ audit: { signIntervalMs: 500 } }));
  const env = { DATABASE_URL: databaseUrl, CONFIG_FILE: configFile, RATE_LIMIT_PER_SECOND: '0' };
  const started = await Promise.allSettled([startChildService(dataDir, env, 120_000), startChildService(dataDir, env, 120_000)]);
  const up = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  if (up.length < 2) {
    await Promise.all(up.map((replica) => replica.kill()));
    throw (started.find((result) => result.status === 'rejected') as PromiseRejectedResult).reason;
  }
  [a, b] = up as [ListeningChildService, ListeningChildService];
  onA = await login(a.url, a.admin);
  onB = await login(b.url, b.admin);
}, 240_000);

afterAll(async () => {
  await Promise.all([a, b].filter(Boolean).map((replica) => replica.kill()));
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe('two replicas on PostgreSQL', () => {
  it('started together on an empty store, they made one admin and one demo PKI there', () => {
    expect(psql(databaseUrl, 'SELECT count(*) FROM identities')).toBe('1');
    expect(psql(databaseUrl, "SELECT string_agg(type, ',' ORDER BY type) FROM cas")).toBe('intermediate,root');
    expect(psql(databaseUrl, 'SELECT count(*) FROM certificate_profiles')).toBe('1');
  });

  it('a key created on A signs on B, and A verifies the signature', async () => {
    const created = await request(a.url, 'POST', '/api/v1/kms/keys', { token: onA, body: { projectId: 'default', name: 'made-on-a', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' } });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const keyId = created.body.key.id as string;
    const data = randomBytes(48).toString('base64');
    const signed = await request(b.url, 'POST', `/api/v1/kms/keys/${keyId}/sign`, { token: onB, body: { signingAlgorithm: 'ECDSA_SHA_256', data } });
    expect(signed.status, JSON.stringify(signed.body)).toBe(200);
    const verified = await request(a.url, 'POST', `/api/v1/kms/keys/${keyId}/verify`, { token: onA, body: { signingAlgorithm: 'ECDSA_SHA_256', data, signature: signed.body.signature } });
    expect(verified.status, JSON.stringify(verified.body)).toBe(200);
    expect(verified.body.signatureValid).toBe(true);
    // And independently of the service.
    const publicKey = await request(a.url, 'GET', `/api/v1/kms/keys/${keyId}/public-key`, { token: onA });
    const key = createPublicKey({ key: Buffer.from(publicKey.body.publicKey as string, 'base64'), format: 'der', type: 'spki' });
    expect(verify('sha256', Buffer.from(data, 'base64'), key, Buffer.from(signed.body.signature as string, 'base64'))).toBe(true);
  });

  it('a key disabled on A is refused by B within 1 s', async () => {
    const created = await request(a.url, 'POST', '/api/v1/kms/keys', { token: onA, body: { projectId: 'default', name: 'disabled-on-a', keyUsage: 'encrypt-decrypt', encryptionAlgorithm: 'aes-256-gcm' } });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const keyId = created.body.key.id as string;
    const encryptOnB = () => request(b.url, 'POST', `/api/v1/kms/keys/${keyId}/encrypt`, { token: onB, body: { plaintext: 'aGVsbG8=' } });
    expect((await encryptOnB()).status).toBe(200);
    const disabled = await request(a.url, 'PATCH', `/api/v1/kms/keys/${keyId}`, { token: onA, body: { isDisabled: true } });
    expect(disabled.status, JSON.stringify(disabled.body)).toBe(200);
    const since = Date.now();
    let refusedAfter: number | undefined;
    while (Date.now() - since < 5000) {
      const sentAt = Date.now();
      const answer = await encryptOnB();
      if (answer.status !== 200) {
        expect(answer.status, JSON.stringify(answer.body)).toBe(400);
        refusedAfter = sentAt - since;
        break;
      }
      await sleep(50);
    }
    expect(refusedAfter, 'B kept encrypting with the disabled key for 5 s').toBeDefined();
    expect(refusedAfter!).toBeLessThanOrEqual(REFUSED_WITHIN_MS);
  });

  it('a certificate revoked on A is in the CRL B serves', async () => {
    openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(work, 'leaf.key'), '-subj', '/CN=replicas.test', '-addext', 'subjectAltName=DNS:replicas.test', '-out', join(work, 'leaf.csr'));
    const issued = await request(a.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token: onA, body: { profileId: a.admin.profileId, csr: readFileSync(join(work, 'leaf.csr'), 'utf8'), ttl: '30d' } });
    expect(issued.status, `${JSON.stringify(issued.body)}\n${a.output().split('\n').filter((line) => /"level":5/.test(line)).join('\n')}`).toBe(200);
    const serial = (issued.body.serialNumber as string).toUpperCase().replace(/^0+/, '');
    const crlOnB = async () => {
      const response = await fetch(`${b.url}/pki/ca/${a.admin.caId}/crl.der`);
      expect(response.status).toBe(200);
      writeFileSync(join(work, 'crl.der'), Buffer.from(await response.arrayBuffer()));
      return openssl('crl', '-inform', 'DER', '-in', join(work, 'crl.der'), '-noout', '-text');
    };
    expect(await crlOnB()).not.toContain(serial);
    const revoked = await request(a.url, 'POST', `/api/v1/cert-manager/certificates/${issued.body.certificateId}/revoke`, { token: onA, body: { revocationReason: 'KEY_COMPROMISE' } });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect(await crlOnB()).toContain(`Serial Number: ${serial}`);
  });

  it('B killed with SIGKILL under load: A answers every request without a 5xx and keeps everything it acknowledged', async () => {
    const statusesOnA: number[] = [];
    const acknowledgedKeys: string[] = [];
    let stop = false;
    let n = 0;
    const clientOfA = async () => {
      while (!stop) {
        const name = `under-load-${n++}`;
        const created = await request(a.url, 'POST', '/api/v1/kms/keys', { token: onA, body: { projectId: 'default', name, keyUsage: 'encrypt-decrypt', encryptionAlgorithm: 'aes-256-gcm' } });
        statusesOnA.push(created.status);
        if (created.status === 200) acknowledgedKeys.push(created.body.key.id as string);
        const listed = await request(a.url, 'GET', '/api/v1/kms/keys?projectId=default&limit=5', { token: onA });
        statusesOnA.push(listed.status);
      }
    };
    // B is busy too when it dies: its connections to the database and its token sessions go with it.
    const clientOfB = async () => {
      for (let i = 0; !stop; i++) {
        const answer = await request(b.url, 'GET', '/api/v1/kms/keys?projectId=default&limit=5', { token: onB, headers: { 'x-request-id': `replica-b-${i}` } }).catch(() => undefined);
        if (!answer) return; // B is gone
      }
    };
    const clients = [clientOfA(), clientOfA(), clientOfA(), clientOfB(), clientOfB()];
    await sleep(1500);
    await b.kill();
    await sleep(2500);
    stop = true;
    await Promise.all(clients);

    expect(statusesOnA.length).toBeGreaterThan(20);
    expect(statusesOnA.filter((status) => status >= 500)).toEqual([]);
    expect(new Set(statusesOnA)).toEqual(new Set([200]));
    const stored = new Set(psql(databaseUrl, "SELECT id FROM kms_keys WHERE state = 'active'").split('\n'));
    expect(acknowledgedKeys.filter((id) => !stored.has(id))).toEqual([]);
    for (const keyId of acknowledgedKeys.slice(-3)) {
      const encrypted = await request(a.url, 'POST', `/api/v1/kms/keys/${keyId}/encrypt`, { token: onA, body: { plaintext: 'aGVsbG8=' } });
      expect(encrypted.status, JSON.stringify(encrypted.body)).toBe(200);
    }
  }, 60_000);

  it("both replicas' audit events are in one chain that audit:verify accepts", async () => {
    // A's writer settles within its batch; let the checkpoint signer run once more too.
    await sleep(1000);
    expect(Number(psql(databaseUrl, "SELECT count(*) FROM audit_events WHERE req_id LIKE 'replica-b-%'"))).toBeGreaterThan(0);
    const result = spawnSync(process.execPath, [TSX, VERIFY], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, DATABASE_URL: databaseUrl, DATA_DIR: dataDir, LOG_LEVEL: 'silent' } });
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  });
});
