/**
 * The audit trail end to end, on a real SoftHSM2 token over real HTTP: logins (failed or not)
 * and key operations leave events with the right identity, action, resource, outcome, request
 * id and client address; an admin pages through them and nobody else can; the audit key in the
 * token is sensitive and never extractable; after shutdown the verifier command finds the chain
 * intact up to the checkpoint signed at close, whose signature OpenSSL accepts, and it names
 * the first event edited, removed, reordered or cut off in copies of the database.
 */
import { spawnSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, randomUUID, verify } from 'node:crypto';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventHash } from '../../src/services/audit-chain.js';
import { toEvent, toEventRow, type AuditEventRecord } from '../../src/store/audit-store.js';
import type { AuditEventsTable } from '../../src/store/schema.js';
import { openssl } from '../helpers/cli.js';
import { expectSpecEnvelope } from '../helpers/envelope.js';
import { createIdentity, login, request, type ApiResponse } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { tokenObjects } from '../helpers/token-objects.js';

const AUDIT = '/api/v1/audit-logs';
const LOGIN = '/api/v1/auth/universal-auth/login';
const KEYS = '/api/v1/kms/keys';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const VERIFY = join(ROOT, 'scripts', 'verify-audit.ts');
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const HEX64 = /^[0-9a-f]{64}$/;
const LOOPBACK = /^(::ffff:)?127\.0\.0\.1$|^::1$/;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (value: string) => Buffer.from(value).toString('base64');

