/**
 * KMS key metadata. A key row and its version rows name token objects by CKA_ID; the `state`
 * columns make a crash at any point recoverable (see KeyService.reconcile and orphan-objects.ts):
 * `pending` rows were written before their objects were made, `deleting` rows before their
 * objects were destroyed.
 */
import type { KeyAlgorithm, KeyUsage } from '../algorithms.js';
import type { Db } from './database.js';

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
  insertPending(key: KeyRecord, firstVersion: KeyVersionRecord): Promise<void>;
  activate(keyId: string, version: number, publicKey: Buffer | null, updatedAt: string): Promise<void>;
  insertPendingVersion(version: KeyVersionRecord): Promise<void>;
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
  /** Rows a crash left half-done: pending or deleting versions, with their key's state. */
  unfinished(): Promise<Array<KeyVersionRecord & { keyState: RowState }>>;
  knownObjectIds(): Promise<Set<string>>;
  /** Drops key rows left pending or deleting with no version rows; returns how many. */
  removeUnfinishedKeys(): Promise<number>;
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

const ORDER_COLUMNS: Record<KeyListQuery['orderBy'], string> = { name: 'name', createdAt: 'created_at', updatedAt: 'updated_at' };

export function createSqliteKeyStore(db: Db): KeyStore {
  const statements = {
    insertKey: db.prepare(
      `INSERT INTO kms_keys (id, org_id, project_id, name, description, is_disabled, key_usage, algorithm, version, state, created_at, updated_at)
       VALUES (@id, @orgId, @projectId, @name, @description, @isDisabled, @keyUsage, @algorithm, @version, @state, @createdAt, @updatedAt)`,
    ),
    insertVersion: db.prepare(
      `INSERT INTO kms_key_versions (key_id, version, object_id, public_key, state, created_at)
       VALUES (@keyId, @version, @objectId, @publicKey, @state, @createdAt)`,
    ),
    activateVersion: db.prepare(`UPDATE kms_key_versions SET state = 'active', public_key = ? WHERE key_id = ? AND version = ?`),
    activateKey: db.prepare(`UPDATE kms_keys SET state = 'active', version = ?, updated_at = ? WHERE id = ?`),
    get: db.prepare<[string], KeyRow>(`SELECT * FROM kms_keys WHERE id = ? AND state = 'active'`),
    getMany: db.prepare<[string], KeyRow>(`SELECT * FROM kms_keys WHERE id IN (SELECT value FROM json_each(?)) AND state = 'active'`),
    getByName: db.prepare<[string, string], KeyRow>(`SELECT * FROM kms_keys WHERE project_id = ? AND name = ? AND state = 'active'`),
    getVersion: db.prepare<[string, number], VersionRow>(`SELECT * FROM kms_key_versions WHERE key_id = ? AND version = ? AND state = 'active'`),
    versions: db.prepare<[string], VersionRow>(`SELECT * FROM kms_key_versions WHERE key_id = ? ORDER BY version`),
    markKeyDeleting: db.prepare(`UPDATE kms_keys SET state = 'deleting' WHERE id = ?`),
    markVersionsDeleting: db.prepare(`UPDATE kms_key_versions SET state = 'deleting' WHERE key_id = ?`),
    removeKey: db.prepare(`DELETE FROM kms_keys WHERE id = ?`),
    removeVersion: db.prepare(`DELETE FROM kms_key_versions WHERE key_id = ? AND version = ?`),
    unfinished: db.prepare<[], VersionRow & { key_state: RowState }>(
      `SELECT v.*, k.state AS key_state FROM kms_key_versions v JOIN kms_keys k ON k.id = v.key_id
       WHERE v.state != 'active' OR k.state != 'active'`,
    ),
    objectIds: db.prepare<[], { object_id: Buffer }>(`SELECT object_id FROM kms_key_versions`),
    removeUnfinishedKeys: db.prepare(`DELETE FROM kms_keys WHERE state != 'active'`),
  };

  return {
    async insertPending(key, firstVersion) {
      db.transaction(() => {
        statements.insertKey.run({ ...key, isDisabled: key.isDisabled ? 1 : 0 });
        statements.insertVersion.run({ ...firstVersion, createdAt: key.createdAt });
      })();
    },
    async activate(keyId, version, publicKey, updatedAt) {
      db.transaction(() => {
        statements.activateVersion.run(publicKey, keyId, version);
        statements.activateKey.run(version, updatedAt, keyId);
      })();
    },
    async insertPendingVersion(version) {
      statements.insertVersion.run({ ...version, createdAt: new Date().toISOString() });
    },
    async get(id) {
      const row = statements.get.get(id);
      return row && toKey(row);
    },
    async getMany(ids) {
      return ids.length === 0 ? [] : statements.getMany.all(JSON.stringify(ids)).map(toKey);
    },
    async getByName(projectId, name) {
      const row = statements.getByName.get(projectId, name);
      return row && toKey(row);
    },
    async list(query) {
      const where = [`project_id = @projectId`, `state = 'active'`];
      const params: Record<string, unknown> = { projectId: query.projectId, limit: query.limit, offset: query.offset };
      if (query.search) {
        where.push(`name LIKE @search ESCAPE '\\'`);
        params.search = `%${query.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      }
      const clause = where.join(' AND ');
      const direction = query.orderDirection === 'desc' ? 'DESC' : 'ASC';
      const rows = db
        .prepare<Record<string, unknown>, KeyRow>(`SELECT * FROM kms_keys WHERE ${clause} ORDER BY ${ORDER_COLUMNS[query.orderBy]} ${direction}, id LIMIT @limit OFFSET @offset`)
        .all(params);
      const { count } = db.prepare<Record<string, unknown>, { count: number }>(`SELECT COUNT(*) AS count FROM kms_keys WHERE ${clause}`).get(params)!;
      return { keys: rows.map(toKey), totalCount: count };
    },
    async update(id, changes, updatedAt) {
      const sets: string[] = ['updated_at = @updatedAt'];
      const params: Record<string, unknown> = { id, updatedAt };
      if (changes.name !== undefined) (sets.push('name = @name'), (params.name = changes.name));
      if (changes.description !== undefined) (sets.push('description = @description'), (params.description = changes.description));
      if (changes.isDisabled !== undefined) (sets.push('is_disabled = @isDisabled'), (params.isDisabled = changes.isDisabled ? 1 : 0));
      db.prepare(`UPDATE kms_keys SET ${sets.join(', ')} WHERE id = @id`).run(params);
    },
    async getVersion(keyId, version) {
      const row = statements.getVersion.get(keyId, version);
      return row && toVersion(row);
    },
    async versions(keyId) {
      return statements.versions.all(keyId).map(toVersion);
    },
    async markDeleting(keyId) {
      db.transaction(() => {
        statements.markKeyDeleting.run(keyId);
        statements.markVersionsDeleting.run(keyId);
      })();
    },
    async remove(keyId) {
      statements.removeKey.run(keyId);
    },
    async removeVersion(keyId, version) {
      statements.removeVersion.run(keyId, version);
    },
    async unfinished() {
      return statements.unfinished.all().map((row) => ({ ...toVersion(row), keyState: row.key_state }));
    },
    async removeUnfinishedKeys() {
      return statements.removeUnfinishedKeys.run().changes;
    },
    async knownObjectIds() {
      return new Set(statements.objectIds.all().map((row) => row.object_id.toString('hex')));
    },
  };
}
