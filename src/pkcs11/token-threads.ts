/**
 * The token threads: a fixed number of worker threads (token-worker.ts), each owning its own
 * sessions and making one blocking call at a time, so the event loop never waits in PKCS#11.
 * This is the pool the rest of the service leases from.
 *
 * Invariants:
 * - a thread is either idle (in `idle`) or leased to exactly one caller; `withThread` gives it
 *   back when its call settles, whichever way, so no path leaks one;
 * - a call that fails inside the token leaves the thread usable: the thread itself replaces a
 *   session that may still hold an active operation. A thread that says it has no usable
 *   session left is retired and replaced;
 * - a session/device error marks the pool down and starts a new session generation: waiters get
 *   a 503 at once, and a recovery loop reconnects (new anchor session, a new login). The threads
 *   stay; each one's first call of the new generation is preceded, within the same lease and
 *   deadline, by a `reopen` that closes its old sessions, opens new ones and empties its handle
 *   cache, so every key is looked up again. (Starting threads anew at each attempt would cost
 *   far more than the sessions, and an attempt may fail many times while the token is away.);
 * - every `withThread` ends by its deadline (acquire and call together): a call that outlives it
 *   leaves its thread "stuck": that thread is never handed a call again, is told to retire (it
 *   does so when the call returns, since it handles messages in order), and a replacement is
 *   started meanwhile. Usable and stuck threads together stay under 2 x size, so a hung token
 *   cannot make the pool start threads and open sessions without bound;
 * - a lease that comes with too little of its deadline left is handed on, not used: a call begun
 *   only to be abandoned wastes a thread and the token's work;
 * - the module is re-initialized (C_Finalize, C_Initialize) and finalized only when no thread is
 *   inside it: no lease is open and every retired thread has exited (finalizing under a running
 *   call crashed the process in every trial).
 */
import { performance } from 'node:perf_hooks';
import type { Worker } from 'node:worker_threads';
import { pkcs11OperationDuration, tokenErrors } from '../metrics.js';
import { spawnWorker } from '../spawn-worker.js';
import { TokenError, toTokenError } from './errors.js';
import type { Pkcs11Module } from './module.js';
import type { TokenNotice, TokenReply, TokenRequest, TokenThreadInit } from './token-protocol.js';

/** Names an operation for metrics: both values come from fixed sets. */
export interface OperationLabel {
  operation: string;
  mechanism: string;
}

/** One token thread as the pool sees it (a fake in the pool's unit tests). */
export interface TokenThread {
  /** One request; rejects with the token's error (a `code` to classify, or a TokenError). */
  call(request: TokenRequest): Promise<unknown>;
  /** A message handled in order with the calls, without a reply. */
  notify(notice: TokenNotice): void;
  /** Close the thread's sessions and exit, after the call running now if any. */
  retire(): void;
  /** Settles once the thread has exited. */
  readonly exited: Promise<void>;
}

/** The part of the module the pool uses: what a new thread needs, and reconnecting. */
export type ThreadModule = Pick<Pkcs11Module, 'reconnect'> & { threadInit(): TokenThreadInit };

export interface TokenThreadPoolOptions {
  size: number;
  acquireTimeoutMs: number;
  /** Reads the user PIN when the pool must log in again; never kept in a field. */
  readPin: () => string;
  /** How often a pool that is down tries to reconnect. */
  recoveryIntervalMs?: number;
  /** Starts a thread (a worker thread by default; a fake in unit tests). */
  startThread?: (init: TokenThreadInit) => TokenThread;
  onDown?: (error: TokenError) => void;
  onRecovered?: () => void;
  onRecoveryFailed?: (error: TokenError) => void;
}

interface Lease {
  thread: TokenThread;
  /** The session generation the thread's sessions belong to. */
  generation: number;
  /** Set when the caller gave up on the call running on this thread. */
  stuck?: boolean;
}

interface Waiter {
  resolve: (lease: Lease) => void;
  reject: (error: TokenError) => void;
  timer: NodeJS.Timeout;
}

/** `failed`: the token refused the PIN while reconnecting; retrying could lock it, so nothing will. */
export type PoolState = 'up' | 'down' | 'failed' | 'closed';

/** A lease with less than this left of its deadline (or a quarter of it) is not worth starting. */
const MIN_OPERATION_BUDGET_MS = 50;

/** Set on an error whose thread has no usable session left. */
const THREAD_BROKEN = Symbol('threadBroken');

