/**
 * Certificate lifetimes in the `ms` notation Infisical's API takes ("90d", "24h", "30m" for
 * minutes, "1y" for 365.25 days). Parsed by the `ms` package itself, so a ttl means here what
 * it means to Infisical's clients.
 */
import ms from 'ms';

/** Milliseconds, or undefined when `ttl` is not a positive duration in that notation. */
export function parseTtl(ttl: string): number | undefined {
  const trimmed = ttl.trim();
  // A bare number would mean milliseconds to `ms`; a certificate ttl always names its unit.
  if (!/^\d+(?:\.\d+)?\s*[a-zA-Z]+$/.test(trimmed)) return undefined;
  const value = ms(trimmed as ms.StringValue);
  return typeof value === 'number' && Number.isFinite(value) && value >= 1000 ? value : undefined;
}

/** Seconds precision: certificates carry whole seconds, and "ttl to the second" means this. */
export const wholeSecond = (ms: number) => new Date(Math.floor(ms / 1000) * 1000);
