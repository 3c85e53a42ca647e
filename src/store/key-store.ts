/**
 * KMS key metadata. A key row and its version rows name token objects by CKA_ID; the `state`
 * columns make a crash at any point recoverable (see KeyService.reconcile and orphan-objects.ts):
 * `pending` rows were written before their objects were made, `deleting` rows before their
 * objects were destroyed.
 */
import type { KeyAlgorithm, KeyUsage } from '../algorithms.js';
import type { Store } from './database.js';
import { chunks, containsPattern } from './queries.js';

export type RowState = 'pending' | 'active' | 'deleting';

export interface KeyRecord {
  id: string;
  orgId: string;
  projectId: string;
  name: string;
  description: string;
  isDisabled: boolean;
  keyUsage: KeyUsage;
  algorithm: KeyAlgorithm;
  version: number;
  state: RowState;
  createdAt: string;
  updatedAt: string;
}

export interface KeyVersionRecord {
  keyId: string;
  version: number;
  objectId: Buffer;
  publicKey: Buffer | null;
  state: RowState;
}

export interface KeyListQuery {
  projectId: string;
  offset: number;
  limit: number;
  orderBy: 'name' | 'createdAt' | 'updatedAt';
  orderDirection: 'asc' | 'desc';
  search?: string | undefined;
}

export interface KeyStore {
  /** `owner`: the replica writing it (services/leases.ts), so no other undoes it while it lives. */
  insertPending(key: KeyRecord, firstVersion: KeyVersionRecord, owner: string): Promise<void>;
  /**
   * Marks a pending version (and its key) active. False when the pending row is gone: another
   * replica took it for a crash's leftover (its writer had stopped renewing its presence).
   */
  activate(keyId: string, version: number, publicKey: Buffer | null, updatedAt: string): Promise<boolean>;
  insertPendingVersion(version: KeyVersionRecord, owner: string): Promise<void>;
  get(id: string): Promise<KeyRecord | undefined>;
  /** The active rows among `ids`, in one read (ids that are gone are simply absent). */
  getMany(ids: string[]): Promise<KeyRecord[]>;
  getByName(projectId: string, name: string): Promise<KeyRecord | undefined>;
  list(query: KeyListQuery): Promise<{ keys: KeyRecord[]; totalCount: number }>;
  update(id: string, changes: Partial<Pick<KeyRecord, 'name' | 'description' | 'isDisabled'>>, updatedAt: string): Promise<void>;
  getVersion(keyId: string, version: number): Promise<KeyVersionRecord | undefined>;
  versions(keyId: string): Promise<KeyVersionRecord[]>;
  markDeleting(keyId: string): Promise<void>;
  remove(keyId: string): Promise<void>;
  removeVersion(keyId: string, version: number): Promise<void>;
  /**
   * Versions that are not (or whose key is not) active: pending or deleting, with their key's
   * state and the replica that wrote them pending (null if unknown). A crash's leftovers, or
   * work another replica is doing now: the caller tells them apart by `owner`.
   */
  unfinished(): Promise<Array<KeyVersionRecord & { keyState: RowState; owner: string | null }>>;
  knownObjectIds(): Promise<Set<string>>;
  /** Key rows that are not active, with the replica that wrote them pending. */
  unfinishedKeys(): Promise<Array<{ id: string; state: RowState; owner: string | null }>>;
}

interface KeyRow {
  id: string;
  org_id: string;
  project_id: string;
  name: string;
  description: string;
  is_disabled: number;
  key_usage: KeyUsage;
  algorithm: KeyAlgorithm;
  version: number;
  state: RowState;
  created_at: string;
  updated_at: string;
}

interface VersionRow {
  key_id: string;
  version: number;
  object_id: Buffer;
  public_key: Buffer | null;
  state: RowState;
}

const toKey = (row: KeyRow): KeyRecord => ({
  id: row.id,
  orgId: row.org_id,
  projectId: row.project_id,
  name: row.name,
  description: row.description,
  isDisabled: row.is_disabled === 1,
  keyUsage: row.key_usage,
  algorithm: row.algorithm,
  version: row.version,
  state: row.state,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});

const toVersion = (row: VersionRow): KeyVersionRecord => ({
  keyId: row.key_id,
  version: row.version,
  objectId: row.object_id,
  publicKey: row.public_key,
  state: row.state,
});

const ORDER_COLUMNS = { name: 'name', createdAt: 'created_at', updatedAt: 'updated_at' } as const;

