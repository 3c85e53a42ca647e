/**
 * ACME state (RFC 8555): replay nonces, accounts, orders, their authorizations and challenges.
 * All of it lives in the store, so every replica (and every worker process) serves any step of
 * a flow that another began. What must hold across them, and how:
 *
 * - A nonce is used once: using it is one DELETE ... RETURNING of its row; of two requests with
 *   the same nonce, on any replicas, exactly one gets the row back.
 * - An order becomes `ready` in the same transaction as its last authorization becomes `valid`:
 *   that transaction first updates the order's row (on PostgreSQL, a row lock two validations of
 *   the same order queue on; on SQLite the write lock of BEGIN IMMEDIATE), then changes the
 *   challenge and authorization, then counts what is not valid yet. The second of two
 *   concurrent validations therefore sees the first one's authorization committed.
 * - A failed challenge invalidates its authorization and its order in one transaction.
 * - Finalize claims the order with one UPDATE from `ready` to `processing`: of two concurrent
 *   finalize calls only one claims it, so one certificate is issued.
 */
import type { Kysely, Selectable } from 'kysely';
import type { Store } from './database.js';
import type { Schema } from './schema.js';

export type AcmeOrderStatus = 'pending' | 'ready' | 'processing' | 'valid' | 'invalid';
export type AcmeAuthorizationStatus = 'pending' | 'valid' | 'invalid' | 'deactivated';
export type AcmeChallengeStatus = 'pending' | 'processing' | 'valid' | 'invalid';

export interface AcmeIdentifier {
  type: string;
  value: string;
}

/** An RFC 7807 problem document as ACME objects carry it (order.error, challenge.error). */
export interface AcmeProblemDocument {
  type: string;
  detail: string;
  status?: number;
}

export interface AcmeAccountRecord {
  id: string;
  profileId: string;
  /** The account's public key as a JWK holding only its required members. */
  jwk: Record<string, string>;
  thumbprint: string;
  status: 'valid' | 'deactivated';
  contact: string[];
  eabKid: string | null;
  createdAt: string;
}

export interface AcmeOrderRecord {
  id: string;
  accountId: string;
  profileId: string;
  status: AcmeOrderStatus;
  identifiers: AcmeIdentifier[];
  expiresAt: string;
  error: AcmeProblemDocument | null;
  certificateId: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface AcmeAuthorizationRecord {
  id: string;
  orderId: string;
  accountId: string;
  identifierType: string;
  identifierValue: string;
  status: AcmeAuthorizationStatus;
  expiresAt: string;
}

export interface AcmeChallengeRecord {
  id: string;
  authorizationId: string;
  type: string;
  token: string;
  status: AcmeChallengeStatus;
  validatedAt: string | null;
  error: AcmeProblemDocument | null;
  updatedAt: string;
}

/** How a validation ended, to be written with everything it decides. */
export interface ChallengeOutcome {
  challengeId: string;
  authorizationId: string;
  orderId: string;
  error?: AcmeProblemDocument;
  now: string;
}

export interface AcmeStore {
  addNonce(nonce: string, expiresAt: number): Promise<void>;
  /** Removes the nonce if it is stored and unexpired; true when this call removed it. */
  useNonce(nonce: string, now: number): Promise<boolean>;
  purgeExpiredNonces(now: number): Promise<number>;

  /** Throws a unique violation (isUniqueViolation) when the key already has an account on this profile. */
  insertAccount(account: AcmeAccountRecord): Promise<void>;
  getAccount(id: string): Promise<AcmeAccountRecord | undefined>;
  accountByThumbprint(profileId: string, thumbprint: string): Promise<AcmeAccountRecord | undefined>;
  /** Changes a valid account; false when it is not (any longer) valid. A key already in use is a unique violation. */
  updateAccount(id: string, changes: Partial<Pick<AcmeAccountRecord, 'status' | 'contact' | 'jwk' | 'thumbprint'>>): Promise<boolean>;

