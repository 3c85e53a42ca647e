/**
 * A fixed pool of read-write sessions, one operation in flight per session.
 *
 * Invariants:
 * - a session is either idle (in `idle`) or leased to exactly one caller; `withSession` returns
 *   it in `finally`, so no path leaks one;
 * - a session whose operation failed is closed and replaced, never returned: it may be stuck
 *   between C_*Init and its final call (CKR_OPERATION_ACTIVE);
 * - a session/device error marks the pool down: waiters get a 503 at once, every session of the
 *   old generation is closed when its lease ends, and a recovery loop reconnects (log in again,
 *   reopen sessions) and tells the token to look its key handles up again;
 * - every `withSession` ends by its deadline (acquire and operation together): a call that
 *   outlives it leaves its session "stuck": that session is never handed out again, is closed
 *   when the call finally returns, and a replacement is opened meanwhile (the pool keeps `size`
 *   usable sessions of the current generation while open sessions, stuck ones included, stay
 *   under 2 x size: a hung token cannot make it open sessions without bound, and every session
 *   that frees up is made good again);
 * - a lease that comes with too little of its deadline left is handed on, not used: a call
 *   begun only to be abandoned wastes a session and the token's work;
 * - the module is finalized only when no asynchronous call is in flight (finalizing under one
 *   crashed the process in every trial).
 */
import { performance } from 'node:perf_hooks';
import { pkcs11OperationDuration, tokenErrors } from '../metrics.js';
import { TokenError, toTokenError } from './errors.js';
import type { Handle, Pkcs11Module } from './module.js';

/** Names an operation for metrics: both values come from fixed sets. */
export interface OperationLabel {
  operation: string;
  mechanism: string;
}

export interface SessionPoolOptions {
  size: number;
  acquireTimeoutMs: number;
  /** Reads the user PIN when the pool must log in again; never kept in a field. */
  readPin: () => string;
  /** How often a pool that is down tries to reconnect. */
  recoveryIntervalMs?: number;
  onDown?: (error: TokenError) => void;
  onRecovered?: () => void;
  onRecoveryFailed?: (error: TokenError) => void;
}

interface Lease {
  session: Handle;
  generation: number;
  /** Set when the caller gave up on the call running on this session. */
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

export class SessionPool {
  private idle: Lease[] = [];
  private waiters: Waiter[] = [];
  private generation = 0;
  /** Leases not yet ended, stuck ones included: the module must not be finalized under them. */
  private leased = 0;
  private stuck = 0;
  /** Usable (not stuck) open sessions of the current generation, idle or leased. */
  private live = 0;
  private recoveryTimer: NodeJS.Timeout | undefined;
  private recoveryAttempts = 0;
  private drained: (() => void) | undefined;
  state: PoolState = 'down';

  constructor(
    private readonly module: Pkcs11Module,
    private readonly options: SessionPoolOptions,
  ) {}

