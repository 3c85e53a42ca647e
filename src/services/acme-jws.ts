/**
 * The JWS side of ACME (RFC 8555 §6.2, RFC 7515 flattened JSON): reading a request's JWS,
 * checking its protected header, verifying its signature with the account key, external
 * account binding (§7.3.4) and the inner JWS of a key change (§7.3.5). The cryptography is
 * `jose`'s (flattenedVerify, importJWK, calculateJwkThumbprint); what is here is ACME's rules
 * around it, each refusal an ACME problem of the type the RFC names.
 *
 * Account keys are kept as JWKs with only their required members (RFC 7638's thumbprint
 * input), so a key is the same key however a client spelled its JWK.
 */
import { calculateJwkThumbprint, decodeProtectedHeader, flattenedVerify, importJWK, type FlattenedJWSInput, type JWK, type ProtectedHeaderParameters } from 'jose';
import { acmeProblem } from './acme-problem.js';

/** Signature algorithms account keys may use: ECDSA P-256/P-384, RSA PKCS#1 v1.5 and PSS with SHA-256, Ed25519. */
export const ACCOUNT_KEY_ALGORITHMS = ['ES256', 'ES384', 'RS256', 'PS256', 'EdDSA'] as const;
/** External account binding MACs (§7.3.4). */
export const EAB_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;

/** Which key the request must name: its own `jwk` (newAccount), an account `kid` (all else), or either (revokeCert). */
export type KeyReference = 'jwk' | 'kid' | 'either';

export interface AcmeHeader {
  alg: string;
  nonce?: string | undefined;
  url: string;
  jwk?: Record<string, string> | undefined;
  kid?: string | undefined;
}

/** A flattened JWS read from a request body, not yet verified. */
export interface ReadJws {
  jws: FlattenedJWSInput & { protected: string };
  header: AcmeHeader;
}

const MAX_RSA_BITS = 8192;

/** The body as a flattened JSON JWS with a protected header (unprotected headers are refused, §6.2). */
export function readJws(body: unknown, what = 'The request'): ReadJws {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw acmeProblem('malformed', `${what} is not a flattened JSON JWS`);
  const candidate = body as Record<string, unknown>;
  if (typeof candidate.protected !== 'string' || typeof candidate.payload !== 'string' || typeof candidate.signature !== 'string') {
    throw acmeProblem('malformed', `${what} must be a flattened JSON JWS: "protected", "payload" and "signature", each a string`);
  }
  if ('header' in candidate || 'signatures' in candidate) throw acmeProblem('malformed', `${what} must be a flattened JWS with a protected header only`);
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader({ protected: candidate.protected } as FlattenedJWSInput);
  } catch {
    throw acmeProblem('malformed', `${what}'s protected header is not base64url-encoded JSON`);
  }
  if (typeof header.alg !== 'string') throw acmeProblem('malformed', `${what}'s protected header has no "alg"`);
  if (typeof header.url !== 'string') throw acmeProblem('malformed', `${what}'s protected header has no "url"`);
  if (header.nonce !== undefined && typeof header.nonce !== 'string') throw acmeProblem('badNonce', `${what}'s "nonce" is not a string`);
  if (header.kid !== undefined && typeof header.kid !== 'string') throw acmeProblem('malformed', `${what}'s "kid" is not a string`);
  if (header.jwk !== undefined && (typeof header.jwk !== 'object' || header.jwk === null || Array.isArray(header.jwk))) throw acmeProblem('malformed', `${what}'s "jwk" is not an object`);
  return {
    jws: { protected: candidate.protected, payload: candidate.payload, signature: candidate.signature },
    header: { alg: header.alg, nonce: header.nonce as string | undefined, url: header.url, jwk: header.jwk as Record<string, string> | undefined, kid: header.kid },
  };
}