  /** The order, its authorizations and their challenges, in one transaction. */
  insertOrder(order: AcmeOrderRecord, authorizations: AcmeAuthorizationRecord[], challenges: AcmeChallengeRecord[]): Promise<void>;
  getOrder(id: string): Promise<AcmeOrderRecord | undefined>;
  orderIdsOfAccount(accountId: string, limit: number): Promise<string[]>;
  orderOfCertificate(certificateId: string): Promise<AcmeOrderRecord | undefined>;
  authorizationsOfOrder(orderId: string): Promise<AcmeAuthorizationRecord[]>;
  getAuthorization(id: string): Promise<AcmeAuthorizationRecord | undefined>;
  challengesOf(authorizationIds: string[]): Promise<AcmeChallengeRecord[]>;
  getChallenge(id: string): Promise<AcmeChallengeRecord | undefined>;

  /**
   * Claims a challenge for validation: `pending` → `processing`, or a `processing` one last
   * touched before `staleBefore` (its validator died with its process). True when claimed.
   */
  startChallenge(id: string, now: string, staleBefore: string): Promise<boolean>;
  /** Writes a validation's result: the challenge, its authorization, and the order as they follow from it. */
  finishChallenge(outcome: ChallengeOutcome): Promise<void>;
  /** A client gave an authorization up: it and its order (when still pending or ready) become deactivated / invalid. */
  deactivateAuthorization(id: string, now: string): Promise<boolean>;

