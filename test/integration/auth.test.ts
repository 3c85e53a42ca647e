/**
 * Machine identities ("universal auth"): login and renew, the identities API, per-project
 * permissions, privilege limits when granting, revocation, and how secrets and tokens are stored.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdentity, login, request, type ApiResponse } from '../helpers/http.js';
import { expectSpecEnvelope } from '../helpers/envelope.js';
import { startTestService, type TestService } from '../helpers/service.js';

const LOGIN = '/api/v1/auth/universal-auth/login';
const RENEW = '/api/v1/auth/token/renew';
const IDENTITIES = '/api/v1/identities';
const KEYS = '/api/v1/kms/keys';
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (value: string | Buffer) => Buffer.from(value).toString('base64');



function expectStatus(res: ApiResponse, status: number, error?: string): any {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 400)}`).toBe(status);
  if (status >= 400) expectSpecEnvelope(res);
  if (error) {
    expect(res.body.error).toBe(error);
    expect(res.body.statusCode).toBe(status);
    expect(typeof res.body.reqId).toBe('string');
  }
  return res.body;
}

function expectLoginShape(body: any, ttl: number, maxTtl: number): void {
  expect(Object.keys(body).sort()).toEqual(['accessToken', 'accessTokenMaxTTL', 'expiresIn', 'tokenType']);
  expect(typeof body.accessToken).toBe('string');
  expect(body.accessToken.length).toBeGreaterThanOrEqual(32);
  expect(body.tokenType).toBe('Bearer');
  expect(Number.isInteger(body.expiresIn)).toBe(true);
  expect(body.expiresIn).toBe(ttl);
  expect(body.accessTokenMaxTTL).toBe(maxTtl);
}

describe('auth and identities', () => {
  let svc: TestService;
  let admin: string;

  beforeAll(async () => {
    svc = await startTestService();
    admin = await login(svc.url, svc.admin);
  });
  afterAll(async () => {
    await svc?.close();
  });

  describe('login and renew', () => {
    it('login answers {accessToken, expiresIn, accessTokenMaxTTL, tokenType: Bearer}', async () => {
      const res = await request(svc.url, 'POST', LOGIN, { body: { clientId: svc.admin.clientId, clientSecret: svc.admin.clientSecret } });
      const body = expectStatus(res, 200);
      expectLoginShape(body, svc.config.auth.accessTokenTTL, svc.config.auth.accessTokenMaxTTL);
      const second = await request(svc.url, 'POST', LOGIN, { body: { clientId: svc.admin.clientId, clientSecret: svc.admin.clientSecret } });
      expect(second.body.accessToken).not.toBe(body.accessToken);
      const use = await request(svc.url, 'GET', `${KEYS}?projectId=default`, { token: body.accessToken });
      expect(use.status).toBe(200);
    });

    it('renew answers the same shape and keeps the token working', async () => {
      const token = await login(svc.url, svc.admin);
      const res = await request(svc.url, 'POST', RENEW, { body: { accessToken: token } });
      const body = expectStatus(res, 200);
      expect(Object.keys(body).sort()).toEqual(['accessToken', 'accessTokenMaxTTL', 'expiresIn', 'tokenType']);
      expect(body.tokenType).toBe('Bearer');
      expect(body.accessToken).toBe(token);
      expect(body.accessTokenMaxTTL).toBe(svc.config.auth.accessTokenMaxTTL);
      expect(body.expiresIn).toBeGreaterThan(0);
      expect(body.expiresIn).toBeLessThanOrEqual(svc.config.auth.accessTokenTTL);
      expect((await request(svc.url, 'GET', `${KEYS}?projectId=default`, { token })).status).toBe(200);
    });

    it('a wrong client secret is a 401', async () => {
      const wrong = [`${svc.admin.clientSecret.slice(0, -1)}${svc.admin.clientSecret.endsWith('0') ? '1' : '0'}`, randomBytes(32).toString('hex'), 'x'];
      for (const clientSecret of wrong) {
        expectStatus(await request(svc.url, 'POST', LOGIN, { body: { clientId: svc.admin.clientId, clientSecret } }), 401, 'UnauthorizedError');
      }
    });

    it('an unknown client id is a 401', async () => {
      expectStatus(await request(svc.url, 'POST', LOGIN, { body: { clientId: randomUUID(), clientSecret: svc.admin.clientSecret } }), 401, 'UnauthorizedError');
      expectStatus(await request(svc.url, 'POST', LOGIN, { body: { clientId: 'nobody', clientSecret: 'nothing' } }), 401, 'UnauthorizedError');
    });

    it('a login without its fields is a 422', async () => {
      expectStatus(await request(svc.url, 'POST', LOGIN, { body: { clientId: svc.admin.clientId } }), 422, 'ValidationFailure');
      expectStatus(await request(svc.url, 'POST', LOGIN, { body: {} }), 422, 'ValidationFailure');
    });

    it('renewing a forged token is a 401', async () => {
      for (const accessToken of [`hss.${randomBytes(32).toString('base64url')}`, `${admin}x`, 'forged']) {
        expectStatus(await request(svc.url, 'POST', RENEW, { body: { accessToken } }), 401, 'UnauthorizedError');
      }
    });
  });

  describe('identities API', () => {
    it('creates an identity, a secret shown once, and lists/gets/deletes them', async () => {
      const permissions = [{ projectId: 'proj-a', actions: ['read', 'encrypt'] }];
      const created = await request(svc.url, 'POST', IDENTITIES, { token: admin, body: { name: 'ci-bot', permissions } });
      const identity = expectStatus(created, 200).identity;
      expect(Object.keys(created.body)).toEqual(['identity']);
      expect(identity).toMatchObject({ name: 'ci-bot', permissions });
      expect(identity.id).toMatch(UUID);
      expect(typeof identity.clientId).toBe('string');
      expect(identity.clientId.length).toBeGreaterThan(0);
      expect(identity.createdAt).toMatch(ISO);
      expect(identity.updatedAt).toMatch(ISO);

      const secretRes = await request(svc.url, 'POST', `${IDENTITIES}/${identity.id}/client-secrets`, { token: admin, body: { description: 'for ci' } });
      const secret = expectStatus(secretRes, 200);
      expect(Object.keys(secret).sort()).toEqual(['clientSecret', 'clientSecretData']);
      expect(typeof secret.clientSecret).toBe('string');
      expect(secret.clientSecret.length).toBeGreaterThanOrEqual(32);
      expect(secret.clientSecretData).toMatchObject({ identityId: identity.id, description: 'for ci' });
      expect(secret.clientSecretData.id).toMatch(UUID);
      expect(JSON.stringify(secret.clientSecretData)).not.toContain(secret.clientSecret);

      // The secret logs in.
      const token = await login(svc.url, { clientId: identity.clientId, clientSecret: secret.clientSecret });
      expect(token.length).toBeGreaterThan(0);

      // Later reads never show it again.
      const list = await request(svc.url, 'GET', IDENTITIES, { token: admin });
      expectStatus(list, 200);
      expect(list.body.identities.map((i: { id: string }) => i.id)).toContain(identity.id);
      const one = await request(svc.url, 'GET', `${IDENTITIES}/${identity.id}`, { token: admin });
      expect(expectStatus(one, 200).identity).toEqual(identity);
      const secrets = await request(svc.url, 'GET', `${IDENTITIES}/${identity.id}/client-secrets`, { token: admin });
      expectStatus(secrets, 200);
      expect(secrets.body.clientSecretData).toHaveLength(1);
      expect(secrets.body.clientSecretData[0]).toEqual(secret.clientSecretData);
      for (const res of [list, one, secrets]) expect(JSON.stringify(res.body)).not.toContain(secret.clientSecret);

      // A second secret; deleting the first stops it logging in, the second still does.
      const second = expectStatus(await request(svc.url, 'POST', `${IDENTITIES}/${identity.id}/client-secrets`, { token: admin }), 200);
      expect(second.clientSecret).not.toBe(secret.clientSecret);
      const del = await request(svc.url, 'DELETE', `${IDENTITIES}/${identity.id}/client-secrets/${secret.clientSecretData.id}`, { token: admin });
      expect(expectStatus(del, 200).clientSecretData).toEqual(secret.clientSecretData);
      expectStatus(await request(svc.url, 'POST', LOGIN, { body: { clientId: identity.clientId, clientSecret: secret.clientSecret } }), 401);
      await login(svc.url, { clientId: identity.clientId, clientSecret: second.clientSecret });
      const remaining = await request(svc.url, 'GET', `${IDENTITIES}/${identity.id}/client-secrets`, { token: admin });
      expect(remaining.body.clientSecretData.map((s: { id: string }) => s.id)).toEqual([second.clientSecretData.id]);
      expectStatus(await request(svc.url, 'DELETE', `${IDENTITIES}/${identity.id}/client-secrets/${secret.clientSecretData.id}`, { token: admin }), 404, 'NotFound');

      // Deleting the identity.
      const gone = await request(svc.url, 'DELETE', `${IDENTITIES}/${identity.id}`, { token: admin });
      expect(expectStatus(gone, 200).identity.id).toBe(identity.id);
      expectStatus(await request(svc.url, 'GET', `${IDENTITIES}/${identity.id}`, { token: admin }), 404, 'NotFound');
      expectStatus(await request(svc.url, 'DELETE', `${IDENTITIES}/${identity.id}`, { token: admin }), 404, 'NotFound');
      expectStatus(await request(svc.url, 'POST', LOGIN, { body: { clientId: identity.clientId, clientSecret: second.clientSecret } }), 401);
      const after = await request(svc.url, 'GET', IDENTITIES, { token: admin });
      expect(after.body.identities.map((i: { id: string }) => i.id)).not.toContain(identity.id);
    });

    it('validates identity input', async () => {
      expectStatus(await request(svc.url, 'POST', IDENTITIES, { token: admin, body: { name: 'x', permissions: [] } }), 422, 'ValidationFailure');
      expectStatus(await request(svc.url, 'POST', IDENTITIES, { token: admin, body: { name: 'x', permissions: [{ projectId: 'p', actions: ['fly'] }] } }), 422, 'ValidationFailure');
      expectStatus(await request(svc.url, 'POST', IDENTITIES, { token: admin, body: { permissions: [{ projectId: 'p', actions: ['read'] }] } }), 422, 'ValidationFailure');
      expectStatus(await request(svc.url, 'GET', `${IDENTITIES}/not-a-uuid`, { token: admin }), 422, 'ValidationFailure');
      expectStatus(await request(svc.url, 'GET', `${IDENTITIES}/${randomUUID()}`, { token: admin }), 404, 'NotFound');
      expectStatus(await request(svc.url, 'POST', `${IDENTITIES}/${randomUUID()}/client-secrets`, { token: admin, body: {} }), 404, 'NotFound');
      expectStatus(await request(svc.url, 'GET', IDENTITIES), 401, 'UnauthorizedError');
    });

    it('an identity cannot delete itself', async () => {
      const me = (await request(svc.url, 'GET', IDENTITIES, { token: admin })).body.identities.find((i: { clientId: string }) => i.clientId === svc.admin.clientId);
      expect(me).toBeTruthy();
      expectStatus(await request(svc.url, 'DELETE', `${IDENTITIES}/${me.id}`, { token: admin }), 400, 'BadRequest');
      expect((await request(svc.url, 'GET', `${KEYS}?projectId=default`, { token: admin })).status).toBe(200);
    });
  });

  describe('permissions', () => {
    let keyA: string;
    let signKeyA: string;
    let keyB: string;

    beforeAll(async () => {
      const a = await request(svc.url, 'POST', KEYS, { token: admin, body: { projectId: 'proj-a', name: 'a-aes' } });
      const s = await request(svc.url, 'POST', KEYS, { token: admin, body: { projectId: 'proj-a', name: 'a-ec', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' } });
      const b = await request(svc.url, 'POST', KEYS, { token: admin, body: { projectId: 'proj-b', name: 'b-aes' } });
      keyA = a.body.key.id;
      signKeyA = s.body.key.id;
      keyB = b.body.key.id;
      expect([keyA, signKeyA, keyB].every(Boolean)).toBe(true);
    });

    it('without sign: 403 on sign, but encrypt works with encrypt', async () => {
      const creds = await createIdentity(svc.url, admin, 'encrypter', [{ projectId: 'proj-a', actions: ['encrypt', 'read'] }]);
      const token = await login(svc.url, creds);
      const signed = await request(svc.url, 'POST', `${KEYS}/${signKeyA}/sign`, { token, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('m') } });
      expect(expectStatus(signed, 403, 'PermissionDenied').details).toEqual({ action: 'sign', projectId: 'proj-a' });
      const enc = await request(svc.url, 'POST', `${KEYS}/${keyA}/encrypt`, { token, body: { plaintext: b64('secret') } });
      expectStatus(enc, 200);
      // No decrypt permission.
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${keyA}/decrypt`, { token, body: { ciphertext: enc.body.ciphertext } }), 403, 'PermissionDenied');
      // The admin can decrypt it.
      const dec = await request(svc.url, 'POST', `${KEYS}/${keyA}/decrypt`, { token: admin, body: { ciphertext: enc.body.ciphertext } });
      expect(Buffer.from(dec.body.plaintext, 'base64').toString()).toBe('secret');
    });

    it('a token for project A cannot touch project B', async () => {
      const creds = await createIdentity(svc.url, admin, 'project-a-all', [{ projectId: 'proj-a', actions: ['*'] }]);
      const token = await login(svc.url, creds);
      // Everything works in A.
      expectStatus(await request(svc.url, 'GET', `${KEYS}/${keyA}`, { token }), 200);
      expectStatus(await request(svc.url, 'POST', KEYS, { token, body: { projectId: 'proj-a', name: 'made-by-a' } }), 200);
      // Nothing works in B.
      const ct = (await request(svc.url, 'POST', `${KEYS}/${keyB}/encrypt`, { token: admin, body: { plaintext: b64('b data') } })).body.ciphertext;
      const attempts: Array<[string, string, unknown?]> = [
        ['GET', `${KEYS}/${keyB}`],
        ['GET', `${KEYS}?projectId=proj-b`],
        ['GET', `${KEYS}/key-name/b-aes?projectId=proj-b`],
        ['POST', `${KEYS}/${keyB}/encrypt`, { plaintext: b64('x') }],
        ['POST', `${KEYS}/${keyB}/decrypt`, { ciphertext: ct }],
        ['PATCH', `${KEYS}/${keyB}`, { name: 'stolen', isDisabled: true }],
        ['POST', `${KEYS}/${keyB}/rotate`],
        ['DELETE', `${KEYS}/${keyB}`],
        ['POST', KEYS, { projectId: 'proj-b', name: 'made-by-a' }],
      ];
      for (const [method, path, body] of attempts) {
        const res = await request(svc.url, method, path, { token, body });
        expect(expectStatus(res, 403, 'PermissionDenied').details?.projectId, `${method} ${path}`).toBe('proj-b');
      }
      const b = await request(svc.url, 'GET', `${KEYS}/${keyB}`, { token: admin });
      expect(b.body.key).toMatchObject({ name: 'b-aes', isDisabled: false, version: 1 });
      const list = await request(svc.url, 'GET', `${KEYS}?projectId=proj-b`, { token: admin });
      expect(list.body.keys.map((k: { name: string }) => k.name)).toEqual(['b-aes']);
    });

    it('without manage-identities, an identity cannot create identities', async () => {
      const creds = await createIdentity(svc.url, admin, 'no-manage', [{ projectId: 'proj-a', actions: ['read', 'create', 'update', 'delete', 'encrypt', 'decrypt', 'sign', 'verify'] }]);
      const token = await login(svc.url, creds);
      const res = await request(svc.url, 'POST', IDENTITIES, { token, body: { name: 'child', permissions: [{ projectId: 'proj-a', actions: ['read'] }] } });
      expect(expectStatus(res, 403, 'PermissionDenied').details).toMatchObject({ action: 'manage-identities' });
      const admins = (await request(svc.url, 'GET', IDENTITIES, { token: admin })).body.identities;
      expect(admins.map((i: { name: string }) => i.name)).not.toContain('child');
      const adminId = admins.find((i: { clientId: string }) => i.clientId === svc.admin.clientId).id;
      expectStatus(await request(svc.url, 'POST', `${IDENTITIES}/${adminId}/client-secrets`, { token, body: {} }), 403, 'PermissionDenied');
      expectStatus(await request(svc.url, 'DELETE', `${IDENTITIES}/${adminId}`, { token }), 403, 'PermissionDenied');
      expectStatus(await request(svc.url, 'GET', `${IDENTITIES}/${adminId}/client-secrets`, { token }), 403, 'PermissionDenied');
    });

    it('without manage-identities on any project, listing identities is a 403 (not a filtered list)', async () => {
      // Allowed only encrypt on one project; an identity with no permissions at all likewise.
      const encryptOnly = await createIdentity(svc.url, admin, 'encrypt-only', [{ projectId: 'proj-a', actions: ['encrypt'] }]);
      const token = await login(svc.url, encryptOnly);
      const refused = await request(svc.url, 'GET', IDENTITIES, { token });
      expect(expectStatus(refused, 403, 'PermissionDenied').details).toEqual({ action: 'manage-identities' });
      expect(refused.body.message).toBe('You are not allowed to manage-identities on any project');
      expect(JSON.stringify(refused.body)).not.toContain(encryptOnly.clientId);
      // It can still do what it may.
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${keyA}/encrypt`, { token, body: { plaintext: b64('m') } }), 200);
      // manage-identities on one project, even alone, is enough to list (what it could have made).
      const manager = await createIdentity(svc.url, admin, 'manager-only', [{ projectId: 'proj-a', actions: ['manage-identities'] }]);
      const listed = expectStatus(await request(svc.url, 'GET', IDENTITIES, { token: await login(svc.url, manager) }), 200).identities.map((i: { name: string }) => i.name);
      expect(listed).toContain('manager-only');
      expect(listed).not.toContain('encrypt-only');
      expect(listed).not.toContain('admin');
    });

    it('an identity cannot grant more than it holds', async () => {
      const creds = await createIdentity(svc.url, admin, 'manager-a', [{ projectId: 'proj-a', actions: ['manage-identities', 'read', 'encrypt'] }]);
      const token = await login(svc.url, creds);
      const refused: Array<Array<{ projectId: string; actions: string[] }>> = [
        [{ projectId: 'proj-a', actions: ['decrypt'] }],
        [{ projectId: 'proj-a', actions: ['read', 'sign'] }],
        [{ projectId: 'proj-a', actions: ['*'] }],
        [{ projectId: 'proj-b', actions: ['read'] }],
        [{ projectId: '*', actions: ['read'] }],
        [
          { projectId: 'proj-a', actions: ['read'] },
          { projectId: 'proj-b', actions: ['read'] },
        ],
      ];
      for (const permissions of refused) {
        const res = await request(svc.url, 'POST', IDENTITIES, { token, body: { name: 'too-strong', permissions } });
        expect(expectStatus(res, 403, 'PermissionDenied').details, JSON.stringify(permissions)).toMatchObject({ action: 'manage-identities' });
      }
      // What it holds, it can grant; and it can then manage that identity.
      const ok = await request(svc.url, 'POST', IDENTITIES, { token, body: { name: 'weaker', permissions: [{ projectId: 'proj-a', actions: ['read', 'encrypt'] }] } });
      const child = expectStatus(ok, 200).identity;
      const secret = await request(svc.url, 'POST', `${IDENTITIES}/${child.id}/client-secrets`, { token, body: {} });
      const childToken = await login(svc.url, { clientId: child.clientId, clientSecret: expectStatus(secret, 200).clientSecret });
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${keyA}/encrypt`, { token: childToken, body: { plaintext: b64('c') } }), 200);
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${keyA}/decrypt`, { token: childToken, body: { ciphertext: b64(Buffer.concat([randomBytes(28), Buffer.from('v01')])) } }), 403);
      // It sees only identities it could have made.
      const visible = (await request(svc.url, 'GET', IDENTITIES, { token })).body.identities.map((i: { name: string }) => i.name);
      expect(visible).toContain('weaker');
      expect(visible).not.toContain('admin');
      expect(visible).not.toContain('too-strong');
      const all = (await request(svc.url, 'GET', IDENTITIES, { token: admin })).body.identities.map((i: { name: string }) => i.name);
      expect(all).not.toContain('too-strong');
    });

    it('deleting an identity makes its token a 401 at once', async () => {
      const creds = await createIdentity(svc.url, admin, 'short-lived', [{ projectId: 'proj-a', actions: ['read', 'encrypt'] }]);
      const token = await login(svc.url, creds);
      // Used once, so the token is known (and cached) by the service.
      expectStatus(await request(svc.url, 'GET', `${KEYS}/${keyA}`, { token }), 200);
      expectStatus(await request(svc.url, 'DELETE', `${IDENTITIES}/${creds.identityId}`, { token: admin }), 200);
      expectStatus(await request(svc.url, 'GET', `${KEYS}/${keyA}`, { token }), 401, 'UnauthorizedError');
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${keyA}/encrypt`, { token, body: { plaintext: b64('x') } }), 401, 'UnauthorizedError');
      expectStatus(await request(svc.url, 'POST', RENEW, { body: { accessToken: token } }), 401, 'UnauthorizedError');
      expectStatus(await request(svc.url, 'POST', LOGIN, { body: { clientId: creds.clientId, clientSecret: creds.clientSecret } }), 401, 'UnauthorizedError');
    });
  });

  describe('storage', () => {
    it('keeps client secrets only as slow hashes and tokens only as hashes', async () => {
      const creds = await createIdentity(svc.url, admin, 'stored', [{ projectId: 'proj-a', actions: ['read'] }]);
      const token = await login(svc.url, creds);
      await request(svc.url, 'POST', RENEW, { body: { accessToken: token } });
      const tokenBody = token.replace(/^[a-z]+\./, '');

      const db = new Database(join(svc.dataDir, 'hsm-signer.db'), { readonly: true, fileMustExist: true });
      try {
        const secrets = db.prepare('SELECT * FROM client_secrets').all() as Array<Record<string, unknown>>;
        expect(secrets.length).toBeGreaterThanOrEqual(2); // admin's and this one
        const dumpSecrets = JSON.stringify(secrets);
        expect(dumpSecrets).not.toContain(creds.clientSecret);
        expect(dumpSecrets).not.toContain(svc.admin.clientSecret);
        const mine = db.prepare('SELECT s.* FROM client_secrets s JOIN identities i ON i.id = s.identity_id WHERE i.client_id = ?').all(creds.clientId) as Array<{ hash: string }>;
        expect(mine).toHaveLength(1);
        expect(mine[0]!.hash).toMatch(/^scrypt\$/);

        const tokens = db.prepare('SELECT * FROM access_tokens').all() as Array<Record<string, unknown>>;
        expect(tokens.length).toBeGreaterThanOrEqual(2);
        const dumpTokens = JSON.stringify(tokens);
        expect(dumpTokens).not.toContain(token);
        expect(dumpTokens).not.toContain(tokenBody);
        expect(dumpTokens).not.toContain(admin.replace(/^[a-z]+\./, ''));

        // No table anywhere holds them.
        const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>;
        for (const { name } of tables) {
          const dump = JSON.stringify(db.prepare(`SELECT * FROM "${name}"`).all(), (_k, v) => (v && v.type === 'Buffer' ? Buffer.from(v.data).toString('latin1') : v));
          for (const value of [creds.clientSecret, svc.admin.clientSecret, tokenBody]) expect(dump, `table ${name}`).not.toContain(value);
        }
      } finally {
        db.close();
      }

      // Nor do the raw files (database, WAL, shared memory).
      const files = readdirSync(svc.dataDir).filter((f) => f.startsWith('hsm-signer.db'));
      expect(files).toContain('hsm-signer.db');
      for (const file of files) {
        const raw = readFileSync(join(svc.dataDir, file)).toString('latin1');
        for (const value of [creds.clientSecret, svc.admin.clientSecret, tokenBody]) expect(raw.includes(value), `${file} holds a secret`).toBe(false);
      }
    });
  });
});

describe('token lifetimes', () => {
  let svc: TestService;
  const TTL = 2;
  const MAX = 4;

  beforeAll(async () => {
    svc = await startTestService({ auth: { accessTokenTTL: TTL, accessTokenMaxTTL: MAX } });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('login reports the configured TTLs', async () => {
    const res = await request(svc.url, 'POST', LOGIN, { body: { clientId: svc.admin.clientId, clientSecret: svc.admin.clientSecret } });
    expectLoginShape(expectStatus(res, 200), TTL, MAX);
  });

  it('renew extends a token, but never past the maximum TTL', async () => {
    while (Date.now() % 1000 > 100) await sleep(10);
    const token = await login(svc.url, svc.admin);
    await sleep(1200);
    const renewed = expectStatus(await request(svc.url, 'POST', RENEW, { body: { accessToken: token } }), 200);
    expect(renewed.expiresIn).toBeGreaterThan(0);
    expect(renewed.expiresIn).toBeLessThanOrEqual(TTL);
    // Without the renew it would be expired by now (login + 2.2 s > TTL).
    await sleep(1000);
    expectStatus(await request(svc.url, 'GET', `${KEYS}?projectId=default`, { token }), 200);
    // Past the maximum TTL, renew is refused and the token is dead.
    await sleep(2200);
    expectStatus(await request(svc.url, 'POST', RENEW, { body: { accessToken: token } }), 401, 'UnauthorizedError');
    expectStatus(await request(svc.url, 'GET', `${KEYS}?projectId=default`, { token }), 401, 'UnauthorizedError');
  });

  // expiresIn says how many seconds the token is good for; it must not die well before that.
  it('a token is still accepted well within its expiresIn', async () => {
    // Log in late in a wall-clock second: that is where truncating "now" to whole seconds shows.
    while (Date.now() % 1000 < 700 || Date.now() % 1000 > 750) await sleep(5);
    const res = await request(svc.url, 'POST', LOGIN, { body: { clientId: svc.admin.clientId, clientSecret: svc.admin.clientSecret } });
    const loggedInAt = Date.now();
    const body = expectStatus(res, 200);
    expect(body.expiresIn).toBe(TTL);
    const halfWay = loggedInAt + (body.expiresIn * 1000) / 2 + 300;
    await sleep(halfWay - Date.now());
    const use = await request(svc.url, 'GET', `${KEYS}?projectId=default`, { token: body.accessToken });
    expect(use.status, `token refused ${Date.now() - loggedInAt} ms after a login that said expiresIn ${body.expiresIn}`).toBe(200);
  });
});
