/**
 * New certificates on SQLite are inserted by the audit writer thread on its own connection
 * (store/row-writer.ts), not on the event loop's. A real writer thread on a real SQLite file:
 * what it commits is there for the main connection the moment the promise resolves; a refused
 * row fails alone, with the store's code, while rows beside it commit; and once the writer is
 * gone for good the pki store inserts on its own connection instead.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { createAuditService, type AuditService } from '../../src/services/audit-service.js';
import { createAuditStore } from '../../src/store/audit-store.js';
import { openStore, type Store } from '../../src/store/database.js';
import { createPkiStore, type CertificateRecord } from '../../src/store/pki-store.js';
import { RowWriterUnavailable } from '../../src/store/row-writer.js';

const CA_ID = randomUUID();

function certificate(overrides: Partial<CertificateRecord> = {}): CertificateRecord {
  const now = new Date().toISOString();
  return {
    id: randomUUID(),
    projectId: 'default',
    caId: CA_ID,
    profileId: null,
    serialNumber: randomBytes(20).toString('hex'),
    subjectDn: 'CN=row-writer.test',
    sans: [{ type: 'dns_name', value: 'row-writer.test' }],
    notBefore: now,
    notAfter: now,
    der: randomBytes(300),
    fingerprintSha256: randomBytes(32).toString('hex'),
    status: 'active',
    revocationReason: null,
    revokedAt: null,
    createdAt: now,
    ...overrides,
  };
}

describe('certificates inserted by the writer thread (SQLite)', () => {
  let dir: string;
  let store: Store;
  let audit: AuditService;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hsm-signer-row-writer-'));
    store = await openStore({ engine: 'sqlite', path: join(dir, 'store.db') });
    const now = new Date().toISOString();
    store.sqlite!.prepare(
      `insert into cas (id, project_id, type, status, state, subject, subject_dn, key_algorithm, object_id, public_key, created_at, updated_at)
       values (?, 'default', 'root', 'active', 'active', ?, 'CN=test', 'EC_prime256v1', ?, ?, ?, ?)`,
    ).run(CA_ID, Buffer.from('30003000', 'hex'), randomBytes(16), randomBytes(91), now, now);
    audit = writerOf(store);
  });

  afterAll(async () => {
    await audit?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('stores each certificate before its promise resolves, where the main connection reads it', async () => {
    let handedOver = 0;
    const pki = createPkiStore(store, {
      rowWriter: (...row) => {
        handedOver++;
        return audit.rowWriter!(...row);
      },
    });
    const records = Array.from({ length: 20 }, () => certificate());
    await Promise.all(records.map((record) => pki.insertCertificate(record)));
    expect(handedOver).toBe(20);
    for (const record of records) expect(await pki.getCertificate(record.id)).toEqual(record);
  });

  it('after a batch the store refused (its write lock held past the busy timeout), the next rows are stored', async () => {
    const impatient = writerOf(store, 100);
    try {
      await impatient.rowWriter!('certificates', ...rowOf(certificate()));
      // Another connection holds the write lock: the writer's next batch fails, and it reconnects.
      const holder = new Database(join(dir, 'store.db'));
      holder.exec('begin immediate');
      const refused = impatient.rowWriter!('certificates', ...rowOf(certificate()));
      await expect(refused).rejects.toMatchObject({ code: 'SQLITE_BUSY' });
      holder.exec('rollback');
      holder.close();
      const record = certificate();
      await impatient.rowWriter!('certificates', ...rowOf(record));
      expect((await createPkiStore(store).getCertificate(record.id))?.serialNumber).toBe(record.serialNumber);
    } finally {
      await impatient.close();
    }
  });

  it('refuses a duplicate alone, with the store code, while the rows sent beside it commit', async () => {
    const first = certificate();
    await audit.rowWriter!('certificates', ...rowOf(first));
    const beside = [certificate(), certificate()];
    const outcomes = await Promise.allSettled([
      audit.rowWriter!('certificates', ...rowOf(beside[0]!)),
      audit.rowWriter!('certificates', ...rowOf({ ...first, serialNumber: randomBytes(20).toString('hex') })),
      audit.rowWriter!('certificates', ...rowOf(beside[1]!)),
    ]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(((outcomes[1] as PromiseRejectedResult).reason as { code?: string }).code).toBe('SQLITE_CONSTRAINT_PRIMARYKEY');
    const pki = createPkiStore(store);
    for (const record of beside) expect((await pki.getCertificate(record.id))?.serialNumber).toBe(record.serialNumber);
  });

  it('once the writer is closed, says so, and the pki store inserts on its own connection', async () => {
    const closing = writerOf(store);
    await closing.close();
    await expect(closing.rowWriter!('certificates', ...rowOf(certificate()))).rejects.toBeInstanceOf(RowWriterUnavailable);
    const pki = createPkiStore(store, { rowWriter: closing.rowWriter });
    const record = certificate();
    await pki.insertCertificate(record);
    expect(await pki.getCertificate(record.id)).toEqual(record);
  });
});

/** An audit service on `store` whose writer thread is all this file uses (no token, no signing). */
function writerOf(store: Store, busyTimeoutMs?: number): AuditService {
  const unused = () => Promise.reject(new Error('no token in this test'));
  return createAuditService({
    auditStore: createAuditStore(store),
    location: store.location,
    token: { generateKey: unused, signDigest: unused },
    logger: createLogger('silent'),
    signIntervalMs: 60_000,
    ...(busyTimeoutMs !== undefined ? { busyTimeoutMs } : {}),
  });
}

/** A record as the columns and values the pki store hands a row writer. */
function rowOf(record: CertificateRecord): [string[], unknown[]] {
  const columns = ['id', 'project_id', 'ca_id', 'profile_id', 'serial_number', 'subject_dn', 'sans', 'not_before', 'not_after', 'der', 'fingerprint_sha256', 'status', 'revocation_reason', 'revoked_at', 'created_at'];
  const values = [record.id, record.projectId, record.caId, record.profileId, record.serialNumber, record.subjectDn, JSON.stringify(record.sans), record.notBefore, record.notAfter, record.der, record.fingerprintSha256, record.status, record.revocationReason, record.revokedAt, record.createdAt];
  return [columns, values];
}
