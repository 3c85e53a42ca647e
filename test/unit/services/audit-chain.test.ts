/**
 * The audit hash chain and its verifier, on a temporary SQLite file with a software stand-in
 * for the token: an intact chain verifies, and each way of tampering with the rows (edit,
 * removal, truncation, reordering, edit-and-rehash, forged checkpoints) is caught and named
 * at the right seq. Also the service's promises: recording never throws, signing failures
 * only delay the next checkpoint, only admins read the trail.
 */
import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify as verifySignature, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { HashName, KeySpec, SignatureScheme } from '../../../src/algorithms.js';
import type { Token } from '../../../src/pkcs11/token.js';
import { eventHash, formatAuditReport, GENESIS_HASH, verifyAuditChain, type AuditChainReport } from '../../../src/services/audit-chain.js';
import { createAuditService, type AuditEventInput, type AuditService } from '../../../src/services/audit-service.js';
import type { Principal } from '../../../src/services/permissions.js';
import { createAuditStore, readAuditChain, toEvent, toEventRow, type AuditEventRecord } from '../../../src/store/audit-store.js';
import { createAuditRetention, startAuditUpkeep } from '../../../src/services/audit-retention.js';
import { createSinkFeeder, sinkDestination } from '../../../src/services/audit-sink.js';
import { exportFiles, readExportedTrail } from '../../../src/services/audit-export.js';
import type { AuditEventsTable } from '../../../src/store/schema.js';
import Database from 'better-sqlite3';
import { openStore, type Store } from '../../../src/store/database.js';
import { createLogger } from '../../../src/logger.js';

// --- A software token: CKM_ECDSA on P-256 signs a digest as given and returns raw r || s. ---
// Node's crypto.sign always hashes its input, so the digest is signed here with plain BigInt
// arithmetic (test-only, not constant time).

const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const G: Point = [0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n, 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n];
type Point = [bigint, bigint] | null;

const mod = (a: bigint, m: bigint) => ((a % m) + m) % m;
function inverse(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [mod(a, m), m, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return mod(s0, m);
}
function add(a: Point, b: Point): Point {
  if (!a) return b;
  if (!b) return a;
  if (a[0] === b[0] && mod(a[1] + b[1], P) === 0n) return null;
  const slope = a[0] === b[0] ? mod((3n * a[0] * a[0] - 3n) * inverse(2n * a[1], P), P) : mod((b[1] - a[1]) * inverse(b[0] - a[0], P), P);
  const x = mod(slope * slope - a[0] - b[0], P);
  return [x, mod(slope * (a[0] - x) - a[1], P)];
}
function multiply(k: bigint, point: Point): Point {
  let result: Point = null;
  for (let addend = point; k > 0n; k >>= 1n, addend = add(addend, addend)) if (k & 1n) result = add(result, addend);
  return result;
}
const toBigInt = (bytes: Buffer) => BigInt(`0x${bytes.toString('hex') || '0'}`);
const toBytes = (value: bigint) => Buffer.from(value.toString(16).padStart(64, '0'), 'hex');

function signDigestP256(privateKey: KeyObject, digest: Buffer): Buffer {
  const d = toBigInt(Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url'));
  const z = toBigInt(digest);
  for (;;) {
    const k = mod(toBigInt(randomBytes(40)), N - 1n) + 1n;
    const r = mod(multiply(k, G)![0], N);
    const s = mod(inverse(k, N) * (z + r * d), N);
    if (r !== 0n && s !== 0n) return Buffer.concat([toBytes(r), toBytes(s)]);
  }
}

interface FakeToken extends Pick<Token, 'generateKey' | 'signDigest'> {
  generated: number;
  /** Makes the next `n` signDigest calls fail as a token that is down would. */
  failNext(n: number): void;
  /** Of those, the ones not yet made. */
  readonly pendingFailures: number;
}

function fakeToken(): FakeToken {
  const keys = new Map<string, KeyObject>();
  let failures = 0;
  return {
    generated: 0,
    failNext(n) {
      failures = n;
    },
    get pendingFailures() {
      return failures;
    },
    async generateKey(id: Buffer, label: string, spec: KeySpec) {
      expect(label.startsWith('hsm-signer:')).toBe(true);
      expect(spec).toEqual({ kind: 'ec', curve: 'P-256' });
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      keys.set(id.toString('hex'), privateKey);
      this.generated++;
      return { publicKeySpki: publicKey.export({ type: 'spki', format: 'der' }) };
    },
    async signDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer) {
      if (failures > 0) {
        failures--;
        throw new Error('CKR_DEVICE_REMOVED');
      }
      expect([scheme, hash, digest.length]).toEqual(['ecdsa', 'sha256', 32]);
      const key = keys.get(id.toString('hex'));
      if (!key) throw new Error('no such key');
      return signDigestP256(key, digest);
    },
  };
}

// --- Fixtures ---

const silent = createLogger('silent');
const ADMIN: Principal = { identityId: 'a', name: 'admin', permissions: [{ projectId: '*', actions: ['*'] }] };

let dir: string;
/** The service's store; `db`, a second connection to the same file, is what tampers with it. */
let store: Store;
let db: Database.Database;
let token: FakeToken;
let audit: AuditService;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-audit-'));
  store = await openStore({ engine: 'sqlite', path: join(dir, 'test.db') });
  db = new Database(join(dir, 'test.db'));
  db.pragma('busy_timeout = 5000');
  token = fakeToken();
  audit = createAuditService({ store, token, logger: silent, signIntervalMs: 3_600_000 });
  await audit.start();
});