/** Marks an error as coming from a thread that has no usable session left (it is then replaced). */
export function markThreadBroken<E extends Error>(error: E): E {
  return Object.assign(error, { [THREAD_BROKEN]: true });
}

export class TokenThreadPool {
  private idle: Lease[] = [];
  private waiters: Waiter[] = [];
  private generation = 0;
  /** Leases not yet ended, stuck ones included. */
  private leased = 0;
  private stuck = 0;
  /** Usable (not stuck) threads of the current generation, idle or leased. */
  private live = 0;
  /** Threads told to retire that have not exited yet: they may still be inside the module. */
  private retiring = 0;
  private recoveryTimer: NodeJS.Timeout | undefined;
  private recoveryAttempts = 0;
  private quiet: (() => void) | undefined;
  private readonly startThread: (init: TokenThreadInit) => TokenThread;
  state: PoolState = 'down';

  constructor(
    private readonly module: ThreadModule,
    private readonly options: TokenThreadPoolOptions,
  ) {
    this.startThread = options.startThread ?? ((init) => new WorkerTokenThread(init));
  }

  /** Starts every thread. The module must be logged in. */
  open(): void {
    for (let i = 0; i < this.options.size; i++) this.idle.push(this.newLease());
    this.live = this.options.size;
    this.state = 'up';
  }

  get stats(): { size: number; live: number; busy: number; idle: number; waiting: number; stuck: number; state: PoolState } {
    return {
      size: this.options.size,
      live: this.state === 'up' ? this.live : 0,
      busy: this.leased - this.stuck,
      idle: this.idle.length,
      waiting: this.waiters.length,
      stuck: this.stuck,
      state: this.state,
    };
  }

  /** Runs one request on a leased thread, all within `timeoutMs` (default: the acquire timeout). */
  run(label: OperationLabel, request: TokenRequest, timeoutMs?: number): Promise<unknown> {
    return this.withThread(label, (thread) => thread.call(request), timeoutMs);
  }

  /** Brings a thread's sessions to the current generation before its call, within the lease. */
  private async onCurrentSessions(lease: Lease): Promise<void> {
    if (lease.generation === this.generation) return;
    const generation = this.generation;
    await lease.thread.call({ op: 'reopen', slot: this.module.threadInit().slot });
    lease.generation = generation;
  }

  /** Tells every thread of the current generation, busy ones after their call. */
  broadcast(notice: TokenNotice): void {
    for (const lease of this.idle) lease.thread.notify(notice);
    for (const thread of this.busyThreads) thread.notify(notice);
  }

  private readonly busyThreads = new Set<TokenThread>();

