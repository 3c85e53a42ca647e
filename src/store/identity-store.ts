/**
 * Machine identities, their client secrets (slow hashes only) and access tokens (SHA-256 of
 * the bearer value only): a stolen database file holds nothing that logs anyone in.
 */
import type { Permission } from '../services/permissions.js';
import type { Store } from './database.js';
import { chunks } from './queries.js';
import type { IdentitiesTable } from './schema.js';

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

/** A row as the store returns it: the table's own shape (schema.ts). */
type IdentityRow = IdentitiesTable;

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

export function createIdentityStore(store: Store): IdentityStore {
  const { db } = store;
  return {
    async insert(identity) {
      await db
        .insertInto('identities')
        .values({
          id: identity.id,
          name: identity.name,
          client_id: identity.clientId,
          permissions: JSON.stringify(identity.permissions),
          created_at: identity.createdAt,
          updated_at: identity.updatedAt,
        })
        .execute();
    },
    async get(id) {
      const row = await db.selectFrom('identities').selectAll().where('id', '=', id).executeTakeFirst();
      return row && toIdentity(row);
    },
    async getByClientId(clientId) {
      const row = await db.selectFrom('identities').selectAll().where('client_id', '=', clientId).executeTakeFirst();
      return row && toIdentity(row);
    },
    async list() {
      return (await db.selectFrom('identities').selectAll().orderBy('created_at').orderBy('id').execute()).map(toIdentity);
    },
    async remove(id) {
      await db.deleteFrom('identities').where('id', '=', id).execute();
    },
    async insertSecret(secret) {
      await db
        .insertInto('client_secrets')
        .values({ id: secret.id, identity_id: secret.identityId, prefix: secret.prefix, hash: secret.hash, description: secret.description, created_at: secret.createdAt })
        .execute();
    },
    async secrets(identityId) {
      return (await db.selectFrom('client_secrets').selectAll().where('identity_id', '=', identityId).orderBy('created_at').orderBy('id').execute()).map(toSecret);
    },
    async secretsByPrefix(identityId, prefix) {
      return (await db.selectFrom('client_secrets').selectAll().where('identity_id', '=', identityId).where('prefix', '=', prefix).execute()).map(toSecret);
    },
    async removeSecret(identityId, secretId) {
      const result = await db.deleteFrom('client_secrets').where('identity_id', '=', identityId).where('id', '=', secretId).executeTakeFirst();
      return result.numDeletedRows > 0n;
    },
    async insertToken(token) {
      await db
        .insertInto('access_tokens')
        .values({ token_hash: token.tokenHash, identity_id: token.identityId, issued_at: token.issuedAt, expires_at: token.expiresAt, max_expires_at: token.maxExpiresAt })
        .execute();
    },
    async getToken(tokenHash) {
      const row = await db.selectFrom('access_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
      return (
        row && { tokenHash: row.token_hash, identityId: row.identity_id, issuedAt: row.issued_at, expiresAt: row.expires_at, maxExpiresAt: row.max_expires_at }
      );
    },
    async tokenHolders(tokenHashes) {
      const holders: TokenHolder[] = [];
      for (const chunk of chunks([...new Set(tokenHashes)])) {
        const rows: TokenHolderRow[] = await db
          .selectFrom('access_tokens as t')
          .innerJoin('identities as i', 'i.id', 't.identity_id')
          .select(['t.token_hash', 't.expires_at', 'i.id as identity_id', 'i.name', 'i.permissions'])
          .where('t.token_hash', 'in', chunk)
          .execute();
        for (const row of rows) {
          holders.push({
            tokenHash: row.token_hash,
            expiresAt: row.expires_at,
            identity: { id: row.identity_id, name: row.name, permissions: JSON.parse(row.permissions) as Permission[] },
          });
        }
      }
      return holders;
    },
    async extendToken(tokenHash, expiresAt) {
      await db.updateTable('access_tokens').set({ expires_at: expiresAt }).where('token_hash', '=', tokenHash).execute();
    },
    async removeExpiredTokens(now) {
      await db.deleteFrom('access_tokens').where('expires_at', '<=', now).execute();
    },
  };
}
