/**
 * The token thread pool's bookkeeping on fake threads (pure logic; the recovery tests prove the
 * same behaviour on SoftHSM2 through the fault shim, on real worker threads): stuck threads,
 * replacements, the bound on threads, recovery with sessions reopened on first use, and leases
 * too late to be worth starting.
 */
import { describe, expect, it } from 'vitest';
import { TokenError } from '../../../src/pkcs11/errors.js';
import type { TokenNotice, TokenRequest } from '../../../src/pkcs11/token-protocol.js';
import { markThreadBroken, TokenThreadPool, type ThreadModule, type TokenThread } from '../../../src/pkcs11/token-threads.js';

class FakeThread implements TokenThread {
  readonly requests: TokenRequest['op'][] = [];
  retired = false;
  private exit!: () => void;
  readonly exited = new Promise<void>((resolve) => (this.exit = resolve));
  private running: Promise<unknown> = Promise.resolve();

  constructor(private readonly threads: FakeThreads) {}

  call(request: TokenRequest): Promise<unknown> {
    this.requests.push(request.op);
    const result = this.threads.behaviour(request, this);
    this.running = result.catch(() => undefined);
    return result;
  }

  notify(_notice: TokenNotice): void {}

  /** Like a worker: retires once the call running now has returned. */
  retire(): void {
    this.retired = true;
    void this.running.then(() => this.exit());
  }
}

class FakeThreads {
  readonly all: FakeThread[] = [];
  behaviour: (request: TokenRequest, thread: FakeThread) => Promise<unknown> = async () => 'ok';
  /** Set: starting a thread throws, as `new Worker` does when no thread can be made. */
  startFailure: Error | undefined;
  start = (): TokenThread => {
    if (this.startFailure) throw this.startFailure;
    const thread = new FakeThread(this);
    this.all.push(thread);
    return thread;
  };
  get alive(): number {
    return this.all.filter((thread) => !thread.retired).length;
  }
}

const module: ThreadModule = { reconnect: () => undefined, threadInit: () => ({ modulePath: 'fake', slot: new Uint8Array(8), sessionCopies: true, niceness: 0 }) };
const label = { operation: 'sign', mechanism: 'CKM_ECDSA' };
const ping: TokenRequest = { op: 'ping' };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function pool(size: number, acquireTimeoutMs = 50) {
  const threads = new FakeThreads();
  const tokenThreads = new TokenThreadPool(module, { size, acquireTimeoutMs, readPin: () => '1234', recoveryIntervalMs: 10, startThread: threads.start });
  tokenThreads.open();
  return { threads, pool: tokenThreads };
}

/** A call that hangs until `release` is called. */
function hanging() {
  let release!: () => void;
  const done = new Promise<void>((resolve) => (release = resolve));
  return { done, release };
}