export function createKeyStore(store: Store): KeyStore {
  const { db } = store;
  const active = 'active' as RowState;
  const keyRow = (row: unknown) => toKey(row as KeyRow);
  const versionRow = (row: unknown) => toVersion(row as VersionRow);

  return {
    async insertPending(key, firstVersion, owner) {
      await db.transaction().execute(async (trx) => {
        await trx
          .insertInto('kms_keys')
          .values({
            id: key.id,
            org_id: key.orgId,
            project_id: key.projectId,
            name: key.name,
            description: key.description,
            is_disabled: key.isDisabled ? 1 : 0,
            key_usage: key.keyUsage,
            algorithm: key.algorithm,
            version: key.version,
            state: key.state,
            owner,
            created_at: key.createdAt,
            updated_at: key.updatedAt,
          })
          .execute();
        await trx.insertInto('kms_key_versions').values({ ...versionValues(firstVersion, key.createdAt), owner }).execute();
      });
    },
    async activate(keyId, version, publicKey, updatedAt) {
      return db.transaction().execute(async (trx) => {
        const activated = await trx.updateTable('kms_key_versions').set({ state: active, public_key: publicKey }).where('key_id', '=', keyId).where('version', '=', version).executeTakeFirst();
        if (Number(activated.numUpdatedRows) === 0) return false;
        await trx.updateTable('kms_keys').set({ state: active, version, updated_at: updatedAt }).where('id', '=', keyId).execute();
        return true;
      });
    },
    async insertPendingVersion(version, owner) {
      await db.insertInto('kms_key_versions').values({ ...versionValues(version, new Date().toISOString()), owner }).execute();
    },
    async get(id) {
      const row = await db.selectFrom('kms_keys').selectAll().where('id', '=', id).where('state', '=', active).executeTakeFirst();
      return row && keyRow(row);
    },
    async getMany(ids) {
      const keys: KeyRecord[] = [];
      for (const chunk of chunks([...new Set(ids)])) {
        const rows = await db.selectFrom('kms_keys').selectAll().where('id', 'in', chunk).where('state', '=', active).execute();
        for (const row of rows) keys.push(keyRow(row));
      }
      return keys;
    },
    async getByName(projectId, name) {
      const row = await db.selectFrom('kms_keys').selectAll().where('project_id', '=', projectId).where('name', '=', name).where('state', '=', active).executeTakeFirst();
      return row && keyRow(row);
    },
    async list(query) {
      let filtered = db.selectFrom('kms_keys').where('project_id', '=', query.projectId).where('state', '=', active);
      if (query.search) filtered = filtered.where(containsPattern(store.engine, 'name', query.search));
      const direction = query.orderDirection === 'desc' ? 'desc' : 'asc';
      const rows = await filtered
        .selectAll()
        .orderBy(ORDER_COLUMNS[query.orderBy], direction)
        .orderBy('id')
        .limit(query.limit)
        .offset(query.offset)
        .execute();
      const { count } = await filtered.select((eb) => eb.fn.countAll<number>().as('count')).executeTakeFirstOrThrow();
      return { keys: rows.map(keyRow), totalCount: Number(count) };
    },
    async update(id, changes, updatedAt) {
      await db
        .updateTable('kms_keys')
        .set({
          updated_at: updatedAt,
          ...(changes.name !== undefined ? { name: changes.name } : {}),
          ...(changes.description !== undefined ? { description: changes.description } : {}),
          ...(changes.isDisabled !== undefined ? { is_disabled: changes.isDisabled ? 1 : 0 } : {}),
        })
        .where('id', '=', id)
        .execute();
    },
    async getVersion(keyId, version) {
      const row = await db.selectFrom('kms_key_versions').selectAll().where('key_id', '=', keyId).where('version', '=', version).where('state', '=', active).executeTakeFirst();
      return row && versionRow(row);
    },
    async versions(keyId) {
      return (await db.selectFrom('kms_key_versions').selectAll().where('key_id', '=', keyId).orderBy('version').execute()).map(versionRow);
    },
    async markDeleting(keyId) {
      await db.transaction().execute(async (trx) => {
        await trx.updateTable('kms_keys').set({ state: 'deleting' }).where('id', '=', keyId).execute();
        await trx.updateTable('kms_key_versions').set({ state: 'deleting' }).where('key_id', '=', keyId).execute();
      });
    },
    async remove(keyId) {
      await db.deleteFrom('kms_keys').where('id', '=', keyId).execute();
    },
    async removeVersion(keyId, version) {
      await db.deleteFrom('kms_key_versions').where('key_id', '=', keyId).where('version', '=', version).execute();
    },
    async unfinished() {
      const rows = await db
        .selectFrom('kms_key_versions as v')
        .innerJoin('kms_keys as k', 'k.id', 'v.key_id')
        .selectAll('v')
        .select('k.state as key_state')
        .where((eb) => eb.or([eb('v.state', '!=', active), eb('k.state', '!=', active)]))
        .execute();
      return rows.map((row) => ({ ...versionRow(row), keyState: row.key_state as RowState, owner: row.owner }));
    },
    async unfinishedKeys() {
      const rows = await db.selectFrom('kms_keys').select(['id', 'state', 'owner']).where('state', '!=', active).execute();
      return rows.map((row) => ({ id: row.id, state: row.state as RowState, owner: row.owner }));
    },
    async knownObjectIds() {
      const rows = await db.selectFrom('kms_key_versions').select('object_id').execute();
      return new Set(rows.map((row) => row.object_id.toString('hex')));
    },
  };
}

function versionValues(version: KeyVersionRecord, createdAt: string) {
  return { key_id: version.keyId, version: version.version, object_id: version.objectId, public_key: version.publicKey, state: version.state, created_at: createdAt };
}
