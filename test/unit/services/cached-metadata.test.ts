/**
 * The staleness bound of key-service.ts and identity-service.ts, on a real SQLite store with a
 * fake clock: rows are served from memory while younger than 500 ms, read again after, and
 * what another process wrote to the store (written here through a second handle on the file)
 * is refused once the bound has passed. The token is a fake: only its generateKey and
 * destroyObjects are called, and these tests are about the metadata.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createIdentityService, TOKEN_MAX_AGE_MS } from '../../../src/services/identity-service.js';
import { createKeyService, KEY_ROW_MAX_AGE_MS } from '../../../src/services/key-service.js';
import type { Principal } from '../../../src/services/permissions.js';
import { openStore, type Store } from '../../../src/store/database.js';
import { createIdentityStore } from '../../../src/store/identity-store.js';
import { createKeyStore, type KeyStore } from '../../../src/store/key-store.js';

const admin: Principal = { identityId: 'admin', name: 'admin', permissions: [{ projectId: '*', actions: ['*'] }] };
const fakeToken = { generateKey: async () => ({ publicKeySpki: undefined }), destroyObjects: async () => undefined } as never;

let dir: string;
let here: Store;
let otherProcess: Store;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-cache-'));
  here = await openStore({ engine: 'sqlite', path: join(dir, 'store.db') });
  otherProcess = await openStore({ engine: 'sqlite', path: join(dir, 'store.db') });
  vi.useFakeTimers({ toFake: ['Date'], now: 1_700_000_000_000 });
});

afterEach(async () => {
  vi.useRealTimers();
  await here.close();
  await otherProcess.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The store, counting the single-row reads the request path makes. */
function countingKeyStore(db: Store): { store: KeyStore; reads: () => number } {
  const store = createKeyStore(db);
  let reads = 0;
  return {
    store: { ...store, get: (id) => (reads++, store.get(id)) },
    reads: () => reads,
  };
}