/** Checks `alg` and which key the header names; the signature is checked by `verifyWith`. */
export function checkHeader(header: AcmeHeader, reference: KeyReference): void {
  if (!(ACCOUNT_KEY_ALGORITHMS as readonly string[]).includes(header.alg)) {
    throw acmeProblem('badSignatureAlgorithm', `The JWS algorithm ${JSON.stringify(header.alg).slice(0, 40)} is not accepted (accepted: ${ACCOUNT_KEY_ALGORITHMS.join(', ')})`, {
      extra: { algorithms: [...ACCOUNT_KEY_ALGORITHMS] },
    });
  }
  if (header.jwk !== undefined && header.kid !== undefined) throw acmeProblem('malformed', 'The JWS names both "jwk" and "kid"; it must name one');
  if (reference === 'jwk' && header.jwk === undefined) throw acmeProblem('malformed', 'This request must carry the account key as "jwk" in the protected header, not "kid"');
  if (reference === 'kid' && header.kid === undefined) throw acmeProblem('malformed', 'This request must name its account with "kid" in the protected header, not "jwk"');
  if (reference === 'either' && header.jwk === undefined && header.kid === undefined) throw acmeProblem('malformed', 'The JWS names neither "jwk" nor "kid"');
}

const b64urlBytes = (value: string) => Buffer.from(value, 'base64url').length;

/**
 * The public key's required members only (RFC 7638 §3.2), after checking it is a key an
 * account may have: EC P-256 or P-384, RSA of 2048 to 8192 bits, or Ed25519. A JWK with
 * private members is refused rather than trimmed: a client that sends its private key has a bug.
 */
export function accountJwk(jwk: Record<string, unknown>): Record<string, string> {
  const text = (name: string) => {
    const value = jwk[name];
    if (typeof value !== 'string' || !/^[A-Za-z0-9_-]+$/.test(value)) throw acmeProblem('badPublicKey', `The account key's "${name}" is missing or not base64url`);
    return value;
  };
  if (['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'].some((member) => member in jwk)) throw acmeProblem('badPublicKey', 'The JWK holds private key members; send the public key only');
  switch (jwk.kty) {
    case 'EC': {
      const crv = text('crv');
      const size = { 'P-256': 32, 'P-384': 48 }[crv];
      if (!size) throw acmeProblem('badPublicKey', `EC account keys must be on P-256 or P-384, not ${crv.slice(0, 20)}`);
      const [x, y] = [text('x'), text('y')];
      if (b64urlBytes(x) !== size || b64urlBytes(y) !== size) throw acmeProblem('badPublicKey', `The ${crv} coordinates have the wrong length`);
      return { crv, kty: 'EC', x, y };
    }
    case 'RSA': {
      const [e, n] = [text('e'), text('n')];
      const bits = Buffer.from(n, 'base64url').toString('hex').replace(/^0+/, '').length * 4;
      if (bits < 2048 || bits > MAX_RSA_BITS) throw acmeProblem('badPublicKey', `RSA account keys must have 2048 to ${MAX_RSA_BITS} bits (this one has about ${bits})`);
      return { e, kty: 'RSA', n };
    }
    case 'OKP': {
      const crv = text('crv');
      if (crv !== 'Ed25519') throw acmeProblem('badPublicKey', `OKP account keys must be Ed25519, not ${crv.slice(0, 20)}`);
      const x = text('x');
      if (b64urlBytes(x) !== 32) throw acmeProblem('badPublicKey', 'The Ed25519 key has the wrong length');
      return { crv, kty: 'OKP', x };
    }
    default:
      throw acmeProblem('badPublicKey', 'Account keys must be EC, RSA or OKP (Ed25519) JWKs');
  }
}

export const thumbprintOf = (jwk: Record<string, string>): Promise<string> => calculateJwkThumbprint(jwk as JWK, 'sha256');

/**
 * Verifies the JWS with `jwk` under the header's algorithm; resolves to the payload (UTF-8).
 * A signature that does not verify, or an algorithm that does not fit the key, is `malformed`
 * (RFC 8555 names no type of its own for it).
 */
