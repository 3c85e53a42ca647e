/**
 * Two service processes on one DATA_DIR (one SQLite file, one SoftHSM2 token directory), as
 * replicas sharing a store run: what one process writes, the other honours. Keys and access
 * tokens are served from per-process memory; key-service.ts and identity-service.ts state the
 * bound (500 ms), and this checks the promise built on it: a key disabled or deleted, an
 * identity deleted, on A is refused by B within 1 s of A's answer; so is issuing under a CA
 * disabled, or a profile narrowed, on A (pki-store.ts bounds those rows the same way). The 1 s is a correctness
 * bound (a cache that never re-reads fails it by far), not a performance figure.
 *
 * Both processes append to one audit chain; test/integration/audit-writers.test.ts checks that.
 */
import { createPublicKey, randomBytes, randomUUID, verify, type KeyObject } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newChildDataDir, startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { createIdentity, login, request, type ApiResponse } from '../helpers/http.js';

const REFUSED_WITHIN_MS = 1000;
const POLL_EVERY_MS = 50;
/** How long to keep polling before giving up, so a failure shows how late (or never) it came. */
const GIVE_UP_AFTER_MS = 5000;

const dataDir = newChildDataDir('hsm-signer-two-');
let a: ListeningChildService | undefined;
let b: ListeningChildService | undefined;
let adminOnA: string;
let adminOnB: string;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

beforeAll(async () => {
  a = await startChildService(dataDir);
  // B starts once A has written admin-credentials.json (startChildService returns after that),
  // so it reuses A's admin identity, token and demo PKI instead of making its own.
  b = await startChildService(dataDir);
  adminOnA = await login(a.url, a.admin);
  adminOnB = await login(b.url, b.admin);
}, 180_000);

afterAll(async () => {
  for (const svc of [b, a]) {
    if (!svc) continue;
    svc.signal('SIGTERM');
    const exited = await Promise.race([svc.exited, sleep(15_000).then(() => undefined)]);
    if (!exited) await svc.kill();
  }
  rmSync(dataDir, { recursive: true, force: true });
});

async function createSigningKey(on: ListeningChildService, token: string): Promise<{ keyId: string; publicKey: KeyObject }> {
  const created = await request(on.url, 'POST', '/api/v1/kms/keys', {
    token,
    body: { projectId: 'default', name: `two-processes-${randomUUID().slice(0, 8)}`, keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' },
  });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  const keyId = created.body.key.id as string;
  const pub = await request(on.url, 'GET', `/api/v1/kms/keys/${keyId}/public-key`, { token });
  expect(pub.status, JSON.stringify(pub.body)).toBe(200);
  return { keyId, publicKey: createPublicKey({ key: Buffer.from(pub.body.publicKey as string, 'base64'), format: 'der', type: 'spki' }) };
}

function sign(on: ListeningChildService, token: string, keyId: string, data: Buffer): Promise<ApiResponse> {
  return request(on.url, 'POST', `/api/v1/kms/keys/${keyId}/sign`, { token, body: { signingAlgorithm: 'ECDSA_SHA_256', data: data.toString('base64') } });
}

/** Signs on `on` and checks the signature with node:crypto against the key's public key. */
async function expectSignatureFrom(on: ListeningChildService, token: string, key: { keyId: string; publicKey: KeyObject }): Promise<void> {
  const data = randomBytes(64);
  const signed = await sign(on, token, key.keyId, data);
  expect(signed.status, JSON.stringify(signed.body)).toBe(200);
  expect(verify('sha256', data, key.publicKey, Buffer.from(signed.body.signature as string, 'base64'))).toBe(true);
}

/** A PEM CSR for `name` (CN and DNS SAN) with a fresh P-256 key, made by OpenSSL. */
function p256Csr(name: string): string {
  const made = spawnSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', '/dev/null', '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`openssl req: ${made.stderr}`);
  return made.stdout;
}

/**
 * Polls `attempt` every POLL_EVERY_MS from `since` until `refused` holds for its answer; returns
 * how long after `since` that answer was sent for, or throws after GIVE_UP_AFTER_MS. Every answer
 * before it must be `stillServed`, so a refusal for another reason cannot pass for the one awaited.
 */
async function msUntilRefused(
  since: number,
  attempt: () => Promise<ApiResponse>,
  refused: (answer: ApiResponse) => boolean,
  stillServed: (answer: ApiResponse) => boolean,
): Promise<number> {
  for (;;) {
    const sentAt = Date.now();
    const answer = await attempt();
    if (refused(answer)) return sentAt - since;
    expect(stillServed(answer), `neither served nor the awaited refusal: ${answer.status} ${JSON.stringify(answer.body)}`).toBe(true);
    if (Date.now() - since > GIVE_UP_AFTER_MS) throw new Error(`still served ${GIVE_UP_AFTER_MS} ms after the change on the other process`);
    await sleep(POLL_EVERY_MS);
  }
}