  /**
   * Runs `operation` on a leased thread, all within `timeoutMs` from the call. A session/device
   * failure marks the pool down. Errors come out as TokenError.
   */
  withThread<T>(label: OperationLabel, operation: (thread: TokenThread) => Promise<T>, timeoutMs = this.options.acquireTimeoutMs): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    const lease = this.acquire(timeoutMs);
    // This runs once per token operation: an idle thread is leased without an extra turn.
    if (lease instanceof Promise) return lease.then((waited) => this.runLeased(label, operation, waited, deadline, timeoutMs));
    return this.runLeased(label, operation, lease, deadline, timeoutMs);
  }

  /**
   * The call on a leased thread, racing its deadline. The lease always ends when the call
   * settles, also after the deadline has answered the caller (`release` then retires a thread
   * `abandon` marked stuck).
   */
  private runLeased<T>(label: OperationLabel, operation: (thread: TokenThread) => Promise<T>, lease: Lease, deadline: number, timeoutMs: number): Promise<T> {
    if (deadline - performance.now() <= Math.min(MIN_OPERATION_BUDGET_MS, timeoutMs / 4)) {
      this.release(lease, undefined);
      tokenErrors.inc({ ckr: 'POOL_TIMEOUT' });
      return Promise.reject(new TokenError('busy', `Every token thread stayed busy for nearly ${timeoutMs} ms`, 'POOL_TIMEOUT', undefined));
    }
    const started = performance.now();
    this.busyThreads.add(lease.thread);
    const callGeneration = this.generation;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        this.abandon(lease);
        tokenErrors.inc({ ckr: 'OPERATION_TIMEOUT' });
        reject(new TokenError('timeout', `The token did not answer ${label.operation} within ${timeoutMs} ms`, 'OPERATION_TIMEOUT', undefined));
      }, Math.max(deadline - performance.now(), 0));
      let call: Promise<T>;
      try {
        call = lease.generation === callGeneration ? Promise.resolve(operation(lease.thread)) : this.onCurrentSessions(lease).then(() => operation(lease.thread));
      } catch (error) {
        call = Promise.reject(error);
      }
      // After the deadline, resolve and reject below change nothing: the caller has its 503.
      // `ended` must not throw: the caller would wait forever and the rejection go unobserved.
      // What `release` throws (a replacement thread that cannot start, say) is the caller's answer.
      const ended = (endLease: () => void, answer: () => void) => {
        settled = true;
        clearTimeout(timer);
        try {
          endLease();
        } catch (error) {
          reject(error);
          return;
        }
        answer();
      };
      call.then(
        (value) =>
          ended(
            () => {
              pkcs11OperationDuration.observe(label, (performance.now() - started) / 1000);
              this.release(lease, undefined, false, callGeneration);
            },
            () => resolve(value),
          ),
        (error: unknown) => {
          const failure = toTokenError(error, label.operation);
          ended(
            () => {
              tokenErrors.inc({ ckr: failure.ckr });
              this.release(lease, failure, (error as { [THREAD_BROKEN]?: boolean })?.[THREAD_BROKEN] === true, callGeneration);
            },
            () => reject(failure),
          );
        },
      );
    });
  }

  private newLease(): Lease {
    return { thread: this.startThread(this.module.threadInit()), generation: this.generation };
  }

  /** An idle thread's lease at once, or a wait for one (rejected when the pool is not up). */
  private acquire(timeoutMs: number): Lease | Promise<Lease> {
    if (this.state !== 'up') {
      tokenErrors.inc({ ckr: 'POOL_DOWN' });
      return Promise.reject(this.unavailable());
    }
    const lease = this.idle.pop();
    if (lease) {
      this.leased++;
      return lease;
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          tokenErrors.inc({ ckr: 'POOL_TIMEOUT' });
          reject(new TokenError('busy', `Every token thread stayed busy for ${timeoutMs} ms`, 'POOL_TIMEOUT', undefined));
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /**
   * The caller stopped waiting for the call on this thread. The thread may be mid-call or
   * wedged: it never gets another call, retires when the call returns, and another one takes
   * its place while the stuck ones number no more than the pool's size.
   */
  private abandon(lease: Lease): void {
    lease.stuck = true;
    this.stuck++;
    if (lease.generation === this.generation) this.live--;
    this.retire(lease.thread);
    this.topUp();
  }

  /** Starts threads until `size` are usable, within the bound on threads. */
  private topUp(): void {
    while (this.state === 'up' && this.live < this.options.size && this.live + this.stuck < 2 * this.options.size) {
      this.live++;
      this.handOut(this.newLease());
    }
  }

  private retire(thread: TokenThread): void {
    this.retiring++;
    thread.retire();
    void thread.exited.then(() => {
      this.retiring--;
      this.checkQuiet();
    });
  }

  private release(lease: Lease, failure: TokenError | undefined, threadBroken = false, callGeneration = this.generation): void {
    this.leased--;
    this.busyThreads.delete(lease.thread);
    // A late failure from a call begun before the token was reconnected says nothing about it now.
    if (failure?.errorClass === 'unavailable' && callGeneration === this.generation) this.markDown(failure);
    if (lease.stuck) {
      // Told to retire when it was abandoned; a replacement skipped while too many threads
      // were alive can be started now.
      this.stuck--;
      this.topUp();
    } else if (this.state === 'closed') {
      this.retire(lease.thread);
    } else if (threadBroken && failure?.errorClass !== 'unavailable') {
      // No session, for a reason a reconnect would not cure: a new thread instead.
      this.retire(lease.thread);
      this.live--;
      this.topUp();
    } else {
      // Back in the pool even while it is down: its next call reopens its sessions first.
      this.handOut(lease);
    }
    this.checkQuiet();
  }

  private handOut(lease: Lease): void {
    const waiter = this.waiters.shift();
    if (!waiter) {
      this.idle.push(lease);
      return;
    }
    clearTimeout(waiter.timer);
    this.leased++;
    waiter.resolve(lease);
  }

  private unavailable(): TokenError {
    return new TokenError('unavailable', this.state === 'closed' ? 'The token pool is closed' : 'The token is unavailable', 'POOL_DOWN', undefined);
  }

  /** Marks the pool down after a session/device error and starts reconnecting. */
  markDown(cause: TokenError): void {
    if (this.state !== 'up') return;
    this.state = 'down';
    this.generation++;
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      tokenErrors.inc({ ckr: 'POOL_DOWN' });
      waiter.reject(this.unavailable());
    }
    this.options.onDown?.(cause);
    this.recoveryAttempts = 0;
    this.scheduleRecovery();
  }

  private scheduleRecovery(): void {
    if (this.state !== 'down' || this.recoveryTimer) return;
    this.recoveryTimer = setTimeout(() => {
      this.recoveryTimer = undefined;
      this.recover();
    }, this.options.recoveryIntervalMs ?? 200);
    this.recoveryTimer.unref();
  }

  private recover(): void {
    if (this.state !== 'down') return;
    this.recoveryAttempts++;
    try {
      // First try only a new login and new threads; re-initialize the module only when that
      // failed before and no thread could still be inside the module.
      this.module.reconnect(this.options.readPin(), this.recoveryAttempts > 1 && this.insideModule === 0);
      this.state = 'up';
      this.topUp();
      this.options.onRecovered?.();
    } catch (error) {
      const failure = toTokenError(error, 'reconnecting to the token');
      tokenErrors.inc({ ckr: failure.ckr });
      this.options.onRecoveryFailed?.(failure);
      // A wrong PIN now would be retried into a locked token: stop trying, for good.
      if (failure.errorClass === 'fatal-login') {
        this.state = 'failed';
        return;
      }
      this.scheduleRecovery();
    }
  }

  /** Threads that may be inside the module: open leases and retired threads not yet exited. */
  get insideModule(): number {
    return this.leased + this.retiring;
  }

  private checkQuiet(): void {
    if (this.quiet && this.insideModule === 0) this.quiet();
  }

  /**
   * Idle threads are not inside the module: they wait for a message, and their first call of a
   * new generation reopens their sessions. Waits for every lease to end and every thread to exit (bounded by the caller); after it
   * resolves no thread is inside the module, so it may be finalized.
   */
  async close(): Promise<void> {
    this.state = 'closed';
    if (this.recoveryTimer) clearTimeout(this.recoveryTimer);
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(this.unavailable());
    }
    for (const lease of this.idle) this.retire(lease.thread);
    this.idle = [];
    // Leases still open retire their threads when they end (the pool is no longer up).
    if (this.insideModule > 0) await new Promise<void>((resolve) => (this.quiet = resolve));
  }
}

