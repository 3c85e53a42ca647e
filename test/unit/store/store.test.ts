/**
 * Every store method on both engines: each test runs once on a fresh SQLite file and once on a
 * fresh PostgreSQL database (helpers/postgres.ts), through the same factories the service
 * uses. Besides what each method returns, what the engines must agree on: BIGINT epoch
 * milliseconds come back as numbers and BYTEA as Buffers, text sorts in byte order, a LIKE
 * search ignores ASCII case and treats % and _ literally; and what replicas rely on: leases
 * have one holder at a time, CRL numbers never repeat, the audit chain stays one gapless chain
 * under concurrent appenders, migrations run once when two openers race.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { sql } from 'kysely';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chainEvents, eventHash, verifyAuditChain } from '../../../src/services/audit-chain.js';
import { createAuditAppender, createAuditStore, readAuditChain, withSnapshot, type AuditEventRecord } from '../../../src/store/audit-store.js';
import { isUniqueViolation, openStore, scrubError, type Store, type StoreLocation } from '../../../src/store/database.js';
import { createIdentityStore, type IdentityRecord } from '../../../src/store/identity-store.js';
import { createKeyStore, type KeyRecord, type KeyVersionRecord } from '../../../src/store/key-store.js';
import { createLeaseStore } from '../../../src/store/lease-store.js';
import { createPkiStore, type CaRecord, type CertificateRecord, type ProfileRecord } from '../../../src/store/pki-store.js';
import { getOrCreateSetting } from '../../../src/store/settings-store.js';
import { createTestDatabase } from '../../helpers/postgres.js';

const MIGRATIONS = fileURLToPath(new URL('../../../src/store/migrations/', import.meta.url));
/** Every migration file of an engine, in the order they apply. */
const migrationFiles = (engine: 'sqlite' | 'postgres') => readdirSync(join(MIGRATIONS, engine)).filter((name) => name.endsWith('.sql')).sort();

type Engine = StoreLocation['engine'];

let dir: string;
const opened: Store[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-store-'));
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((store) => store.close()));
  rmSync(dir, { recursive: true, force: true });
});

/** A fresh, empty location for `engine`. */
async function freshLocation(engine: Engine): Promise<StoreLocation> {
  return engine === 'sqlite' ? { engine, path: join(dir, `${randomUUID()}.db`) } : { engine, url: await createTestDatabase() };
}

async function open(location: StoreLocation): Promise<Store> {
  const store = await openStore(location);
  opened.push(store);
  return store;
}

/**
 * A second connection to the same store, for racing two callers. On SQLite, the same store:
 * two connections to one file in one thread would each wait for the other's write lock
 * synchronously (busy_timeout blocks the thread the other needs to commit), which the service
 * never does (one store per thread; its audit writer is a thread of its own, and those races
 * are in audit-chain.test.ts and the two-process tests). On PostgreSQL, a second pool.
 */
async function secondConnection(store: Store): Promise<Store> {
  return store.engine === 'sqlite' ? store : open(store.location);
}

const iso = (ms: number) => new Date(ms).toISOString();
/** The replica id pending rows are written under here. */
const OWNER = 'store-test-replica';

function key(overrides: Partial<KeyRecord> = {}): KeyRecord {
  return {
    id: randomUUID(),
    orgId: 'org',
    projectId: 'p1',
    name: `key-${randomUUID()}`,
    description: '',
    isDisabled: false,
    keyUsage: 'encrypt-decrypt',
    algorithm: 'aes-256-gcm',
    version: 1,
    state: 'pending',
    createdAt: iso(1_700_000_000_000),
    updatedAt: iso(1_700_000_000_000),
    ...overrides,
  };
}

function version(keyId: string, n = 1, overrides: Partial<KeyVersionRecord> = {}): KeyVersionRecord {
  return { keyId, version: n, objectId: randomBytes(16), publicKey: null, state: 'pending', ...overrides };
}

function identity(overrides: Partial<IdentityRecord> = {}): IdentityRecord {
  return {
    id: randomUUID(),
    name: 'app',
    clientId: randomUUID(),
    permissions: [{ projectId: 'p1', actions: ['kms.key.encrypt'] }],
    createdAt: iso(1_700_000_000_000),
    updatedAt: iso(1_700_000_000_000),
    ...overrides,
  };
}

function ca(overrides: Partial<CaRecord> = {}): CaRecord {
  return {
    id: randomUUID(),
    projectId: 'p1',
    type: 'root',
    status: 'active',
    state: 'active',
    parentCaId: null,
    subject: randomBytes(20),
    subjectDn: 'CN=root',
    keyAlgorithm: 'EC_prime256v1',
    objectId: randomBytes(16),
    publicKey: randomBytes(91),
    pathLength: null,
    certificate: randomBytes(300),
    outsideChain: null,
    csr: null,
    serialNumber: randomBytes(20).toString('hex'),
    notBefore: iso(1_700_000_000_000),
    notAfter: iso(1_800_000_000_000),
    crlNumber: 0,
    crl: null,
    crlNextUpdate: null,
    createdAt: iso(1_700_000_000_000),
    updatedAt: iso(1_700_000_000_000),
    ...overrides,
  };
}

function certificate(caId: string, overrides: Partial<CertificateRecord> = {}): CertificateRecord {
  return {
    id: randomUUID(),
    projectId: 'p1',
    caId,
    profileId: null,
    serialNumber: randomBytes(20).toString('hex'),
    subjectDn: 'CN=web',
    sans: [{ type: 'dns_name', value: 'web.internal' }],
    notBefore: iso(1_700_000_000_000),
    notAfter: iso(1_710_000_000_000),
    der: randomBytes(400),
    fingerprintSha256: randomBytes(32).toString('hex'),
    status: 'active',
    revocationReason: null,
    revokedAt: null,
    createdAt: iso(1_700_000_000_000),
    ...overrides,
  };
}

function unchained(n: number, prefix = 'req') {
  return Array.from({ length: n }, (_, i) => ({
    timeMs: 1_700_000_000_000 + i,
    reqId: `${prefix}-${i}`,
    identityId: i % 2 ? 'id-1' : null,
    action: i % 3 ? 'kms.key.encrypt' : 'auth.login',
    resourceType: i % 3 ? 'key' : null,
    resourceId: i % 3 ? `key-${i % 4}` : null,
    statusCode: i % 5 ? 200 : 403,
    clientAddress: '127.0.0.1',
  }));
}