export async function verifyWith(read: ReadJws, jwk: Record<string, string>): Promise<string> {
  let key: Awaited<ReturnType<typeof importJWK>>;
  try {
    key = await importJWK({ ...jwk, alg: read.header.alg } as JWK, read.header.alg);
  } catch {
    // ES256 with a P-384 key, say: whatever signed this, it was not this key under this algorithm.
    throw acmeProblem('malformed', `The JWS algorithm ${read.header.alg} does not fit the account key`);
  }
  try {
    const { payload } = await flattenedVerify(read.jws, key, { algorithms: [read.header.alg] });
    return Buffer.from(payload).toString('utf8');
  } catch {
    throw acmeProblem('malformed', 'The JWS signature does not verify with the account key');
  }
}

/** The JSON payload of a verified request: undefined for POST-as-GET (an empty payload, §6.3). */
export function jsonPayload(text: string): Record<string, unknown> | undefined {
  if (text === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw acmeProblem('malformed', 'The JWS payload is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw acmeProblem('malformed', 'The JWS payload must be a JSON object (or empty, for POST-as-GET)');
  return value as Record<string, unknown>;
}

/**
 * External account binding (§7.3.4): a JWS MACed with the profile's EAB key whose protected
 * header names the key (kid = the profile id) and the newAccount URL, and whose payload is the
 * very account key the outer JWS is signed with.
 */
export async function verifyExternalAccountBinding(binding: unknown, expected: { kid: string; url: string; secret: string | null; accountThumbprint: string }): Promise<string> {
  const what = 'The external account binding';
  if (typeof binding !== 'object' || binding === null || Array.isArray(binding)) throw acmeProblem('malformed', `${what} is not a flattened JSON JWS`);
  const candidate = binding as Record<string, unknown>;
  if (typeof candidate.protected !== 'string' || typeof candidate.payload !== 'string' || typeof candidate.signature !== 'string') throw acmeProblem('malformed', `${what} must be a flattened JSON JWS`);
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader({ protected: candidate.protected } as FlattenedJWSInput);
  } catch {
    throw acmeProblem('malformed', `${what}'s protected header is not base64url-encoded JSON`);
  }
  if (typeof header.alg !== 'string' || !(EAB_ALGORITHMS as readonly string[]).includes(header.alg)) throw acmeProblem('malformed', `${what} must be MACed with ${EAB_ALGORITHMS.join(', ')}`);
  if (header.nonce !== undefined) throw acmeProblem('malformed', `${what} must not carry a nonce`);
  if (header.url !== expected.url) throw acmeProblem('unauthorized', `${what}'s "url" must be the newAccount URL`);
  if (header.kid !== expected.kid) throw acmeProblem('unauthorized', `${what}'s "kid" names no external account key of this profile`);
  if (expected.secret === null) throw acmeProblem('unauthorized', `No external account key has been made for this profile (an administrator reads it from the profile's acme/eab-secret route)`);
  let payload: Uint8Array;
  try {
    ({ payload } = await flattenedVerify({ protected: candidate.protected, payload: candidate.payload, signature: candidate.signature }, Buffer.from(expected.secret, 'base64url'), { algorithms: [header.alg] }));
  } catch {
    throw acmeProblem('unauthorized', `${what}'s MAC does not verify with this profile's external account key`);
  }
  let boundKey: unknown;
  try {
    boundKey = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    throw acmeProblem('malformed', `${what}'s payload is not the account's JWK`);
  }
  if (typeof boundKey !== 'object' || boundKey === null || Array.isArray(boundKey)) throw acmeProblem('malformed', `${what}'s payload is not the account's JWK`);
  if ((await thumbprintOf(accountJwk(boundKey as Record<string, unknown>))) !== expected.accountThumbprint) throw acmeProblem('unauthorized', `${what} binds another key than the one this request is signed with`);
  return header.kid;
}