describe('TokenThreadPool', () => {
  it('a call past its deadline leaves its thread stuck, replaced at once, and retired when the call returns', async () => {
    const { threads, pool: tokenThreads } = pool(2);
    const stall = hanging();
    threads.behaviour = () => stall.done;
    await expect(tokenThreads.run(label, ping)).rejects.toMatchObject({ errorClass: 'timeout' });
    expect(tokenThreads.stats).toMatchObject({ live: 2, stuck: 1, idle: 2 });
    expect(threads.all).toHaveLength(3);
    expect(tokenThreads.insideModule).toBe(2);
    threads.behaviour = async () => 'ok';
    stall.release();
    await sleep(0);
    expect(tokenThreads.stats).toMatchObject({ live: 2, stuck: 0, idle: 2 });
    expect(threads.alive).toBe(2);
    expect(tokenThreads.insideModule).toBe(0);
  });

  it('never runs more than 2 x size threads for a hung token, and makes the pool whole when calls return', async () => {
    const { threads, pool: tokenThreads } = pool(2);
    const stalls = Array.from({ length: 6 }, () => hanging());
    let next = 0;
    threads.behaviour = () => stalls[next++]!.done;
    for (let i = 0; i < stalls.length; i++) await tokenThreads.run(label, ping).catch(() => undefined);
    expect(threads.all.length).toBeLessThanOrEqual(4);
    threads.behaviour = async () => 'ok';
    for (const stall of stalls) stall.release();
    await sleep(0);
    expect(tokenThreads.stats).toMatchObject({ live: 2, stuck: 0 });
    expect(threads.alive).toBe(2);
    expect(await tokenThreads.run(label, ping)).toBe('ok');
  });

  it('a device error takes the pool down; after recovery each thread reopens its sessions before its next call', async () => {
    const { threads, pool: tokenThreads } = pool(2);
    threads.behaviour = async () => {
      throw Object.assign(new Error('device error'), { code: 0x30 });
    };
    await expect(tokenThreads.run(label, ping)).rejects.toMatchObject({ errorClass: 'unavailable', ckr: 'CKR_DEVICE_ERROR' });
    expect(tokenThreads.state).toBe('down');
    await expect(tokenThreads.run(label, ping)).rejects.toMatchObject({ errorClass: 'unavailable', ckr: 'POOL_DOWN' });
    threads.behaviour = async () => 'ok';
    await sleep(30);
    expect(tokenThreads.state).toBe('up');
    // The same threads, no new ones: each one's first call of the new generation reopens first.
    expect(await tokenThreads.run(label, ping)).toBe('ok');
    expect(await Promise.all([tokenThreads.run(label, ping), tokenThreads.run(label, ping)])).toEqual(['ok', 'ok']);
    expect(threads.all).toHaveLength(2);
    for (const thread of threads.all) expect(thread.requests.filter((op) => op === 'reopen')).toHaveLength(1);
    expect(threads.all.flatMap((thread) => thread.requests).slice(-2)).not.toContain('reopen');
  });

  it('stays whole after a stall, a token failure and recovery, and another stall', async () => {
    const { threads, pool: tokenThreads } = pool(2);
    const first = [hanging(), hanging()];
    let next = 0;
    threads.behaviour = () => first[next++]!.done;
    await Promise.all(first.map(() => tokenThreads.run(label, ping).catch(() => undefined)));
    threads.behaviour = async () => {
      throw new TokenError('unavailable', 'device error', 'CKR_DEVICE_ERROR', 0x30);
    };
    await expect(tokenThreads.run(label, ping)).rejects.toMatchObject({ errorClass: 'unavailable' });
    expect(tokenThreads.state).toBe('down');
    const second = hanging();
    threads.behaviour = async (request) => (request.op === 'reopen' ? undefined : second.done);
    await sleep(30);
    expect(tokenThreads.state).toBe('up');
    await tokenThreads.run(label, ping).catch(() => undefined);
    threads.behaviour = async () => 'ok';
    for (const stall of [...first, second]) stall.release();
    await sleep(0);
    expect(tokenThreads.stats).toMatchObject({ live: 2, stuck: 0, idle: 2 });
    expect(threads.alive).toBe(2);
    expect(await tokenThreads.run(label, ping)).toBe('ok');
  });

  it('an operation failure leaves the thread in the pool; a thread left without a session is replaced', async () => {
    const { threads, pool: tokenThreads } = pool(1);
    threads.behaviour = async () => {
      throw Object.assign(new Error('bad tag'), { code: 0x5 });
    };
    await expect(tokenThreads.run(label, ping)).rejects.toMatchObject({ errorClass: 'operation', ckr: 'CKR_GENERAL_ERROR' });
    expect(threads.all).toHaveLength(1);
    threads.behaviour = async () => {
      throw markThreadBroken(new TokenError('operation', 'the thread failed', 'THREAD_FAILED', undefined));
    };
    await expect(tokenThreads.run(label, ping)).rejects.toMatchObject({ ckr: 'THREAD_FAILED' });
    expect(threads.all).toHaveLength(2);
    expect(threads.all[0]!.retired).toBe(true);
    threads.behaviour = async () => 'ok';
    expect(await tokenThreads.run(label, ping)).toBe('ok');
    expect(tokenThreads.stats).toMatchObject({ state: 'up', live: 1, idle: 1 });
  });

  it('an operation that throws before it returns a promise is a failure like any other: the thread goes back to the pool', async () => {
    const { pool: tokenThreads } = pool(1);
    await expect(
      tokenThreads.withThread(label, () => {
        throw Object.assign(new Error('bad arguments'), { code: 0x7 });
      }),
    ).rejects.toMatchObject({ errorClass: 'operation', ckr: 'CKR_ARGUMENTS_BAD' });
    expect(tokenThreads.stats).toMatchObject({ state: 'up', live: 1, idle: 1, busy: 0 });
  });

  it('an operation that answers without a promise still ends its lease (a caller outside the types)', async () => {
    const { pool: tokenThreads } = pool(1);
    const plain = (() => 'plain') as unknown as (thread: TokenThread) => Promise<string>;
    expect(await tokenThreads.withThread(label, plain)).toBe('plain');
    expect(tokenThreads.stats).toMatchObject({ live: 1, idle: 1, busy: 0, stuck: 0 });
  });

  it('a replacement thread that cannot start fails the call that needed it, at once, without a rejection left unobserved', async () => {
    const { threads, pool: tokenThreads } = pool(1, 1000);
    threads.behaviour = async () => {
      throw markThreadBroken(new TokenError('operation', 'the thread failed', 'THREAD_FAILED', undefined));
    };
    threads.startFailure = new Error('cannot start a worker thread');
    // Vitest fails the run on an unhandled rejection; the caller must get an answer, not wait out its deadline.
    const started = performance.now();
    await expect(tokenThreads.run(label, ping)).rejects.toThrow('cannot start a worker thread');
    expect(performance.now() - started).toBeLessThan(500);
    expect(threads.all[0]!.retired).toBe(true);
  });

  it('a lease that arrives with almost none of its deadline left is not started', async () => {
    const { threads, pool: tokenThreads } = pool(1, 100);
    let started = 0;
    threads.behaviour = async () => {
      started++;
      await sleep(90);
      return 'first';
    };
    const holder = tokenThreads.run(label, ping);
    const late = tokenThreads.run(label, ping);
    await expect(late).rejects.toMatchObject({ errorClass: 'busy' });
    await holder;
    expect(started).toBe(1);
    expect(tokenThreads.stats).toMatchObject({ live: 1, stuck: 0, idle: 1 });
  });

  it('close waits for the calls in flight and every thread to exit before the module may be finalized', async () => {
    const { threads, pool: tokenThreads } = pool(2);
    const stall = hanging();
    threads.behaviour = () => stall.done;
    const call = tokenThreads.withThread(label, (thread) => thread.call(ping), 1000);
    let closed = false;
    const closing = tokenThreads.close().then(() => (closed = true));
    await sleep(10);
    expect(closed).toBe(false);
    expect(tokenThreads.insideModule).toBeGreaterThan(0);
    stall.release();
    await call;
    await closing;
    expect(tokenThreads.insideModule).toBe(0);
    expect(threads.alive).toBe(0);
  });
});
