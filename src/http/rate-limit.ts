/**
 * Per-identity request rate limits and login throttling, both in memory (one process owns the
 * token, so there is one process to count in).
 *
 * The request limit is a token bucket per identity: `burst` requests at once, refilled at
 * `perSecond`. Login throttling counts failed logins per clientId and per client address in a
 * fixed window; past the limit every login for that clientId or address is a 429 until the
 * window that started with the first failure has passed, so guessing a secret costs the
 * attacker the window, not just a scrypt.
 */
import type { RequestHandler } from 'express';
import { rateLimitExceeded } from '../errors.js';
import { rateLimited } from '../metrics.js';
import { principalOf } from './request-context.js';

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** Buckets of identities idle this long are full again, so they can be dropped. */
const SWEEP_EVERY_MS = 60_000;

export function identityRateLimit(options: { perSecond: number; burst: number }): RequestHandler {
  if (options.perSecond <= 0) return (_req, _res, next) => next();
  const buckets = new Map<string, Bucket>();
  let lastSweep = Date.now();
  const refillMs = (options.burst / options.perSecond) * 1000;

  return (_req, res, next) => {
    const now = Date.now();
    if (now - lastSweep > SWEEP_EVERY_MS) {
      for (const [id, bucket] of buckets) if (now - bucket.updatedAt > refillMs) buckets.delete(id);
      lastSweep = now;
    }
    const identityId = principalOf(res).identityId;
    let bucket = buckets.get(identityId);
    if (!bucket) {
      bucket = { tokens: options.burst, updatedAt: now };
      buckets.set(identityId, bucket);
    } else {
      bucket.tokens = Math.min(options.burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * options.perSecond);
      bucket.updatedAt = now;
    }
    if (bucket.tokens < 1) {
      rateLimited.inc({ reason: 'identity' });
      const waitSeconds = Math.max(1, Math.ceil((1 - bucket.tokens) / options.perSecond));
      return next(rateLimitExceeded(`Rate limit of ${options.perSecond} requests per second for this identity exceeded; retry in ${waitSeconds} s`, waitSeconds));
    }
    bucket.tokens -= 1;
    next();
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
    throw rateLimitExceeded(`Too many failed logins; retry in ${waitSeconds} s`, waitSeconds);
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
