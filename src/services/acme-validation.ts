/**
 * http-01 validation (RFC 8555 §8.3): the server fetches
 * `http://{name}:{port}/.well-known/acme-challenge/{token}` with `Host: {name}` and compares the
 * body with the key authorization (token "." account key thumbprint).
 *
 * This is a request the server makes to a name a client chose, so it is kept from becoming a
 * way into the server's own network (SSRF): the name is resolved first, and a loopback,
 * link-local, private or otherwise non-public address found in DNS is refused unless
 * `acme.allowPrivateAddresses` says otherwise; the connection then goes to the address that was
 * checked (no second lookup a rebinding DNS server could answer differently). Addresses an
 * operator pinned in `acme.resolve` are used as given. Redirects are not followed, the answer
 * is read up to a few KiB, and each attempt has a deadline.
 */
import { lookup } from 'node:dns/promises';
import { request } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { AcmeProblemDocument } from '../store/acme-store.js';
import { ACME_ERROR } from './acme-problem.js';

export interface Http01Settings {
  port: number;
  /** Lowercase name → address, from acme.resolve. */
  resolve: ReadonlyMap<string, string>;
  allowPrivateAddresses: boolean;
  timeoutMs: number;
  attempts: number;
  /** Pause between attempts. */
  retryDelayMs?: number;
}

/** acme.resolve's `name:address` entries (the configuration loader has checked each address). */
export function resolveMap(entries: readonly string[]): Map<string, string> {
  return new Map(entries.map((entry) => [entry.slice(0, entry.indexOf(':')).toLowerCase(), entry.slice(entry.indexOf(':') + 1)]));
}

/** Addresses no validation may reach through DNS: not public unicast (RFC 6890's special-purpose ranges that matter here). */
const NOT_PUBLIC = (() => {
  const list = new BlockList();
  for (const [network, prefix] of [
    ['0.0.0.0', 8],
    ['10.0.0.0', 8],
    ['100.64.0.0', 10],
    ['127.0.0.0', 8],
    ['169.254.0.0', 16],
    ['172.16.0.0', 12],
    ['192.0.0.0', 24],
    ['192.168.0.0', 16],
    ['198.18.0.0', 15],
    ['224.0.0.0', 4],
    ['240.0.0.0', 4],
  ] as const)
    list.addSubnet(network, prefix, 'ipv4');
  for (const [network, prefix] of [
    ['::', 128],
    ['::1', 128],
    ['64:ff9b:1::', 48],
    ['fc00::', 7],
    ['fe80::', 10],
    ['ff00::', 8],
  ] as const)
    list.addSubnet(network, prefix, 'ipv6');
  return list;
})();

/** Whether `address` is loopback, link-local, private or otherwise not a public unicast address. */
export function isNonPublicAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return NOT_PUBLIC.check(mapped[1]!, 'ipv4');
  const family = isIP(address);
  if (family === 0) return true;
  return NOT_PUBLIC.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

const problem = (type: string, detail: string): AcmeProblemDocument => ({ type: `${ACME_ERROR}${type}`, detail, status: 400 });

/** A failure no retry can mend (the address is refused): reported at once. */
class Final extends Error {
  constructor(readonly problem: AcmeProblemDocument) {
    super(problem.detail);
  }
}

async function addressOf(name: string, settings: Http01Settings): Promise<string> {
  const pinned = settings.resolve.get(name.toLowerCase());
  if (pinned) return pinned;
  let addresses: Array<{ address: string }>;
  try {
    addresses = await lookup(name, { all: true, verbatim: true });
  } catch (error) {
    throw Object.assign(new Error(`DNS lookup of ${name} failed (${(error as NodeJS.ErrnoException).code ?? 'error'})`), { problem: problem('dns', `DNS lookup of ${name} failed (${(error as NodeJS.ErrnoException).code ?? 'error'})`) });
  }
  if (addresses.length === 0) throw Object.assign(new Error(`${name} has no address`), { problem: problem('dns', `${name} has no address`) });
  if (!settings.allowPrivateAddresses) {
    const refused = addresses.find(({ address }) => isNonPublicAddress(address));
    if (refused) {
      throw new Final(problem('connection', `${name} resolves to ${refused.address}, which is not a public address; this server does not validate on loopback, link-local or private addresses`));
    }
  }
  return addresses[0]!.address;
}

const MAX_BODY_BYTES = 8 * 1024;

/** One GET of the challenge resource; resolves to the body or rejects with a problem. */
function fetchOnce(address: string, name: string, token: string, settings: Http01Settings): Promise<string> {
  return new Promise((resolve, reject) => {
    const url = `http://${name}:${settings.port}/.well-known/acme-challenge/${token}`;
    const fail = (type: string, detail: string) => reject(Object.assign(new Error(detail), { problem: problem(type, detail) }));
    const req = request(
      { host: address, port: settings.port, path: `/.well-known/acme-challenge/${token}`, method: 'GET', headers: { Host: name, 'User-Agent': 'hsm-signer ACME validator', Accept: '*/*', Connection: 'close' }, agent: false },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          const redirect = res.statusCode !== undefined && res.statusCode >= 300 && res.statusCode < 400;
          return fail('unauthorized', `${url} answered ${res.statusCode}${redirect ? ' (redirects are not followed)' : ''}`);
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) {
            req.destroy();
            return fail('incorrectResponse', `${url} answered more than ${MAX_BODY_BYTES} bytes`);
          }
          chunks.push(chunk);
        });
        res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        res.on('error', (error) => fail('connection', `reading ${url} failed: ${error.message}`));
      },
    );
    req.setTimeout(settings.timeoutMs, () => {
      req.destroy();
      fail('connection', `${url} did not answer within ${settings.timeoutMs} ms`);
    });
    req.on('error', (error: NodeJS.ErrnoException) => fail('connection', `connecting to ${url} (${address}) failed: ${error.code ?? error.message}`));
    req.end();
  });
}

/**
 * Validates an http-01 challenge; resolves to undefined when the key authorization was served,
 * else to the problem of the last attempt (an address that is refused is not retried).
 */
export async function validateHttp01(name: string, token: string, keyAuthorization: string, settings: Http01Settings): Promise<AcmeProblemDocument | undefined> {
  let last: AcmeProblemDocument | undefined;
  for (let attempt = 1; attempt <= settings.attempts; attempt++) {
    try {
      const address = await addressOf(name, settings);
      const body = await fetchOnce(address, name, token, settings);
      // §8.3: whitespace at the end of the body is to be ignored.
      if (body.replace(/\s+$/, '') === keyAuthorization) return undefined;
      last = problem('incorrectResponse', `The key authorization served at http://${name}:${settings.port}/.well-known/acme-challenge/${token} is not the one expected for this account`);
    } catch (error) {
      if (error instanceof Final) return error.problem;
      last = (error as { problem?: AcmeProblemDocument }).problem ?? problem('connection', `Validation of ${name} failed`);
    }
    if (attempt < settings.attempts) await new Promise((resolve) => setTimeout(resolve, settings.retryDelayMs ?? 1000));
  }
  return last;
}
