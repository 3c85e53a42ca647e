/**
 * The ACME store on both engines (a fresh SQLite file, a fresh PostgreSQL database), and what
 * several replicas rely on it for: a nonce is used once however many callers race for it; an
 * order turns ready exactly when its last authorization turns valid, also when two validations
 * of one order finish at once on separate connections; a failed challenge invalidates its
 * authorization and order; of concurrent finalize claims exactly one wins.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAcmeStore, type AcmeAccountRecord, type AcmeAuthorizationRecord, type AcmeChallengeRecord, type AcmeOrderRecord } from '../../../src/store/acme-store.js';
import { isUniqueViolation, openStore, type Store, type StoreLocation } from '../../../src/store/database.js';
import { createTestDatabase } from '../../helpers/postgres.js';

type Engine = StoreLocation['engine'];

let dir: string;
const opened: Store[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-acme-store-'));
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((store) => store.close()));
  rmSync(dir, { recursive: true, force: true });
});

async function open(location: StoreLocation): Promise<Store> {
  const store = await openStore(location);
  opened.push(store);
  return store;
}

const NOW = '2030-01-01T00:00:00.000Z';
const LATER = '2030-01-08T00:00:00.000Z';

function account(overrides: Partial<AcmeAccountRecord> = {}): AcmeAccountRecord {
  return { id: randomUUID(), profileId: 'profile-1', jwk: { crv: 'P-256', kty: 'EC', x: 'x', y: 'y' }, thumbprint: randomUUID(), status: 'valid', contact: ['mailto:a@example.com'], eabKid: null, createdAt: NOW, ...overrides };
}

/** An order for `names` with one authorization and one http-01 challenge each. */
function order(accountId: string, names: string[]) {
  const record: AcmeOrderRecord = {
    id: randomUUID(),
    accountId,
    profileId: 'profile-1',
    status: 'pending',
    identifiers: names.map((value) => ({ type: 'dns', value })),
    expiresAt: LATER,
    error: null,
    certificateId: null,
    createdAt: NOW,
    updatedAt: NOW,
  };
  const authorizations: AcmeAuthorizationRecord[] = names.map((value) => ({ id: randomUUID(), orderId: record.id, accountId, identifierType: 'dns', identifierValue: value, status: 'pending', expiresAt: LATER }));
  const challenges: AcmeChallengeRecord[] = authorizations.map((authz) => ({ id: randomUUID(), authorizationId: authz.id, type: 'http-01', token: randomUUID(), status: 'pending', validatedAt: null, error: null, updatedAt: NOW }));
  return { record, authorizations, challenges };
}