describe.each<Engine>(['sqlite', 'postgres'])('the store on %s', (engine) => {
  let store: Store;
  beforeEach(async () => {
    store = await open(await freshLocation(engine));
  });

  describe('keys', () => {
    it('insertPending, activate, get, getByName, getVersion, versions: pending rows are invisible until activated', async () => {
      const keys = createKeyStore(store);
      const k = key();
      const v1 = version(k.id);
      await keys.insertPending(k, v1, OWNER);
      expect(await keys.get(k.id)).toBeUndefined();
      expect(await keys.getVersion(k.id, 1)).toBeUndefined();
      const publicKey = randomBytes(91);
      await keys.activate(k.id, 1, publicKey, iso(1_700_000_001_000));
      const got = await keys.get(k.id);
      expect(got).toEqual({ ...k, state: 'active', updatedAt: iso(1_700_000_001_000) });
      expect(await keys.getByName('p1', k.name)).toEqual(got);
      expect(await keys.getByName('p2', k.name)).toBeUndefined();
      const stored = await keys.getVersion(k.id, 1);
      expect(Buffer.isBuffer(stored!.objectId) && Buffer.isBuffer(stored!.publicKey)).toBe(true);
      expect(stored).toEqual({ keyId: k.id, version: 1, objectId: v1.objectId, publicKey, state: 'active' });

      const v2 = version(k.id, 2);
      await keys.insertPendingVersion(v2, OWNER);
      expect((await keys.versions(k.id)).map((v) => [v.version, v.state])).toEqual([[1, 'active'], [2, 'pending']]);
      await keys.activate(k.id, 2, null, iso(1_700_000_002_000));
      expect((await keys.get(k.id))!.version).toBe(2);
      await expect(keys.insertPending(key({ name: k.name }), version(randomUUID()), OWNER)).rejects.toThrow();
    });

    it('activate reports a pending row removed meanwhile (by another replica\'s reconcile) instead of activating nothing', async () => {
      const keys = createKeyStore(store);
      const k = key();
      await keys.insertPending(k, version(k.id), OWNER);
      await keys.removeVersion(k.id, 1);
      expect(await keys.activate(k.id, 1, null, k.updatedAt)).toBe(false);
      expect(await keys.get(k.id)).toBeUndefined();
      const other = key();
      await keys.insertPending(other, version(other.id), OWNER);
      expect(await keys.activate(other.id, 1, null, other.updatedAt)).toBe(true);
      await expect(keys.insertPendingVersion(version(other.id, 1), OWNER)).rejects.toSatisfy(isUniqueViolation);
    });

    it('getMany returns the active keys among the ids, past the IN-list chunk size', async () => {
      const keys = createKeyStore(store);
      const made: KeyRecord[] = [];
      for (let i = 0; i < 3; i++) {
        const k = key();
        await keys.insertPending(k, version(k.id), OWNER);
        await keys.activate(k.id, 1, null, k.updatedAt);
        made.push(k);
      }
      const pending = key();
      await keys.insertPending(pending, version(pending.id), OWNER);
      const ids = [...Array.from({ length: 1500 }, () => randomUUID()), made[0]!.id, pending.id, made[2]!.id, made[0]!.id];
      expect((await keys.getMany(ids)).map((k) => k.id).sort()).toEqual([made[0]!.id, made[2]!.id].sort());
      expect(await keys.getMany([])).toEqual([]);
    });

    it('list: search ignores ASCII case and takes % and _ literally; order, paging and the count', async () => {
      const keys = createKeyStore(store);
      const names = ['Alpha', 'alpine', 'beta_1', 'beta%2', 'betaX3', 'Zulu'];
      for (const [i, name] of names.entries()) {
        const k = key({ name, createdAt: iso(1_700_000_000_000 + i), updatedAt: iso(1_700_000_100_000 - i) });
        await keys.insertPending(k, version(k.id), OWNER);
        await keys.activate(k.id, 1, null, k.updatedAt);
      }
      const other = key({ projectId: 'p2', name: 'alpha' });
      await keys.insertPending(other, version(other.id), OWNER);
      await keys.activate(other.id, 1, null, other.updatedAt);

      const list = (query: Partial<Parameters<typeof keys.list>[0]>) =>
        keys.list({ projectId: 'p1', offset: 0, limit: 100, orderBy: 'name', orderDirection: 'asc', ...query });
      // Byte order, as SQLite sorts: upper case before lower case.
      expect((await list({})).keys.map((k) => k.name)).toEqual(['Alpha', 'Zulu', 'alpine', 'beta%2', 'betaX3', 'beta_1']);
      expect((await list({ orderDirection: 'desc', limit: 2, offset: 1 })).keys.map((k) => k.name)).toEqual(['betaX3', 'beta%2']);
      expect((await list({ limit: 2 })).totalCount).toBe(6);
      expect((await list({ orderBy: 'createdAt' })).keys.map((k) => k.name)).toEqual(names);
      expect((await list({ orderBy: 'updatedAt' })).keys.map((k) => k.name)).toEqual([...names].reverse());
      expect((await list({ search: 'ALP' })).keys.map((k) => k.name)).toEqual(['Alpha', 'alpine']);
      expect(await list({ search: 'beta_' })).toMatchObject({ keys: [{ name: 'beta_1' }], totalCount: 1 });
      expect((await list({ search: '%' })).keys.map((k) => k.name)).toEqual(['beta%2']);
      expect((await list({ search: 'nothing' })).totalCount).toBe(0);
    });

    it('update changes only the fields given', async () => {
      const keys = createKeyStore(store);
      const k = key({ description: 'before' });
      await keys.insertPending(k, version(k.id), OWNER);
      await keys.activate(k.id, 1, null, k.updatedAt);
      await keys.update(k.id, { isDisabled: true }, iso(1_700_000_005_000));
      expect(await keys.get(k.id)).toMatchObject({ isDisabled: true, description: 'before', name: k.name, updatedAt: iso(1_700_000_005_000) });
      await keys.update(k.id, { name: 'renamed', description: 'after', isDisabled: false }, iso(1_700_000_006_000));
      expect(await keys.get(k.id)).toMatchObject({ isDisabled: false, description: 'after', name: 'renamed' });
    });

    it('markDeleting, unfinished, unfinishedKeys (with the pending rows\' writers), removeVersion, remove, knownObjectIds', async () => {
      const keys = createKeyStore(store);
      const done = key();
      const v = version(done.id);
      await keys.insertPending(done, v, OWNER);
      await keys.activate(done.id, 1, null, done.updatedAt);
      const half = key();
      const hv = version(half.id);
      await keys.insertPending(half, hv, OWNER);
      expect((await keys.knownObjectIds()).has(v.objectId.toString('hex'))).toBe(true);
      expect([...(await keys.knownObjectIds())].sort()).toEqual([v.objectId.toString('hex'), hv.objectId.toString('hex')].sort());

      expect((await keys.unfinished()).map((u) => [u.keyId, u.state, u.keyState, u.owner])).toEqual([[half.id, 'pending', 'pending', OWNER]]);
      const rotation = version(done.id, 2);
      await keys.insertPendingVersion(rotation, 'another-replica');
      expect((await keys.unfinished()).find((u) => u.keyId === done.id)).toMatchObject({ version: 2, state: 'pending', keyState: 'active', owner: 'another-replica' });
      await keys.removeVersion(done.id, 2);
      await keys.markDeleting(done.id);
      expect(await keys.get(done.id)).toBeUndefined();
      const unfinished = await keys.unfinished();
      expect(unfinished.find((u) => u.keyId === done.id)).toMatchObject({ state: 'deleting', keyState: 'deleting', objectId: v.objectId });
      expect((await keys.unfinishedKeys()).sort((x, y) => x.id.localeCompare(y.id))).toEqual(
        [
          { id: done.id, state: 'deleting', owner: OWNER },
          { id: half.id, state: 'pending', owner: OWNER },
        ].sort((x, y) => x.id.localeCompare(y.id)),
      );

      await keys.removeVersion(half.id, 1);
      expect(await keys.versions(half.id)).toEqual([]);
      await keys.remove(half.id);
      await keys.remove(done.id);
      expect(await keys.unfinished()).toEqual([]);
      expect(await keys.unfinishedKeys()).toEqual([]);
      const again = key();
      await keys.insertPending(again, version(again.id), OWNER);
      await keys.activate(again.id, 1, null, again.updatedAt);
      await keys.remove(again.id);
      // The versions go with their key (ON DELETE CASCADE, foreign keys on for SQLite too).
      expect(await keys.versions(again.id)).toEqual([]);
      expect(await keys.unfinishedKeys()).toEqual([]);
    });
  });

  describe('identities', () => {
    it('insert, get, getByClientId, list, remove (with its secrets and tokens)', async () => {
      const identities = createIdentityStore(store);
      const a = identity({ createdAt: iso(1_700_000_000_001) });
      const b = identity({ name: 'b', permissions: [{ projectId: '*', actions: ['*'] }] });
      await identities.insert(a);
      await identities.insert(b);
      expect(await identities.get(a.id)).toEqual(a);
      expect(await identities.getByClientId(b.clientId)).toEqual(b);
      expect(await identities.get('missing')).toBeUndefined();
      expect((await identities.list()).map((i) => i.id)).toEqual([b.id, a.id]);
      await expect(identities.insert(identity({ clientId: a.clientId }))).rejects.toThrow();

      await identities.insertSecret({ id: randomUUID(), identityId: a.id, prefix: 'abc', hash: 'h', description: '', createdAt: a.createdAt });
      await identities.insertToken({ tokenHash: 'th', identityId: a.id, issuedAt: 1, expiresAt: 2, maxExpiresAt: 3 });
      await identities.remove(a.id);
      expect(await identities.get(a.id)).toBeUndefined();
      expect(await identities.secrets(a.id)).toEqual([]);
      expect(await identities.getToken('th')).toBeUndefined();
    });

    it('client secrets: insertSecret, secrets in order, secretsByPrefix, removeSecret', async () => {
      const identities = createIdentityStore(store);
      const a = identity();
      await identities.insert(a);
      const first = { id: randomUUID(), identityId: a.id, prefix: 'aaa', hash: 'scrypt$1', description: 'ci', createdAt: iso(1_700_000_000_000) };
      const second = { id: randomUUID(), identityId: a.id, prefix: 'bbb', hash: 'scrypt$2', description: '', createdAt: iso(1_700_000_000_001) };
      await identities.insertSecret(second);
      await identities.insertSecret(first);
      expect(await identities.secrets(a.id)).toEqual([first, second]);
      expect(await identities.secretsByPrefix(a.id, 'bbb')).toEqual([second]);
      expect(await identities.secretsByPrefix(a.id, 'zzz')).toEqual([]);
      expect(await identities.removeSecret(a.id, first.id)).toBe(true);
      expect(await identities.removeSecret(a.id, first.id)).toBe(false);
      expect(await identities.secrets(a.id)).toEqual([second]);
    });

    it('access tokens: epoch milliseconds come back as numbers; tokenHolders, extendToken, removeExpiredTokens', async () => {
      const identities = createIdentityStore(store);
      const a = identity();
      await identities.insert(a);
      const now = 1_764_000_000_123; // past 2^32: a BIGINT on PostgreSQL
      await identities.insertToken({ tokenHash: 't1', identityId: a.id, issuedAt: now, expiresAt: now + 1000, maxExpiresAt: now + 5000 });
      await identities.insertToken({ tokenHash: 't2', identityId: a.id, issuedAt: now, expiresAt: now + 10, maxExpiresAt: now + 5000 });
      expect(await identities.getToken('t1')).toStrictEqual({ tokenHash: 't1', identityId: a.id, issuedAt: now, expiresAt: now + 1000, maxExpiresAt: now + 5000 });
      const holders = await identities.tokenHolders(['t1', 'missing', ...Array.from({ length: 1200 }, (_, i) => `x${i}`)]);
      expect(holders).toStrictEqual([{ tokenHash: 't1', expiresAt: now + 1000, identity: { id: a.id, name: a.name, permissions: a.permissions } }]);
      expect(await identities.tokenHolders([])).toEqual([]);
      await identities.extendToken('t2', now + 2000);
      expect((await identities.getToken('t2'))!.expiresAt).toBe(now + 2000);
      await identities.removeExpiredTokens(now + 1000);
      expect(await identities.getToken('t1')).toBeUndefined();
      expect(await identities.getToken('t2')).toBeDefined();
    });
  });

  describe('PKI', () => {
    it('CAs: insertCa, getCa, updateCa, listCas, allActiveCas, pendingCas, caObjectIds, removeCa', async () => {
      const pki = createPkiStore(store);
      const root = ca({ createdAt: iso(1_700_000_000_000) });
      const pendingCert = ca({ type: 'intermediate', status: 'pending-certificate', parentCaId: null, certificate: null, csr: '-----BEGIN CERTIFICATE REQUEST-----', pathLength: 0, createdAt: iso(1_700_000_000_001) });
      const half = ca({ state: 'pending', createdAt: iso(1_700_000_000_002) });
      for (const c of [root, pendingCert, half]) await pki.insertCa(c, OWNER);
      expect(await pki.getCa(root.id)).toEqual(root);
      expect(Buffer.isBuffer((await pki.getCa(root.id))!.subject)).toBe(true);
      expect(await pki.getCa(half.id)).toBeUndefined();
      expect((await pki.listCas('p1')).map((c) => c.id)).toEqual([root.id, pendingCert.id]);
      expect((await pki.allActiveCas()).map((c) => c.id)).toEqual([root.id]);
      expect((await pki.pendingCas()).map((c) => [c.id, c.owner])).toEqual([[half.id, OWNER]]);
      // The writer is bookkeeping of the store's: no CaRecord carries it.
      expect(Object.keys((await pki.getCa(root.id))!)).not.toContain('owner');
      expect((await pki.caObjectIds()).map((b) => b.toString('hex')).sort()).toEqual([root, pendingCert, half].map((c) => c.objectId.toString('hex')).sort());

      await pki.updateCa(pendingCert.id, { status: 'active', certificate: Buffer.from('cert'), outsideChain: 'chain' });
      const updated = await pki.getCa(pendingCert.id);
      expect(updated).toMatchObject({ status: 'active', certificate: Buffer.from('cert'), outsideChain: 'chain', csr: pendingCert.csr, pathLength: 0 });
      expect(updated!.updatedAt > pendingCert.updatedAt).toBe(true);
      await pki.removeCa(half.id);
      expect(await pki.pendingCas()).toEqual([]);
    });

    it('nextCrlNumber: two concurrent callers on separate connections get distinct, increasing numbers', async () => {
      const second = await open(store.location);
      const [here, there] = [createPkiStore(store), createPkiStore(second)];
      const root = ca();
      await here.insertCa(root, OWNER);
      const numbers = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? here : there).nextCrlNumber(root.id)));
      expect([...numbers].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(await here.nextCrlNumber(root.id)).toBe(21);
      expect((await there.getCa(root.id))!.crlNumber).toBe(21);
      await expect(here.nextCrlNumber('no-such-ca')).rejects.toThrow('No CA');
    });

    it('saveCrl keeps the highest-numbered CRL: a late finisher with an older number does not replace it', async () => {
      const pki = createPkiStore(store);
      const root = ca();
      await pki.insertCa(root, OWNER);
      const [early, late] = [await pki.nextCrlNumber(root.id), await pki.nextCrlNumber(root.id)];
      expect(await pki.saveCrl(root.id, late, Buffer.from('crl-2'), iso(1_700_000_900_000))).toBe(true);
      expect(await pki.saveCrl(root.id, early, Buffer.from('crl-1'), iso(1_700_000_800_000))).toBe(false);
      expect(await pki.getCa(root.id)).toMatchObject({ crl: Buffer.from('crl-2'), crlNumber: 2, crlNextUpdate: iso(1_700_000_900_000) });
      expect(await pki.getCa(root.id)).not.toHaveProperty('crlStoredNumber');
    });

    it('profiles: insertProfile, getProfile (JSON columns parsed), updateProfile, listProfiles by slug, removeProfile', async () => {
      const pki = createPkiStore(store);
      const root = ca();
      await pki.insertCa(root, OWNER);
      const profile = (slug: string): ProfileRecord => ({
        id: randomUUID(),
        projectId: 'p1',
        caId: root.id,
        slug,
        description: '',
        policy: { keyUsages: ['digital_signature'], maxTtl: '90d' },
        defaults: { ttl: '30d' },
        estEnabled: false,
        estPassphraseHash: null,
        acmeEnabled: false,
        acmeRequireEab: false,
        acmeEabSecret: null,
        createdAt: iso(1_700_000_000_000),
        updatedAt: iso(1_700_000_000_000),
      });
      const [web, api] = [profile('web'), profile('API')];
      await pki.insertProfile(web);
      await pki.insertProfile(api);
      expect(await pki.getProfile(web.id)).toEqual(web);
      await pki.updateProfile(web.id, { description: 'servers', defaults: {} });
      expect(await pki.getProfile(web.id)).toMatchObject({ description: 'servers', defaults: {}, policy: web.policy });
      expect((await pki.listProfiles('p1')).map((p) => p.slug)).toEqual(['API', 'web']);
      await expect(pki.insertProfile({ ...profile('web') })).rejects.toThrow();
      await pki.removeProfile(api.id);
      expect(await pki.getProfile(api.id)).toBeUndefined();
      // EST settings: a boolean and a hash on both engines, changed only when given.
      await pki.updateProfile(web.id, { estEnabled: true, estPassphraseHash: 'scrypt$16384$8$1$salt$hash' });
      expect(await pki.getProfile(web.id)).toMatchObject({ estEnabled: true, estPassphraseHash: 'scrypt$16384$8$1$salt$hash' });
      await pki.updateProfile(web.id, { description: 'again' });
      expect(await pki.getProfile(web.id)).toMatchObject({ estEnabled: true, estPassphraseHash: 'scrypt$16384$8$1$salt$hash' });
      await pki.updateProfile(web.id, { estEnabled: false });
      expect((await pki.listProfiles('p1')).find((p) => p.id === web.id)).toMatchObject({ estEnabled: false, estPassphraseHash: 'scrypt$16384$8$1$salt$hash' });
      // ACME flags are booleans on both engines; the EAB key is made once, whoever asks first.
      await pki.updateProfile(web.id, { acmeEnabled: true, acmeRequireEab: true });
      expect(await pki.getProfile(web.id)).toMatchObject({ acmeEnabled: true, acmeRequireEab: true, estEnabled: false, acmeEabSecret: null });
      const keys = await Promise.all([pki.ensureAcmeEabSecret(web.id, 'first'), pki.ensureAcmeEabSecret(web.id, 'second')]);
      expect(new Set(keys).size).toBe(1);
      expect(['first', 'second']).toContain(keys[0]);
      expect(await pki.ensureAcmeEabSecret(web.id, 'third')).toBe(keys[0]);
      expect(await pki.ensureAcmeEabSecret(randomUUID(), 'none')).toBeUndefined();
    });

    it('certificateBySerial and certificateStatus: by CA and serial only, the status of a revocation as stored', async () => {
      const pki = createPkiStore(store);
      const [root, other] = [ca(), ca()];
      await pki.insertCa(root, OWNER);
      await pki.insertCa(other, OWNER);
      const issued = certificate(root.id);
      await pki.insertCertificate(issued);
      expect(await pki.certificateBySerial(root.id, issued.serialNumber)).toEqual(issued);
      expect(await pki.certificateStatus(root.id, issued.serialNumber)).toEqual({ status: 'active', revocationReason: null, revokedAt: null });
      // Another CA's serial, or a serial never issued, is nothing.
      expect(await pki.certificateBySerial(other.id, issued.serialNumber)).toBeUndefined();
      expect(await pki.certificateStatus(other.id, issued.serialNumber)).toBeUndefined();
      expect(await pki.certificateStatus(root.id, '00'.repeat(20))).toBeUndefined();
      await pki.revokeCertificate(issued.id, 'KEY_COMPROMISE', iso(1_700_000_100_000));
      expect(await pki.certificateStatus(root.id, issued.serialNumber)).toEqual({ status: 'revoked', revocationReason: 'KEY_COMPROMISE', revokedAt: iso(1_700_000_100_000) });
    });

    it('certificates: insertCertificate, getCertificate, listCertificates (newest first, paged, counted), revokeCertificate, revokedCertificates', async () => {
      const pki = createPkiStore(store);
      const root = ca();
      await pki.insertCa(root, OWNER);
      const certs = [0, 1, 2].map((i) => certificate(root.id, { createdAt: iso(1_700_000_000_000 + i) }));
      for (const c of certs) await pki.insertCertificate(c);
      expect(await pki.getCertificate(certs[1]!.id)).toEqual(certs[1]);
      const page = await pki.listCertificates('p1', 1, 1);
      expect(page).toEqual({ certificates: [certs[1]], totalCount: 3 });
      expect((await pki.listCertificates('p2', 0, 10)).totalCount).toBe(0);
      expect(await pki.revokeCertificate(certs[2]!.id, 'KEY_COMPROMISE', iso(1_700_000_100_001))).toBe(true);
      expect(await pki.revokeCertificate(certs[0]!.id, 'SUPERSEDED', iso(1_700_000_100_000))).toBe(true);
      expect(await pki.revokeCertificate(certs[0]!.id, 'SUPERSEDED', iso(1_700_000_100_002))).toBe(false);
      expect(await pki.revokedCertificates(root.id)).toEqual([
        { serialNumber: certs[0]!.serialNumber, revocationReason: 'SUPERSEDED', revokedAt: iso(1_700_000_100_000) },
        { serialNumber: certs[2]!.serialNumber, revocationReason: 'KEY_COMPROMISE', revokedAt: iso(1_700_000_100_001) },
      ]);
      expect(await pki.getCertificate(certs[0]!.id)).toMatchObject({ status: 'revoked', revocationReason: 'SUPERSEDED' });
    });
  });

  describe('audit', () => {
    it('appenders on separate connections (PostgreSQL; one on SQLite) append concurrently onto one gapless chain that verifies', async () => {
      const second = await secondConnection(store);
      const appenders = [createAuditAppender(store), createAuditAppender(second)];
      await Promise.all(
        Array.from({ length: 30 }, (_, i) => appenders[i % 2]!((head) => chainEvents(head, unchained(1 + (i % 4), `w${i % 2}-${i}`)))),
      );
      const events: AuditEventRecord[] = [];
      for await (const event of readAuditChain(store).events()) events.push(event);
      const total = Array.from({ length: 30 }, (_, i) => 1 + (i % 4)).reduce((a, b) => a + b);
      expect(events.map((e) => e.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      expect(await verifyAuditChain(readAuditChain(second))).toMatchObject({ ok: true, events: total });
      expect(await createAuditStore(second).head()).toEqual(events.at(-1));
      expect(typeof events[0]!.seq).toBe('number');
    });

    it('an appender whose build throws stores nothing and leaves the lock free', async () => {
      const append = createAuditAppender(store);
      await expect(
        append(() => {
          throw new Error('no');
        }),
      ).rejects.toThrow('no');
      await append((head) => chainEvents(head, unchained(2)));
      expect((await createAuditStore(store).head())!.seq).toBe(2);
    });

    it('head, insertCheckpoint (once per seq), lastCheckpoint, checkpoints as Buffers', async () => {
      const audit = createAuditStore(store);
      expect(await audit.head()).toBeUndefined();
      expect(await audit.lastCheckpoint()).toBeUndefined();
      const [stored] = [await createAuditAppender(store)((head) => chainEvents(head, unchained(3)))];
      const checkpoint = { seq: 3, headHash: stored.at(-1)!.hash, signedAt: iso(1_700_000_000_000), algorithm: 'ECDSA_SHA_256', signature: randomBytes(70) };
      expect(await audit.insertCheckpoint(checkpoint)).toBe(true);
      expect(await audit.insertCheckpoint({ ...checkpoint, signedAt: iso(1_700_000_000_001) })).toBe(false);
      expect(await audit.insertCheckpoint({ ...checkpoint, seq: 1, headHash: stored[0]!.hash })).toBe(true);
      expect(await audit.lastCheckpoint()).toEqual(checkpoint);
      expect(Buffer.isBuffer((await audit.lastCheckpoint())!.signature)).toBe(true);
      expect((await readAuditChain(store).checkpoints()).map((c) => c.seq)).toEqual([1, 3]);
    });

    it('list: each filter, both orders, paging and the count', async () => {
      const audit = createAuditStore(store);
      const events = await createAuditAppender(store)((head) => chainEvents(head, unchained(20)));
      const list = (query: Partial<Parameters<typeof audit.list>[0]>) => audit.list({ offset: 0, limit: 100, orderDirection: 'desc', ...query });
      expect((await list({})).events.map((e) => e.seq)).toEqual(events.map((e) => e.seq).reverse());
      expect(await list({ orderDirection: 'asc', limit: 2, offset: 3 })).toEqual({ events: events.slice(3, 5), totalCount: 20 });
      const expectFilter = async (query: Partial<Parameters<typeof audit.list>[0]>, keep: (e: AuditEventRecord) => boolean) => {
        const { events: got, totalCount } = await list({ ...query, orderDirection: 'asc' });
        const want = events.filter(keep);
        expect(want.length).toBeGreaterThan(0);
        expect(want.length).toBeLessThan(20);
        expect(got).toEqual(want);
        expect(totalCount).toBe(want.length);
      };
      await expectFilter({ startTime: events[5]!.time }, (e) => e.time >= events[5]!.time);
      await expectFilter({ endTime: events[5]!.time }, (e) => e.time < events[5]!.time);
      await expectFilter({ identityId: 'id-1' }, (e) => e.identityId === 'id-1');
      await expectFilter({ resourceType: 'key' }, (e) => e.resourceType === 'key');
      await expectFilter({ resourceId: 'key-1' }, (e) => e.resourceId === 'key-1');
      await expectFilter({ action: 'auth.login' }, (e) => e.action === 'auth.login');
      await expectFilter({ outcome: 'denied', action: 'auth.login' }, (e) => e.outcome === 'denied' && e.action === 'auth.login');
    });

    it('retention and sink primitives: bounds, seq by time, checkpoint below, deletes from the start, the cursor moved only from where it was read', async () => {
      const audit = createAuditStore(store);
      expect(await audit.bounds()).toEqual({ first: 0, last: 0 });
      const events = await createAuditAppender(store)((head) => chainEvents(head, unchained(10)));
      expect(await audit.bounds()).toEqual({ first: 1, last: 10 });
      expect(await audit.lastSeqBefore(1_700_000_000_004)).toBe(4);
      expect(await audit.lastSeqBefore(1_600_000_000_000)).toBe(0);
      for (const seq of [3, 7]) await audit.insertCheckpoint({ seq, headHash: events[seq - 1]!.hash, signedAt: iso(1_700_000_001_000), algorithm: 'ECDSA_SHA_256', signature: randomBytes(70) });
      expect([await audit.checkpointAtOrBelow(6), await audit.checkpointAtOrBelow(7), await audit.checkpointAtOrBelow(2)]).toEqual([3, 7, 0]);
      expect(await audit.findEvent('kms.key.encrypt', 'key-1', 3)).toBe(6);
      expect(await audit.findEvent('kms.key.encrypt', 'key-1', 9)).toBeUndefined();
      expect(await audit.deleteEvents(1, 3)).toBe(3);
      expect(await audit.deleteCheckpointsBelow(7)).toBe(1);
      expect(await audit.bounds()).toEqual({ first: 4, last: 10 });
      expect((await audit.eventsAfter(5, 3)).map((e) => e.seq)).toEqual([6, 7, 8]);
      expect(await audit.eventsAfter(5, 3)).toEqual(events.slice(5, 8));
      expect((await audit.checkpointsBetween(0, 10)).map((c) => c.seq)).toEqual([7]);

      const second = createAuditStore(await secondConnection(store));
      const fresh = await audit.sinkState();
      expect(fresh).toEqual({ exportedSeq: 0, exportedCheckpointSeq: 0, failingSince: null, lastError: null });
      await audit.sinkFailed('EACCES', 1000);
      await audit.sinkFailed('EACCES again', 2000);
      expect(await second.sinkState()).toEqual({ exportedSeq: 0, exportedCheckpointSeq: 0, failingSince: 1000, lastError: 'EACCES again' });
      const read = await audit.sinkState();
      expect(await audit.advanceSink(read, { exportedSeq: 6, exportedCheckpointSeq: 3 })).toBe(true);
      // A second feeder that read the cursor before the move stops.
      expect(await second.advanceSink(read, { exportedSeq: 8, exportedCheckpointSeq: 7 })).toBe(false);
      expect(await second.sinkState()).toEqual({ exportedSeq: 6, exportedCheckpointSeq: 3, failingSince: null, lastError: null });
    });

    it('the verifier reads one snapshot: retention deleting the start meanwhile does not show as a gap', async () => {
      const append = createAuditAppender(store);
      for (let i = 0; i < 5; i++) await append((head) => chainEvents(head, unchained(500)));
      const reader = store.engine === 'sqlite' ? await openStore(store.location, { migrate: false, readonly: true }) : await open(store.location);
      try {
        const seqs = await withSnapshot(reader, async (snapshot) => {
          const seen: number[] = [];
          for await (const event of readAuditChain(snapshot).events()) {
            if (seen.length === 10) expect(await createAuditStore(store).deleteEvents(1, 2000)).toBe(2000);
            seen.push(event.seq);
          }
          return seen;
        });
        expect(seqs).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1));
      } finally {
        if (store.engine === 'sqlite') await reader.close();
      }
      expect(await createAuditStore(store).bounds()).toEqual({ first: 2001, last: 2500 });
    });

    it('migration 008 carries events written in the earlier form over losslessly: they keep verifying, and a tampered one is still named', async () => {
      // A store as migrations 001-006 left it, with events hashed in format v1 (UUID, ISO time, outcome).
      const location = await freshLocation(engine);
      const names = ['001-initial.sql', '002-pki.sql', '003-audit.sql', '004-leases.sql', '005-crl-stored-number.sql', '006-est.sql'];
      const v1 = [] as AuditEventRecord[];
      let prevHash = '0'.repeat(64);
      for (const [i, input] of unchained(6).entries()) {
        const fields = { ...input, seq: i + 1, id: randomUUID(), time: iso(input.timeMs), outcome: input.statusCode === 403 ? 'denied' : 'success', prevHash };
        const { timeMs: _, ...event } = fields;
        const hash = eventHash(event);
        v1.push({ ...event, hash });
        prevHash = hash;
      }
      const rows = v1.map((e) => [e.seq, e.id, e.time, e.reqId, e.identityId, e.action, e.resourceType, e.resourceId, e.outcome, e.statusCode, e.clientAddress, e.prevHash, e.seq === 5 ? 'not hex' : e.hash]);
      const insert = 'INSERT INTO audit_events (seq, id, time, req_id, identity_id, action, resource_type, resource_id, outcome, status_code, client_address, prev_hash, hash) VALUES ';
      if (location.engine === 'sqlite') {
        const old = new Database(location.path);
        old.exec('CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
        for (const name of names) {
          old.exec(readFileSync(join(MIGRATIONS, 'sqlite', name), 'utf8'));
          old.prepare('INSERT INTO schema_migrations VALUES (?, ?)').run(name, 'then');
        }
        for (const row of rows) old.prepare(`${insert}(${row.map(() => '?').join(', ')})`).run(...row);
        old.close();
      } else {
        const client = new pg.Client({ connectionString: location.url });
        await client.connect();
        await client.query('CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
        for (const name of names) {
          await client.query(readFileSync(join(MIGRATIONS, 'postgres', name), 'utf8'));
          await client.query('INSERT INTO schema_migrations VALUES ($1, $2)', [name, 'then']);
        }
        for (const row of rows) await client.query(`${insert}(${row.map((_, i) => `$${i + 1}`).join(', ')})`, row);
        await client.end();
      }
      const migrated = await open(location);
      const read: AuditEventRecord[] = [];
      for await (const event of readAuditChain(migrated).events()) read.push(event);
      expect(read.filter((e) => e.seq !== 5)).toEqual(v1.filter((e) => e.seq !== 5));
      expect(read[4]!.hash).toBe('0'.repeat(64));
      expect(await verifyAuditChain(readAuditChain(migrated))).toMatchObject({ ok: false, problem: { kind: 'edited', seq: 5 } });
      // Without the tampered end, new events go on in format v2 after the old ones.
      await migrated.db.deleteFrom('audit_events').where('seq', '>=', 5).execute();
      const appended = await createAuditAppender(migrated)((head) => chainEvents(head, unchained(2, 'new')));
      expect(appended.map((e) => [e.seq, e.id, e.prevHash === v1[3]!.hash])).toEqual([[5, null, true], [6, null, false]]);
      expect(await verifyAuditChain(readAuditChain(migrated))).toMatchObject({ ok: true, events: 6 });
    });

    it('auditKey, saveAuditKey: two concurrent first saves store one key, and both get that one', async () => {
      const second = await secondConnection(store);
      const [a, b] = [createAuditStore(store), createAuditStore(second)];
      expect(await a.auditKey()).toBeUndefined();
      const keys = [0, 1].map(() => ({ objectId: randomBytes(16), publicKey: randomBytes(91) }));
      const [savedA, savedB] = await Promise.all([a.saveAuditKey(keys[0]!), b.saveAuditKey(keys[1]!)]);
      expect(savedA).toEqual(savedB);
      expect(keys).toContainEqual(savedA);
      expect(await b.auditKey()).toEqual(savedA);
      expect(await readAuditChain(store).publicKey()).toEqual(savedA.publicKey);
    });

    it('readAuditChain pages through more events than one page, in seq order, twice at once', async () => {
      await createAuditAppender(store)((head) => chainEvents(head, unchained(2500)));
      const source = readAuditChain(store);
      const seqs: number[] = [];
      const outer = source.events()[Symbol.asyncIterator]();
      const first = await outer.next();
      for await (const event of source.events()) seqs.push(event.seq);
      expect(seqs).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1));
      expect(first.value.seq).toBe(1);
      await outer.return?.();
    });
  });

  describe('settings and leases', () => {
    it('getOrCreateSetting: concurrent first calls agree on one value, later calls read it', async () => {
      const second = await open(store.location);
      const values = await Promise.all([getOrCreateSetting(store, 'orgId', () => 'one'), getOrCreateSetting(second, 'orgId', () => 'two')]);
      expect(values[0]).toBe(values[1]);
      expect(await getOrCreateSetting(second, 'orgId', () => 'three')).toBe(values[0]);
    });

    it('a lease has one holder: contention, renewal by the holder, release, takeover after expiry', async () => {
      const second = await open(store.location);
      const [here, there] = [createLeaseStore(store), createLeaseStore(second)];
      // Contention for a free lease: exactly one of several racing holders gets it.
      const raced = await Promise.all(['a', 'b', 'c', 'd'].map((holder, i) => (i % 2 ? there : here).tryAcquire('crl-renewal', holder, 60_000)));
      expect(raced.filter(Boolean)).toHaveLength(1);
      const winner = ['a', 'b', 'c', 'd'][raced.indexOf(true)]!;
      const loser = winner === 'a' ? 'b' : 'a';
      expect(await there.tryAcquire('crl-renewal', loser, 60_000)).toBe(false);
      expect(await here.tryAcquire('crl-renewal', winner, 60_000)).toBe(true); // renewal
      expect(await here.tryAcquire('other-job', loser, 60_000)).toBe(true); // names are independent
      await there.release('crl-renewal', loser); // not the holder: nothing changes
      expect(await here.tryAcquire('crl-renewal', loser, 60_000)).toBe(false);
      await there.release('crl-renewal', winner);
      expect(await here.tryAcquire('crl-renewal', loser, 60_000)).toBe(true);

      // Expiry: a holder that stops renewing loses the lease to the next one after ttlMs.
      expect(await here.tryAcquire('sweep', 'x', 300)).toBe(true);
      expect(await there.tryAcquire('sweep', 'y', 300)).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 450));
      expect(await there.tryAcquire('sweep', 'y', 60_000)).toBe(true);
      expect(await here.tryAcquire('sweep', 'x', 300)).toBe(false);
      // Renewal pushes expiry out: renewed within its ttl, 'y' still holds it past the first ttl.
      expect(await there.tryAcquire('sweep2', 'y', 400)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 250));
      expect(await there.tryAcquire('sweep2', 'y', 400)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 250));
      expect(await here.tryAcquire('sweep2', 'x', 400)).toBe(false);
      await expect(here.tryAcquire('sweep', 'x', 0)).rejects.toThrow(RangeError);
    });

    it('liveHolders: the holders of unexpired leases under a prefix, the prefix taken literally', async () => {
      const second = await open(store.location);
      const [here, there] = [createLeaseStore(store), createLeaseStore(second)];
      expect(await here.tryAcquire('presence:a', 'replica-a', 60_000)).toBe(true);
      expect(await there.tryAcquire('presence:b', 'replica-b', 300)).toBe(true);
      expect(await there.tryAcquire('presenceXc', 'replica-c', 60_000)).toBe(true); // not under the prefix
      expect(await here.tryAcquire('other:d', 'replica-d', 60_000)).toBe(true);
      expect([...(await there.liveHolders('presence:'))].sort()).toEqual(['replica-a', 'replica-b']);
      // `_` and `%` are no wildcards here.
      expect([...(await here.liveHolders('presence_'))]).toEqual([]);
      await new Promise((resolve) => setTimeout(resolve, 450));
      expect([...(await here.liveHolders('presence:'))]).toEqual(['replica-a']);
      await here.release('presence:a', 'replica-a');
      expect([...(await there.liveHolders('presence:'))]).toEqual([]);
    });
  });

  describe('migrations', () => {
    it('two openers racing on one fresh database both succeed, with every migration applied once', async () => {
      const location = await freshLocation(engine);
      const [a, b] = await Promise.all([open(location), open(location)]);
      const applied = await a.db.selectFrom('schema_migrations').select('name').orderBy('name').execute();
      expect(applied.map((row) => row.name)).toEqual(migrationFiles(engine));
      expect(migrationFiles(engine)).toEqual(migrationFiles(engine === 'sqlite' ? 'postgres' : 'sqlite'));
      // A third open finds nothing to do, and both first openers work on the one schema.
      await open(location);
      const k = key();
      await createKeyStore(a).insertPending(k, version(k.id), OWNER);
      expect((await createKeyStore(b).unfinished()).map((u) => u.keyId)).toEqual([k.id]);
    });

    it('an exclusive section is one transaction: a failed one leaves nothing, a good one returns its value', async () => {
      await expect(
        store.exclusive('audit', async (trx) => {
          await trx.insertInto('settings').values({ name: 'half-done', value: 'x' }).execute();
          throw new Error('abort');
        }),
      ).rejects.toThrow('abort');
      expect(await store.db.selectFrom('settings').selectAll().where('name', '=', 'half-done').execute()).toEqual([]);
      expect(await store.exclusive('audit', async (trx) => (await sql<{ one: number }>`select 1 as one`.execute(trx)).rows[0]!.one)).toBe(1);
    });
  });
});