afterEach(async () => {
  vi.useRealTimers();
  await audit.close();
  db.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function event(i: number, overrides: Partial<AuditEventInput> = {}): AuditEventInput {
  return {
    reqId: `req-${i}`,
    identityId: i % 3 === 0 ? null : `identity-${i % 2}`,
    action: i % 2 ? 'kms.key.encrypt' : 'auth.login',
    resourceType: i % 2 ? 'key' : 'identity',
    resourceId: i % 2 ? `key-${i % 4}` : null,
    statusCode: i % 5 === 0 ? 403 : 200,
    clientAddress: '127.0.0.1',
    ...overrides,
  };
}

/** Records events 1..count, a millisecond apart, and signs the head after each seq in `signAt`. */
async function recordEvents(count: number, signAt: number[] = [count]): Promise<void> {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(new Date('2030-01-01T00:00:00.000Z'));
  for (let i = 1; i <= count; i++) {
    vi.setSystemTime(Date.now() + 1);
    audit.record(event(i));
    if (signAt.includes(i)) await audit.signHead();
  }
  await audit.flush();
  vi.useRealTimers();
}

const verify = (options = {}): Promise<AuditChainReport> => verifyAuditChain(readAuditChain(store), options);

async function expectProblem(kind: string, seq: number): Promise<string> {
  const report = await verify();
  expect(report.ok, formatAuditReport(report)).toBe(false);
  if (report.ok) throw new Error('unreachable');
  expect({ kind: report.problem.kind, seq: report.problem.seq }, formatAuditReport(report)).toEqual({ kind, seq });
  return formatAuditReport(report);
}

const row = (seq: number) => readAll().find((e) => e.seq === seq)!;
/** Synchronously, through the tampering connection, as the store maps rows to events. */
const readAll = (): AuditEventRecord[] => db.prepare<[], AuditEventsTable>('SELECT * FROM audit_events ORDER BY seq').all().map(toEvent);

/** Overwrites every column but seq of the row at `seq` (what swapping two rows amounts to). */
function writeRow(seq: number, fields: Omit<AuditEventRecord, 'seq'>): void {
  const { seq: _, ...columns } = toEventRow({ ...fields, seq });
  const sets = Object.keys(columns).map((column) => `${column} = @${column}`).join(', ');
  db.prepare(`UPDATE audit_events SET ${sets} WHERE seq = @seq`).run({ ...columns, seq });
}

/** What an attacker who knows the format does after an edit: recompute hashes from `from` on. */
function rehashFrom(from: number): void {
  const events = readAll();
  let prevHash = events.find((e) => e.seq === from - 1)?.hash ?? GENESIS_HASH;
  for (const e of events.filter((x) => x.seq >= from)) {
    const hash = eventHash({ ...e, prevHash });
    db.prepare('UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?').run(Buffer.from(prevHash, 'hex'), Buffer.from(hash, 'hex'), e.seq);
    prevHash = hash;
  }
}

describe('the audit chain', () => {
  it('links every event to the one before and verifies intact, naming the last checkpoint', async () => {
    await recordEvents(10, [6, 10]);
    const events = readAll();
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(events[0]!.prevHash).toBe(GENESIS_HASH);
    for (let i = 1; i < events.length; i++) expect(events[i]!.prevHash).toBe(events[i - 1]!.hash);
    for (const e of events) expect(e.hash).toBe(eventHash(e));
    expect(events[0]).toMatchObject({ reqId: 'req-1', action: 'kms.key.encrypt', resourceType: 'key', resourceId: 'key-1', outcome: 'success', statusCode: 200, clientAddress: '127.0.0.1' });
    expect(events[0]!.time).toBe('2030-01-01T00:00:00.001Z');

    const report = await verify();
    expect(report).toMatchObject({ ok: true, events: 10, checkpoints: 2, lastSignedSeq: 10 });
    expect(formatAuditReport(report)).toMatch(/^audit chain intact: 10 events, 2 signed checkpoints, last signed at seq 10 \(\d{4}-.*Z\)$/);
  });

  it('signs only a head that moved, and the signature verifies with the public key in settings', async () => {
    await recordEvents(3, [3]);
    await audit.signHead();
    await audit.signHead();
    const checkpoints = (await readAuditChain(store).checkpoints());
    expect(checkpoints).toHaveLength(1);
    const publicKey = createPublicKey({ key: (await readAuditChain(store).publicKey())!, format: 'der', type: 'spki' });
    const [checkpoint] = checkpoints;
    const message = Buffer.from(`hsm-signer audit checkpoint\n3\n${row(3).hash}\n${checkpoint!.signedAt}`);
    expect(verifySignature('sha256', message, publicKey, checkpoint!.signature)).toBe(true);
    expect(checkpoint!.algorithm).toBe('ECDSA_SHA_256');
  });

  it('an empty chain is intact', async () => {
    expect(formatAuditReport(await verify())).toBe('audit chain intact: 0 events, 0 signed checkpoints, none signed yet');
  });

  it('never writes a time earlier than the last one, so seq order is time order', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2030-01-01T00:00:10.000Z'));
    audit.record(event(1));
    vi.setSystemTime(new Date('2030-01-01T00:00:05.000Z')); // the clock stepped back
    audit.record(event(2));
    await audit.flush();
    expect(readAll().map((e) => e.time)).toEqual(['2030-01-01T00:00:10.000Z', '2030-01-01T00:00:10.000Z']);
  });
});

describe('the verifier names the first tampered event', () => {
  beforeEach(async () => {
    await recordEvents(10, [6, 9, 10]);
  });

  it('a field edited in place', async () => {
    db.prepare(`UPDATE audit_events SET status_code = 200 WHERE seq = 5`).run();
    expect(await expectProblem('edited', 5)).toContain(`(time ${row(5).time})`);
  });

  it('a stored hash edited', async () => {
    db.prepare(`UPDATE audit_events SET hash = ? WHERE seq = 4`).run(Buffer.alloc(32, 0xff));
    await expectProblem('edited', 4);
  });

  it('a middle event removed', async () => {
    db.prepare('DELETE FROM audit_events WHERE seq = 5').run();
    expect(await expectProblem('removed', 5)).toContain('event 5 is missing (the next event present is seq 6');
  });

  it('several middle events removed', async () => {
    db.prepare('DELETE FROM audit_events WHERE seq BETWEEN 4 AND 6').run();
    expect(await expectProblem('removed', 4)).toContain('events 4–6 are missing');
  });

  it('the first event removed', async () => {
    db.prepare('DELETE FROM audit_events WHERE seq = 1').run();
    await expectProblem('removed', 1);
  });

  it('a middle event removed and the later ones renumbered to close the gap', async () => {
    db.prepare('DELETE FROM audit_events WHERE seq = 5').run();
    for (let seq = 6; seq <= 10; seq++) db.prepare('UPDATE audit_events SET seq = ? WHERE seq = ?').run(seq - 1, seq);
    expect(await expectProblem('removed', 5)).toContain('this is event 6, renumbered to 5');
  });

  it('the tail removed past a signed checkpoint', async () => {
    db.prepare('DELETE FROM audit_events WHERE seq >= 9').run();
    expect(await expectProblem('truncated', 9)).toMatch(/events 9–10 are missing: the checkpoint signed at .* names seq 10, the last event present is seq 8/);
  });

  it('every event removed while checkpoints remain', async () => {
    db.prepare('DELETE FROM audit_events').run();
    await expectProblem('truncated', 1);
  });

  it('two neighbouring events swapped', async () => {
    const [five, six] = [row(5), row(6)];
    writeRow(5, six);
    writeRow(6, five);
    expect(await expectProblem('reordered', 5)).toContain('this is event 6, moved to seq 5');
  });

  it('two distant events swapped', async () => {
    const [three, eight] = [row(3), row(8)];
    writeRow(3, eight);
    writeRow(8, three);
    expect(await expectProblem('reordered', 3)).toContain('this is event 8, moved to seq 3');
  });

  it("an event edited and its own hash recomputed: caught by the next event's link", async () => {
    const four = row(4);
    const edited = { ...four, identityId: 'someone-else' };
    writeRow(4, { ...edited, hash: eventHash(edited) });
    expect(await expectProblem('edited', 4)).toContain("event 5's prev_hash does not match it");
  });

  it('the last event edited and rehashed: caught by the checkpoint that signed it', async () => {
    const ten = row(10);
    const edited = { ...ten, action: 'kms.key.decrypt' };
    writeRow(10, { ...edited, hash: eventHash(edited) });
    expect(await expectProblem('edited', 10)).toContain("seq 10's hash is not the one signed at");
  });

  it('an edit with the rest of the chain rehashed: caught by the next checkpoint, naming the span', async () => {
    db.prepare(`UPDATE audit_events SET client_address = '10.0.0.1' WHERE seq = 8`).run();
    rehashFrom(8);
    expect(await expectProblem('rewritten', 7)).toContain("an event in seq 7–9 was edited, removed or reordered and the chain rehashed: seq 9's hash is not the one signed");
  });

  it('events swapped with the chain rehashed: time going backwards gives them away', async () => {
    const [three, eight] = [row(3), row(8)];
    writeRow(3, eight);
    writeRow(8, three);
    rehashFrom(3);
    db.prepare('DELETE FROM audit_checkpoints').run();
    expect(await expectProblem('reordered', 4)).toContain('time goes backwards');
  });

  it('a checkpoint signature altered', async () => {
    const signature = db.prepare<[], { signature: Buffer }>('SELECT signature FROM audit_checkpoints WHERE seq = 6').get()!.signature;
    signature[signature.length - 1]! ^= 1;
    db.prepare('UPDATE audit_checkpoints SET signature = ? WHERE seq = 6').run(signature);
    expect(await expectProblem('forged-checkpoint', 6)).toContain('does not verify with the audit key');
  });

  it('a checkpoint moved to another head, or signed by another key', async () => {
    db.prepare('UPDATE audit_checkpoints SET seq = 7, head_hash = ? WHERE seq = 6').run(row(7).hash);
    await expectProblem('forged-checkpoint', 7);
  });

  it('a forged checkpoint past the end cannot pass as a truncation', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signedAt = new Date().toISOString();
    const signature = sign('sha256', Buffer.from(`hsm-signer audit checkpoint\n12\n${'a'.repeat(64)}\n${signedAt}`), privateKey);
    db.prepare('INSERT INTO audit_checkpoints (seq, head_hash, signed_at, algorithm, signature) VALUES (12, ?, ?, ?, ?)').run('a'.repeat(64), signedAt, 'ECDSA_SHA_256', signature);
    await expectProblem('forged-checkpoint', 12);
  });

  it('the stored public key replaced is caught when the trusted key is given', async () => {
    const original = createPublicKey({ key: (await readAuditChain(store).publicKey())!, format: 'der', type: 'spki' });
    expect((await verify({ trustedPublicKey: original })).ok).toBe(true);
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    db.prepare(`UPDATE settings SET value = ? WHERE name = 'auditPublicKey'`).run(publicKey.export({ type: 'spki', format: 'der' }).toString('base64'));
    await expectProblem('forged-checkpoint', 6); // the first checkpoint no longer verifies with the stored key
    const report = await verify({ trustedPublicKey: original });
    expect(report.ok).toBe(false);
    expect(formatAuditReport(report)).toContain('not the trusted one');
  });
});