describe('key metadata from memory', () => {
  async function setUp() {
    const gone: Buffer[][] = [];
    const { store, reads } = countingKeyStore(here);
    const keys = createKeyService({ keyStore: store, token: fakeToken, orgId: 'org', logger: pino({ level: 'silent' }), onKeyObjectsGone: (ids) => gone.push(ids) });
    const key = await keys.create(admin, { projectId: 'p', name: 'k' });
    const objectId = (await createKeyStore(here).getVersion(key.id, 1))!.objectId;
    return { keys, key, objectId, gone, reads, othersStore: createKeyStore(otherProcess) };
  }

  it('reads the row once per 500 ms, not once per operation', async () => {
    const { keys, key, reads } = await setUp();
    const before = reads();
    for (let i = 0; i < 5; i++) await keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt');
    expect(reads() - before).toBe(1);
    vi.advanceTimersByTime(KEY_ROW_MAX_AGE_MS);
    await keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt');
    expect(reads() - before).toBe(2);
  });

  it("refuses a key another process disabled once the bound has passed, and serves it again once enabled", async () => {
    const { keys, key, othersStore } = await setUp();
    await keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt');
    await othersStore.update(key.id, { isDisabled: true }, new Date().toISOString());
    vi.advanceTimersByTime(KEY_ROW_MAX_AGE_MS);
    await expect(keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt')).rejects.toMatchObject({ statusCode: 400, message: 'Key is disabled' });
    await othersStore.update(key.id, { isDisabled: false }, new Date().toISOString());
    vi.advanceTimersByTime(KEY_ROW_MAX_AGE_MS);
    await expect(keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt')).resolves.toMatchObject({ key: { id: key.id } });
  });

  it("a key another process deleted is a 404 and its objects are announced gone, by a request or by a refresh", async () => {
    for (const learnsBy of ['request', 'refresh'] as const) {
      const { keys, key, objectId, gone, othersStore } = await setUp();
      await keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt');
      await othersStore.markDeleting(key.id);
      await othersStore.remove(key.id);
      vi.advanceTimersByTime(KEY_ROW_MAX_AGE_MS / 2);
      if (learnsBy === 'refresh') {
        await keys.refresh();
        expect(gone).toEqual([[objectId]]);
      }
      vi.advanceTimersByTime(KEY_ROW_MAX_AGE_MS / 2);
      await expect(keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt')).rejects.toMatchObject({ statusCode: 404 });
      expect(gone).toEqual([[objectId]]);
    }
  });

  it("this process's own disable and delete take effect at once", async () => {
    const { keys, key, objectId, gone } = await setUp();
    await keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt');
    await keys.update(admin, key.id, { isDisabled: true });
    await expect(keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt')).rejects.toMatchObject({ message: 'Key is disabled' });
    await keys.update(admin, key.id, { isDisabled: false });
    await keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt');
    await keys.remove(admin, key.id);
    expect(gone).toEqual([[objectId]]);
    await expect(keys.usableKey(admin, key.id, 'encrypt', 'encrypt-decrypt')).rejects.toMatchObject({ statusCode: 404 });
  });
});

describe('principals from memory', () => {
  async function setUp() {
    const store = createIdentityStore(here);
    let tokenReads = 0;
    const identities = createIdentityService({
      identityStore: { ...store, tokenHolders: (hashes) => ((tokenReads += 1), store.tokenHolders(hashes)) },
      settings: { accessTokenTTL: 60, accessTokenMaxTTL: 3600 },
    });
    const identity = await identities.createIdentity('bootstrap', 'app', [{ projectId: 'p', actions: ['encrypt'] }]);
    const { clientSecret } = await identities.createClientSecret('bootstrap', identity.id);
    const { accessToken } = await identities.login(identity.clientId, clientSecret);
    return { identities, identity, accessToken, tokenReads: () => tokenReads, othersStore: createIdentityStore(otherProcess) };
  }

  it('one store read per 500 ms for a token in use', async () => {
    const { identities, identity, accessToken, tokenReads } = await setUp();
    for (let i = 0; i < 5; i++) expect((await identities.authenticate(accessToken)).identityId).toBe(identity.id);
    expect(tokenReads()).toBe(1);
    vi.advanceTimersByTime(TOKEN_MAX_AGE_MS);
    await identities.authenticate(accessToken);
    expect(tokenReads()).toBe(2);
  });

  it('an identity another process deleted is a 401 once the bound has passed, by a request or after a refresh', async () => {
    for (const learnsBy of ['request', 'refresh'] as const) {
      const { identities, identity, accessToken, othersStore, tokenReads } = await setUp();
      await identities.authenticate(accessToken);
      await othersStore.remove(identity.id);
      vi.advanceTimersByTime(TOKEN_MAX_AGE_MS / 2);
      await expect(identities.authenticate(accessToken)).resolves.toMatchObject({ identityId: identity.id });
      if (learnsBy === 'refresh') {
        await identities.refresh();
        const readsAfterRefresh = tokenReads();
        await expect(identities.authenticate(accessToken)).rejects.toMatchObject({ statusCode: 401 });
        // The refresh dropped it, so the request read the store again rather than trust memory.
        expect(tokenReads()).toBe(readsAfterRefresh + 1);
      } else {
        vi.advanceTimersByTime(TOKEN_MAX_AGE_MS / 2);
        await expect(identities.authenticate(accessToken)).rejects.toMatchObject({ statusCode: 401 });
      }
    }
  });

  it('a token renewed by another process past its cached expiry still works here', async () => {
    const { identities, accessToken, othersStore } = await setUp();
    await identities.authenticate(accessToken);
    const { createHash } = await import('node:crypto');
    await othersStore.extendToken(createHash('sha256').update(accessToken).digest('hex'), Date.now() + 120_000);
    vi.advanceTimersByTime(61_000);
    await expect(identities.authenticate(accessToken)).resolves.toMatchObject({ name: 'app' });
    vi.advanceTimersByTime(60_000);
    await expect(identities.authenticate(accessToken)).rejects.toMatchObject({ statusCode: 401 });
  });
});
