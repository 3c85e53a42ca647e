import { describe, expect, it } from 'vitest';
import { newSerialNumber } from '../../../src/pki/serial.js';
import { parseTtl } from '../../../src/pki/ttl.js';

describe('ttl', () => {
  it('reads the ms notation', () => {
    expect(parseTtl('90d')).toBe(90 * 86_400_000);
    expect(parseTtl('24h')).toBe(24 * 3_600_000);
    expect(parseTtl('30m')).toBe(30 * 60_000);
    expect(parseTtl('1y')).toBe(365.25 * 86_400_000);
    expect(parseTtl('2 days')).toBe(2 * 86_400_000);
  });
  it('refuses what is not a duration', () => {
    for (const bad of ['', 'abc', '-1d', '10', '0s', '1ms', '1e9d x', 'd', '1 fortnight']) expect(parseTtl(bad)).toBeUndefined();
  });
});

describe('serial numbers', () => {
  it('are 20 bytes, positive, with a first byte of at least 0x10, and differ', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const serial = newSerialNumber();
      expect(serial.length).toBe(20);
      expect(serial[0]! & 0x80).toBe(0);
      expect(serial[0]).not.toBe(0);
      // No leading zero digit in the hex the API returns.
      expect(serial.toString('hex')).toMatch(/^[1-7]/);
      seen.add(serial.toString('hex'));
    }
    expect(seen.size).toBe(2000);
  });
});