describe('the audit service', () => {
  it('makes the audit key once, writes its settings after it exists, and keeps its id for the sweep', async () => {
    expect(token.generated).toBe(1);
    const [objectId] = audit.objectIds();
    expect(objectId).toHaveLength(16);
    const again = createAuditService({ store, token, logger: silent, signIntervalMs: 3_600_000 });
    await again.start();
    expect(token.generated).toBe(1);
    expect(again.objectIds()).toEqual([objectId]);
    await again.close();

    const failing = fakeToken();
    failing.generateKey = async () => {
      throw new Error('CKR_DEVICE_ERROR');
    };
    const otherStore = await openStore({ engine: 'sqlite', path: join(dir, 'other.db') });
    const otherDb = new Database(join(dir, 'other.db'));
    const broken = createAuditService({ store: otherStore, token: failing, logger: silent, signIntervalMs: 3_600_000 });
    await expect(broken.start()).rejects.toThrow('CKR_DEVICE_ERROR');
    expect(otherDb.prepare(`SELECT COUNT(*) AS n FROM settings WHERE name LIKE 'audit%'`).get()).toEqual({ n: 0 });
    expect(broken.objectIds()).toEqual([]);
    otherDb.close();
    await otherStore.close();
  });

  it('never throws from record: a failed append is logged, counted and reported', async () => {
    const onRecordFailure = vi.fn();
    const otherStore = await openStore({ engine: 'sqlite', path: join(dir, 'other.db') });
    const other = new Database(join(dir, 'other.db'));
    const service = createAuditService({ store: otherStore, token, logger: silent, signIntervalMs: 3_600_000, onRecordFailure });
    // The writer thread has a connection of its own; what fails for it is the table being gone.
    other.exec('DROP TABLE audit_events');
    expect(() => service.record(event(1))).not.toThrow();
    await expect(service.flush()).resolves.toBeUndefined();
    expect(service.recordFailures).toBe(1);
    expect(onRecordFailure).toHaveBeenCalledOnce();
    await service.close();
    other.close();
    await otherStore.close();
  });

  it('chains onto whatever another writer stored, so its events are neither lost nor forked', async () => {
    audit.record(event(1));
    await audit.flush();
    // Another writer (or a row restored by hand) got there first: seq 2 is taken.
    const first = row(1);
    const intruder = { ...first, seq: 2, id: 'x', prevHash: first.hash };
    const intruderRow = toEventRow({ ...intruder, hash: eventHash(intruder) });
    db.prepare(`INSERT INTO audit_events (${Object.keys(intruderRow).join(', ')}) VALUES (${Object.keys(intruderRow).map((column) => `@${column}`).join(', ')})`).run(intruderRow);
    audit.record(event(2));
    await audit.flush();
    audit.record(event(3));
    await audit.flush();
    expect(audit.recordFailures).toBe(0);
    expect(readAll().map((e) => [e.seq, e.reqId])).toEqual([[1, 'req-1'], [2, 'req-1'], [3, 'req-2'], [4, 'req-3']]);
    expect(row(3).prevHash).toBe(eventHash(intruder));
    expect((await verify()).ok).toBe(true);
  });

  it('two services on one file, each with its own writer thread, extend one chain and sign it once', async () => {
    const other = createAuditService({ store, token, logger: silent, signIntervalMs: 3_600_000 });
    await other.start();
    try {
      for (let turn = 0; turn < 20; turn++) {
        for (let i = 0; i < 10; i++) {
          audit.record(event(i, { reqId: `a-${turn}-${i}` }));
          other.record(event(i, { reqId: `b-${turn}-${i}` }));
        }
        // End the turn: both post their batch, and the two writers race for the next seqs.
        await new Promise(setImmediate);
      }
      await Promise.all([audit.flush(), other.flush()]);
      await Promise.all([audit.signHead(), other.signHead()]);
      const events = readAll();
      expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
      expect(new Set(events.map((e) => e.reqId)).size).toBe(400);
      expect(audit.recordFailures + other.recordFailures).toBe(0);
      // Both signed the same stored head: one checkpoint, the other one's insert is a no-op.
      expect((await readAuditChain(store).checkpoints()).map((c) => c.seq)).toEqual([400]);
      expect(await verify()).toMatchObject({ ok: true, events: 400, checkpoints: 1, lastSignedSeq: 400 });
    } finally {
      await other.close();
    }
  });

  it('a batch the store refuses leaves nothing behind, and the next goes on from the stored head', async () => {
    audit.record(event(1));
    await audit.flush();
    db.exec(`CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events WHEN NEW.req_id = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END`);
    audit.record(event(2));
    audit.record(event(3, { reqId: 'poison' }));
    await audit.flush();
    expect(audit.recordFailures).toBe(2); // one transaction: both or neither
    expect(readAll().map((e) => e.reqId)).toEqual(['req-1']);
    audit.record(event(4));
    await audit.flush();
    expect(readAll().map((e) => [e.seq, e.reqId])).toEqual([[1, 'req-1'], [2, 'req-4']]);
    expect((await verify()).ok).toBe(true);
  });

  it('retries a checkpoint the token refused at the next tick, and close signs the rest without throwing', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const service = createAuditService({ store, token, logger: silent, signIntervalMs: 1000 });
    await service.start();
    service.record(event(1));
    token.failNext(1);
    await expect(service.signHead()).rejects.toThrow('CKR_DEVICE_REMOVED');
    token.failNext(1);
    await vi.advanceTimersByTimeAsync(1000); // refused again: logged, no checkpoint
    // Signing first flushes (a round trip to the writer thread), so the token is asked a moment later.
    await vi.waitFor(() => expect(token.pendingFailures).toBe(0));
    expect((await readAuditChain(store).checkpoints())).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1000);
    await vi.waitFor(async () => expect((await readAuditChain(store).checkpoints()).map((c) => c.seq)).toEqual([1]));

    service.record(event(2));
    token.failNext(5);
    await expect(service.close()).resolves.toBeUndefined();
    expect((await readAuditChain(store).checkpoints()).map((c) => c.seq)).toEqual([1]);
    vi.useRealTimers();
  });

  it('lets only an admin page through events, by time, identity, resource, action and outcome', async () => {
    await recordEvents(10, []);
    const page = await audit.list(ADMIN, { offset: 0, limit: 3, orderDirection: 'desc' });
    expect(page.totalCount).toBe(10);
    expect(page.auditLogs.map((e) => e.seq)).toEqual([10, 9, 8]);
    expect(Object.keys(page.auditLogs[0]!).sort()).toEqual(
      ['action', 'clientAddress', 'hash', 'id', 'identityId', 'outcome', 'prevHash', 'reqId', 'resourceId', 'resourceType', 'seq', 'statusCode', 'time'],
    );
    const next = await audit.list(ADMIN, { offset: 3, limit: 3, orderDirection: 'desc' });
    expect(next.auditLogs.map((e) => e.seq)).toEqual([7, 6, 5]);
    const oldest = await audit.list(ADMIN, { offset: 0, limit: 2, orderDirection: 'asc' });
    expect(oldest.auditLogs.map((e) => e.seq)).toEqual([1, 2]);

    // Times are 2030-01-01T00:00:00.00Nz for seq N; start inclusive, end exclusive, any offset.
    const window = await audit.list(ADMIN, { offset: 0, limit: 50, orderDirection: 'asc', startTime: '2030-01-01T01:00:00.003+01:00', endTime: '2030-01-01T00:00:00.006Z' });
    expect(window.auditLogs.map((e) => e.seq)).toEqual([3, 4, 5]);
    const byIdentity = await audit.list(ADMIN, { offset: 0, limit: 50, orderDirection: 'asc', identityId: 'identity-1' });
    expect(byIdentity.auditLogs.map((e) => e.seq)).toEqual([1, 5, 7]);
    const byResource = await audit.list(ADMIN, { offset: 0, limit: 50, orderDirection: 'asc', resourceType: 'key', resourceId: 'key-1' });
    expect(byResource.auditLogs.map((e) => e.seq)).toEqual([1, 5, 9]);
    const denied = await audit.list(ADMIN, { offset: 0, limit: 50, orderDirection: 'asc', outcome: 'denied', action: 'auth.login' });
    expect(denied.auditLogs.map((e) => e.seq)).toEqual([10]);

    for (const permissions of [[{ projectId: '*', actions: ['read'] }], [{ projectId: 'default', actions: ['*'] }], []]) {
      await expect(audit.list({ identityId: 'b', name: 'app', permissions }, { offset: 0, limit: 50, orderDirection: 'desc' })).rejects.toMatchObject({
        kind: 'PermissionDenied',
        statusCode: 403,
      });
    }
  });
});

