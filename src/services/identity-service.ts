/**
 * Machine identities ("universal auth"): login with a client id and secret, access tokens that
 * expire, renew, and the admin API for identities and client secrets.
 *
 * Access tokens are 256 random bits; the store keeps only their SHA-256. A verified token is
 * cached in memory with its principal, so a request costs one hash and one map lookup, not a
 * database read or a signature check.
 *
 * Staleness bound: a cached token is trusted only while the store said it existed (and who it
 * acts as) less than TOKEN_MAX_AGE_MS (500 ms) ago; older, the request itself reads it again
 * (one indexed read) before it is accepted, so the bound holds even when the refresh timer is
 * late. The timer (`startRefresh`) re-reads the tokens in use in one batch every 250 ms so the
 * request path seldom reads. An identity deleted (its tokens go with it) by any process sharing
 * the store is therefore refused here within 500 ms; a delete in this process, at once. A token
 * past its cached expiry is read again too, since a renew elsewhere may have extended it. Client secrets are kept as scrypt hashes and compared in
 * constant time; an unknown client id costs the same scrypt as a known one.
 */
import { hash, randomBytes, randomUUID, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { badRequest, notFound, permissionDenied, permissionDeniedEverywhere, unauthorized } from '../errors.js';
import type { ClientSecretRecord, IdentityRecord, IdentityStore, TokenHolder } from '../store/identity-store.js';
import { canGrant, canSomewhere, type Permission, type Principal } from './permissions.js';
import { backgroundRefresh } from './background-refresh.js';

const scrypt = (password: string, salt: Buffer, keylen: number, options: ScryptOptions) =>
  new Promise<Buffer>((resolve, reject) => scryptCallback(password, salt, keylen, options, (error, key) => (error ? reject(error) : resolve(key))));

const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;
const SECRET_PREFIX_LENGTH = 8;
const TOKEN_CACHE_LIMIT = 50_000;
/** The oldest a cached token may be when a request relies on it (see the opening comment). */
export const TOKEN_MAX_AGE_MS = 500;
const REFRESH_EVERY_MS = TOKEN_MAX_AGE_MS / 2;
/** Tokens not used for this long leave the cache at the next refresh. */
const IDLE_AFTER_MS = 30_000;

export interface AuthSettings {
  accessTokenTTL: number;
  accessTokenMaxTTL: number;
}

export interface LoginResult {
  accessToken: string;
  expiresIn: number;
  accessTokenMaxTTL: number;
  tokenType: 'Bearer';
}

/** An identity as the API shows it: every column (the secrets live in another table). */
export type PublicIdentity = IdentityRecord;

export interface PublicClientSecret {
  id: string;
  identityId: string;
  clientSecretPrefix: string;
  description: string;
  createdAt: string;
}

interface CachedToken {
  principal: Principal;
  expiresAt: number;
  /** Date.now() taken before the store was read: what it said is at least this recent. */
  checkedAt: number;
  usedAt: number;
}

export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(secret, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64'), hash.toString('base64')].join('$');
}

export async function secretMatches(secret: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scrypt(secret, Buffer.from(salt, 'base64'), expected.length, { N: Number(n), r: Number(r), p: Number(p) });
  return timingSafeEqual(actual, expected);
}

/** A fixed hash to spend the same scrypt on when the client id is unknown. */
const DECOY_HASH = `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`;

const sha256 = (value: string) => hash('sha256', value);

const publicIdentity = (identity: IdentityRecord): PublicIdentity => ({ ...identity });
const publicSecret = (secret: ClientSecretRecord): PublicClientSecret => ({
  id: secret.id,
  identityId: secret.identityId,
  clientSecretPrefix: secret.prefix,
  description: secret.description,
  createdAt: secret.createdAt,
});

const principalOf = (identity: TokenHolder['identity']): Principal => ({ identityId: identity.id, name: identity.name, permissions: identity.permissions });

export function createIdentityService(deps: { identityStore: IdentityStore; settings: AuthSettings; onRefreshError?: (error: unknown) => void }) {
  const { identityStore: store, settings } = deps;
  const tokenCache = new Map<string, CachedToken>();
  let refreshing = false;

  /** Re-reads, in one batch, every cached token older than half the bound; evicts idle and gone ones. */
  async function refresh(): Promise<void> {
    if (refreshing) return;
    refreshing = true;
    try {
      const checkedAt = Date.now();
      const due: Array<[string, CachedToken]> = [];
      for (const item of tokenCache) if (checkedAt - item[1].checkedAt >= REFRESH_EVERY_MS) due.push(item);
      if (due.length === 0) return;
      const holders = new Map((await store.tokenHolders(due.map(([hash]) => hash))).map((holder) => [holder.tokenHash, holder]));
      for (const [hash, entry] of due) {
        // Replaced or dropped meanwhile (a request read it again, a delete here): that is newer.
        if (tokenCache.get(hash) !== entry) continue;
        const holder = holders.get(hash);
        if (!holder || checkedAt - entry.usedAt > IDLE_AFTER_MS) tokenCache.delete(hash);
        else tokenCache.set(hash, { principal: principalOf(holder.identity), expiresAt: holder.expiresAt, checkedAt, usedAt: entry.usedAt });
      }
    } finally {
      refreshing = false;
    }
  }
  const background = backgroundRefresh(refresh, REFRESH_EVERY_MS, (error) => deps.onRefreshError?.(error));

  function cacheToken(tokenHash: string, entry: CachedToken): void {
    if (tokenCache.size >= TOKEN_CACHE_LIMIT && !tokenCache.has(tokenHash)) {
      // Maps iterate in insertion order: drop the oldest entry.
      const oldest = tokenCache.keys().next().value;
      if (oldest !== undefined) tokenCache.delete(oldest);
    }
    tokenCache.set(tokenHash, entry);
  }

  function forgetIdentity(identityId: string): void {
    for (const [hash, entry] of tokenCache) if (entry.principal.identityId === identityId) tokenCache.delete(hash);
  }

  async function issueToken(identity: IdentityRecord): Promise<LoginResult> {
    const accessToken = `hss.${randomBytes(32).toString('base64url')}`;
    // Milliseconds, so a token lives exactly the expiresIn it is announced with.
    const issuedAt = Date.now();
    const expiresAt = issuedAt + settings.accessTokenTTL * 1000;
    await store.insertToken({ tokenHash: sha256(accessToken), identityId: identity.id, issuedAt, expiresAt, maxExpiresAt: issuedAt + settings.accessTokenMaxTTL * 1000 });
    return { accessToken, expiresIn: settings.accessTokenTTL, accessTokenMaxTTL: settings.accessTokenMaxTTL, tokenType: 'Bearer' };
  }

  async function newSecret(identityId: string, description: string): Promise<{ clientSecret: string; record: ClientSecretRecord }> {
    const clientSecret = randomBytes(32).toString('hex');
    const record: ClientSecretRecord = {
      id: randomUUID(),
      identityId,
      prefix: clientSecret.slice(0, SECRET_PREFIX_LENGTH),
      hash: await hashSecret(clientSecret),
      description,
      createdAt: new Date().toISOString(),
    };
    await store.insertSecret(record);
    return { clientSecret, record };
  }

  /** The caller may manage `target` only if it could have granted all of its permissions. */
  function assertManages(principal: Principal, permissions: Permission[]): void {
    if (!canGrant(principal.permissions, permissions)) {
      const project = permissions.find((entry) => !canGrant(principal.permissions, [entry]))?.projectId ?? '*';
      throw permissionDenied('manage-identities', project);
    }
  }

  async function manageable(principal: Principal, identityId: string): Promise<IdentityRecord> {
    const identity = await store.get(identityId);
    if (!identity) throw notFound(`Identity with ID '${identityId}' not found`);
    assertManages(principal, identity.permissions);
    return identity;
  }

  return {
    async login(clientId: string, clientSecret: string): Promise<LoginResult> {
      const identity = await store.getByClientId(clientId);
      const candidates = identity ? await store.secretsByPrefix(identity.id, clientSecret.slice(0, SECRET_PREFIX_LENGTH)) : [];
      let matched = false;
      for (const candidate of candidates) if (await secretMatches(clientSecret, candidate.hash)) matched = true;
      if (candidates.length === 0) await secretMatches(clientSecret, DECOY_HASH);
      if (!identity || !matched) throw unauthorized('Invalid credentials');
      return issueToken(identity);
    },

    /** The identity a clientId names, if any (clientIds are not secret). */
    async identityIdOf(clientId: string): Promise<string | null> {
      return (await store.getByClientId(clientId))?.id ?? null;
    },

    async renew(accessToken: string): Promise<LoginResult> {
      const tokenHash = sha256(accessToken);
      const record = await store.getToken(tokenHash);
      const now = Date.now();
      if (!record || record.expiresAt <= now) throw unauthorized('Access token is invalid or expired');
      if (record.maxExpiresAt <= now) throw unauthorized('Access token has reached its maximum TTL');
      const expiresAt = Math.min(now + settings.accessTokenTTL * 1000, record.maxExpiresAt);
      await store.extendToken(tokenHash, expiresAt);
      const cached = tokenCache.get(tokenHash);
      if (cached) cached.expiresAt = expiresAt;
      // Whole seconds, rounded down: the token is never announced as living longer than it does.
      return { accessToken, expiresIn: Math.floor((expiresAt - now) / 1000), accessTokenMaxTTL: settings.accessTokenMaxTTL, tokenType: 'Bearer' };
    },

    /** The principal behind a bearer token, or a 401. Hot path: one hash, one map lookup. */
    async authenticate(accessToken: string): Promise<Principal> {
      const tokenHash = sha256(accessToken);
      const now = Date.now();
      const cached = tokenCache.get(tokenHash);
      if (cached && cached.expiresAt > now && now - cached.checkedAt < TOKEN_MAX_AGE_MS) {
        cached.usedAt = now;
        return cached.principal;
      }
      const [holder] = await store.tokenHolders([tokenHash]);
      if (!holder || holder.expiresAt <= now) {
        tokenCache.delete(tokenHash);
        throw cached && holder ? unauthorized('Access token expired') : unauthorized();
      }
      const principal = principalOf(holder.identity);
      cacheToken(tokenHash, { principal, expiresAt: holder.expiresAt, checkedAt: now, usedAt: now });
      return principal;
    },

    /** Keeps cached tokens fresh in the background (the bound holds without it; see the opening comment). */
    startRefresh(): void {
      background.start();
    },

    stopRefresh(): void {
      background.stop();
    },

    /** One refresh pass now (what the timer runs). */
    refresh,

    /** Creates an identity (no secret yet). Used by the API and by the first-start bootstrap. */
    async createIdentity(principal: Principal | 'bootstrap', name: string, permissions: Permission[]): Promise<PublicIdentity> {
      if (principal !== 'bootstrap') assertManages(principal, permissions);
      const now = new Date().toISOString();
      const identity: IdentityRecord = { id: randomUUID(), name, clientId: randomUUID(), permissions, createdAt: now, updatedAt: now };
      await store.insert(identity);
      return publicIdentity(identity);
    },

    /**
     * The identities the caller could have made. Listing needs manage-identities on some
     * project: an identity without it is refused (403), not shown a list, just as every other
     * identity route refuses it.
     */
    async listIdentities(principal: Principal): Promise<PublicIdentity[]> {
      if (!canSomewhere(principal.permissions, 'manage-identities')) throw permissionDeniedEverywhere('manage-identities');
      const all = await store.list();
      return all.filter((identity) => canGrant(principal.permissions, identity.permissions)).map(publicIdentity);
    },

    async getIdentity(principal: Principal, identityId: string): Promise<PublicIdentity> {
      return publicIdentity(await manageable(principal, identityId));
    },

    async deleteIdentity(principal: Principal, identityId: string): Promise<PublicIdentity> {
      const identity = await manageable(principal, identityId);
      if (identity.id === principal.identityId) throw badRequest('An identity cannot delete itself');
      await store.remove(identity.id);
      forgetIdentity(identity.id);
      return publicIdentity(identity);
    },

    async createClientSecret(principal: Principal | 'bootstrap', identityId: string, description = ''): Promise<{ clientSecret: string; clientSecretData: PublicClientSecret }> {
      if (principal !== 'bootstrap') await manageable(principal, identityId);
      const { clientSecret, record } = await newSecret(identityId, description);
      return { clientSecret, clientSecretData: publicSecret(record) };
    },

    async listClientSecrets(principal: Principal, identityId: string): Promise<PublicClientSecret[]> {
      await manageable(principal, identityId);
      return (await store.secrets(identityId)).map(publicSecret);
    },

    async deleteClientSecret(principal: Principal, identityId: string, secretId: string): Promise<PublicClientSecret> {
      await manageable(principal, identityId);
      const secret = (await store.secrets(identityId)).find((s) => s.id === secretId);
      if (!secret || !(await store.removeSecret(identityId, secretId))) throw notFound(`Client secret with ID '${secretId}' not found`);
      return publicSecret(secret);
    },

    async purgeExpiredTokens(): Promise<void> {
      const now = Date.now();
      await store.removeExpiredTokens(now);
      for (const [hash, entry] of tokenCache) if (entry.expiresAt <= now) tokenCache.delete(hash);
    },
  };
}

export type IdentityService = ReturnType<typeof createIdentityService>;
