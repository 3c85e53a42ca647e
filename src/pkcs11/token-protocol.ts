/**
 * The messages between the main thread and a token thread (token-worker.ts): one request, one
 * reply, one operation in flight per thread. Buffers cross as Uint8Array (structured clone);
 * both sides turn them back into Buffers without copying.
 */
import type { HashName, KeySpec, SignatureScheme } from '../algorithms.js';

export type TokenRequest =
  | { op: 'sign'; id: Uint8Array; scheme: SignatureScheme; hash: HashName; digest: Uint8Array }
  | { op: 'verify'; id: Uint8Array; scheme: SignatureScheme; hash: HashName; digest: Uint8Array; signature: Uint8Array }
  | { op: 'encrypt'; id: Uint8Array; iv: Uint8Array; data: Uint8Array }
  | { op: 'decrypt'; id: Uint8Array; iv: Uint8Array; data: Uint8Array }
  | { op: 'generate'; id: Uint8Array; label: string; spec: KeySpec }
  | { op: 'destroy'; id: Uint8Array }
  | { op: 'list'; labelPrefix: string }
  | { op: 'ping' }
  /** Close this thread's sessions and open new ones on `slot` (after the token was reconnected). */
  | { op: 'reopen'; slot: Uint8Array };

/**
 * Messages that need no reply: they are handled in order with the requests. Neither reaches the
 * token except through the `objects` session a thread keeps, which no reconnect touches.
 */
export type TokenNotice =
  /** Drop cached handles (and this thread's session copies) of these CKA_IDs. */
  | { op: 'forget'; ids: Uint8Array[] }
  /** Close this thread's sessions and exit, after whatever call is running now. */
  | { op: 'retire' };

export type TokenMessage = (TokenRequest & { seq: number }) | TokenNotice;

/** How a failed call is told apart on the main thread (errors.ts classifies CKR codes). */
export type TokenFailure =
  | { kind: 'ckr'; code: number; message: string }
  | { kind: 'key-not-found'; message: string }
  | { kind: 'other'; message: string };

/** `broken`: the thread has no usable session any more and must be replaced. */
export type TokenReply = { seq: number; ok: true; value: unknown } | { seq: number; ok: false; failure: TokenFailure; broken: boolean };

/** What a thread needs to start: the module to load and the slot whose token the process logged in to. */
export interface TokenThreadInit {
  modulePath: string;
  slot: Uint8Array;
  /** A token that refuses C_CopyObject gets its token handles cached instead. */
  sessionCopies: boolean;
  /** Added to the thread's nice value (Linux): 0 leaves it at the process's priority. */
  niceness: number;
}

export const asBuffer = (bytes: Uint8Array): Buffer => (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