describe.each<Engine>(['sqlite', 'postgres'])('the ACME store on %s', (engine) => {
  let store: Store;
  /** A second connection (PostgreSQL: another pool) for races; on SQLite the one connection of the thread (see store.test.ts). */
  let second: Store;

  beforeEach(async () => {
    const location: StoreLocation = engine === 'sqlite' ? { engine, path: join(dir, 'acme.db') } : { engine, url: await createTestDatabase() };
    store = await open(location);
    second = engine === 'sqlite' ? store : await open(location);
  });

  it('a nonce is used once, also when many callers on two connections race for it; expired ones are refused and purged', async () => {
    const [a, b] = [createAcmeStore(store), createAcmeStore(second)];
    await a.addNonce('n1', Date.now() + 60_000);
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).useNonce('n1', Date.now())));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await a.useNonce('never', Date.now())).toBe(false);
    await a.addNonce('old', Date.now() - 1);
    await a.addNonce('fresh', Date.now() + 60_000);
    expect(await b.useNonce('old', Date.now())).toBe(false);
    expect(await a.purgeExpiredNonces(Date.now())).toBe(1);
    expect(await a.useNonce('fresh', Date.now())).toBe(true);
  });

  it('accounts: one per key and profile (a unique violation), the same key on another profile; a deactivated account cannot change', async () => {
    const acme = createAcmeStore(store);
    const first = account();
    await acme.insertAccount(first);
    expect(await acme.getAccount(first.id)).toEqual(first);
    expect(await acme.accountByThumbprint('profile-1', first.thumbprint)).toEqual(first);
    const twin = acme.insertAccount(account({ thumbprint: first.thumbprint }));
    await expect(twin).rejects.toSatisfy(isUniqueViolation);
    await acme.insertAccount(account({ thumbprint: first.thumbprint, profileId: 'profile-2' }));
    expect(await acme.updateAccount(first.id, { contact: ['mailto:b@example.com'] })).toBe(true);
    expect(await acme.updateAccount(first.id, { status: 'deactivated' })).toBe(true);
    expect(await acme.updateAccount(first.id, { contact: [] })).toBe(false);
    expect(await acme.getAccount(first.id)).toMatchObject({ status: 'deactivated', contact: ['mailto:b@example.com'] });
  });

  it('two validations of one order finishing at once on two connections: the order is ready, in the transaction of the last one', async () => {
    const [a, b] = [createAcmeStore(store), createAcmeStore(second)];
    const owner = account();
    await a.insertAccount(owner);
    const { record, authorizations, challenges } = order(owner.id, ['a.test', 'b.test']);
    await a.insertOrder(record, authorizations, challenges);
    expect((await a.authorizationsOfOrder(record.id)).map((authz) => authz.identifierValue)).toEqual(['a.test', 'b.test']);
    expect(await a.challengesOf(authorizations.map((authz) => authz.id))).toHaveLength(2);
    for (const challenge of challenges) expect(await a.startChallenge(challenge.id, NOW, NOW)).toBe(true);
    // Claimed once: a second POST does not start a second validation, unless the first is stale.
    expect(await b.startChallenge(challenges[0]!.id, NOW, NOW)).toBe(false);
    expect(await b.startChallenge(challenges[0]!.id, LATER, LATER)).toBe(true);
    await Promise.all(challenges.map((challenge, i) => (i ? a : b).finishChallenge({ challengeId: challenge.id, authorizationId: challenge.authorizationId, orderId: record.id, now: LATER })));
    expect((await a.getOrder(record.id))!.status).toBe('ready');
    expect((await a.authorizationsOfOrder(record.id)).map((authz) => authz.status)).toEqual(['valid', 'valid']);
    expect((await a.getChallenge(challenges[0]!.id))!).toMatchObject({ status: 'valid', validatedAt: LATER });

    // Of concurrent finalize claims exactly one wins; released, it can be claimed again; completed, it is valid.
    const claims = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).claimFinalize(record.id, LATER)));
    expect(claims.filter(Boolean)).toHaveLength(1);
    await a.releaseFinalize(record.id, LATER);
    expect((await a.getOrder(record.id))!.status).toBe('ready');
    expect(await a.claimFinalize(record.id, LATER)).toBe(true);
    await a.completeOrder(record.id, 'certificate-1', LATER);
    expect(await a.getOrder(record.id)).toMatchObject({ status: 'valid', certificateId: 'certificate-1' });
    expect((await a.orderOfCertificate('certificate-1'))!.id).toBe(record.id);
    expect(await a.orderIdsOfAccount(owner.id, 10)).toEqual([record.id]);
  });

  it('one valid authorization of two leaves the order pending; a failed challenge invalidates its authorization and the order, with the error', async () => {
    const acme = createAcmeStore(store);
    const owner = account();
    await acme.insertAccount(owner);
    const { record, authorizations, challenges } = order(owner.id, ['a.test', 'b.test']);
    await acme.insertOrder(record, authorizations, challenges);
    const [first, second] = challenges as [AcmeChallengeRecord, AcmeChallengeRecord];
    await acme.startChallenge(first.id, NOW, NOW);
    await acme.finishChallenge({ challengeId: first.id, authorizationId: first.authorizationId, orderId: record.id, now: NOW });
    expect((await acme.getOrder(record.id))!.status).toBe('pending');
    // A result for a challenge nobody claimed is not written.
    await acme.finishChallenge({ challengeId: second.id, authorizationId: second.authorizationId, orderId: record.id, now: NOW });
    expect((await acme.getChallenge(second.id))!.status).toBe('pending');
    const error = { type: 'urn:ietf:params:acme:error:connection', detail: 'refused', status: 400 };
    await acme.startChallenge(second.id, NOW, NOW);
    await acme.finishChallenge({ challengeId: second.id, authorizationId: second.authorizationId, orderId: record.id, error, now: NOW });
    expect(await acme.getChallenge(second.id)).toMatchObject({ status: 'invalid', error });
    expect((await acme.getAuthorization(second.authorizationId))!.status).toBe('invalid');
    expect(await acme.getOrder(record.id)).toMatchObject({ status: 'invalid', error });
    expect(await acme.claimFinalize(record.id, NOW)).toBe(false);
  });

  it('deactivating an authorization invalidates its order', async () => {
    const acme = createAcmeStore(store);
    const owner = account();
    await acme.insertAccount(owner);
    const { record, authorizations, challenges } = order(owner.id, ['a.test']);
    await acme.insertOrder(record, authorizations, challenges);
    expect(await acme.deactivateAuthorization(authorizations[0]!.id, NOW)).toBe(true);
    expect(await acme.deactivateAuthorization(authorizations[0]!.id, NOW)).toBe(false);
    expect((await acme.getAuthorization(authorizations[0]!.id))!.status).toBe('deactivated');
    expect((await acme.getOrder(record.id))!.status).toBe('invalid');
  });
});