describe('retention', () => {
  const retention = (options: Partial<Parameters<typeof createAuditRetention>[0]> = {}) =>
    createAuditRetention({ auditStore: createAuditStore(store), audit, logger: silent, retentionMs: null, maxEvents: null, sink: false, ...options });

  it('prunes beyond maxEvents only up to a signed checkpoint, records it first, and the kept trail verifies from there', async () => {
    await recordEvents(30, [10, 20, 30]);
    const result = await retention({ maxEvents: 15 }).run();
    // 15 events should go, but the highest checkpoint at or below seq 15 is 10.
    expect(result).toMatchObject({ pruned: 10, first: 11, heldBy: 'checkpoint' });
    const events = readAll();
    expect(events[0]!.seq).toBe(11);
    const prune = events.find((e) => e.action === 'audit.prune')!;
    expect(prune).toMatchObject({ seq: 31, resourceType: 'audit', resourceId: '1-10', identityId: null, outcome: 'success' });
    expect((await readAuditChain(store).checkpoints()).map((c) => c.seq)).toEqual([10, 20, 30]);

    await audit.signHead();
    const report = await verify();
    expect(report).toMatchObject({ ok: true, events: 21, start: { seq: 11, anchored: true, prunedBy: { seq: 31, from: 1, to: 10 } } });
    expect(formatAuditReport(report)).toMatch(/^audit chain intact: 21 events, 4 signed checkpoints, last signed at seq 31 \(.*\); kept from seq 11: the events before it were pruned by retention \(the last audit\.prune event, seq 31 at .*, pruned seq 1–10\), its first event linked to the checkpoint of seq 10$/);

    // The next round goes on from there; the checkpoints below the new start go too.
    // (31 events, at most 5 kept: up to seq 26, whose highest checkpoint at or below is 20.)
    expect(await retention({ maxEvents: 5 }).run()).toMatchObject({ pruned: 10, first: 21 });
    expect((await readAuditChain(store).checkpoints()).map((c) => c.seq)).toEqual([20, 30, 31]);
    await audit.signHead();
    expect(await verify()).toMatchObject({ ok: true, start: { seq: 21, anchored: true, prunedBy: { seq: 32, from: 11, to: 20 } } });
  });

  it('prunes by time: what is older than the retention, up to a checkpoint', async () => {
    await recordEvents(20, [5, 12, 20]); // seq N at 2030-01-01T00:00:00.00N
    const now = () => Date.parse('2030-01-01T00:00:00.014Z');
    // Older than 6 ms at .014: seq 1..7; the checkpoint at or below is 5.
    expect(await retention({ retentionMs: 6, now }).run()).toMatchObject({ pruned: 5, first: 6, overdue: 2 });
    await audit.signHead();
    expect(await verify()).toMatchObject({ ok: true, start: { seq: 6, prunedBy: { from: 1, to: 5 } } });
  });

  it('never prunes what the sink has not exported, nor without a checkpoint', async () => {
    await recordEvents(10, [8]);
    expect(await retention({ maxEvents: 2, sink: true }).run()).toMatchObject({ pruned: 0, first: 1, overdue: 8, heldBy: 'sink' });
    await createAuditStore(store).advanceSink({ exportedSeq: 0, exportedCheckpointSeq: 0, failingSince: null, lastError: null }, { exportedSeq: 4, exportedCheckpointSeq: 0 });
    expect(await retention({ maxEvents: 2, sink: true }).run()).toMatchObject({ pruned: 0, heldBy: 'checkpoint' });
    expect(readAll().some((e) => e.action === 'audit.prune')).toBe(false);
    expect(await retention({ maxEvents: 2 }).run()).toMatchObject({ pruned: 8, first: 9 });
  });

  it('a round cut short (a crash between batches) leaves a trail that still verifies, and the next round finishes it', async () => {
    await recordEvents(12, [9, 12]);
    const auditStore = createAuditStore(store);
    let batches = 0;
    const crashing = { ...auditStore, deleteEvents: async (from: number, to: number) => (++batches > 1 ? Promise.reject(new Error('killed')) : auditStore.deleteEvents(from, to)) };
    await expect(createAuditRetention({ auditStore: crashing, audit, logger: silent, retentionMs: null, maxEvents: 3, sink: false, batch: 4 }).run()).rejects.toThrow('killed');
    expect(readAll()[0]!.seq).toBe(5);
    expect(await verify()).toMatchObject({ ok: true, start: { seq: 5, anchored: false, prunedBy: { from: 1, to: 9 } } });
    expect(await retention({ maxEvents: 3 }).run()).toMatchObject({ first: 10 });
    expect(await verify()).toMatchObject({ ok: true, start: { seq: 10, anchored: true } });
  });

  it('names events removed from the start beyond what retention recorded', async () => {
    await recordEvents(30, [10, 20, 30]);
    await retention({ maxEvents: 15 }).run();
    await audit.signHead();
    // Someone deletes on up to the next checkpoint, as if retention had gone further.
    db.prepare('DELETE FROM audit_events WHERE seq <= 20').run();
    db.prepare('DELETE FROM audit_checkpoints WHERE seq < 20').run();
    expect(await expectProblem('removed', 11)).toContain('events 11–20 are missing from the start of the trail and the last audit.prune event (seq 31) pruned up to seq 10');
    // And the first event kept replaced by one that does not follow the anchoring checkpoint.
    const report = await verify({ startMayBeUnexplained: true });
    expect(report.ok).toBe(true);
  });

  it('names a first kept event that does not follow the checkpoint before it', async () => {
    await recordEvents(20, [10, 20]);
    await retention({ maxEvents: 5 }).run();
    await audit.signHead();
    const eleven = row(11);
    const forged = { ...eleven, prevHash: 'ab'.repeat(32) };
    writeRow(11, { ...forged, hash: eventHash(forged) });
    expect(await expectProblem('edited', 11)).toContain('its prev_hash is not the hash of seq 10 that the checkpoint signed');
  });
});