/** A token thread on a real worker thread. */
class WorkerTokenThread implements TokenThread {
  private readonly worker: Worker;
  private nextSeq = 1;
  private pending: { seq: number; resolve: (value: unknown) => void; reject: (error: unknown) => void } | undefined;
  readonly exited: Promise<void>;

  constructor(init: TokenThreadInit) {
    this.worker = spawnWorker(import.meta.url, 'token-worker', { workerData: init });
    // A thread stuck in a call must not keep the process alive once the main thread is done.
    this.worker.unref();
    this.worker.on('message', (reply: TokenReply) => {
      const pending = this.pending;
      if (!pending || pending.seq !== reply.seq) return;
      this.pending = undefined;
      if (reply.ok) pending.resolve(reply.value);
      else pending.reject(errorOf(reply));
    });
    this.worker.on('error', (error) => this.failPending(error));
    this.exited = new Promise((resolve) =>
      this.worker.once('exit', () => {
        this.failPending(new Error('the token thread exited'));
        resolve();
      }),
    );
  }

  call(request: TokenRequest): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const seq = this.nextSeq++;
      this.pending = { seq, resolve, reject };
      this.worker.postMessage({ ...request, seq });
    });
  }

  notify(notice: TokenNotice): void {
    this.worker.postMessage(notice);
  }

  retire(): void {
    this.worker.postMessage({ op: 'retire' } satisfies TokenNotice);
  }

  private failPending(cause: unknown): void {
    const pending = this.pending;
    this.pending = undefined;
    if (!pending) return;
    const error = new TokenError('operation', `The token thread failed: ${(cause as Error)?.message ?? String(cause)}`, 'THREAD_FAILED', undefined, { cause });
    pending.reject(markThreadBroken(error));
  }
}

function errorOf(reply: Extract<TokenReply, { ok: false }>): Error {
  const { failure } = reply;
  let error: Error;
  // The pool classifies the code and names the operation (errors.ts).
  if (failure.kind === 'ckr') error = Object.assign(new Error(failure.message), { code: failure.code });
  else if (failure.kind === 'key-not-found') error = new TokenError('operation', failure.message, 'KEY_NOT_FOUND', undefined);
  else error = new TokenError('operation', failure.message, 'NATIVE_ERROR', undefined);
  return reply.broken ? markThreadBroken(error) : error;
}
