/**
 * Who the client is, for login throttling, the per-address limit and the audit trail's
 * `client_address`: the TCP peer, unless the peer is a trusted proxy (server.trustedProxies).
 * Then X-Forwarded-For is walked from the right, skipping trusted addresses, and the first
 * untrusted one counts. That walk is Express's own `trust proxy` (proxy-addr) given a function
 * over a node:net BlockList; what it cannot do is refuse a malformed entry (it hands back any
 * text a proxy forwarded), so an answer that is not an IP address falls back to the peer: a
 * client must never choose its throttling key or audited address by sending garbage.
 *
 * IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack listener reports for IPv4
 * peers) match IPv4 entries (BlockList checks them both ways) and are reported as plain IPv4,
 * so one client has one key whichever way it connected.
 */
import { BlockList, isIP } from 'node:net';
import type { Request, Response } from 'express';

/**
 * Parses server.trustedProxies: each entry an IPv4 or IPv6 address or CIDR. Throws an Error
 * naming the first bad entry, for the operator.
 */
export function trustedProxyList(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const raw of entries) {
    const entry = raw.trim();
    const slash = entry.indexOf('/');
    const address = slash < 0 ? entry : entry.slice(0, slash);
    const family = isIP(address);
    const bad = (why: string) => new Error(`Invalid configuration: server.trustedProxies entry "${raw}" ${why} (expected an IPv4 or IPv6 address or CIDR, e.g. 10.0.0.0/8 or fd00::/8)`);
    if (family === 0) throw bad('is not an IP address');
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (slash < 0) {
      list.addAddress(address, type);
      continue;
    }
    const prefixText = entry.slice(slash + 1);
    const prefix = Number(prefixText);
    if (!/^\d{1,3}$/.test(prefixText) || prefix > (family === 4 ? 32 : 128)) throw bad('has an invalid prefix length');
    list.addSubnet(address, prefix, type);
  }
  return list;
}

/** The `trust proxy` function for Express: is this hop one of ours? */
export function trustFunction(list: BlockList): (address: string, hop: number) => boolean {
  return (address) => {
    const family = isIP(address);
    if (family === 0) return false;
    try {
      return list.check(address, family === 4 ? 'ipv4' : 'ipv6');
    } catch {
      // An address isIP accepts but BlockList does not (a zone id, `fe80::1%eth0`): not ours.
      return false;
    }
  };
}

const MAPPED_IPV4 = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/** `::ffff:a.b.c.d` → `a.b.c.d`; anything else unchanged. */
export function normalizeAddress(address: string): string {
  return MAPPED_IPV4.exec(address)?.[1] ?? address;
}

/**
 * The client address of a request as defined above, or 'unknown' when the socket is already
 * gone. With proxies trusted it is req.ip (the app's `trust proxy` is trustFunction), checked;
 * without, the peer, without parsing a header nobody believes. Computed once per request, by
 * frontDoor; read it with clientAddressOf.
 */
export function resolveClientAddress(req: Request, trustsProxies: boolean): string {
  const peer = req.socket.remoteAddress;
  let chosen: string | undefined = peer;
  if (trustsProxies) {
    try {
      chosen = req.ip;
    } catch {
      chosen = undefined;
    }
    if (chosen === undefined || isIP(chosen) === 0) chosen = peer;
  }
  return chosen === undefined ? 'unknown' : normalizeAddress(chosen);
}

/** The address frontDoor resolved for this request. */
export const clientAddressOf = (res: Response): string => (res.locals.clientAddress as string | undefined) ?? 'unknown';
