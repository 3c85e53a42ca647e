/**
 * Request rate limits and login throttling, all in memory, per process. With several worker
 * processes (server.httpWorkers) and several replicas behind a load balancer, each process
 * counts only what it serves itself: a client spread over R replicas of N workers each can
 * reach up to R × N × each configured figure (per identity, per address, and failed logins
 * per clientId and per address). Keeping them local is deliberate: a shared counter would put
 * a store round trip in front of every request, and these limits exist to blunt floods and
 * guessing, not to meter usage exactly.
 *
 * The request limits are token buckets: `burst` requests at once, refilled at `perSecond`.
 * One is keyed by identity (after authentication); the other by client address
 * (client-address.ts), in front of every API route and before authentication, so a flood
 * without credentials is refused before it costs a token lookup or a body parse.
 *
 * Login throttling counts failed logins per clientId and per client address in a fixed
 * window; past the limit every login for that clientId or address is a 429 until the window
 * that started with the first failure has passed, so guessing a secret costs the attacker the
 * window, not just a scrypt.
 */
import type { RequestHandler } from 'express';
import { rateLimitExceeded } from '../errors.js';
import { rateLimited } from '../metrics.js';
import { clientAddressOf } from './client-address.js';
import { principalOf } from './request-context.js';

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** Buckets idle this long are full again, so they can be dropped. */
const SWEEP_EVERY_MS = 60_000;
/** Bounded memory under a flood from many addresses: past this many buckets, the oldest go. */
const MAX_BUCKETS = 100_000;

/**
 * Token buckets by key; `take` answers 0 when a request may pass, else the seconds to wait.
 * A dropped bucket (idle, or evicted past MAX_BUCKETS) starts full again, which is what it
 * would have refilled to anyway for an idle key.
 */
class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private lastSweep = Date.now();
  private readonly refillMs: number;

  constructor(private readonly perSecond: number, private readonly burst: number) {
    this.refillMs = (burst / perSecond) * 1000;
  }

  take(key: string): number {
    const now = Date.now();
    if (now - this.lastSweep > SWEEP_EVERY_MS) {
      for (const [id, bucket] of this.buckets) if (now - bucket.updatedAt > this.refillMs) this.buckets.delete(id);
      this.lastSweep = now;
    }
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= MAX_BUCKETS) {
        let drop = MAX_BUCKETS / 10;
        for (const id of this.buckets.keys()) {
          this.buckets.delete(id);
          if (--drop === 0) break;
        }
      }
      bucket = { tokens: this.burst, updatedAt: now };
      this.buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.perSecond);
      bucket.updatedAt = now;
    }
    if (bucket.tokens < 1) return Math.max(1, Math.ceil((1 - bucket.tokens) / this.perSecond));
    bucket.tokens -= 1;
    return 0;
  }
}

export function identityRateLimit(options: { perSecond: number; burst: number }): RequestHandler {
  if (options.perSecond <= 0) return (_req, _res, next) => next();
  const buckets = new TokenBuckets(options.perSecond, options.burst);
  return (_req, res, next) => {
    const waitSeconds = buckets.take(principalOf(res).identityId);
    if (waitSeconds === 0) return next();
    rateLimited.inc({ reason: 'identity' });
    next(rateLimitExceeded(`Rate limit of ${options.perSecond} requests per second for this identity exceeded; retry in ${waitSeconds} s`, waitSeconds, 'identity'));
  };
}

/** The per-address limit, before authentication; perSecond 0 turns it off. */
export function addressRateLimit(options: { perSecond: number; burst: number }): RequestHandler {
  if (options.perSecond <= 0) return (_req, _res, next) => next();
  const buckets = new TokenBuckets(options.perSecond, options.burst);
  return (_req, res, next) => {
    const waitSeconds = buckets.take(clientAddressOf(res));
    if (waitSeconds === 0) return next();
    rateLimited.inc({ reason: 'address' });
    next(rateLimitExceeded(`Rate limit of ${options.perSecond} requests per second for this client address exceeded; retry in ${waitSeconds} s`, waitSeconds, 'address'));
  };
}

interface FailureWindow {
  failures: number;
  startedAt: number;
}

export interface LoginThrottleOptions {
  maxFailuresPerClient: number;
  maxFailuresPerAddress: number;
  windowSeconds: number;
}

export class LoginThrottle {
  private readonly byClient = new Map<string, FailureWindow>();
  private readonly byAddress = new Map<string, FailureWindow>();

  constructor(private readonly options: LoginThrottleOptions) {}

  /** Throws a 429 when this clientId or address has failed too often in the current window. */
  check(clientId: string, address: string): void {
    const now = Date.now();
    const client = this.current(this.byClient, clientId, now);
    const from = this.current(this.byAddress, address, now);
    const blocked =
      (client && client.failures >= this.options.maxFailuresPerClient && client) || (from && from.failures >= this.options.maxFailuresPerAddress && from);
    if (!blocked) return;
    rateLimited.inc({ reason: 'login' });
    const waitSeconds = Math.max(1, Math.ceil((blocked.startedAt + this.options.windowSeconds * 1000 - now) / 1000));
    throw rateLimitExceeded(`Too many failed logins; retry in ${waitSeconds} s`, waitSeconds, 'login');
  }

  /**
   * Counts an attempt as failed before its secret is checked, so that concurrent guesses all
   * count against the limit (checking first and counting after the scrypt let 40 parallel
   * guesses through a limit of 5).
   */
  attempting(clientId: string, address: string): void {
    const now = Date.now();
    this.bump(this.byClient, clientId, now);
    this.bump(this.byAddress, address, now);
  }

  /** A good login clears its clientId's count and takes its attempt back from the address's. */
  succeeded(clientId: string, address: string): void {
    this.byClient.delete(clientId);
    const from = this.byAddress.get(address);
    if (from && from.failures > 0) from.failures--;
  }

  private current(map: Map<string, FailureWindow>, key: string, now: number): FailureWindow | undefined {
    const window = map.get(key);
    if (window && now - window.startedAt >= this.options.windowSeconds * 1000) {
      map.delete(key);
      return undefined;
    }
    return window;
  }

  private bump(map: Map<string, FailureWindow>, key: string, now: number): void {
    const window = this.current(map, key, now);
    if (window) window.failures++;
    else {
      // Bounded memory under a flood of made-up client ids: drop the oldest windows.
      if (map.size >= 100_000) for (const oldest of [...map.keys()].slice(0, 10_000)) map.delete(oldest);
      map.set(key, { failures: 1, startedAt: now });
    }
  }
}