describe('the upkeep loop on the lease holder', () => {
  it('prunes while leading, reports the gauges, and warns only when the overdue events keep growing', async () => {
    const overdue = [5, 3, 4, 6, 8, 8, 9, 10, 11, 2, 2, 2, 2, 2];
    let round = 0;
    const retention = { run: async () => ({ pruned: 1, first: 10, last: 19, overdue: overdue[Math.min(round++, overdue.length - 1)]!, heldBy: 'sink' as const }) };
    const lines: Array<{ level: number; msg: string; growingRounds?: number }> = [];
    const logger = createLogger('info', { write: (line: string) => lines.push(JSON.parse(line)) });
    const seen = { pruned: 0, stored: [] as number[], overdue: [] as number[] };
    const upkeep = startAuditUpkeep({
      retention,
      feeder: undefined,
      sinkIntervalMs: 10,
      pruneIntervalMs: 5,
      logger,
      metrics: { pruned: (n) => (seen.pruned += n), sinkLag: () => undefined, storeEvents: (n) => seen.stored.push(n), overdue: (n) => seen.overdue.push(n) },
    });
    expect(round).toBe(0); // nothing until this process leads
    upkeep.setLeading(true);
    await vi.waitFor(() => expect(round).toBeGreaterThanOrEqual(overdue.length), { timeout: 5000 });
    upkeep.setLeading(false);
    await upkeep.stop();
    const after = round;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(round).toBe(after);
    expect(seen.pruned).toBeGreaterThanOrEqual(overdue.length);
    expect(seen.stored).toContain(10);
    expect(seen.overdue.slice(0, overdue.length)).toEqual(overdue);
    expect(seen.overdue.at(-1)).toBe(0); // not leading: the gauges are the new holder's
    const warnings = lines.filter((line) => line.level === 40);
    expect(warnings.map((w) => [w.msg, w.growingRounds])).toEqual([
      ['the audit store grows faster than retention removes: events past audit.retention or audit.maxEvents are still kept', 3],
      ['the audit store grows faster than retention removes: events past audit.retention or audit.maxEvents are still kept', 3],
    ]);
  });
});

