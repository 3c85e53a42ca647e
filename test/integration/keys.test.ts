/**
 * The KMS key life cycle: create, get, get by name, list, update, delete, rotate; what lives
 * in the token for each key and its protection; reconciliation of token and store at start;
 * and what a restart keeps.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, request, type ApiResponse } from '../helpers/http.js';
import { expectSpecEnvelope } from '../helpers/envelope.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { tokenObjects, type TokenObject } from '../helpers/token-objects.js';

const KEYS = '/api/v1/kms/keys';
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const KEY_FIELDS = ['createdAt', 'description', 'encryptionAlgorithm', 'id', 'isDisabled', 'keyUsage', 'name', 'orgId', 'projectId', 'updatedAt', 'version'];
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (value: string | Buffer) => Buffer.from(value).toString('base64');



function expectStatus(res: ApiResponse, status: number, error?: string): any {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 400)}`).toBe(status);
  if (status >= 400) expectSpecEnvelope(res);
  if (error) expect(res.body.error).toBe(error);
  return res.body;
}

function expectKeyShape(key: any): void {
  expect(Object.keys(key).sort()).toEqual(KEY_FIELDS);
  expect(key.id).toMatch(UUID);
  expect(key.orgId).toMatch(UUID);
  expect(typeof key.name).toBe('string');
  expect(typeof key.description).toBe('string');
  expect(typeof key.isDisabled).toBe('boolean');
  expect(typeof key.projectId).toBe('string');
  expect(['encrypt-decrypt', 'sign-verify']).toContain(key.keyUsage);
  expect(Number.isInteger(key.version)).toBe(true);
  expect(key.version).toBeGreaterThanOrEqual(1);
  expect(typeof key.encryptionAlgorithm).toBe('string');
  expect(key.createdAt).toMatch(ISO);
  expect(key.updatedAt).toMatch(ISO);
  expect(new Date(key.createdAt).toISOString()).toBe(key.createdAt);
}

/** The token objects that belong to a key (their labels name the key id). */
const objectsOf = (objects: TokenObject[], keyId: string) => objects.filter((o) => o.label.includes(keyId));

/**
 * Makes AES secret-key objects directly in a (closed) service's token, from a separate process,
 * as an interrupted create or another application would have left them.
 */
function addTokenObjects(svc: Pick<TestService, 'dataDir' | 'config'>, objects: Array<{ id: Buffer; label: string }>): void {
  const softhsm = join(svc.dataDir, 'softhsm');
  const pin = readFileSync(join(softhsm, 'user-pin'), 'utf8').trim();
  const script = `
    const pkcs11js = require('pkcs11js');
    const [label, pin, spec] = process.argv.slice(1);
    const lib = new pkcs11js.PKCS11();
    lib.load(process.env.PKCS11_MODULE || '/usr/lib/softhsm/libsofthsm2.so');
    lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    try {
      const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === label);
      if (!slot) throw new Error('no token ' + label);
      const session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      lib.C_Login(session, pkcs11js.CKU_USER, pin);
      for (const o of JSON.parse(spec)) {
        lib.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
          { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_PRIVATE, value: true },
          { type: pkcs11js.CKA_SENSITIVE, value: true },
          { type: pkcs11js.CKA_EXTRACTABLE, value: false },
          { type: pkcs11js.CKA_ENCRYPT, value: true },
          { type: pkcs11js.CKA_DECRYPT, value: true },
          { type: pkcs11js.CKA_ID, value: Buffer.from(o.id, 'hex') },
          { type: pkcs11js.CKA_LABEL, value: o.label },
        ]);
      }
      lib.C_Logout(session);
      lib.C_CloseSession(session);
    } finally {
      lib.C_Finalize();
    }
  `;
  const spec = JSON.stringify(objects.map((o) => ({ id: o.id.toString('hex'), label: o.label })));
  execFileSync(process.execPath, ['-e', script, svc.config.hsm.tokenLabel ?? 'hsm-signer', pin, spec], {
    cwd: REPO_ROOT,
    env: { ...process.env, SOFTHSM2_CONF: join(softhsm, 'softhsm2.conf') },
    encoding: 'utf8',
  });
}