describe('SQLite specifics', () => {
  it('a database made before the per-engine migration folders (001–004 recorded by name) opens, keeps its rows and gets the later ones only', async () => {
    const path = join(dir, 'old.db');
    const old = new Database(path);
    old.exec('CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
    for (const name of ['001-initial.sql', '002-pki.sql', '003-audit.sql', '004-leases.sql']) {
      old.exec(readFileSync(join(MIGRATIONS, 'sqlite', name), 'utf8'));
      old.prepare('INSERT INTO schema_migrations VALUES (?, ?)').run(name, '2026-01-01T00:00:00.000Z');
    }
    old.prepare(`INSERT INTO settings VALUES ('orgId', 'kept')`).run();
    old.prepare(`INSERT INTO leases VALUES ('maintenance', 'old-replica', 1)`).run();
    old.close();
    const store = await open({ engine: 'sqlite', path });
    expect(await getOrCreateSetting(store, 'orgId', () => 'new')).toBe('kept');
    const applied = await store.db.selectFrom('schema_migrations').selectAll().orderBy('name').execute();
    const before = ['001-initial.sql', '002-pki.sql', '003-audit.sql', '004-leases.sql'];
    expect(applied.map((row) => [row.name, row.applied_at === '2026-01-01T00:00:00.000Z'])).toEqual(migrationFiles('sqlite').map((name) => [name, before.includes(name)]));
    expect(applied.map((row) => row.name)).toContain('006-est.sql');
    expect(applied.map((row) => row.name)).toContain('008-audit-retention.sql');
    // The expired lease of the old run is taken over; the new column is there.
    expect(await createLeaseStore(store).tryAcquire('maintenance', 'me', 1000)).toBe(true);
    const root = ca();
    await createPkiStore(store).insertCa(root, OWNER);
    expect(await createPkiStore(store).saveCrl(root.id, await createPkiStore(store).nextCrlNumber(root.id), Buffer.from('crl'), iso(1))).toBe(true);
  });

  it('keeps the pragmas: WAL, synchronous NORMAL, foreign keys, busy_timeout', async () => {
    const store = await open({ engine: 'sqlite', path: join(dir, 'pragmas.db') });
    const pragma = async (name: string) => Object.values((await sql.raw(`pragma ${name}`).execute(store.db)).rows[0] as object)[0];
    expect(await pragma('journal_mode')).toBe('wal');
    expect(await pragma('synchronous')).toBe(1);
    expect(await pragma('foreign_keys')).toBe(1);
    expect(await pragma('busy_timeout')).toBe(5000);
  });
});

describe('PostgreSQL specifics', () => {
  it('the URL password appears in no error: refused connection, missing database, unparsable URL', async () => {
    const good = new URL(await createTestDatabase());
    const password = 'Sup3r-s3cret%2Fpw';
    const withPassword = (url: URL) => {
      const copy = new URL(url);
      copy.username = 'postgres';
      copy.password = password;
      return copy.toString();
    };
    const missing = new URL(good);
    missing.pathname = '/no_such_database';
    const refused = new URL(good);
    refused.port = '1';
    for (const url of [withPassword(missing), withPassword(refused), `postgres://postgres:${password}@127.0.0.1:notaport/x`]) {
      const error = await openStore({ engine: 'postgres', url }).then(
        (store) => {
          void store.close();
          return new Error('opened');
        },
        (e: Error) => e,
      );
      expect(error.message).not.toBe('opened');
      for (const text of [error.message, error.stack ?? '', JSON.stringify(error)]) {
        expect(text).not.toContain(password);
        expect(text).not.toContain(decodeURIComponent(password));
      }
    }
  });

  it('scrubError replaces the password in the message and stack and keeps the code', () => {
    const error = Object.assign(new Error('failed for postgres://u:hunter2@h/db'), { code: '28P01', connectionString: 'postgres://u:hunter2@h/db' });
    const scrubbed = scrubError(error, 'postgres://u:hunter2@h/db');
    expect(scrubbed.message).toBe('failed for postgres://u:***@h/db');
    expect(scrubbed.stack).not.toContain('hunter2');
    expect(scrubbed).toMatchObject({ code: '28P01' });
    expect(JSON.stringify(scrubbed)).not.toContain('hunter2');
  });

  it('columns are the types the store reads them as (BIGINT epoch ms, BYTEA), and a BIGINT past 2^53 is refused', async () => {
    const store = await open({ engine: 'postgres', url: await createTestDatabase() });
    const types = await sql<{ table_name: string; column_name: string; data_type: string }>`
      select table_name, column_name, data_type from information_schema.columns
      where (table_name, column_name) in (('access_tokens', 'expires_at'), ('audit_events', 'seq'), ('cas', 'crl_number'), ('leases', 'expires_at'), ('kms_key_versions', 'object_id'))
      order by table_name, column_name`.execute(store.db);
    expect(types.rows.map((row) => [row.table_name, row.column_name, row.data_type])).toEqual([
      ['access_tokens', 'expires_at', 'bigint'],
      ['audit_events', 'seq', 'bigint'],
      ['cas', 'crl_number', 'bigint'],
      ['kms_key_versions', 'object_id', 'bytea'],
      ['leases', 'expires_at', 'bigint'],
    ]);
    await expect(sql`select 9007199254740993::bigint as n`.execute(store.db)).rejects.toThrow('beyond 2^53');
  });
});
