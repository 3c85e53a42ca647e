/**
 * Token errors are classified here, once. Everything above the pkcs11/ layer sees a
 * `TokenError` with a `class`, never a raw CKR code:
 * - `fatal-login`: wrong or locked PIN. Never retried: each retry counts toward locking the token.
 * - `unavailable`: the session, device or token is gone; the pool rebuilds and the request is a 503.
 * - `stale-handle`: a cached object handle no longer names an object; look it up again.
 * - `busy`: every session stayed leased past the acquire timeout; `timeout`: the token took
 *   longer than the request may wait. Both are 503s; neither says the token is gone.
 * - `operation`: the token refused this operation (bad data, bad tag, ...); the caller decides
 *   from context what that means (a failed GCM tag is a client error, say).
 */
import pkcs11js from 'pkcs11js';

export type TokenErrorClass = 'fatal-login' | 'unavailable' | 'stale-handle' | 'operation' | 'busy' | 'timeout';

const CKR_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(pkcs11js)) {
  if (name.startsWith('CKR_') && typeof value === 'number' && !CKR_NAMES.has(value)) CKR_NAMES.set(value, name);
}

const FATAL_LOGIN = new Set<number>([pkcs11js.CKR_PIN_INCORRECT, pkcs11js.CKR_PIN_LOCKED, pkcs11js.CKR_PIN_EXPIRED, pkcs11js.CKR_PIN_INVALID, pkcs11js.CKR_PIN_LEN_RANGE]);

const UNAVAILABLE = new Set<number>([
  pkcs11js.CKR_SESSION_HANDLE_INVALID,
  pkcs11js.CKR_SESSION_CLOSED,
  pkcs11js.CKR_DEVICE_ERROR,
  pkcs11js.CKR_DEVICE_REMOVED,
  pkcs11js.CKR_DEVICE_MEMORY,
  pkcs11js.CKR_TOKEN_NOT_PRESENT,
  pkcs11js.CKR_TOKEN_NOT_RECOGNIZED,
  pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED,
  pkcs11js.CKR_USER_NOT_LOGGED_IN,
  pkcs11js.CKR_SLOT_ID_INVALID,
  pkcs11js.CKR_SESSION_COUNT,
  pkcs11js.CKR_HOST_MEMORY,
]);

const STALE_HANDLE = new Set<number>([pkcs11js.CKR_OBJECT_HANDLE_INVALID, pkcs11js.CKR_KEY_HANDLE_INVALID]);

/** CKR_CURVE_NOT_SUPPORTED (PKCS#11 2.40), which pkcs11js does not name. */
const CKR_CURVE_NOT_SUPPORTED = 0x140;
/** What a token answers for a key type it does not have (an HSM before PKCS#11 3.0 and Ed25519). */
const KEY_TYPE_NOT_SUPPORTED = new Set<number>([pkcs11js.CKR_MECHANISM_INVALID, pkcs11js.CKR_DOMAIN_PARAMS_INVALID, CKR_CURVE_NOT_SUPPORTED]);

export const isKeyTypeNotSupported = (error: unknown): error is TokenError => error instanceof TokenError && error.code !== undefined && KEY_TYPE_NOT_SUPPORTED.has(error.code);

export class TokenError extends Error {
  constructor(
    readonly errorClass: TokenErrorClass,
    message: string,
    /** CKR_* name, for logs and metrics labels (a fixed set). */
    readonly ckr: string,
    readonly code: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'TokenError';
  }
}

export function ckrName(code: number): string {
  return CKR_NAMES.get(code) ?? `CKR_0x${code.toString(16).padStart(8, '0')}`;
}

function classOf(code: number): TokenErrorClass {
  if (FATAL_LOGIN.has(code)) return 'fatal-login';
  if (UNAVAILABLE.has(code)) return 'unavailable';
  if (STALE_HANDLE.has(code)) return 'stale-handle';
  return 'operation';
}

/** Turns whatever a pkcs11js call threw into a TokenError (idempotent). */
export function toTokenError(error: unknown, operation: string): TokenError {
  if (error instanceof TokenError) return error;
  const code = typeof (error as { code?: unknown })?.code === 'number' ? (error as { code: number }).code : undefined;
  if (code === undefined || code === 0) {
    // A NativeError without a CKR code: the library itself failed (bad arguments, missing
    // function). Treat as an operation failure; the session is discarded all the same.
    return new TokenError('operation', `${operation} failed: ${(error as Error)?.message ?? String(error)}`, 'NATIVE_ERROR', undefined, { cause: error });
  }
  const name = ckrName(code);
  return new TokenError(classOf(code), `${operation} failed with ${name}`, name, code, { cause: error });
}

export function isCode(error: unknown, code: number): boolean {
  return (error as { code?: unknown })?.code === code;
}