describe('KMS keys', () => {
  let svc: TestService;
  let admin: string;

  const create = async (body: Record<string, unknown>) => {
    const res = await request(svc.url, 'POST', KEYS, { token: admin, body: { projectId: 'default', ...body } });
    return expectStatus(res, 200).key;
  };

  beforeAll(async () => {
    svc = await startTestService();
    admin = await login(svc.url, svc.admin);
  });
  afterAll(async () => {
    await svc?.close();
  });

  describe('create, get, get by name', () => {
    it('creates with defaults: encrypt-decrypt, aes-256-gcm, version 1, enabled', async () => {
      const before = Date.now();
      const key = await create({ name: 'defaults' });
      expectKeyShape(key);
      expect(key).toMatchObject({
        name: 'defaults',
        description: '',
        isDisabled: false,
        projectId: 'default',
        keyUsage: 'encrypt-decrypt',
        version: 1,
        encryptionAlgorithm: 'aes-256-gcm',
      });
      expect(key.createdAt).toBe(key.updatedAt);
      expect(new Date(key.createdAt).getTime()).toBeGreaterThanOrEqual(before - 1000);
      expect(new Date(key.createdAt).getTime()).toBeLessThanOrEqual(Date.now() + 1000);

      const got = await request(svc.url, 'GET', `${KEYS}/${key.id}`, { token: admin });
      expect(Object.keys(got.body)).toEqual(['key']);
      expect(expectStatus(got, 200).key).toEqual(key);
      const byName = await request(svc.url, 'GET', `${KEYS}/key-name/defaults?projectId=default`, { token: admin });
      expect(expectStatus(byName, 200).key).toEqual(key);
    });

    it('creates each algorithm with its usage and a description', async () => {
      const cases = [
        ['encrypt-decrypt', 'aes-128-gcm'],
        ['encrypt-decrypt', 'aes-256-gcm'],
        ['sign-verify', 'RSA_2048'],
        ['sign-verify', 'ECC_NIST_P256'],
        ['sign-verify', 'ECC_NIST_P384'],
        ['sign-verify', 'ECC_NIST_P521'],
      ] as const;
      const orgIds = new Set<string>();
      for (const [keyUsage, encryptionAlgorithm] of cases) {
        const name = `alg-${encryptionAlgorithm.toLowerCase().replaceAll('_', '-')}`;
        const key = await create({ name, keyUsage, encryptionAlgorithm, description: `a ${encryptionAlgorithm} key` });
        expectKeyShape(key);
        expect(key).toMatchObject({ name, keyUsage, encryptionAlgorithm, description: `a ${encryptionAlgorithm} key`, version: 1 });
        orgIds.add(key.orgId);
        expect((await request(svc.url, 'GET', `${KEYS}/${key.id}`, { token: admin })).body.key).toEqual(key);
      }
      expect(orgIds.size).toBe(1);
    });

    it('get by name is per project, and a miss is a 404', async () => {
      const a = await create({ name: 'shared-name', projectId: 'proj-one' });
      const b = await create({ name: 'shared-name', projectId: 'proj-two' });
      expect(a.id).not.toBe(b.id);
      expect((await request(svc.url, 'GET', `${KEYS}/key-name/shared-name?projectId=proj-one`, { token: admin })).body.key.id).toBe(a.id);
      expect((await request(svc.url, 'GET', `${KEYS}/key-name/shared-name?projectId=proj-two`, { token: admin })).body.key.id).toBe(b.id);
      expectStatus(await request(svc.url, 'GET', `${KEYS}/key-name/shared-name?projectId=proj-three`, { token: admin }), 404, 'NotFound');
      expectStatus(await request(svc.url, 'GET', `${KEYS}/key-name/no-such-key?projectId=proj-one`, { token: admin }), 404, 'NotFound');
    });
  });

  describe('list', () => {
    const project = 'list-project';
    // Created in this order, so createdAt order differs from name order.
    const names = ['delta', 'alpha', 'echo', 'charlie', 'bravo', 'alpha-two', 'foxtrot'];
    const created: Array<{ id: string; name: string; createdAt: string }> = [];
    const list = async (query: string) => {
      const res = await request(svc.url, 'GET', `${KEYS}?projectId=${project}${query}`, { token: admin });
      const body = expectStatus(res, 200);
      expect(Object.keys(body).sort()).toEqual(['keys', 'totalCount']);
      for (const key of body.keys) expectKeyShape(key);
      return body as { keys: Array<{ id: string; name: string; projectId: string }>; totalCount: number };
    };

    beforeAll(async () => {
      for (const name of names) {
        created.push(await create({ name, projectId: project }));
        await sleep(3);
      }
      // A key elsewhere never shows up.
      await create({ name: 'alpha', projectId: 'list-other' });
    });

    it('defaults: name ascending, every key, totalCount', async () => {
      const body = await list('');
      expect(body.totalCount).toBe(names.length);
      expect(body.keys.map((k) => k.name)).toEqual([...names].sort());
      expect(body.keys.every((k) => k.projectId === project)).toBe(true);
    });

    it('orderBy name and createdAt, both directions', async () => {
      expect((await list('&orderBy=name&orderDirection=asc')).keys.map((k) => k.name)).toEqual([...names].sort());
      expect((await list('&orderBy=name&orderDirection=desc')).keys.map((k) => k.name)).toEqual([...names].sort().reverse());
      expect((await list('&orderBy=createdAt&orderDirection=asc')).keys.map((k) => k.name)).toEqual(names);
      expect((await list('&orderBy=createdAt&orderDirection=desc')).keys.map((k) => k.name)).toEqual([...names].reverse());
    });

    it('offset and limit page through, totalCount stays the whole count', async () => {
      const sorted = [...names].sort();
      const seen: string[] = [];
      for (let offset = 0; offset < names.length; offset += 3) {
        const page = await list(`&offset=${offset}&limit=3`);
        expect(page.totalCount).toBe(names.length);
        expect(page.keys.length).toBe(Math.min(3, names.length - offset));
        seen.push(...page.keys.map((k) => k.name));
      }
      expect(seen).toEqual(sorted);
      const past = await list(`&offset=${names.length + 5}&limit=10`);
      expect(past.keys).toEqual([]);
      expect(past.totalCount).toBe(names.length);
      const one = await list('&limit=1&orderBy=createdAt&orderDirection=desc');
      expect(one.keys.map((k) => k.name)).toEqual([names[names.length - 1]]);
    });

    it('the default limit is 100; totalCount is the whole count', async () => {
      const many = 'many-keys';
      const names = Array.from({ length: 101 }, (_, i) => `k-${String(i).padStart(3, '0')}`);
      for (let i = 0; i < names.length; i += 10) {
        await Promise.all(names.slice(i, i + 10).map((name) => create({ name, projectId: many })));
      }
      const first = expectStatus(await request(svc.url, 'GET', `${KEYS}?projectId=${many}`, { token: admin }), 200);
      expect(first.totalCount).toBe(101);
      expect(first.keys).toHaveLength(100);
      expect(first.keys.map((k: { name: string }) => k.name)).toEqual(names.slice(0, 100));
      const rest = expectStatus(await request(svc.url, 'GET', `${KEYS}?projectId=${many}&offset=100`, { token: admin }), 200);
      expect(rest.keys.map((k: { name: string }) => k.name)).toEqual(['k-100']);
      expect(rest.totalCount).toBe(101);
    });

    it('search filters by name, and totalCount counts the matches', async () => {
      const alpha = await list('&search=alpha');
      expect(alpha.keys.map((k) => k.name)).toEqual(['alpha', 'alpha-two']);
      expect(alpha.totalCount).toBe(2);
      const paged = await list('&search=alpha&limit=1&offset=1');
      expect(paged.keys.map((k) => k.name)).toEqual(['alpha-two']);
      expect(paged.totalCount).toBe(2);
      const ar = await list('&search=ar');
      expect(ar.keys.map((k) => k.name)).toEqual(['charlie']);
      const none = await list('&search=zulu');
      expect(none).toEqual({ keys: [], totalCount: 0 });
      // LIKE wildcards are literal characters in a search.
      expect(await list('&search=_')).toEqual({ keys: [], totalCount: 0 });
      expect(await list('&search=%25')).toEqual({ keys: [], totalCount: 0 });
      expect(await list('&search=a_p')).toEqual({ keys: [], totalCount: 0 });
    });
  });

  describe('update', () => {
    it('changes name, description and isDisabled; updatedAt moves, createdAt does not', async () => {
      const key = await create({ name: 'to-update', description: 'first' });
      await sleep(5);
      const renamed = await request(svc.url, 'PATCH', `${KEYS}/${key.id}`, { token: admin, body: { name: 'updated', description: 'second' } });
      const updated = expectStatus(renamed, 200).key;
      expectKeyShape(updated);
      expect(updated).toMatchObject({ id: key.id, name: 'updated', description: 'second', isDisabled: false, createdAt: key.createdAt, version: 1 });
      expect(new Date(updated.updatedAt).getTime()).toBeGreaterThan(new Date(key.updatedAt).getTime());
      expect((await request(svc.url, 'GET', `${KEYS}/${key.id}`, { token: admin })).body.key).toEqual(updated);
      expect((await request(svc.url, 'GET', `${KEYS}/key-name/updated?projectId=default`, { token: admin })).body.key.id).toBe(key.id);
      expectStatus(await request(svc.url, 'GET', `${KEYS}/key-name/to-update?projectId=default`, { token: admin }), 404);
      // The old name is free again.
      const reuse = await create({ name: 'to-update' });
      expect(reuse.id).not.toBe(key.id);

      // Only what is sent changes.
      const onlyDesc = expectStatus(await request(svc.url, 'PATCH', `${KEYS}/${key.id}`, { token: admin, body: { description: '' } }), 200).key;
      expect(onlyDesc).toMatchObject({ name: 'updated', description: '', isDisabled: false });

      const disabled = expectStatus(await request(svc.url, 'PATCH', `${KEYS}/${key.id}`, { token: admin, body: { isDisabled: true } }), 200).key;
      expect(disabled).toMatchObject({ name: 'updated', isDisabled: true });
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${key.id}/encrypt`, { token: admin, body: { plaintext: b64('x') } }), 400, 'BadRequest');
      const enabled = expectStatus(await request(svc.url, 'PATCH', `${KEYS}/${key.id}`, { token: admin, body: { isDisabled: false } }), 200).key;
      expect(enabled.isDisabled).toBe(false);
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${key.id}/encrypt`, { token: admin, body: { plaintext: b64('x') } }), 200);
    });

    it('an unknown key is a 404 and a taken name a 400', async () => {
      expectStatus(await request(svc.url, 'PATCH', `${KEYS}/${randomUUID()}`, { token: admin, body: { description: 'x' } }), 404, 'NotFound');
      const a = await create({ name: 'taken-a' });
      await create({ name: 'taken-b' });
      expectStatus(await request(svc.url, 'PATCH', `${KEYS}/${a.id}`, { token: admin, body: { name: 'taken-b' } }), 400, 'BadRequest');
      // Renaming to its own name is fine.
      expectStatus(await request(svc.url, 'PATCH', `${KEYS}/${a.id}`, { token: admin, body: { name: 'taken-a' } }), 200);
    });
  });

  describe('rotate and delete', () => {
    it('rotate adds a version and a token object; old versions stay', async () => {
      const key = await create({ name: 'rotating' });
      expect(objectsOf(tokenObjects(svc), key.id)).toHaveLength(1);
      const r1 = expectStatus(await request(svc.url, 'POST', `${KEYS}/${key.id}/rotate`, { token: admin }), 200).key;
      expectKeyShape(r1);
      expect(r1).toMatchObject({ id: key.id, version: 2, name: 'rotating', createdAt: key.createdAt });
      const r2 = expectStatus(await request(svc.url, 'POST', `${KEYS}/${key.id}/rotate`, { token: admin }), 200).key;
      expect(r2.version).toBe(3);
      expect((await request(svc.url, 'GET', `${KEYS}/${key.id}`, { token: admin })).body.key.version).toBe(3);
      const objects = objectsOf(tokenObjects(svc), key.id);
      expect(objects).toHaveLength(3);
      expect(objects.every((o) => o.class === 'secret')).toBe(true);
      expect(new Set(objects.map((o) => o.id)).size).toBe(3);
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${randomUUID()}/rotate`, { token: admin }), 404, 'NotFound');
    });

    it('delete returns the key, then it is a 404 and its token objects are gone', async () => {
      const aes = await create({ name: 'doomed' });
      await request(svc.url, 'POST', `${KEYS}/${aes.id}/rotate`, { token: admin });
      const ec = await create({ name: 'doomed-ec', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' });
      const keeper = await create({ name: 'keeper' });
      const before = tokenObjects(svc);
      expect(objectsOf(before, aes.id)).toHaveLength(2);
      expect(objectsOf(before, ec.id).map((o) => o.class).sort()).toEqual(['private', 'public']);
      const aesIds = new Set(objectsOf(before, aes.id).map((o) => o.id));
      const ecIds = new Set(objectsOf(before, ec.id).map((o) => o.id));

      const deleted = expectStatus(await request(svc.url, 'DELETE', `${KEYS}/${aes.id}`, { token: admin }), 200);
      expect(Object.keys(deleted)).toEqual(['key']);
      expectKeyShape(deleted.key);
      expect(deleted.key).toMatchObject({ id: aes.id, name: 'doomed', version: 2 });
      expectStatus(await request(svc.url, 'DELETE', `${KEYS}/${ec.id}`, { token: admin }), 200);

      for (const id of [aes.id, ec.id]) {
        expectStatus(await request(svc.url, 'GET', `${KEYS}/${id}`, { token: admin }), 404, 'NotFound');
        expectStatus(await request(svc.url, 'DELETE', `${KEYS}/${id}`, { token: admin }), 404, 'NotFound');
      }
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${aes.id}/encrypt`, { token: admin, body: { plaintext: b64('x') } }), 404, 'NotFound');
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${ec.id}/sign`, { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x') } }), 404, 'NotFound');
      expectStatus(await request(svc.url, 'GET', `${KEYS}/key-name/doomed?projectId=default`, { token: admin }), 404, 'NotFound');
      const listed = (await request(svc.url, 'GET', `${KEYS}?projectId=default&limit=100`, { token: admin })).body.keys.map((k: { id: string }) => k.id);
      expect(listed).not.toContain(aes.id);
      expect(listed).toContain(keeper.id);

      const after = tokenObjects(svc);
      expect(after.filter((o) => aesIds.has(o.id) || ecIds.has(o.id))).toEqual([]);
      expect(objectsOf(after, aes.id)).toEqual([]);
      expect(objectsOf(after, ec.id)).toEqual([]);
      expect(objectsOf(after, keeper.id)).toHaveLength(1);
      expect(after.length).toBe(before.length - 4);
      // The name can be used again.
      const again = await create({ name: 'doomed' });
      expect(again.id).not.toBe(aes.id);
      expectStatus(await request(svc.url, 'POST', `${KEYS}/${keeper.id}/encrypt`, { token: admin, body: { plaintext: b64('still here') } }), 200);
    });
  });

  describe('token object protection', () => {
    it('every private and secret object is sensitive, never extractable, its value unreadable', async () => {
      await create({ name: 'prot-aes' });
      await create({ name: 'prot-aes128', encryptionAlgorithm: 'aes-128-gcm' });
      await create({ name: 'prot-rsa', keyUsage: 'sign-verify', encryptionAlgorithm: 'RSA_2048' });
      await create({ name: 'prot-ec', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P384' });
      const objects = tokenObjects(svc);
      const protectedObjects = objects.filter((o) => o.class === 'private' || o.class === 'secret');
      expect(protectedObjects.length).toBeGreaterThanOrEqual(4);
      expect(objects.some((o) => o.class === 'private')).toBe(true);
      expect(objects.some((o) => o.class === 'secret')).toBe(true);
      for (const o of protectedObjects) {
        expect(o, o.label).toMatchObject({
          token: true,
          private: true,
          sensitive: true,
          extractable: false,
          neverExtractable: true,
          alwaysSensitive: true,
          valueReadable: false,
        });
      }
      for (const o of objects) {
        expect(o.label.startsWith('hsm-signer:'), o.label).toBe(true);
        expect(o.class).not.toBe('other');
      }
    });
  });
});

describe('restart and reconcile', () => {
  it('a restart reuses credentials and keys, and reconcile removes what a crash left', async () => {
    const first = await startTestService();
    let second: TestService | undefined;
    try {
      const token = await login(first.url, first.admin);
      const make = async (body: Record<string, unknown>) =>
        expectStatus(await request(first.url, 'POST', KEYS, { token, body: { projectId: 'default', ...body } }), 200).key;
      const keep = await make({ name: 'keep' });
      const ct1 = (await request(first.url, 'POST', `${KEYS}/${keep.id}/encrypt`, { token, body: { plaintext: b64('before restart') } })).body.ciphertext;
      await request(first.url, 'POST', `${KEYS}/${keep.id}/rotate`, { token });
      const ct2 = (await request(first.url, 'POST', `${KEYS}/${keep.id}/encrypt`, { token, body: { plaintext: b64('after rotate') } })).body.ciphertext;
      const signer = await make({ name: 'keep-signer', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' });
      const sig = (await request(first.url, 'POST', `${KEYS}/${signer.id}/sign`, { token, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('msg') } })).body.signature;
      const halfDeleted = await make({ name: 'half-deleted' });
      const objectsBefore = tokenObjects(first);
      const keepObjects = objectsOf(objectsBefore, keep.id).concat(objectsOf(objectsBefore, signer.id));
      expect(keepObjects).toHaveLength(4);
      expect(objectsOf(objectsBefore, halfDeleted.id)).toHaveLength(1);
      const credentialsFile = readFileSync(join(first.dataDir, 'admin-credentials.json'), 'utf8');
      await first.close({ keepData: true });

      // What a crash could leave: an object no row names, a pending key whose object was made,
      // a pending key without any object, and a key half-way through its delete. Plus an
      // object of another application, which must be left alone.
      const orphan = { id: randomBytes(16), label: 'hsm-signer:orphan-from-a-crash' };
      const pendingId = randomUUID();
      const pendingObject = { id: randomBytes(16), label: `hsm-signer:${pendingId}:v1` };
      const foreign = { id: randomBytes(16), label: 'another-app:do-not-touch' };
      const rotationObject = { id: randomBytes(16), label: `hsm-signer:${keep.id}:v3` };
      // And two creations of other replicas: one still alive (its presence lease runs), whose
      // work in progress must stay, and one stopped (its lease lapsed), whose leftovers go.
      const liveId = randomUUID();
      const liveObject = { id: randomBytes(16), label: `hsm-signer:${liveId}:v1` };
      const stoppedId = randomUUID();
      const stoppedObject = { id: randomBytes(16), label: `hsm-signer:${stoppedId}:v1` };
      addTokenObjects(first, [orphan, pendingObject, foreign, rotationObject, liveObject, stoppedObject]);

      const dbPath = join(first.dataDir, 'hsm-signer.db');
      const db = new Database(dbPath);
      try {
        const now = new Date().toISOString();
        const insertKey = db.prepare(
          `INSERT INTO kms_keys (id, org_id, project_id, name, description, is_disabled, key_usage, algorithm, version, state, created_at, updated_at)
           VALUES (?, ?, 'default', ?, '', 0, 'encrypt-decrypt', 'aes-256-gcm', 1, 'pending', ?, ?)`,
        );
        insertKey.run(pendingId, keep.orgId, 'pending-key', now, now);
        db.prepare(`INSERT INTO kms_key_versions (key_id, version, object_id, public_key, state, created_at) VALUES (?, 1, ?, NULL, 'pending', ?)`).run(
          pendingId,
          pendingObject.id,
          now,
        );
        // A rotation of 'keep' to version 3 interrupted after the token made its object.
        db.prepare(`INSERT INTO kms_key_versions (key_id, version, object_id, public_key, state, created_at) VALUES (?, 3, ?, NULL, 'pending', ?)`).run(
          keep.id,
          rotationObject.id,
          now,
        );
        const pendingEmptyId = randomUUID();
        insertKey.run(pendingEmptyId, keep.orgId, 'pending-empty', now, now);
        const insertLease = db.prepare(`INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)`);
        insertLease.run('replica:live-elsewhere', 'live-elsewhere', Date.now() + 600_000);
        insertLease.run('replica:stopped-elsewhere', 'stopped-elsewhere', Date.now() - 1);
        for (const [id, object, owner] of [
          [liveId, liveObject, 'live-elsewhere'],
          [stoppedId, stoppedObject, 'stopped-elsewhere'],
        ] as const) {
          insertKey.run(id, keep.orgId, `pending-${owner}`, now, now);
          db.prepare(`UPDATE kms_keys SET owner = ? WHERE id = ?`).run(owner, id);
          db.prepare(`INSERT INTO kms_key_versions (key_id, version, object_id, public_key, state, created_at, owner) VALUES (?, 1, ?, NULL, 'pending', ?, ?)`).run(id, object.id, now, owner);
        }
        db.prepare(`UPDATE kms_keys SET state = 'deleting' WHERE id = ?`).run(halfDeleted.id);
        db.prepare(`UPDATE kms_key_versions SET state = 'deleting' WHERE key_id = ?`).run(halfDeleted.id);
      } finally {
        db.close();
      }
      const labelsAfterCrash = tokenObjects(first).map((o) => o.label);
      expect(labelsAfterCrash).toContain(orphan.label);
      expect(labelsAfterCrash).toContain(pendingObject.label);
      expect(labelsAfterCrash).toContain(foreign.label);

      second = await startTestService({}, first.dataDir);
      expect(second.admin).toEqual(first.admin);
      expect(readFileSync(join(second.dataDir, 'admin-credentials.json'), 'utf8')).toBe(credentialsFile);

      // The token: orphan, pending and half-deleted objects gone; real keys and the foreign object kept.
      const objectsAfter = tokenObjects(second);
      const idsAfter = new Set(objectsAfter.map((o) => o.id));
      expect(idsAfter.has(orphan.id.toString('hex'))).toBe(false);
      expect(idsAfter.has(pendingObject.id.toString('hex'))).toBe(false);
      expect(idsAfter.has(rotationObject.id.toString('hex'))).toBe(false);
      expect(idsAfter.has(stoppedObject.id.toString('hex'))).toBe(false);
      expect(idsAfter.has(liveObject.id.toString('hex'))).toBe(true);
      expect(objectsAfter.filter((o) => o.label.includes(halfDeleted.id))).toEqual([]);
      expect(objectsAfter.filter((o) => o.label === foreign.label)).toHaveLength(1);
      for (const o of keepObjects) expect(idsAfter.has(o.id), o.label).toBe(true);

      // The store: no unfinished rows remain.
      const check = new Database(dbPath, { readonly: true });
      try {
        // Only the live replica's creation in progress is left, still pending.
        expect(check.prepare(`SELECT id, name, state FROM kms_keys WHERE state != 'active'`).all()).toEqual([{ id: liveId, name: 'pending-live-elsewhere', state: 'pending' }]);
        expect(check.prepare(`SELECT key_id, version, state FROM kms_key_versions WHERE state != 'active'`).all()).toEqual([{ key_id: liveId, version: 1, state: 'pending' }]);
        expect(check.prepare(`SELECT id FROM kms_keys WHERE id = ?`).all(stoppedId)).toEqual([]);
        expect(check.prepare(`SELECT id FROM kms_keys WHERE id IN (?, ?)`).all(pendingId, halfDeleted.id)).toEqual([]);
      } finally {
        check.close();
      }

      // The API: the same credentials log in; old keys and ciphertexts work.
      const token2 = await login(second.url, first.admin);
      const gotKeep = expectStatus(await request(second.url, 'GET', `${KEYS}/${keep.id}`, { token: token2 }), 200).key;
      expect(gotKeep).toMatchObject({ id: keep.id, orgId: keep.orgId, name: 'keep', version: 2, createdAt: keep.createdAt });
      for (const [ciphertext, text] of [
        [ct1, 'before restart'],
        [ct2, 'after rotate'],
      ] as const) {
        const dec = await request(second.url, 'POST', `${KEYS}/${keep.id}/decrypt`, { token: token2, body: { ciphertext } });
        expect(Buffer.from(expectStatus(dec, 200).plaintext, 'base64').toString()).toBe(text);
      }
      // The interrupted rotation is undone: new ciphertexts still use version 2, and the next
      // rotation makes version 3 afresh.
      const ct2b = await request(second.url, 'POST', `${KEYS}/${keep.id}/encrypt`, { token: token2, body: { plaintext: b64('x') } });
      const ct2bytes = Buffer.from(expectStatus(ct2b, 200).ciphertext, 'base64');
      expect(ct2bytes.readUInt32BE(ct2bytes.length - 7)).toBe(2);
      const rotated = expectStatus(await request(second.url, 'POST', `${KEYS}/${keep.id}/rotate`, { token: token2 }), 200).key;
      expect(rotated.version).toBe(3);
      const ct3 = Buffer.from((await request(second.url, 'POST', `${KEYS}/${keep.id}/encrypt`, { token: token2, body: { plaintext: b64('v3') } })).body.ciphertext, 'base64');
      expect(ct3.readUInt32BE(ct3.length - 7)).toBe(3);
      const dec3 = await request(second.url, 'POST', `${KEYS}/${keep.id}/decrypt`, { token: token2, body: { ciphertext: ct3.toString('base64') } });
      expect(Buffer.from(expectStatus(dec3, 200).plaintext, 'base64').toString()).toBe('v3');
      const verified = await request(second.url, 'POST', `${KEYS}/${signer.id}/verify`, {
        token: token2,
        body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('msg'), signature: sig },
      });
      expect(expectStatus(verified, 200).signatureValid).toBe(true);
      expectStatus(await request(second.url, 'GET', `${KEYS}/${pendingId}`, { token: token2 }), 404, 'NotFound');
      expectStatus(await request(second.url, 'GET', `${KEYS}/${halfDeleted.id}`, { token: token2 }), 404, 'NotFound');
      expectStatus(await request(second.url, 'GET', `${KEYS}/key-name/pending-key?projectId=default`, { token: token2 }), 404, 'NotFound');
      // The names the crash held are free again.
      for (const name of ['pending-key', 'pending-empty', 'half-deleted']) {
        expectStatus(await request(second.url, 'POST', KEYS, { token: token2, body: { projectId: 'default', name } }), 200);
      }
      const list = (await request(second.url, 'GET', `${KEYS}?projectId=default`, { token: token2 })).body;
      expect(list.keys.map((k: { name: string }) => k.name).sort()).toEqual(['half-deleted', 'keep', 'keep-signer', 'pending-empty', 'pending-key']);
      expect(list.totalCount).toBe(5);
      // New keys get the same orgId.
      expect(list.keys.every((k: { orgId: string }) => k.orgId === keep.orgId)).toBe(true);
    } finally {
      if (second) await second.close();
      else await first.close().catch(() => undefined);
    }
  });
});
