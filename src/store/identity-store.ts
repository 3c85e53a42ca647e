/**
 * Machine identities, their client secrets (slow hashes only) and access tokens (SHA-256 of
 * the bearer value only): a stolen database file holds nothing that logs anyone in.
 */
import type { Db } from './database.js';

export interface Permission {
  projectId: string;
  actions: string[];
}

export interface IdentityRecord {
  id: string;
  name: string;
  clientId: string;
  permissions: Permission[];
  createdAt: string;
  updatedAt: string;
}

export interface ClientSecretRecord {
  id: string;
  identityId: string;
  prefix: string;
  hash: string;
  description: string;
  createdAt: string;
}

export interface AccessTokenRecord {
  tokenHash: string;
  identityId: string;
  issuedAt: number;
  expiresAt: number;
  maxExpiresAt: number;
}

/** An access token together with the identity it acts as, read in one go. */
export interface TokenHolder {
  tokenHash: string;
  expiresAt: number;
  identity: Pick<IdentityRecord, 'id' | 'name' | 'permissions'>;
}

export interface IdentityStore {
  insert(identity: IdentityRecord): Promise<void>;
  get(id: string): Promise<IdentityRecord | undefined>;
  getByClientId(clientId: string): Promise<IdentityRecord | undefined>;
  list(): Promise<IdentityRecord[]>;
  remove(id: string): Promise<void>;
  insertSecret(secret: ClientSecretRecord): Promise<void>;
  secrets(identityId: string): Promise<ClientSecretRecord[]>;
  secretsByPrefix(identityId: string, prefix: string): Promise<ClientSecretRecord[]>;
  removeSecret(identityId: string, secretId: string): Promise<boolean>;
  insertToken(token: AccessTokenRecord): Promise<void>;
  getToken(tokenHash: string): Promise<AccessTokenRecord | undefined>;
  /** The tokens among `tokenHashes` that still exist, with their identities, in one read. */
  tokenHolders(tokenHashes: string[]): Promise<TokenHolder[]>;
  extendToken(tokenHash: string, expiresAt: number): Promise<void>;
  removeExpiredTokens(now: number): Promise<void>;
}

interface IdentityRow {
  id: string;
  name: string;
  client_id: string;
  permissions: string;
  created_at: string;
  updated_at: string;
}

interface SecretRow {
  id: string;
  identity_id: string;
  prefix: string;
  hash: string;
  description: string;
  created_at: string;
}

interface TokenHolderRow {
  token_hash: string;
  expires_at: number;
  identity_id: string;
  name: string;
  permissions: string;
}

interface TokenRow {
  token_hash: string;
  identity_id: string;
  issued_at: number;
  expires_at: number;
  max_expires_at: number;
}

const toIdentity = (row: IdentityRow): IdentityRecord => ({
  id: row.id,
  name: row.name,
  clientId: row.client_id,
  permissions: JSON.parse(row.permissions) as Permission[],
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});

const toSecret = (row: SecretRow): ClientSecretRecord => ({
  id: row.id,
  identityId: row.identity_id,
  prefix: row.prefix,
  hash: row.hash,
  description: row.description,
  createdAt: row.created_at,
});

export function createSqliteIdentityStore(db: Db): IdentityStore {
  const statements = {
    insert: db.prepare(
      `INSERT INTO identities (id, name, client_id, permissions, created_at, updated_at) VALUES (@id, @name, @clientId, @permissions, @createdAt, @updatedAt)`,
    ),
    get: db.prepare<[string], IdentityRow>(`SELECT * FROM identities WHERE id = ?`),
    getByClientId: db.prepare<[string], IdentityRow>(`SELECT * FROM identities WHERE client_id = ?`),
    list: db.prepare<[], IdentityRow>(`SELECT * FROM identities ORDER BY created_at, id`),
    remove: db.prepare(`DELETE FROM identities WHERE id = ?`),
    insertSecret: db.prepare(
      `INSERT INTO client_secrets (id, identity_id, prefix, hash, description, created_at) VALUES (@id, @identityId, @prefix, @hash, @description, @createdAt)`,
    ),
    secrets: db.prepare<[string], SecretRow>(`SELECT * FROM client_secrets WHERE identity_id = ? ORDER BY created_at, id`),
    secretsByPrefix: db.prepare<[string, string], SecretRow>(`SELECT * FROM client_secrets WHERE identity_id = ? AND prefix = ?`),
    removeSecret: db.prepare(`DELETE FROM client_secrets WHERE identity_id = ? AND id = ?`),
    insertToken: db.prepare(
      `INSERT INTO access_tokens (token_hash, identity_id, issued_at, expires_at, max_expires_at) VALUES (@tokenHash, @identityId, @issuedAt, @expiresAt, @maxExpiresAt)`,
    ),
    getToken: db.prepare<[string], TokenRow>(`SELECT * FROM access_tokens WHERE token_hash = ?`),
    tokenHolders: db.prepare<[string], TokenHolderRow>(
      `SELECT t.token_hash, t.expires_at, i.id AS identity_id, i.name, i.permissions
       FROM access_tokens t JOIN identities i ON i.id = t.identity_id
       WHERE t.token_hash IN (SELECT value FROM json_each(?))`,
    ),
    extendToken: db.prepare(`UPDATE access_tokens SET expires_at = ? WHERE token_hash = ?`),
    removeExpired: db.prepare(`DELETE FROM access_tokens WHERE expires_at <= ?`),
  };

  return {
    async insert(identity) {
      statements.insert.run({ ...identity, permissions: JSON.stringify(identity.permissions) });
    },
    async get(id) {
      const row = statements.get.get(id);
      return row && toIdentity(row);
    },
    async getByClientId(clientId) {
      const row = statements.getByClientId.get(clientId);
      return row && toIdentity(row);
    },
    async list() {
      return statements.list.all().map(toIdentity);
    },
    async remove(id) {
      statements.remove.run(id);
    },
    async insertSecret(secret) {
      statements.insertSecret.run(secret);
    },
    async secrets(identityId) {
      return statements.secrets.all(identityId).map(toSecret);
    },
    async secretsByPrefix(identityId, prefix) {
      return statements.secretsByPrefix.all(identityId, prefix).map(toSecret);
    },
    async removeSecret(identityId, secretId) {
      return statements.removeSecret.run(identityId, secretId).changes > 0;
    },
    async insertToken(token) {
      statements.insertToken.run(token);
    },
    async getToken(tokenHash) {
      const row = statements.getToken.get(tokenHash);
      return (
        row && { tokenHash: row.token_hash, identityId: row.identity_id, issuedAt: row.issued_at, expiresAt: row.expires_at, maxExpiresAt: row.max_expires_at }
      );
    },
    async tokenHolders(tokenHashes) {
      if (tokenHashes.length === 0) return [];
      return statements.tokenHolders.all(JSON.stringify(tokenHashes)).map((row) => ({
        tokenHash: row.token_hash,
        expiresAt: row.expires_at,
        identity: { id: row.identity_id, name: row.name, permissions: JSON.parse(row.permissions) as Permission[] },
      }));
    },
    async extendToken(tokenHash, expiresAt) {
      statements.extendToken.run(expiresAt, tokenHash);
    },
    async removeExpiredTokens(now) {
      statements.removeExpired.run(now);
    },
  };
}
