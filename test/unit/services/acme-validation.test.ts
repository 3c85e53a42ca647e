/**
 * The http-01 validator on its own: which addresses count as not public (the SSRF guard), and
 * what it makes of what a real HTTP server on loopback answers (pinned through `resolve`, as
 * acme.resolve does): the key authorization with trailing whitespace, a wrong one, a 404, a
 * redirect (not followed), a server that never answers (the per-attempt deadline), and that it
 * sends `Host: {name}` to the pinned address.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNonPublicAddress, resolveMap, validateHttp01, type Http01Settings } from '../../../src/services/acme-validation.js';

describe('isNonPublicAddress', () => {
  it.each(['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:10.0.0.1', 'not-an-ip'])('%s is not public', (address) => {
    expect(isNonPublicAddress(address)).toBe(true);
  });
  it.each(['8.8.8.8', '1.1.1.1', '172.32.0.1', '2001:4860:4860::8888', '::ffff:8.8.8.8'])('%s is public', (address) => {
    expect(isNonPublicAddress(address)).toBe(false);
  });
});

describe('validateHttp01', () => {
  let server: Server;
  let settings: Http01Settings;
  const seen: Array<{ host: string | undefined; url: string | undefined }> = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push({ host: req.headers.host, url: req.url });
      const token = req.url?.split('/').pop();
      if (token === 'good') return res.end('good.thumb \r\n');
      if (token === 'wrong') return res.end('good.other');
      if (token === 'moved') return res.writeHead(302, { location: 'http://elsewhere/' }).end();
      if (token === 'silent') return; // never answers
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    settings = { port: (server.address() as AddressInfo).port, resolve: resolveMap(['pinned.test:127.0.0.1']), allowPrivateAddresses: false, timeoutMs: 300, attempts: 2, retryDelayMs: 10 };
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('accepts the key authorization (trailing whitespace ignored), asking the pinned address with Host: name', async () => {
    seen.length = 0;
    expect(await validateHttp01('Pinned.test', 'good', 'good.thumb', settings)).toBeUndefined();
    expect(seen).toEqual([{ host: 'Pinned.test', url: '/.well-known/acme-challenge/good' }]);
  });

  it('a wrong body is incorrectResponse, a 404 and a redirect unauthorized (not followed), silence a connection problem; each after every attempt', async () => {
    seen.length = 0;
    expect(await validateHttp01('pinned.test', 'wrong', 'good.thumb', settings)).toMatchObject({ type: 'urn:ietf:params:acme:error:incorrectResponse' });
    expect(seen).toHaveLength(2);
    expect(await validateHttp01('pinned.test', 'missing', 'x', settings)).toMatchObject({ type: 'urn:ietf:params:acme:error:unauthorized', detail: expect.stringContaining('answered 404') });
    expect(await validateHttp01('pinned.test', 'moved', 'x', settings)).toMatchObject({ detail: expect.stringContaining('redirects are not followed') });
    const started = Date.now();
    expect(await validateHttp01('pinned.test', 'silent', 'x', settings)).toMatchObject({ type: 'urn:ietf:params:acme:error:connection', detail: expect.stringContaining('did not answer within 300 ms') });
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('a name found in DNS on loopback is refused without a request, once; allowed with allowPrivateAddresses', async () => {
    seen.length = 0;
    const refused = await validateHttp01('localhost', 'good', 'good.thumb', settings);
    expect(refused).toMatchObject({ type: 'urn:ietf:params:acme:error:connection', detail: expect.stringMatching(/localhost resolves to (127\.0\.0\.1|::1), which is not a public address/) });
    expect(seen).toEqual([]);
    // With private addresses allowed the request goes out (to whichever loopback address DNS gave first).
    const allowed = await validateHttp01('localhost', 'good', 'good.thumb', { ...settings, allowPrivateAddresses: true, attempts: 1 });
    if (allowed === undefined) expect(seen).toHaveLength(1);
    else expect(allowed.detail).toMatch(/::1|refused|ECONNREFUSED/);
  });
});