function expectStatus(res: ApiResponse, status: number, error?: string): any {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 400)}`).toBe(status);
  if (status >= 400) expectSpecEnvelope(res);
  if (error) expect(res.body.error).toBe(error);
  return res.body;
}

/** `npx tsx scripts/verify-audit.ts ...`, without npx's own start-up. */
function verifier(...args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [TSX, VERIFY, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'silent' } });
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
}

describe('audit trail', () => {
  let svc: TestService;
  let admin: string;
  let adminId: string;
  let app: { identityId: string; clientId: string; clientSecret: string };
  let appToken: string;
  let keyId: string;
  let dbPath: string;

  /** The events with this request id, once the response's 'close' has recorded them. */
  async function eventsOf(reqId: string): Promise<any[]> {
    for (let attempt = 0; ; attempt++) {
      const page = expectStatus(await request(svc.url, 'GET', `${AUDIT}?limit=100`, { token: admin }), 200);
      const found = page.auditLogs.filter((e: any) => e.reqId === reqId);
      if (found.length > 0 || attempt === 20) return found;
      await sleep(25);
    }
  }

  beforeAll(async () => {
    svc = await startTestService();
    dbPath = join(svc.dataDir, 'hsm-signer.db');
    admin = await login(svc.url, svc.admin);
    const identities = expectStatus(await request(svc.url, 'GET', '/api/v1/identities', { token: admin }), 200).identities;
    adminId = identities.find((i: any) => i.clientId === svc.admin.clientId).id;
    app = await createIdentity(svc.url, admin, 'audit-app', [{ projectId: 'other', actions: ['*'] }]);
    appToken = await login(svc.url, app);
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('records every login, failed or not, with the identity its clientId names', async () => {
    const failed = await request(svc.url, 'POST', LOGIN, { body: { clientId: app.clientId, clientSecret: 'wrong-secret' }, headers: { 'x-request-id': 'audit-login-failed' } });
    expectStatus(failed, 401);
    const unknown = await request(svc.url, 'POST', LOGIN, { body: { clientId: randomUUID(), clientSecret: 'whatever' }, headers: { 'x-request-id': 'audit-login-unknown' } });
    expectStatus(unknown, 401);
    const ok = await request(svc.url, 'POST', LOGIN, { body: { clientId: app.clientId, clientSecret: app.clientSecret }, headers: { 'x-request-id': 'audit-login-ok' } });
    expectStatus(ok, 200);

    const [failedEvent] = await eventsOf('audit-login-failed');
    expect(failedEvent).toMatchObject({ action: 'auth.login', identityId: app.identityId, outcome: 'denied', statusCode: 401, resourceType: 'identity' });
    expect(failedEvent.clientAddress).toMatch(LOOPBACK);
    const [unknownEvent] = await eventsOf('audit-login-unknown');
    expect(unknownEvent).toMatchObject({ action: 'auth.login', identityId: null, outcome: 'denied', statusCode: 401 });
    const [okEvent] = await eventsOf('audit-login-ok');
    expect(okEvent).toMatchObject({ action: 'auth.login', identityId: app.identityId, outcome: 'success', statusCode: 200 });
    expect(Object.keys(okEvent).sort()).toEqual(['action', 'clientAddress', 'hash', 'id', 'identityId', 'outcome', 'prevHash', 'reqId', 'resourceId', 'resourceType', 'seq', 'statusCode', 'time']);
    expect(okEvent.time).toMatch(ISO_MS);
    expect(okEvent.hash).toMatch(HEX64);
    expect(okEvent.seq).toBeGreaterThan(unknownEvent.seq);
    expect(unknownEvent.seq).toBeGreaterThan(failedEvent.seq);
  });

  it('records key operations with who, what, on which key and how it ended', async () => {
    const created = await request(svc.url, 'POST', KEYS, { token: admin, body: { projectId: 'default', name: 'audited' }, headers: { 'x-request-id': 'audit-key-create' } });
    keyId = expectStatus(created, 200).key.id;
    const encrypted = await request(svc.url, 'POST', `${KEYS}/${keyId}/encrypt`, { token: admin, body: { plaintext: b64('secret') }, headers: { 'x-request-id': 'audit-key-encrypt' } });
    expectStatus(encrypted, 200);
    const refused = await request(svc.url, 'POST', `${KEYS}/${keyId}/encrypt`, { token: appToken, body: { plaintext: b64('x') }, headers: { 'x-request-id': 'audit-key-refused' } });
    expectStatus(refused, 403, 'PermissionDenied');

    expect(await eventsOf('audit-key-create')).toMatchObject([{ action: 'kms.key.create', identityId: adminId, resourceType: 'key', resourceId: keyId, outcome: 'success', statusCode: 200 }]);
    const [encryptEvent] = await eventsOf('audit-key-encrypt');
    expect(encryptEvent).toMatchObject({ action: 'kms.key.encrypt', identityId: adminId, resourceType: 'key', resourceId: keyId, outcome: 'success', statusCode: 200 });
    expect(encryptEvent.clientAddress).toMatch(LOOPBACK);
    expect(await eventsOf('audit-key-refused')).toMatchObject([{ action: 'kms.key.encrypt', identityId: app.identityId, resourceId: keyId, outcome: 'denied', statusCode: 403 }]);
  });

  it('lets only an admin read the trail, and records who tried', async () => {
    const denied = await request(svc.url, 'GET', AUDIT, { token: appToken, headers: { 'x-request-id': 'audit-list-denied' } });
    expectStatus(denied, 403, 'PermissionDenied');
    expect(expectStatus(await request(svc.url, 'GET', AUDIT), 401, 'UnauthorizedError')).toBeDefined();
    expect(await eventsOf('audit-list-denied')).toMatchObject([{ action: 'audit.list', identityId: app.identityId, resourceType: 'audit', outcome: 'denied', statusCode: 403 }]);
  });

  it('pages by resource, identity and time, newest first unless asked otherwise', async () => {
    const byKey = expectStatus(await request(svc.url, 'GET', `${AUDIT}?resourceId=${keyId}`, { token: admin }), 200);
    expect(byKey.totalCount).toBe(3);
    expect(byKey.auditLogs.map((e: any) => e.reqId)).toEqual(['audit-key-refused', 'audit-key-encrypt', 'audit-key-create']);
    const second = expectStatus(await request(svc.url, 'GET', `${AUDIT}?resourceType=key&resourceId=${keyId}&limit=1&offset=1`, { token: admin }), 200);
    expect(second).toMatchObject({ totalCount: 3, auditLogs: [{ reqId: 'audit-key-encrypt' }] });
    const oldestFirst = expectStatus(await request(svc.url, 'GET', `${AUDIT}?resourceId=${keyId}&orderDirection=asc`, { token: admin }), 200);
    expect(oldestFirst.auditLogs[0].reqId).toBe('audit-key-create');

    const byApp = expectStatus(await request(svc.url, 'GET', `${AUDIT}?identityId=${app.identityId}&limit=100`, { token: admin }), 200);
    expect(byApp.auditLogs.length).toBeGreaterThanOrEqual(4);
    expect(byApp.auditLogs.every((e: any) => e.identityId === app.identityId)).toBe(true);
    const failedLogins = expectStatus(await request(svc.url, 'GET', `${AUDIT}?action=auth.login&outcome=denied&identityId=${app.identityId}`, { token: admin }), 200);
    expect(failedLogins.auditLogs.map((e: any) => e.reqId)).toEqual(['audit-login-failed']);

    const [create] = await eventsOf('audit-key-create');
    const [refused] = await eventsOf('audit-key-refused');
    const window = `startTime=${encodeURIComponent(create.time)}&endTime=${encodeURIComponent(new Date(Date.parse(refused.time) + 1).toISOString())}`;
    const inWindow = expectStatus(await request(svc.url, 'GET', `${AUDIT}?${window}&limit=100&orderDirection=asc`, { token: admin }), 200);
    expect(inWindow.auditLogs[0].seq).toBeLessThanOrEqual(create.seq);
    expect(inWindow.auditLogs.map((e: any) => e.seq)).toContain(refused.seq);
    expect(inWindow.auditLogs.every((e: any) => e.time >= create.time && e.time <= refused.time)).toBe(true);
    const before = expectStatus(await request(svc.url, 'GET', `${AUDIT}?endTime=${encodeURIComponent(create.time)}&limit=100`, { token: admin }), 200);
    expect(before.auditLogs.every((e: any) => e.time < create.time)).toBe(true);

    for (const query of ['limit=0', 'limit=101', 'startTime=yesterday', 'outcome=maybe', 'resourceType=secret', 'identityId=not-a-uuid']) {
      expectStatus(await request(svc.url, 'GET', `${AUDIT}?${query}`, { token: admin }), 422, 'ValidationFailure');
    }
  });

  it('keeps the audit key in the token, sensitive and never extractable', () => {
    const db = new Database(dbPath, { readonly: true });
    const objectId = db.prepare<[], { value: string }>(`SELECT value FROM settings WHERE name = 'auditKeyObjectId'`).get()!.value;
    db.close();
    const objects = tokenObjects(svc).filter((o) => o.id === objectId);
    expect(objects.map((o) => o.class).sort()).toEqual(['private', 'public']);
    const privateKey = objects.find((o) => o.class === 'private')!;
    expect(privateKey.label.startsWith('hsm-signer:')).toBe(true);
    expect(privateKey).toMatchObject({ token: true, sensitive: true, extractable: false, private: true, neverExtractable: true, alwaysSensitive: true, valueReadable: false });
  });

  describe('after shutdown', () => {
    let lastSeq: number;
    let events: AuditEventRecord[];

    beforeAll(async () => {
      await svc.service.close(); // signs the head one last time
      const db = new Database(dbPath, { readonly: true });
      events = db.prepare<[], AuditEventsTable>('SELECT * FROM audit_events ORDER BY seq').all().map(toEvent);
      db.close();
      lastSeq = events.at(-1)!.seq;
    });

    it('the verifier finds the chain intact up to the checkpoint signed at close', () => {
      expect(lastSeq).toBeGreaterThan(10);
      const { status, output } = verifier('--db', dbPath);
      expect(output).toMatch(new RegExp(`^audit chain intact: ${lastSeq} events, \\d+ signed checkpoints, last signed at seq ${lastSeq} \\(.*Z\\)$`));
      expect(status).toBe(0);
      // The same database found through the service's configuration.
      expect(verifier('--data-dir', svc.dataDir)).toMatchObject({ status: 0, output });
    });

    it('the checkpoint signature verifies with OpenSSL and Node against the public key in settings', () => {
      const db = new Database(dbPath, { readonly: true });
      const checkpoint = db.prepare<[], any>('SELECT * FROM audit_checkpoints ORDER BY seq DESC LIMIT 1').get();
      const publicKey = Buffer.from(db.prepare<[], { value: string }>(`SELECT value FROM settings WHERE name = 'auditPublicKey'`).get()!.value, 'base64');
      db.close();
      expect(checkpoint).toMatchObject({ seq: lastSeq, head_hash: events.at(-1)!.hash, algorithm: 'ECDSA_SHA_256' });
      const message = Buffer.from(`hsm-signer audit checkpoint\n${checkpoint.seq}\n${checkpoint.head_hash}\n${checkpoint.signed_at}`);
      expect(verify('sha256', message, createPublicKey({ key: publicKey, format: 'der', type: 'spki' }), checkpoint.signature)).toBe(true);

      const dir = svc.dataDir;
      writeFileSync(join(dir, 'audit-pub.der'), publicKey);
      writeFileSync(join(dir, 'checkpoint.msg'), message);
      writeFileSync(join(dir, 'checkpoint.sig'), checkpoint.signature);
      openssl('pkey', '-pubin', '-inform', 'DER', '-in', join(dir, 'audit-pub.der'), '-out', join(dir, 'audit-pub.pem'));
      expect(openssl('dgst', '-sha256', '-verify', join(dir, 'audit-pub.pem'), '-signature', join(dir, 'checkpoint.sig'), join(dir, 'checkpoint.msg'))).toContain('Verified OK');
      // The same key pinned from outside the database.
      expect(verifier('--db', dbPath, '--public-key', join(dir, 'audit-pub.pem')).status).toBe(0);
    });

    /** Applies `tamper` to a copy of the database and runs the verifier on the copy. */
    function tampered(name: string, tamper: (db: Database.Database) => void): { status: number | null; output: string } {
      const copy = join(svc.dataDir, `tampered-${name}.db`);
      copyFileSync(dbPath, copy);
      const db = new Database(copy);
      tamper(db);
      db.close();
      try {
        return verifier('--db', copy);
      } finally {
        rmSync(copy, { force: true });
      }
    }

    const row = (seq: number) => events.find((e) => e.seq === seq)!;
    const overwrite = (db: Database.Database, seq: number, e: AuditEventRecord) => {
      const { seq: _, ...columns } = toEventRow({ ...e, seq });
      db.prepare(`UPDATE audit_events SET ${Object.keys(columns).map((column) => `${column} = @${column}`).join(', ')} WHERE seq = @target`).run({ ...columns, target: seq });
    };

    it('names an edited event', () => {
      const { status, output } = tampered('edited', (db) => db.prepare(`UPDATE audit_events SET client_address = '203.0.113.7' WHERE seq = 3`).run());
      expect(output).toBe(`audit chain broken at seq 3 (time ${row(3).time}): edited: its stored hash does not match its fields`);
      expect(status).toBe(1);
    });

    it('names a removed event', () => {
      const { status, output } = tampered('removed', (db) => db.prepare('DELETE FROM audit_events WHERE seq = 4').run());
      expect(output).toMatch(/^audit chain broken at seq 4: removed: event 4 is missing \(the next event present is seq 5, time /);
      expect(status).toBe(1);
    });

    it('names reordered events', () => {
      const { status, output } = tampered('reordered', (db) => {
        overwrite(db, 5, row(6));
        overwrite(db, 6, row(5));
      });
      expect(output).toBe(`audit chain broken at seq 5 (time ${row(6).time}): reordered: this is event 6, moved to seq 5`);
      expect(status).toBe(1);
    });

    it('names the events cut from the end before the signed checkpoint', () => {
      const { status, output } = tampered('truncated', (db) => db.prepare('DELETE FROM audit_events WHERE seq > ?').run(lastSeq - 2));
      expect(output).toMatch(new RegExp(`^audit chain broken at seq ${lastSeq - 1}: truncated: events ${lastSeq - 1}–${lastSeq} are missing: the checkpoint signed at .* names seq ${lastSeq}`));
      expect(status).toBe(1);
    });

    it('names an event edited and rehashed', () => {
      const { status, output } = tampered('rehashed', (db) => {
        const edited = { ...row(2), identityId: null };
        overwrite(db, 2, { ...edited, hash: eventHash(edited) });
      });
      expect(output).toMatch(/^audit chain broken at seq 2 .*: edited: its hash was recomputed after an edit: event 3's prev_hash does not match it$/);
      expect(status).toBe(1);
    });

    it('names a forged checkpoint', () => {
      const { status, output } = tampered('forged', (db) => db.prepare('UPDATE audit_checkpoints SET signed_at = ? WHERE seq = ?').run(new Date().toISOString(), lastSeq));
      expect(output).toMatch(new RegExp(`^audit chain broken at seq ${lastSeq} .*: forged-checkpoint: the checkpoint at seq ${lastSeq} signed at .* does not verify with the audit key$`));
      expect(status).toBe(1);
    });

    it('exits 2 when there is nothing to verify', () => {
      expect(verifier('--db', join(svc.dataDir, 'no-such.db')).status).toBe(2);
    });

    it('exits 2, never 1, when it verified nothing: a bad command line or an unreadable public key', () => {
      // 1 must keep meaning "the chain is broken" for cron and CI jobs.
      for (const args of [['--no-such-option'], ['--db', dbPath, 'stray-argument'], ['--db']]) {
        const { status, output } = verifier(...args);
        expect(status, args.join(' ')).toBe(2);
        expect(output).toContain('usage: ');
      }
      const { status, output } = verifier('--db', dbPath, '--public-key', join(svc.dataDir, 'no-such-key.pem'));
      expect(status).toBe(2);
      expect(output).toMatch(/^cannot verify the audit trail in .*no-such-key\.pem/);
      // A readable key that is not the audit key is a verdict: the checkpoints do not verify.
      const otherKey = join(svc.dataDir, 'other-pub.pem');
      writeFileSync(otherKey, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }));
      const wrongKey = verifier('--db', dbPath, '--public-key', otherKey);
      expect(wrongKey.output).toMatch(/^audit chain broken at seq \d+: forged-checkpoint: the audit public key in the database is not the trusted one given/);
      expect(wrongKey.status).toBe(1);
    });

    it('a restart keeps the audit key (the orphan sweep spares it) and carries the chain on', async () => {
      const auditObjects = (of: Pick<TestService, 'dataDir' | 'config'>) =>
        tokenObjects(of)
          .filter((o) => o.label.startsWith('hsm-signer:audit'))
          .sort((a, b) => a.class.localeCompare(b.class));
      const objectsBefore = auditObjects(svc);
      expect(objectsBefore).toHaveLength(2);
      const again = await startTestService({}, svc.dataDir);
      try {
        expect(auditObjects(again)).toEqual(objectsBefore);
        const res = await request(again.url, 'POST', LOGIN, { body: { clientId: app.clientId, clientSecret: 'wrong' }, headers: { 'x-request-id': 'audit-after-restart' } });
        expectStatus(res, 401);
        await sleep(50); // recorded on the response's 'close'
      } finally {
        await again.service.close();
      }
      const { status, output } = verifier('--db', dbPath);
      expect(output).toMatch(new RegExp(`^audit chain intact: ${lastSeq + 1} events, \\d+ signed checkpoints, last signed at seq ${lastSeq + 1} `));
      expect(status).toBe(0);
      const db = new Database(dbPath, { readonly: true });
      const next = db.prepare<[number], any>('SELECT * FROM audit_events WHERE seq = ?').get(lastSeq + 1);
      db.close();
      expect(toEvent(next)).toMatchObject({ reqId: 'audit-after-restart', prevHash: events.at(-1)!.hash, action: 'auth.login', outcome: 'denied' });
    });
  });
});
