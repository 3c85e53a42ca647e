/**
 * The session pool's bookkeeping on a fake module (pure logic; the recovery tests prove the
 * same behaviour on SoftHSM2 through the fault shim): stuck sessions, replacements, the bound
 * on open sessions, recovery, and leases too late to be worth starting.
 */
import { describe, expect, it } from 'vitest';
import { TokenError } from '../../../src/pkcs11/errors.js';
import type { Pkcs11Module } from '../../../src/pkcs11/module.js';
import { SessionPool } from '../../../src/pkcs11/session-pool.js';

class FakeModule {
  private next = 1;
  readonly open = new Set<number>();
  openSession(): Buffer {
    const id = this.next++;
    this.open.add(id);
    const handle = Buffer.alloc(4);
    handle.writeUInt32LE(id);
    return handle;
  }
  closeSession(handle: Buffer): void {
    this.open.delete(handle.readUInt32LE());
  }
  reconnect(): void {}
}

const label = { operation: 'sign', mechanism: 'CKM_ECDSA' };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function pool(size: number, acquireTimeoutMs = 50) {
  const module = new FakeModule();
  const sessions = new SessionPool(module as unknown as Pkcs11Module, { size, acquireTimeoutMs, readPin: () => '1234', recoveryIntervalMs: 10 });
  sessions.open();
  return { module, sessions };
}

/** An operation that hangs until `release` is called. */
function hanging() {
  let release!: () => void;
  const done = new Promise<void>((resolve) => (release = resolve));
  return { op: () => done, release };
}

describe('SessionPool', () => {
  it('a call past its deadline leaves its session stuck, replaced at once, and closed when the call returns', async () => {
    const { module, sessions } = pool(2);
    const stall = hanging();
    await expect(sessions.withSession(label, stall.op)).rejects.toMatchObject({ errorClass: 'timeout' });
    expect(sessions.stats).toMatchObject({ live: 2, stuck: 1, idle: 2 });
    expect(module.open.size).toBe(3);
    stall.release();
    await sleep(0);
    expect(sessions.stats).toMatchObject({ live: 2, stuck: 0, idle: 2 });
    expect(module.open.size).toBe(2);
  });

  it('never opens more than 2 x size sessions for a hung token, and makes the pool whole when calls return', async () => {
    const { module, sessions } = pool(2);
    const stalls = Array.from({ length: 6 }, () => hanging());
    for (const stall of stalls) await sessions.withSession(label, stall.op).catch(() => undefined);
    expect(module.open.size).toBeLessThanOrEqual(4);
    for (const stall of stalls) stall.release();
    await sleep(0);
    expect(sessions.stats).toMatchObject({ live: 2, stuck: 0 });
    expect(module.open.size).toBe(2);
  });

  it('stays whole after a stall, a token failure and recovery, and another stall', async () => {
    const { module, sessions } = pool(2);
    const first = [hanging(), hanging()];
    await Promise.all(first.map((stall) => sessions.withSession(label, stall.op).catch(() => undefined)));
    await expect(
      sessions.withSession(label, () => {
        throw new TokenError('unavailable', 'device error', 'CKR_DEVICE_ERROR', 0x30);
      }),
    ).rejects.toMatchObject({ errorClass: 'unavailable' });
    expect(sessions.state).toBe('down');
    await sleep(30);
    expect(sessions.state).toBe('up');
    const second = hanging();
    await sessions.withSession(label, second.op).catch(() => undefined);
    for (const stall of [...first, second]) stall.release();
    await sleep(0);
    expect(sessions.stats).toMatchObject({ live: 2, stuck: 0, idle: 2 });
    expect(module.open.size).toBe(2);
    expect(await sessions.withSession(label, () => 'ok')).toBe('ok');
  });

  it('a lease that arrives with almost none of its deadline left is not started', async () => {
    const { sessions } = pool(1, 100);
    let started = 0;
    const holder = sessions.withSession(label, () => sleep(90));
    const late = sessions.withSession(label, () => {
      started++;
      return 'late';
    });
    await expect(late).rejects.toMatchObject({ errorClass: 'busy' });
    await holder;
    expect(started).toBe(0);
    expect(sessions.stats).toMatchObject({ live: 1, stuck: 0, idle: 1 });
  });
});