  /** `ready` → `processing`; true for the one caller that claimed it. */
  claimFinalize(orderId: string, now: string): Promise<boolean>;
  /** `processing` → `ready` again after a refused CSR or a failed issuance. */
  releaseFinalize(orderId: string, now: string): Promise<void>;
  /** `processing` → `valid`, naming the certificate. */
  completeOrder(orderId: string, certificateId: string, now: string): Promise<void>;
}

const json = (value: unknown) => JSON.stringify(value);
const parsed = <T>(text: string | null): T | null => (text === null ? null : (JSON.parse(text) as T));

type Row<T extends keyof Schema> = Selectable<Schema[T]>;

function account(row: Row<'acme_accounts'> | undefined): AcmeAccountRecord | undefined {
  if (!row) return undefined;
  return {
    id: row.id,
    profileId: row.profile_id,
    jwk: JSON.parse(row.jwk) as Record<string, string>,
    thumbprint: row.thumbprint,
    status: row.status as AcmeAccountRecord['status'],
    contact: JSON.parse(row.contact) as string[],
    eabKid: row.eab_kid,
    createdAt: row.created_at,
  };
}

function order(row: Row<'acme_orders'> | undefined): AcmeOrderRecord | undefined {
  if (!row) return undefined;
  return {
    id: row.id,
    accountId: row.account_id,
    profileId: row.profile_id,
    status: row.status as AcmeOrderStatus,
    identifiers: JSON.parse(row.identifiers) as AcmeIdentifier[],
    expiresAt: row.expires_at,
    error: parsed<AcmeProblemDocument>(row.error),
    certificateId: row.certificate_id,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function authorization(row: Row<'acme_authorizations'> | undefined): AcmeAuthorizationRecord | undefined {
  if (!row) return undefined;
  return {
    id: row.id,
    orderId: row.order_id,
    accountId: row.account_id,
    identifierType: row.identifier_type,
    identifierValue: row.identifier_value,
    status: row.status as AcmeAuthorizationStatus,
    expiresAt: row.expires_at,
  };
}

function challenge(row: Row<'acme_challenges'> | undefined): AcmeChallengeRecord | undefined {
  if (!row) return undefined;
  return {
    id: row.id,
    authorizationId: row.authorization_id,
    type: row.type,
    token: row.token,
    status: row.status as AcmeChallengeStatus,
    validatedAt: row.validated_at,
    error: parsed<AcmeProblemDocument>(row.error),
    updatedAt: row.updated_at,
  };
}

/** Takes the order's row lock (PostgreSQL) before anything the decision rests on is read. */
async function lockOrder(trx: Kysely<Schema>, orderId: string, now: string): Promise<void> {
  await trx.updateTable('acme_orders').set({ updated_at: now }).where('id', '=', orderId).execute();
}

export function createAcmeStore(store: Store): AcmeStore {
  const { db } = store;
  return {
    async addNonce(nonce, expiresAt) {
      await db.insertInto('acme_nonces').values({ nonce, expires_at: expiresAt }).execute();
    },
    async useNonce(nonce, now) {
      const row = await db.deleteFrom('acme_nonces').where('nonce', '=', nonce).where('expires_at', '>', now).returning('nonce').executeTakeFirst();
      return row !== undefined;
    },
    async purgeExpiredNonces(now) {
      const result = await db.deleteFrom('acme_nonces').where('expires_at', '<=', now).executeTakeFirst();
      return Number(result.numDeletedRows);
    },

    async insertAccount(record) {
      await db
        .insertInto('acme_accounts')
        .values({
          id: record.id,
          profile_id: record.profileId,
          jwk: json(record.jwk),
          thumbprint: record.thumbprint,
          status: record.status,
          contact: json(record.contact),
          eab_kid: record.eabKid,
          created_at: record.createdAt,
        })
        .execute();
    },
    async getAccount(id) {
      return account(await db.selectFrom('acme_accounts').selectAll().where('id', '=', id).executeTakeFirst());
    },
    async accountByThumbprint(profileId, thumbprint) {
      return account(await db.selectFrom('acme_accounts').selectAll().where('profile_id', '=', profileId).where('thumbprint', '=', thumbprint).executeTakeFirst());
    },
    async updateAccount(id, changes) {
      const set: Partial<Record<'status' | 'contact' | 'jwk' | 'thumbprint', string>> = {};
      if (changes.status !== undefined) set.status = changes.status;
      if (changes.contact !== undefined) set.contact = json(changes.contact);
      if (changes.jwk !== undefined) set.jwk = json(changes.jwk);
      if (changes.thumbprint !== undefined) set.thumbprint = changes.thumbprint;
      const result = await db.updateTable('acme_accounts').set(set).where('id', '=', id).where('status', '=', 'valid').executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },

    async insertOrder(record, authorizations, challenges) {
      await store.write(async (trx) => {
        await trx
          .insertInto('acme_orders')
          .values({
            id: record.id,
            account_id: record.accountId,
            profile_id: record.profileId,
            status: record.status,
            identifiers: json(record.identifiers),
            expires_at: record.expiresAt,
            error: record.error === null ? null : json(record.error),
            certificate_id: record.certificateId,
            created_at: record.createdAt,
            updated_at: record.updatedAt,
          })
          .execute();
        if (authorizations.length > 0) {
          await trx
            .insertInto('acme_authorizations')
            .values(
              authorizations.map((a) => ({
                id: a.id,
                order_id: a.orderId,
                account_id: a.accountId,
                identifier_type: a.identifierType,
                identifier_value: a.identifierValue,
                status: a.status,
                expires_at: a.expiresAt,
              })),
            )
            .execute();
        }
        if (challenges.length > 0) {
          await trx
            .insertInto('acme_challenges')
            .values(
              challenges.map((c) => ({
                id: c.id,
                authorization_id: c.authorizationId,
                type: c.type,
                token: c.token,
                status: c.status,
                validated_at: c.validatedAt,
                error: c.error === null ? null : json(c.error),
                updated_at: c.updatedAt,
              })),
            )
            .execute();
        }
      });
    },
    async getOrder(id) {
      return order(await db.selectFrom('acme_orders').selectAll().where('id', '=', id).executeTakeFirst());
    },
    async orderIdsOfAccount(accountId, limit) {
      const rows = await db.selectFrom('acme_orders').select('id').where('account_id', '=', accountId).orderBy('created_at', 'desc').orderBy('id').limit(limit).execute();
      return rows.map((row) => row.id);
    },
    async orderOfCertificate(certificateId) {
      return order(await db.selectFrom('acme_orders').selectAll().where('certificate_id', '=', certificateId).executeTakeFirst());
    },
    async authorizationsOfOrder(orderId) {
      const rows = await db.selectFrom('acme_authorizations').selectAll().where('order_id', '=', orderId).orderBy('identifier_value').orderBy('id').execute();
      return rows.map((row) => authorization(row)!);
    },
    async getAuthorization(id) {
      return authorization(await db.selectFrom('acme_authorizations').selectAll().where('id', '=', id).executeTakeFirst());
    },
    async challengesOf(authorizationIds) {
      if (authorizationIds.length === 0) return [];
      const rows = await db.selectFrom('acme_challenges').selectAll().where('authorization_id', 'in', authorizationIds).orderBy('type').orderBy('id').execute();
      return rows.map((row) => challenge(row)!);
    },
    async getChallenge(id) {
      return challenge(await db.selectFrom('acme_challenges').selectAll().where('id', '=', id).executeTakeFirst());
    },

    async startChallenge(id, now, staleBefore) {
      const result = await db
        .updateTable('acme_challenges')
        .set({ status: 'processing', updated_at: now })
        .where('id', '=', id)
        .where((eb) => eb.or([eb('status', '=', 'pending'), eb.and([eb('status', '=', 'processing'), eb('updated_at', '<', staleBefore)])]))
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },
    async finishChallenge({ challengeId, authorizationId, orderId, error, now }) {
      await store.write(async (trx) => {
        await lockOrder(trx, orderId, now);
        const done = await trx
          .updateTable('acme_challenges')
          .set(error ? { status: 'invalid', error: json(error), updated_at: now } : { status: 'valid', validated_at: now, error: null, updated_at: now })
          .where('id', '=', challengeId)
          .where('status', '=', 'processing')
          .executeTakeFirst();
        // Another validator finished it first (this one was taken for dead): its result stands.
        if (done.numUpdatedRows === 0n) return;
        const authz = await trx
          .updateTable('acme_authorizations')
          .set({ status: error ? 'invalid' : 'valid' })
          .where('id', '=', authorizationId)
          .where('status', '=', 'pending')
          .executeTakeFirst();
        if (authz.numUpdatedRows === 0n) return;
        if (error) {
          await trx.updateTable('acme_orders').set({ status: 'invalid', error: json(error), updated_at: now }).where('id', '=', orderId).where('status', '=', 'pending').execute();
          return;
        }
        const { count } = await trx
          .selectFrom('acme_authorizations')
          .select((eb) => eb.fn.countAll<number>().as('count'))
          .where('order_id', '=', orderId)
          .where('status', '!=', 'valid')
          .executeTakeFirstOrThrow();
        if (Number(count) === 0) await trx.updateTable('acme_orders').set({ status: 'ready', updated_at: now }).where('id', '=', orderId).where('status', '=', 'pending').execute();
      });
    },
    async deactivateAuthorization(id, now) {
      return store.write(async (trx) => {
        const authz = await trx.selectFrom('acme_authorizations').select(['order_id', 'status']).where('id', '=', id).executeTakeFirst();
        if (!authz) return false;
        await lockOrder(trx, authz.order_id, now);
        const result = await trx.updateTable('acme_authorizations').set({ status: 'deactivated' }).where('id', '=', id).where('status', 'in', ['pending', 'valid']).executeTakeFirst();
        if (result.numUpdatedRows === 0n) return false;
        await trx
          .updateTable('acme_orders')
          .set({ status: 'invalid', error: json({ type: 'urn:ietf:params:acme:error:unauthorized', detail: 'An authorization of this order was deactivated' }), updated_at: now })
          .where('id', '=', authz.order_id)
          .where('status', 'in', ['pending', 'ready'])
          .execute();
        return true;
      });
    },

    async claimFinalize(orderId, now) {
      const result = await db.updateTable('acme_orders').set({ status: 'processing', updated_at: now }).where('id', '=', orderId).where('status', '=', 'ready').executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },
    async releaseFinalize(orderId, now) {
      await db.updateTable('acme_orders').set({ status: 'ready', updated_at: now }).where('id', '=', orderId).where('status', '=', 'processing').execute();
    },
    async completeOrder(orderId, certificateId, now) {
      await db.updateTable('acme_orders').set({ status: 'valid', certificate_id: certificateId, updated_at: now }).where('id', '=', orderId).where('status', '=', 'processing').execute();
    },
  };
}