describe('two processes on one DATA_DIR', () => {
  it('both serve, on different ports, with the same admin identity', () => {
    expect(a!.url).not.toBe(b!.url);
    expect(b!.admin.clientId).toBe(a!.admin.clientId);
  });

  it('a key created on A signs on B, and the signature verifies', async () => {
    const key = await createSigningKey(a!, adminOnA);
    await expectSignatureFrom(b!, adminOnB, key);
    await expectSignatureFrom(a!, adminOnA, key);
  });

  it('a key disabled on A is refused by B within 1 s', async () => {
    const key = await createSigningKey(a!, adminOnA);
    // B has just used the key, so what it knows of it is in its memory.
    await expectSignatureFrom(b!, adminOnB, key);
    const patched = await request(a!.url, 'PATCH', `/api/v1/kms/keys/${key.keyId}`, { token: adminOnA, body: { isDisabled: true } });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    const disabledAt = Date.now();
    const elapsed = await msUntilRefused(
      disabledAt,
      () => sign(b!, adminOnB, key.keyId, randomBytes(32)),
      (answer) => answer.status === 400 && answer.body?.message === 'Key is disabled',
      (answer) => answer.status === 200,
    );
    expect(elapsed).toBeLessThan(REFUSED_WITHIN_MS);
    // A refuses it at once: its own write.
    const onA = await sign(a!, adminOnA, key.keyId, randomBytes(32));
    expect(onA.status).toBe(400);

    // Enabled again on A, B signs with it again (no refusal is remembered for good).
    const enabled = await request(a!.url, 'PATCH', `/api/v1/kms/keys/${key.keyId}`, { token: adminOnA, body: { isDisabled: false } });
    expect(enabled.status).toBe(200);
    const enabledAt = Date.now();
    const elapsedEnabled = await msUntilRefused(
      enabledAt,
      () => sign(b!, adminOnB, key.keyId, randomBytes(32)),
      (answer) => answer.status === 200,
      (answer) => answer.status === 400 && answer.body?.message === 'Key is disabled',
    );
    expect(elapsedEnabled).toBeLessThan(REFUSED_WITHIN_MS);
    await expectSignatureFrom(b!, adminOnB, key);
  });

  it('a key deleted on A is a 404 on B within 1 s', async () => {
    const key = await createSigningKey(a!, adminOnA);
    await expectSignatureFrom(b!, adminOnB, key);
    const deleted = await request(a!.url, 'DELETE', `/api/v1/kms/keys/${key.keyId}`, { token: adminOnA });
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(200);
    const deletedAt = Date.now();
    const elapsed = await msUntilRefused(
      deletedAt,
      () => sign(b!, adminOnB, key.keyId, randomBytes(32)),
      (answer) => answer.status === 404 && answer.body?.error === 'NotFound',
      (answer) => answer.status === 200,
    );
    expect(elapsed).toBeLessThan(REFUSED_WITHIN_MS);
    expect((await request(b!.url, 'GET', `/api/v1/kms/keys/${key.keyId}`, { token: adminOnB })).status).toBe(404);
  });

  it("an identity deleted on A: its token, working on B, is a 401 on B within 1 s", async () => {
    const key = await createSigningKey(a!, adminOnA);
    const app = await createIdentity(a!.url, adminOnA, `two-processes-${randomUUID().slice(0, 8)}`, [{ projectId: 'default', actions: ['sign', 'read'] }]);
    const appToken = await login(a!.url, app);
    // Used on B first, so B holds the token and its principal in memory.
    await expectSignatureFrom(b!, appToken, key);
    const deleted = await request(a!.url, 'DELETE', `/api/v1/identities/${app.identityId}`, { token: adminOnA });
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(200);
    const deletedAt = Date.now();
    const elapsed = await msUntilRefused(
      deletedAt,
      () => sign(b!, appToken, key.keyId, randomBytes(32)),
      (answer) => answer.status === 401 && answer.body?.error === 'UnauthorizedError',
      (answer) => answer.status === 200,
    );
    expect(elapsed).toBeLessThan(REFUSED_WITHIN_MS);
    expect((await sign(a!, appToken, key.keyId, randomBytes(32))).status).toBe(401);
  });

  it('a CA disabled on A stops issuing on B within 1 s, and a profile narrowed on A is obeyed by B within 1 s', async () => {
    const ca = await request(a!.url, 'POST', '/api/v1/cert-manager/ca/internal', {
      token: adminOnA,
      body: { projectId: 'default', type: 'root', commonName: 'Two Processes Root', keyAlgorithm: 'EC_prime256v1', ttl: '1y' },
    });
    expect(ca.status, JSON.stringify(ca.body)).toBe(200);
    const caId = ca.body.ca.id as string;
    const wide = { maxValidity: '30d', subject: [{ type: 'CN', allowed: ['**'] }], sans: { dns: ['**'] } };
    const profile = await request(a!.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token: adminOnA, body: { projectId: 'default', caId, slug: `two-${randomUUID().slice(0, 8)}`, policy: wide } });
    expect(profile.status, JSON.stringify(profile.body)).toBe(200);
    const profileId = profile.body.certificateProfile.id as string;
    const csr = p256Csr('two-processes.example.com');
    const issue = () => request(b!.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token: adminOnB, body: { profileId, csr, ttl: '1d' } });
    // B has just issued under both, so what it knows of them is in its memory.
    expect((await issue()).status).toBe(200);

    expect((await request(a!.url, 'PATCH', `/api/v1/cert-manager/ca/internal/${caId}`, { token: adminOnA, body: { status: 'disabled' } })).status).toBe(200);
    const disabledFor = await msUntilRefused(
      Date.now(),
      issue,
      (answer) => answer.status === 400 && /disabled/.test(String(answer.body?.message)),
      (answer) => answer.status === 200,
    );
    expect(disabledFor).toBeLessThan(REFUSED_WITHIN_MS);
    expect((await request(a!.url, 'PATCH', `/api/v1/cert-manager/ca/internal/${caId}`, { token: adminOnA, body: { status: 'active' } })).status).toBe(200);
    const enabledFor = await msUntilRefused(
      Date.now(),
      issue,
      (answer) => answer.status === 200,
      (answer) => answer.status === 400,
    );
    expect(enabledFor).toBeLessThan(REFUSED_WITHIN_MS);

    // Only other names from now on: B must refuse this CSR's name within the bound.
    const narrow = { ...wide, subject: [{ type: 'CN', allowed: ['*.narrow.example.com'] }], sans: { dns: ['*.narrow.example.com'] } };
    expect((await request(a!.url, 'PATCH', `/api/v1/cert-manager/certificate-profiles/${profileId}`, { token: adminOnA, body: { policy: narrow } })).status).toBe(200);
    const narrowedFor = await msUntilRefused(
      Date.now(),
      issue,
      (answer) => answer.status === 400 && /refused/.test(String(answer.body?.message)),
      (answer) => answer.status === 200,
    );
    expect(narrowedFor).toBeLessThan(REFUSED_WITHIN_MS);
  });

  it('B restarting while A creates keys leaves A\'s creations in progress alone: every one is acknowledged and usable, none left pending', async () => {
    // RSA-4096 takes the token long enough that A nearly always has a pending row when B starts
    // and undoes what stopped replicas left; only A's presence tells its rows from leftovers.
    let creating = true;
    const answers: Array<{ status: number; keyId?: string; body: unknown }> = [];
    const creator = async () => {
      while (creating) {
        const created = await request(a!.url, 'POST', '/api/v1/kms/keys', {
          token: adminOnA,
          body: { projectId: 'default', name: `restart-${randomUUID().slice(0, 8)}`, keyUsage: 'sign-verify', encryptionAlgorithm: 'RSA_4096' },
        });
        answers.push({ status: created.status, keyId: created.body?.key?.id, body: created.body });
      }
    };
    const creators = [creator(), creator(), creator()];
    try {
      for (let restart = 0; restart < 2; restart++) {
        await sleep(300);
        b!.signal('SIGTERM');
        expect((await b!.exited).code).toBe(0);
        b = await startChildService(dataDir);
      }
      await sleep(300);
    } finally {
      creating = false;
      await Promise.all(creators);
    }
    expect(answers.length).toBeGreaterThan(2);
    expect(answers.filter((answer) => answer.status !== 200).map((answer) => [answer.status, answer.body])).toEqual([]);
    adminOnB = await login(b!.url, b!.admin);
    for (const { keyId } of answers) {
      const served = await request(b!.url, 'GET', `/api/v1/kms/keys/${keyId}/public-key`, { token: adminOnB });
      expect(served.status, JSON.stringify(served.body)).toBe(200);
    }
    const db = new Database(join(dataDir, 'hsm-signer.db'), { readonly: true });
    try {
      expect(db.prepare(`SELECT count(*) AS n FROM kms_key_versions WHERE state != 'active'`).get()).toEqual({ n: 0 });
    } finally {
      db.close();
    }
  });
});
