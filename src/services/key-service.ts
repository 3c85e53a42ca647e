/**
 * KMS keys: their life cycle (create, read, update, rotate, delete) and the one way an
 * operation finds a usable key. Every key is generated in the token; the store holds metadata.
 *
 * Crash safety: rows are written `pending` before the token makes an object and turned
 * `active` after, and turned `deleting` before the objects are destroyed. A pending row names the
 * replica writing it. `reconcile` (at start, before serving, and then each maintenance round)
 * undoes whatever an interrupted run left: half-done deletes, and pending rows whose writer no
 * longer holds its presence lease (services/leases.ts), never a live replica's work in progress;
 * orphan-objects.ts then destroys any object of ours whose CKA_ID no row names, so no key
 * material is ever left unfindable.
 *
 * Staleness bound: an operation (`usableKey`) uses a key row this process read from the store
 * at most KEY_ROW_MAX_AGE_MS (500 ms) before, whichever process wrote the store. The check is
 * made on the request path itself (a row older than that is read again before it is used), so
 * it holds even when the refresh timer is late; the timer (`startRefresh`) re-reads the rows in
 * use in one batch every 250 ms, so the request path seldom reads. A key disabled or deleted by
 * any process sharing the store is therefore refused here within 500 ms of that write (plus
 * the one request already past its check). This process's own writes evict the row at once.
 * Versions are cached with their key: an active version never changes, and goes only with it.
 */
import { randomUUID } from 'node:crypto';
import { KEY_SPECS, usageOf, type KeyAlgorithm, type KeyUsage } from '../algorithms.js';
import { AppError, badRequest, notFound, serviceUnavailable, validationFailure } from '../errors.js';
import type { Logger } from '../logger.js';
import { isKeyTypeNotSupported } from '../pkcs11/errors.js';
import type { Token } from '../pkcs11/token.js';
import type { KeyListQuery, KeyRecord, KeyStore, KeyVersionRecord, RowState } from '../store/key-store.js';
import { replicaId } from './leases.js';
import { OBJECT_LABEL_PREFIX } from './orphan-objects.js';
import { authorize, type Action, type Principal } from './permissions.js';
import { backgroundRefresh } from './background-refresh.js';
import { isUniqueViolation } from '../store/database.js';


export interface PublicKmsKey {
  id: string;
  orgId: string;
  name: string;
  description: string;
  isDisabled: boolean;
  projectId: string;
  keyUsage: KeyUsage;
  version: number;
  encryptionAlgorithm: KeyAlgorithm;
  createdAt: string;
  updatedAt: string;
}

export interface CreateKeyInput {
  projectId: string;
  name: string;
  description?: string;
  keyUsage?: KeyUsage;
  encryptionAlgorithm?: KeyAlgorithm;
}

/** A key ready for one operation: its row, and the version that operation uses. */
export interface UsableKey {
  key: KeyRecord;
  version: KeyVersionRecord;
}

export const toPublicKey = (key: KeyRecord): PublicKmsKey => ({
  id: key.id,
  orgId: key.orgId,
  name: key.name,
  description: key.description,
  isDisabled: key.isDisabled,
  projectId: key.projectId,
  keyUsage: key.keyUsage,
  version: key.version,
  encryptionAlgorithm: key.algorithm,
  createdAt: key.createdAt,
  updatedAt: key.updatedAt,
});

const objectLabel = (keyId: string, version: number) => `${OBJECT_LABEL_PREFIX}${keyId}:v${version}`;
const newObjectId = () => Buffer.from(randomUUID().replaceAll('-', ''), 'hex');

/**
 * A creation whose pending row vanished before it was activated: another replica took it for a
 * crash's leftover (reconcile), which happens only when this replica failed to renew its
 * presence in time (a stalled process or store). Never acknowledged; the client may try again.
 */
const undoneMeanwhile = () => serviceUnavailable('The key was being made while another replica took it for abandoned work and undid it; try again');