describe('export to the sink', () => {
  const state = () => createAuditStore(store).sinkState();

  async function feed(path: string, batch = 2000) {
    const feeder = createSinkFeeder({ auditStore: createAuditStore(store), destination: sinkDestination(`file:${path}`), logger: silent, batch });
    return feeder;
  }
  const verifyFiles = async (path: string) => verifyAuditChain(readExportedTrail(await exportFiles(path)), { startMayBeUnexplained: true });

  it('writes every event in order with its checkpoints and the key, moves the cursor, and the file verifies on its own', async () => {
    await recordEvents(9, [4, 9]);
    const path = join(dir, 'sink', 'audit.jsonl');
    const feeder = await feed(path, 5);
    expect(await feeder.round()).toEqual({ written: 5, more: true, lag: 4 });
    expect(await feeder.round()).toEqual({ written: 4, more: false, lag: 0 });
    expect(await feeder.round()).toEqual({ written: 0, more: false, lag: 0 });
    expect(await state()).toMatchObject({ exportedSeq: 9, exportedCheckpointSeq: 9, failingSince: null });
    const lines = readFileSync(path, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    expect(lines.map((l) => (l.type === 'hsm-signer.audit.event' ? l.seq : `${l.type.split('.').pop()}${l.seq ?? ''}`))).toEqual(['key', 1, 2, 3, 4, 'checkpoint4', 5, 6, 7, 8, 9, 'checkpoint9']);
    expect(lines[1]).toEqual({ type: 'hsm-signer.audit.event', ...row(1), id: undefined });
    expect(Object.keys(lines[1]).sort()).toEqual(['action', 'clientAddress', 'hash', 'identityId', 'outcome', 'prevHash', 'reqId', 'resourceId', 'resourceType', 'seq', 'statusCode', 'time', 'type']);
    expect(await verifyFiles(path)).toMatchObject({ ok: true, events: 9, checkpoints: 2, lastSignedSeq: 9, start: null });
    await feeder.close();
  });

  it('a later checkpoint, a repeat after a crash, a reopened file: the directory still verifies; an edited line does not', async () => {
    const sinkDir = join(dir, 'sink');
    const path = join(sinkDir, 'audit.jsonl');
    await recordEvents(6, []);
    const feeder = await feed(path);
    await feeder.round();
    await audit.signHead(); // signs seq 6, after it was exported: the checkpoint comes on its own
    audit.record(event(7));
    await audit.flush();
    // A crash after the write but before the cursor moved: the next feeder writes 7 again.
    const before = await state();
    await feeder.round();
    db.prepare('UPDATE audit_sink SET exported_seq = ?, exported_checkpoint_seq = ?').run(before.exportedSeq, before.exportedCheckpointSeq);
    feeder.reopen();
    renameSync(path, join(sinkDir, 'audit.jsonl.1')); // logrotate, then SIGHUP
    await feeder.round();
    audit.record(event(8));
    await audit.signHead();
    await feeder.round();
    await feeder.close();
    expect(readFileSync(path, 'utf8').split('\n')[0]).toMatch(/^\{"type":"hsm-signer\.audit\.key"/);
    expect(await verifyFiles(sinkDir)).toMatchObject({ ok: true, events: 8, checkpoints: 2, lastSignedSeq: 8 });
    expect(await verifyFiles(path)).toMatchObject({ ok: true, events: 2, start: { seq: 7, prunedBy: null } });

    const edited = readFileSync(join(sinkDir, 'audit.jsonl.1'), 'utf8').replace('"req-3"', '"req-33"');
    writeFileSync(join(sinkDir, 'audit.jsonl.1'), edited);
    const report = await verifyFiles(sinkDir);
    expect(formatAuditReport(report)).toMatch(/^audit chain broken at seq 3 .*edited: its stored hash does not match its fields$/);
  });

  it('syslog: one message per line through logger, which the verifier reads back with the syslog header; a missing socket fails the write', async () => {
    await recordEvents(4, [4]);
    const socket = join(dir, 'syslog.sock');
    let received = '';
    const server = createServer((connection) => connection.on('data', (chunk: Buffer) => (received += chunk.toString('utf8'))));
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const feeder = createSinkFeeder({ auditStore: createAuditStore(store), destination: sinkDestination(`syslog:${socket}`), logger: silent });
      expect(await feeder.round()).toMatchObject({ written: 4 });
      await feeder.close();
      await vi.waitFor(() => expect(received.match(/hsm-signer\.audit\./g)).toHaveLength(6)); // key, 4 events, checkpoint
      expect(received).toMatch(/^<38>.* hsm-signer-audit: \{"type":"hsm-signer\.audit\.key"/);
      const collected = join(dir, 'collected.log');
      writeFileSync(collected, received);
      expect(await verifyFiles(collected)).toMatchObject({ ok: true, events: 4, lastSignedSeq: 4 });
    } finally {
      server.close();
    }
    let failures = 0;
    const missing = createSinkFeeder({ auditStore: createAuditStore(store), destination: sinkDestination(`syslog:${join(dir, 'no.sock')}`), logger: silent, onFailure: () => failures++ });
    audit.record(event(5));
    await audit.flush();
    const before = await state();
    expect(await missing.round()).toMatchObject({ written: 0, lag: 1 });
    expect(failures).toBe(1);
    expect(await state()).toMatchObject({ exportedSeq: before.exportedSeq, lastError: expect.stringContaining('No such file or directory') });
    await missing.close();
  });

  it('a destination that fails keeps the cursor, records the failure, and the next good write clears it', async () => {
    await recordEvents(3, [3]);
    mkdirSync(join(dir, 'blocked'));
    const failing = createSinkFeeder({ auditStore: createAuditStore(store), destination: sinkDestination(`file:${join(dir, 'blocked')}`), logger: silent, onFailure: () => failures++ });
    let failures = 0;
    expect(await failing.round()).toEqual({ written: 0, more: false, lag: 3 });
    expect(failures).toBe(1);
    const failed = await state();
    expect(failed).toMatchObject({ exportedSeq: 0, lastError: expect.stringContaining('EISDIR') });
    expect(failed.failingSince).toBeGreaterThan(0);
    const working = await feed(join(dir, 'ok.jsonl'));
    expect(await working.round()).toMatchObject({ written: 3 });
    expect(await state()).toMatchObject({ exportedSeq: 3, failingSince: null, lastError: null });
    await Promise.all([failing.close(), working.close()]);
  });
});
