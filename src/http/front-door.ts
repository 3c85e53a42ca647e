/**
 * The first step of every request on every listener (the API port, the ops port, the cluster
 * primary's ops port): client address, request id, security headers, draining.
 */
import type { RequestHandler } from 'express';
import { resolveClientAddress } from './client-address.js';
import { requestIdFrom } from './request-context.js';

/**
 * An API of JSON and DER: no page may frame it, run script from it, or sniff its types. These
 * are the headers (names and values) helmet 8 set with this service's options
 * (`contentSecurityPolicy: {useDefaults: false, directives: {defaultSrc: ["'none'"],
 * frameAncestors: ["'none'"]}}, frameguard: {action: 'deny'}`), fixed here once instead of
 * being worked out by helmet on every request.
 */
export const SECURITY_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['Content-Security-Policy', "default-src 'none';frame-ancestors 'none'"],
  ['Cross-Origin-Opener-Policy', 'same-origin'],
  ['Cross-Origin-Resource-Policy', 'same-origin'],
  ['Origin-Agent-Cluster', '?1'],
  ['Referrer-Policy', 'no-referrer'],
  ['Strict-Transport-Security', 'max-age=31536000; includeSubDomains'],
  ['X-Content-Type-Options', 'nosniff'],
  ['X-DNS-Prefetch-Control', 'off'],
  ['X-Download-Options', 'noopen'],
  ['X-Frame-Options', 'DENY'],
  ['X-Permitted-Cross-Domain-Policies', 'none'],
  ['X-XSS-Protection', '0'],
];

/**
 * What every request gets before anything else, in one step: its client address
 * (client-address.ts), its id (echoed as X-Request-Id), the security headers, and while
 * draining `Connection: close`, so clients reconnect elsewhere.
 */
export function frontDoor(draining: () => boolean, trustsProxies: boolean): RequestHandler {
  return (req, res, next) => {
    res.locals.clientAddress = resolveClientAddress(req, trustsProxies);
    const given = req.headers['x-request-id'];
    const id = requestIdFrom(typeof given === 'string' ? given : given?.[0]);
    res.locals.reqId = id;
    res.setHeader('X-Request-Id', id);
    for (const [name, value] of SECURITY_HEADERS) res.setHeader(name, value);
    if (draining()) res.setHeader('Connection', 'close');
    next();
  };
}