/** The oldest a key row may be when an operation relies on it (see the opening comment). */
export const KEY_ROW_MAX_AGE_MS = 500;
const REFRESH_EVERY_MS = KEY_ROW_MAX_AGE_MS / 2;
/** Rows not used for this long leave the cache at the next refresh (after one last check). */
const IDLE_AFTER_MS = 30_000;
const KEY_CACHE_LIMIT = 10_000;

interface CachedKey {
  key: KeyRecord;
  versions: Map<number, KeyVersionRecord>;
  /** Date.now() taken before the row was read: the row is at least this recent. */
  checkedAt: number;
  usedAt: number;
}

export interface KeyServiceDeps {
  keyStore: KeyStore;
  token: Pick<Token, 'generateKey' | 'destroyObjects'>;
  orgId: string;
  logger: Logger;
  /**
   * Told the CKA_IDs of a key's versions once this process knows the key is gone (its own
   * delete, or a refresh that no longer finds the row), so per-session copies of those objects
   * can be dropped. After a refresh it names the versions this process had used.
   */
  onKeyObjectsGone?: (objectIds: Buffer[]) => void;
}

export function createKeyService(deps: KeyServiceDeps) {
  const { keyStore: store, token, orgId, logger } = deps;
  const cache = new Map<string, CachedKey>();
  let refreshing = false;

  function announceGone(objectIds: Buffer[]): void {
    if (objectIds.length === 0 || !deps.onKeyObjectsGone) return;
    try {
      deps.onKeyObjectsGone(objectIds);
    } catch (error) {
      logger.warn({ err: error }, 'dropping the token copies of a deleted key failed');
    }
  }

  /** Drops a key this process learnt is gone, and announces the objects it had used. */
  function forgetGone(entry: CachedKey): void {
    if (cache.get(entry.key.id) === entry) cache.delete(entry.key.id);
    announceGone([...entry.versions.values()].map((v) => v.objectId));
  }

  function remember(key: KeyRecord, checkedAt: number, previous: CachedKey | undefined): CachedKey {
    // A new object each time, so a refresh that read before this one can tell it is older.
    const entry: CachedKey = { key, versions: previous?.versions ?? new Map(), checkedAt, usedAt: checkedAt };
    if (!previous && cache.size >= KEY_CACHE_LIMIT) {
      // Maps iterate in insertion order: drop the oldest entry (it still exists; it is read again when used).
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
    cache.set(key.id, entry);
    return entry;
  }

  /** The key row, from memory when read less than KEY_ROW_MAX_AGE_MS ago. */
  async function cachedKey(keyId: string): Promise<CachedKey> {
    const now = Date.now();
    const entry = cache.get(keyId);
    if (entry && now - entry.checkedAt < KEY_ROW_MAX_AGE_MS) {
      entry.usedAt = now;
      return entry;
    }
    const key = await store.get(keyId);
    if (!key) {
      if (entry) forgetGone(entry);
      throw notFound(`Key with ID '${keyId}' not found`);
    }
    return remember(key, now, entry);
  }

  async function existing(keyId: string): Promise<KeyRecord> {
    const key = await store.get(keyId);
    if (!key) throw notFound(`Key with ID '${keyId}' not found`);
    return key;
  }

  async function version(entry: CachedKey, number: number): Promise<KeyVersionRecord | undefined> {
    const cached = entry.versions.get(number);
    if (cached) return cached;
    const found = await store.getVersion(entry.key.id, number);
    if (found) entry.versions.set(number, found);
    return found;
  }

  /** Re-reads, in one batch, every cached row older than half the bound; evicts idle and gone keys. */
  async function refresh(): Promise<void> {
    if (refreshing) return;
    refreshing = true;
    try {
      const checkedAt = Date.now();
      const due = [...cache.values()].filter((entry) => checkedAt - entry.checkedAt >= REFRESH_EVERY_MS);
      if (due.length === 0) return;
      const rows = new Map((await store.getMany(due.map((entry) => entry.key.id))).map((key) => [key.id, key]));
      for (const entry of due) {
        // Evicted or read again meanwhile (by this process's own write or a request): that is newer.
        if (cache.get(entry.key.id) !== entry) continue;
        const row = rows.get(entry.key.id);
        if (!row) forgetGone(entry);
        else if (checkedAt - entry.usedAt > IDLE_AFTER_MS) cache.delete(entry.key.id);
        else cache.set(row.id, { ...entry, key: row, checkedAt });
      }
    } finally {
      refreshing = false;
    }
  }
  const background = backgroundRefresh(refresh, REFRESH_EVERY_MS, (error) => logger.warn({ err: error }, 'refreshing cached keys failed; requests read the store instead'));

  async function generateVersion(key: KeyRecord, versionNumber: number, objectId: Buffer): Promise<Buffer | null> {
    try {
      const { publicKeySpki } = await token.generateKey(objectId, objectLabel(key.id, versionNumber), KEY_SPECS[key.algorithm]);
      return publicKeySpki ?? null;
    } catch (error) {
      // Undo what the token may have made before failing; the pending row goes with it.
      await token.destroyObjects(objectId).catch(() => undefined);
      // A token without the mechanism (an HSM before PKCS#11 3.0 has no Ed25519) is the
      // caller's to know, not a server fault.
      if (isKeyTypeNotSupported(error)) throw badRequest(`This HSM cannot make ${key.algorithm} keys (${error.ckr})`);
      throw error;
    }
  }

  return {
    async create(principal: Principal, input: CreateKeyInput): Promise<PublicKmsKey> {
      authorize(principal, input.projectId, 'create');
      // Infisical's defaults (docs/contract.md, KMS), each on its own: a sign-verify key must name its
      // algorithm, and an asymmetric algorithm must come with keyUsage sign-verify.
      const keyUsage = input.keyUsage ?? 'encrypt-decrypt';
      const algorithm = input.encryptionAlgorithm ?? 'aes-256-gcm';
      if (usageOf(algorithm) !== keyUsage) {
        throw validationFailure([{ path: 'body/encryptionAlgorithm', message: `${algorithm} cannot be used for ${keyUsage} keys` }]);
      }
      const now = new Date().toISOString();
      const key: KeyRecord = {
        id: randomUUID(),
        orgId,
        projectId: input.projectId,
        name: input.name,
        description: input.description ?? '',
        isDisabled: false,
        keyUsage,
        algorithm,
        version: 1,
        state: 'pending',
        createdAt: now,
        updatedAt: now,
      };
      const objectId = newObjectId();
      try {
        await store.insertPending(key, { keyId: key.id, version: 1, objectId, publicKey: null, state: 'pending' }, replicaId);
      } catch (error) {
        if (isUniqueViolation(error)) throw badRequest(`A key named '${input.name}' already exists in project '${input.projectId}'`);
        throw error;
      }
      try {
        const publicKey = await generateVersion(key, 1, objectId);
        if (!(await store.activate(key.id, 1, publicKey, key.updatedAt))) throw undoneMeanwhile();
      } catch (error) {
        await store.remove(key.id);
        throw error;
      }
      return toPublicKey({ ...key, state: 'active' });
    },

    async get(principal: Principal, keyId: string): Promise<PublicKmsKey> {
      const key = await existing(keyId);
      authorize(principal, key.projectId, 'read');
      return toPublicKey(key);
    },

    async getByName(principal: Principal, projectId: string, name: string): Promise<PublicKmsKey> {
      authorize(principal, projectId, 'read');
      const key = await store.getByName(projectId, name);
      if (!key) throw notFound(`Key with name '${name}' not found in project '${projectId}'`);
      return toPublicKey(key);
    },

    async list(principal: Principal, query: KeyListQuery): Promise<{ keys: PublicKmsKey[]; totalCount: number }> {
      authorize(principal, query.projectId, 'read');
      const { keys, totalCount } = await store.list(query);
      return { keys: keys.map(toPublicKey), totalCount };
    },

    async update(principal: Principal, keyId: string, changes: { name?: string; description?: string; isDisabled?: boolean }): Promise<PublicKmsKey> {
      const key = await existing(keyId);
      authorize(principal, key.projectId, 'update');
      const updatedAt = new Date().toISOString();
      try {
        await store.update(keyId, changes, updatedAt);
      } catch (error) {
        if (isUniqueViolation(error)) throw badRequest(`A key named '${changes.name}' already exists in project '${key.projectId}'`);
        throw error;
      }
      cache.delete(keyId);
      return toPublicKey((await store.get(keyId)) ?? { ...key, ...changes, updatedAt });
    },

    async remove(principal: Principal, keyId: string): Promise<PublicKmsKey> {
      const key = await existing(keyId);
      authorize(principal, key.projectId, 'delete');
      const versions = await store.versions(keyId);
      await store.markDeleting(keyId);
      cache.delete(keyId);
      announceGone(versions.map((v) => v.objectId));
      for (const v of versions) await token.destroyObjects(v.objectId);
      await store.remove(keyId);
      return toPublicKey(key);
    },

    async rotate(principal: Principal, keyId: string): Promise<PublicKmsKey> {
      const key = await existing(keyId);
      authorize(principal, key.projectId, 'update');
      if (key.keyUsage !== 'encrypt-decrypt') throw badRequest('Only encrypt-decrypt keys can be rotated');
      const next = key.version + 1;
      const objectId = newObjectId();
      try {
        await store.insertPendingVersion({ keyId, version: next, objectId, publicKey: null, state: 'pending' }, replicaId);
      } catch (error) {
        // Two rotations raced for the same version number: the other one won.
        if (isUniqueViolation(error)) throw badRequest('The key is being rotated; try again');
        throw error;
      }
      try {
        await generateVersion(key, next, objectId);
        if (!(await store.activate(keyId, next, null, new Date().toISOString()))) throw undoneMeanwhile();
      } catch (error) {
        await store.removeVersion(keyId, next);
        throw error;
      }
      cache.delete(keyId);
      return toPublicKey(await existing(keyId));
    },

    /**
     * The key an operation may use, checked in the contract's order (docs/contract.md): unknown (404), disabled (400),
     * not permitted (403), wrong usage (400). `versionNumber` defaults to the current version.
     */
    async usableKey(principal: Principal, keyId: string, action: Action, usage: KeyUsage, versionNumber?: number): Promise<UsableKey> {
      const entry = await cachedKey(keyId);
      const { key } = entry;
      if (key.isDisabled) throw badRequest('Key is disabled');
      authorize(principal, key.projectId, action);
      if (key.keyUsage !== usage) throw badRequest(`Unsupported key type, expected ${usage} but got ${key.keyUsage}`);
      const found = await version(entry, versionNumber ?? key.version);
      if (!found) {
        if (versionNumber !== undefined) throw badRequest(`Ciphertext names key version ${versionNumber}, which this key does not have`);
        throw new AppError('InternalServerError', 'Key version missing', { cause: new Error(`key ${keyId} has no active version ${key.version}`) });
      }
      return { key, version: found };
    },

    /** Keeps cached rows fresh in the background (the bound holds without it; see the opening comment). */
    startRefresh(): void {
      background.start();
    },

    stopRefresh(): void {
      background.stop();
    },

    /** One refresh pass now (what the timer runs). */
    refresh,

    /**
     * Undoes what an interrupted run left: half-done deletes, and creates and rotations still
     * pending whose writer is not alive (`isLive`, from the replicas' presence leases). A live
     * replica's pending rows are its work in progress and stay.
     */
    async reconcile(isLive: (owner: string | null) => boolean): Promise<number> {
      const abandoned = (row: { state: RowState; owner: string | null }) => row.state === 'deleting' || !isLive(row.owner);
      let undone = 0;
      for (const row of await store.unfinished()) {
        if (row.keyState !== 'deleting' && !abandoned(row)) continue;
        await token.destroyObjects(row.objectId);
        await store.removeVersion(row.keyId, row.version);
        undone++;
      }
      for (const key of await store.unfinishedKeys()) {
        if (!abandoned(key)) continue;
        await store.remove(key.id);
        undone++;
      }
      return undone;
    },

    /** CKA_IDs of every key version's objects (for the orphan sweep). */
    async objectIds(): Promise<Buffer[]> {
      return [...(await store.knownObjectIds())].map((hex) => Buffer.from(hex, 'hex'));
    },
  };
}

export type KeyService = ReturnType<typeof createKeyService>;
