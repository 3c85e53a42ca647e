/**
 * The client address (src/http/client-address.ts) through Express's own req.ip with the
 * service's trust function: peer vs X-Forwarded-For, trusted hops skipped from the right,
 * malformed entries, IPv4-mapped peers, and the configuration's refusals.
 */
import express, { type Request } from 'express';
import { describe, expect, it } from 'vitest';
import { normalizeAddress, resolveClientAddress, trustedProxyList, trustFunction } from '../../../src/http/client-address.js';
import { loadConfig } from '../../../src/config/load.js';

/** A request as Express sees it (its prototype is the app's request), from `peer` with these headers. */
function requestFrom(trusted: string[], peer: string | undefined, forwardedFor?: string): Request {
  const app = express();
  if (trusted.length > 0) app.set('trust proxy', trustFunction(trustedProxyList(trusted)));
  const req = Object.create(app.request) as Request & { app: express.Express };
  Object.assign(req, { app, headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor }, socket: { remoteAddress: peer }, connection: { remoteAddress: peer } });
  return req;
}

const addressOf = (trusted: string[], peer: string | undefined, forwardedFor?: string) => resolveClientAddress(requestFrom(trusted, peer, forwardedFor), trusted.length > 0);

describe('client address', () => {
  const PROXIES = ['10.0.0.0/8', '2001:db8:1::/48', '192.168.1.5'];

  it('is the peer when no proxy is trusted, whatever X-Forwarded-For says', () => {
    expect(addressOf([], '198.51.100.7', '203.0.113.1')).toBe('198.51.100.7');
    expect(addressOf([], '::ffff:198.51.100.7', '203.0.113.1')).toBe('198.51.100.7');
    expect(addressOf([], undefined, '203.0.113.1')).toBe('unknown');
  });

  it('is the peer when the peer is not a trusted proxy', () => {
    expect(addressOf(PROXIES, '198.51.100.7', '203.0.113.1')).toBe('198.51.100.7');
    expect(addressOf(PROXIES, '11.0.0.1', '203.0.113.1')).toBe('11.0.0.1');
  });

  it('from a trusted peer, is the first untrusted address from the right', () => {
    expect(addressOf(PROXIES, '10.1.2.3', '203.0.113.1')).toBe('203.0.113.1');
    // A client's own made-up entry on the left does not count: the proxy appended the real one.
    expect(addressOf(PROXIES, '10.1.2.3', '1.1.1.1, 203.0.113.1')).toBe('203.0.113.1');
    // Trusted hops are skipped, IPv4 and IPv6, subnet and single address.
    expect(addressOf(PROXIES, '10.1.2.3', '1.1.1.1, 203.0.113.1, 192.168.1.5, 2001:db8:1::9, 10.9.9.9')).toBe('203.0.113.1');
    expect(addressOf(PROXIES, '2001:db8:1:ff::1', '2001:db8:99::1')).toBe('2001:db8:99::1');
    // Without the header, or with every hop trusted, the furthest known address.
    expect(addressOf(PROXIES, '10.1.2.3')).toBe('10.1.2.3');
    expect(addressOf(PROXIES, '10.1.2.3', '10.0.0.9')).toBe('10.0.0.9');
    // 192.168.1.5 is trusted, its neighbour is not.
    expect(addressOf(PROXIES, '192.168.1.6', '203.0.113.1')).toBe('192.168.1.6');
  });

  it('matches IPv4-mapped IPv6 peers and entries against IPv4 ranges, and reports them as IPv4', () => {
    expect(addressOf(PROXIES, '::ffff:10.0.0.1', '203.0.113.1')).toBe('203.0.113.1');
    expect(addressOf(PROXIES, '::ffff:10.0.0.1', '::ffff:203.0.113.1')).toBe('203.0.113.1');
    expect(addressOf(PROXIES, '::ffff:10.0.0.1', '203.0.113.1, ::ffff:10.2.2.2')).toBe('203.0.113.1');
    expect(addressOf(['::ffff:10.0.0.0/104'], '10.0.0.1', '203.0.113.1')).toBe('203.0.113.1');
    expect(normalizeAddress('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(normalizeAddress('::1')).toBe('::1');
  });

  it('falls back to the peer when the entry that would count is malformed', () => {
    for (const header of ['garbage', '203.0.113.1:443', '1.2.3.4, not-an-ip', '999.1.1.1', '[2001:db8::1]', 'unknown', ',,,', 'fe80::1%eth0, x']) {
      expect(addressOf(PROXIES, '10.1.2.3', header), header).toBe('10.1.2.3');
    }
    // A malformed entry left of the one that counts does not matter.
    expect(addressOf(PROXIES, '10.1.2.3', 'garbage, 203.0.113.1')).toBe('203.0.113.1');
  });

  it('refuses a bad trustedProxies entry at start, naming it', () => {
    for (const bad of ['10.0.0.0/33', 'not-an-ip', '10.0.0.0/', '10.0.0.0/8x', '::/129', 'example.com']) {
      expect(() => trustedProxyList([bad]), bad).toThrow(new RegExp(`server.trustedProxies entry "${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}"`));
      expect(() => loadConfig({}, { TRUSTED_PROXIES: `10.0.0.0/8, ${bad}` }), bad).toThrow(/Invalid configuration: server.trustedProxies/);
    }
    expect(loadConfig({}, { TRUSTED_PROXIES: '10.0.0.0/8, ::1, fd00::/8' }).server.trustedProxies).toEqual(['10.0.0.0/8', '::1', 'fd00::/8']);
  });
});