  /** Opens every session. The module must be logged in. */
  open(): void {
    for (let i = 0; i < this.options.size; i++) this.idle.push({ session: this.module.openSession(), generation: this.generation });
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

  /**
   * Runs `operation` on a leased session, all within `timeoutMs` (default: the acquire
   * timeout) from the call. Any failure inside it discards the session; a session/device
   * failure also marks the pool down. Errors come out as TokenError.
   */
  async withSession<T>(label: OperationLabel, operation: (session: Handle) => Promise<T> | T, timeoutMs = this.options.acquireTimeoutMs): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    const lease = await this.acquire(timeoutMs);
    if (deadline - performance.now() < Math.min(MIN_OPERATION_BUDGET_MS, timeoutMs / 4)) {
      this.release(lease, undefined);
      tokenErrors.inc({ ckr: 'POOL_TIMEOUT' });
      throw new TokenError('busy', `Every token session stayed busy for nearly ${timeoutMs} ms`, 'POOL_TIMEOUT', undefined);
    }
    const started = performance.now();
    let settled = false;
    const running = (async () => operation(lease.session))().then(
      (value) => {
        settled = true;
        pkcs11OperationDuration.observe(label, (performance.now() - started) / 1000);
        this.release(lease, undefined);
        return value;
      },
      (error: unknown) => {
        settled = true;
        const failure = toTokenError(error, label.operation);
        tokenErrors.inc({ ckr: failure.ckr });
        this.release(lease, failure);
        throw failure;
      },
    );
    const remaining = deadline - performance.now();
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        if (settled) return;
        this.abandon(lease);
        tokenErrors.inc({ ckr: 'OPERATION_TIMEOUT' });
        reject(new TokenError('timeout', `The token did not answer ${label.operation} within ${timeoutMs} ms`, 'OPERATION_TIMEOUT', undefined));
      }, Math.max(remaining, 0));
    });
    try {
      return await Promise.race([running, expired]);
    } finally {
      clearTimeout(timer);
      // A stuck call's late failure has nobody left to catch it.
      running.catch(() => undefined);
    }
  }

  private acquire(timeoutMs: number): Promise<Lease> {
    if (this.state !== 'up') {
      tokenErrors.inc({ ckr: 'POOL_DOWN' });
      return Promise.reject(this.unavailable());
    }
    const lease = this.idle.pop();
    if (lease) {
      this.leased++;
      return Promise.resolve(lease);
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          tokenErrors.inc({ ckr: 'POOL_TIMEOUT' });
          reject(new TokenError('busy', `Every token session stayed busy for ${timeoutMs} ms`, 'POOL_TIMEOUT', undefined));
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /**
   * The caller stopped waiting for the call on this session. The session may be mid-operation
   * or wedged: it is never handed out again, and another one takes its place while the stuck
   * ones number no more than the pool's size.
   */
  private abandon(lease: Lease): void {
    lease.stuck = true;
    this.stuck++;
    if (lease.generation === this.generation) this.live--;
    this.topUp();
  }

  /** Opens sessions until `size` are usable, within the bound on open sessions. */
  private topUp(): void {
    while (this.state === 'up' && this.live < this.options.size && this.live + this.stuck < 2 * this.options.size) {
      try {
        const session = this.module.openSession();
        this.live++;
        this.handOut({ session, generation: this.generation });
      } catch (error) {
        this.markDown(toTokenError(error, 'C_OpenSession'));
      }
    }
  }

  private release(lease: Lease, failure: TokenError | undefined): void {
    this.leased--;
    // A late failure from an older generation says nothing about the token reconnected since.
    if (failure?.errorClass === 'unavailable' && lease.generation === this.generation) this.markDown(failure);
    if (lease.stuck) {
      this.stuck--;
      this.module.closeSession(lease.session);
      // A replacement skipped while too many sessions were open can be opened now.
      this.topUp();
    } else if (lease.generation !== this.generation || this.state !== 'up') {
      this.module.closeSession(lease.session);
    } else if (failure) {
      this.module.closeSession(lease.session);
      this.live--;
      this.topUp();
    } else {
      this.handOut(lease);
    }
    if (this.leased === 0 && this.drained) this.drained();
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
    this.live = 0;
    for (const lease of this.idle) this.module.closeSession(lease.session);
    this.idle = [];
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
      // First try only new sessions and a new login; re-initialize the module only when that
      // failed before and no asynchronous call could still be running inside it.
      this.module.reconnect(this.options.readPin(), this.recoveryAttempts > 1 && this.leased === 0);
      const fresh: Lease[] = [];
      for (let i = 0; i < this.options.size; i++) fresh.push({ session: this.module.openSession(), generation: this.generation });
      this.idle = fresh;
      this.live = fresh.length;
      this.state = 'up';
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

  /** Whether an asynchronous call may still be running inside the module. */
  get callsInFlight(): number {
    return this.leased;
  }

  /** Waits for every lease to end (bounded by the caller), then closes all sessions. */
  async close(): Promise<void> {
    this.state = 'closed';
    if (this.recoveryTimer) clearTimeout(this.recoveryTimer);
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(this.unavailable());
    }
    if (this.leased > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    for (const lease of this.idle) this.module.closeSession(lease.session);
    this.idle = [];
  }
}
