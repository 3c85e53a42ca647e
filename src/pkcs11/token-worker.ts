/**
 * A token thread: a worker_thread that makes blocking PKCS#11 calls, so that no C_*Init (25–80
 * µs each, more for RSA-4096) and no find or copy runs on the event loop. One request at a time,
 * one reply each (token-protocol.ts); token-threads.ts on the main thread decides which thread
 * gets which call and abandons one that outlives its deadline.
 *
 * The module is loaded once per process by the main thread (module.ts), which also logged the
 * user in; this thread loads the same library (dlopen hands back the same instance, so the same
 * login and the same objects), and its C_Initialize answers CKR_CRYPTOKI_ALREADY_INITIALIZED,
 * which is success. It never calls C_Login, C_Logout or C_Finalize: those belong to the main
 * thread, which calls them only when no thread is inside the module.
 *
 * Invariants:
 * - the thread owns two sessions: `work` for the cryptographic calls and `objects` for finds and
 *   for the session copies of hot keys (C_CopyObject with CKA_TOKEN false: still sensitive and
 *   never extractable; SoftHSM2 reads a token object back from its store on every use, and the
 *   copy made P-256 1.5x and AES 2x faster). A copy lives as long as the session that made it,
 *   so copies are made on `objects`, which no failed operation ever touches;
 * - after any failed call between C_*Init and its final call, `work` is closed and reopened: it
 *   may still hold an active operation (CKR_OPERATION_ACTIVE);
 * - a cached handle that went stale (the token restarted, the key was destroyed) is looked up
 *   again once, by CKA_ID; when a key is destroyed, every thread is told to destroy its own
 *   copies (`forget`), and one thread destroys the token objects;
 * - on `retire` the thread closes its sessions and exits; a thread stuck in a call retires when
 *   the call returns, since messages are handled in order;
 * - SoftHSM2 (2.6) re-reads its token directory only when the token's generation counter on
 *   disk differs from the one it last saw, and a process's own create or destroy writes the
 *   counter as "what I saw + my change": a change another process made that this one had not
 *   seen yet (replicas sharing DATA_DIR; session copies and cached handles mean long stretches
 *   without a find) is swallowed, and its objects stay invisible here until some other process
 *   changes the token again. So a key not found is looked for again after another process has
 *   changed the token (`rescanSoftHsm`), which makes this process read the directory afresh.
 *   (A find before each create, to take in others' changes first, would only narrow the window;
 *   tried, it made concurrent key creations in one process fail now and then.)
 */
import { spawnSync } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import pkcs11js from 'pkcs11js';
import { CURVE_ORDER_BYTES, type EcCurve, type KeySpec } from '../algorithms.js';
import { isCode, toTokenError } from './errors.js';
import { aesGcmMechanism, CKM_EC_EDWARDS_KEY_PAIR_GEN, GCM_TAG_BYTES, signRequest } from './mechanisms.js';
import { asBuffer, type TokenFailure, type TokenMessage, type TokenReply, type TokenRequest, type TokenThreadInit } from './token-protocol.js';
import { EC_PARAMS, aesKeyTemplate, keyObjectTemplate, privateKeyTemplate, publicKeyTemplate, tokenObjectsByIdTemplate, type KeyObjectClass } from './templates.js';

type Handle = Buffer;

const RW_SESSION = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;
/** Largest signature the service's keys make: RSA-4096 is 512 bytes, P-521 raw r||s is 132. */
const SIGNATURE_BUFFER_BYTES = 512;
const PING_INPUT = Buffer.from('hsm-signer readiness');
/** At most one forced re-read of the token per thread in this long, whatever the misses. */
const RESCAN_EVERY_MS = 1000;

class KeyNotFound extends Error {}

const init = workerData as TokenThreadInit;
const lib = new pkcs11js.PKCS11();
let slot = asBuffer(init.slot);
let sessionCopies = init.sessionCopies;
const handles = new Map<string, Handle>();
let objects: Handle | undefined;
let work: Handle | undefined;
/** Why this thread could not open its sessions; every call but `reopen` then fails with it. */
let sessionFailure: unknown;
/** Whether the module is SoftHSM2, whose file store needs `rescanSoftHsm`. */
let softHsm = false;
let lastRescanAt = 0;

lowerThreadPriority(init.niceness);

try {
  lib.load(init.modulePath);
  try {
    lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (error) {
    if (!isCode(error, pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED)) throw error;
  }
  softHsm = lib.C_GetInfo().manufacturerID.trim() === 'SoftHSM';
  openSessions();
} catch (error) {
  sessionFailure = error;
}

/**
 * Token threads run below the event loop's priority: the event loop is what answers /healthz,
 * /readyz and every request's HTTP, and a token saturated with RSA-4096 must not starve it.
 * Linux gives each thread its own nice value, named by its thread id (/proc/thread-self).
 */
function lowerThreadPriority(niceness: number): void {
  if (niceness === 0) return;
  try {
    const threadId = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(threadId)) setPriority(threadId, niceness);
  } catch {
    // Not Linux, or not allowed: the threads run at the process's priority.
  }
}

function openSessions(): void {
  objects = lib.C_OpenSession(slot, RW_SESSION);
  work = lib.C_OpenSession(slot, RW_SESSION);
}

const handleKey = (id: Buffer, objectClass: KeyObjectClass) => `${objectClass}:${id.toString('hex')}`;

function find(session: Handle, template: pkcs11js.Template): Handle[] {
  lib.C_FindObjectsInit(session, template);
  try {
    const found: Handle[] = [];
    for (;;) {
      const batch = lib.C_FindObjects(session, 64);
      if (batch.length === 0) return found;
      found.push(...batch);
    }
  } finally {
    lib.C_FindObjectsFinal(session);
  }
}

/** A session copy of a token object, living as long as this thread's `objects` session. */
function hotHandle(tokenObject: Handle): Handle {
  if (!sessionCopies) return tokenObject;
  try {
    return lib.C_CopyObject(objects!, tokenObject, [{ type: pkcs11js.CKA_TOKEN, value: false }]);
  } catch (error) {
    const failure = toTokenError(error, 'C_CopyObject');
    if (failure.errorClass === 'unavailable') throw error;
    // This token will not copy this object (CKA_COPYABLE false, say), or copies nothing.
    if (failure.code === pkcs11js.CKR_FUNCTION_NOT_SUPPORTED) sessionCopies = false;
    return tokenObject;
  }
}

function findKey(id: Buffer, objectClass: KeyObjectClass): Handle {
  let [key] = find(objects!, keyObjectTemplate(id, objectClass));
  if (!key && rescanSoftHsm()) [key] = find(objects!, keyObjectTemplate(id, objectClass));
  if (!key) throw new KeyNotFound(`No ${objectClass} key with CKA_ID ${id.toString('hex')} in the token`);
  return key;
}

/**
 * Makes this process's SoftHSM2 read the token directory again, for an object it may have
 * missed (the header says how): a short-lived process changes the token (creates and destroys
 * a public AES key), which moves the generation counter past anything this process has seen.
 * Returns whether it tried (a failed helper may still have changed the token). Should the helper die between the two, the orphan sweep
 * destroys its key at the next start (our label prefix, and no row names it).
 */
function rescanSoftHsm(): boolean {
  if (!softHsm || Date.now() - lastRescanAt < RESCAN_EVERY_MS) return false;
  lastRescanAt = Date.now();
  const serial = lib.C_GetTokenInfo(slot).serialNumber.trim();
  spawnSync(process.execPath, ['-e', TOUCH_TOKEN, init.modulePath, createRequire(import.meta.url).resolve('pkcs11js'), serial], { stdio: 'ignore', timeout: 10_000 });
  return true;
}

/** The helper process of `rescanSoftHsm`: argv is the module path, pkcs11js, the token serial. */
const TOUCH_TOKEN = `
const [modulePath, pkcs11jsPath, serial] = process.argv.slice(1);
const pkcs11js = require(pkcs11jsPath);
const lib = new pkcs11js.PKCS11();
lib.load(modulePath);
lib.C_Initialize();
try {
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).serialNumber.trim() === serial);
  if (!slot) process.exit(2);
  const session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  const key = lib.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_VALUE_LEN, value: 16 },
    { type: pkcs11js.CKA_ID, value: Buffer.from('rescan') },
    { type: pkcs11js.CKA_LABEL, value: 'hsm-signer:rescan' },
  ]);
  lib.C_DestroyObject(session, key);
} finally {
  lib.C_Finalize();
}
`;

/**
 * Runs a C_*Init with the cached handle for `id`; on a stale handle, finds the object again and
 * retries once. A failed C_*Init leaves no operation active, so the retry is safe.
 */
function initWithFreshHandle(id: Buffer, objectClass: KeyObjectClass, initCall: (key: Handle) => void): void {
  const cacheKey = handleKey(id, objectClass);
  const cached = handles.get(cacheKey);
  if (cached) {
    try {
      initCall(cached);
      return;
    } catch (error) {
      if (toTokenError(error, 'C_*Init').errorClass !== 'stale-handle') throw error;
      handles.delete(cacheKey);
    }
  }
  const key = hotHandle(findKey(id, objectClass));
  initCall(key);
  handles.set(cacheKey, key);
}

function forget(id: Buffer): void {
  for (const objectClass of ['private', 'public', 'secret'] as const) {
    const cacheKey = handleKey(id, objectClass);
    const copy = handles.get(cacheKey);
    handles.delete(cacheKey);
    if (copy && sessionCopies) {
      try {
        lib.C_DestroyObject(objects!, copy);
      } catch {
        // Already gone with its key: destroying by CKA_ID takes the copies too.
      }
    }
  }
}

function generate(id: Buffer, label: string, spec: KeySpec): { publicKeySpki?: Uint8Array } {
  if (spec.kind === 'aes') {
    const key = lib.C_GenerateKey(work!, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, aesKeyTemplate(id, label, spec.bits));
    handles.set(handleKey(id, 'secret'), hotHandle(key));
    return {};
  }
  const mechanism = { mechanism: KEY_PAIR_MECHANISM[spec.kind] };
  const pair = lib.C_GenerateKeyPair(work!, mechanism, publicKeyTemplate(id, label, spec), privateKeyTemplate(id, label, spec.kind));
  handles.set(handleKey(id, 'private'), hotHandle(pair.privateKey));
  handles.set(handleKey(id, 'public'), hotHandle(pair.publicKey));
  return { publicKeySpki: readPublicKey(pair.publicKey, spec.kind) };
}

const KEY_PAIR_MECHANISM: Record<Exclude<KeySpec['kind'], 'aes'>, number> = {
  rsa: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN,
  ec: pkcs11js.CKM_EC_KEY_PAIR_GEN,
  ed25519: CKM_EC_EDWARDS_KEY_PAIR_GEN,
};

function readPublicKey(publicKey: Handle, kind: Exclude<KeySpec['kind'], 'aes'>): Buffer {
  if (kind === 'rsa') {
    const [modulus, exponent] = lib.C_GetAttributeValue(work!, publicKey, [{ type: pkcs11js.CKA_MODULUS }, { type: pkcs11js.CKA_PUBLIC_EXPONENT }]);
    return createPublicKey({
      key: { kty: 'RSA', n: (modulus!.value as Buffer).toString('base64url'), e: (exponent!.value as Buffer).toString('base64url') },
      format: 'jwk',
    }).export({ type: 'spki', format: 'der' });
  }
  if (kind === 'ed25519') {
    const [point] = lib.C_GetAttributeValue(work!, publicKey, [{ type: pkcs11js.CKA_EC_POINT }]);
    return ed25519Spki(point!.value as Buffer);
  }
  const [params, point] = lib.C_GetAttributeValue(work!, publicKey, [{ type: pkcs11js.CKA_EC_PARAMS }, { type: pkcs11js.CKA_EC_POINT }]);
  return ecSpki(params!.value as Buffer, unwrapOctetString(point!.value as Buffer));
}

function run(request: TokenRequest): unknown {
  switch (request.op) {
    case 'sign': {
      const { mechanism, input } = signRequest(request.scheme, request.hash, nonNullBytes(asBuffer(request.digest)));
      initWithFreshHandle(asBuffer(request.id), 'private', (key) => lib.C_SignInit(work!, mechanism, key));
      return lib.C_Sign(work!, input, Buffer.alloc(SIGNATURE_BUFFER_BYTES));
    }
    case 'verify': {
      const { mechanism, input } = signRequest(request.scheme, request.hash, nonNullBytes(asBuffer(request.digest)));
      initWithFreshHandle(asBuffer(request.id), 'public', (key) => lib.C_VerifyInit(work!, mechanism, key));
      try {
        return lib.C_Verify(work!, input, asBuffer(request.signature));
      } catch (error) {
        // C_Verify ends the operation whatever it answers, so the session stays usable.
        if (isCode(error, pkcs11js.CKR_SIGNATURE_INVALID) || isCode(error, pkcs11js.CKR_SIGNATURE_LEN_RANGE)) return false;
        throw error;
      }
    }
    case 'encrypt': {
      const data = asBuffer(request.data);
      initWithFreshHandle(asBuffer(request.id), 'secret', (key) => lib.C_EncryptInit(work!, aesGcmMechanism(asBuffer(request.iv)), key));
      const output = Buffer.alloc(data.length + GCM_TAG_BYTES);
      // SoftHSM2 rejects an empty C_Encrypt input (CKR_ARGUMENTS_BAD); C_EncryptFinal alone
      // yields the tag of the empty message, which is the same ciphertext.
      return data.length === 0 ? lib.C_EncryptFinal(work!, output) : lib.C_Encrypt(work!, data, output);
    }
    case 'decrypt': {
      const data = asBuffer(request.data);
      initWithFreshHandle(asBuffer(request.id), 'secret', (key) => lib.C_DecryptInit(work!, aesGcmMechanism(asBuffer(request.iv)), key));
      return lib.C_Decrypt(work!, data, Buffer.alloc(Math.max(data.length, 1)));
    }
    case 'generate':
      return generate(asBuffer(request.id), request.label, request.spec);
    case 'destroy': {
      const id = asBuffer(request.id);
      forget(id);
      // Token objects only: every other thread destroys its own copies on its `forget` notice,
      // concurrently with this, so a copy found here could be gone by the time it is destroyed.
      for (const object of find(objects!, tokenObjectsByIdTemplate(id))) {
        try {
          lib.C_DestroyObject(objects!, object);
        } catch (error) {
          // Destroyed meanwhile by another process deleting the same key: it is gone either way.
          if (toTokenError(error, 'C_DestroyObject').errorClass !== 'stale-handle') throw error;
        }
      }
      return undefined;
    }
    case 'list': {
      const found: Array<{ id: Uint8Array; label: string }> = [];
      for (const object of find(objects!, [{ type: pkcs11js.CKA_TOKEN, value: true }])) {
        const [idAttr, labelAttr] = lib.C_GetAttributeValue(objects!, object, [{ type: pkcs11js.CKA_ID }, { type: pkcs11js.CKA_LABEL }]);
        const label = (labelAttr?.value as Buffer | undefined)?.toString('utf8') ?? '';
        if (label.startsWith(request.labelPrefix)) found.push({ id: idAttr?.value as Buffer, label });
      }
      return found;
    }
    case 'reopen':
      // The token was reconnected: these sessions, and the copies on them, are gone with it.
      closeSessions();
      handles.clear();
      slot = asBuffer(request.slot);
      sessionFailure = undefined;
      openSessions();
      return undefined;
    case 'ping':
      lib.C_GetSessionInfo(work!);
      lib.C_DigestInit(work!, { mechanism: pkcs11js.CKM_SHA256 });
      lib.C_Digest(work!, PING_INPUT, Buffer.alloc(32));
      return undefined;
  }
}

/**
 * An empty message (pure Ed25519 signs the message itself, and the empty one is a message) as a
 * zero-length view into a real allocation: an empty Buffer may reach the module as a NULL
 * pointer, which SoftHSM2 refuses with CKR_ARGUMENTS_BAD even when the length is 0.
 */
const EMPTY_INPUT = Buffer.alloc(1).subarray(0, 0);
const nonNullBytes = (bytes: Buffer): Buffer => (bytes.length === 0 ? EMPTY_INPUT : bytes);

function failureOf(error: unknown): TokenFailure {
  if (error instanceof KeyNotFound) return { kind: 'key-not-found', message: error.message };
  const code = (error as { code?: unknown })?.code;
  const message = (error as Error)?.message ?? String(error);
  return typeof code === 'number' && code !== 0 ? { kind: 'ckr', code, message } : { kind: 'other', message };
}

/** A call failed part-way: start the next one on a fresh session (see the invariants above). */
function renewWorkSession(error: unknown): void {
  if (toTokenError(error, 'call').errorClass === 'unavailable') return; // the main thread retires this thread
  try {
    if (work) lib.C_CloseSession(work);
  } catch {
    // Already closed by the token.
  }
  try {
    work = lib.C_OpenSession(slot, RW_SESSION);
  } catch (reopenError) {
    sessionFailure = reopenError;
    work = undefined;
  }
}

function closeSessions(): void {
  for (const session of [work, objects]) {
    if (!session) continue;
    try {
      lib.C_CloseSession(session);
    } catch {
      // The token dropped it already.
    }
  }
  work = objects = undefined;
}

parentPort!.on('message', (message: TokenMessage) => {
  if (message.op === 'retire') {
    closeSessions();
    // dlclose only: the library stays loaded by the main thread, and C_Finalize is its call.
    lib.close();
    parentPort!.close();
    return;
  }
  if (message.op === 'forget') {
    for (const id of message.ids) forget(asBuffer(id));
    return;
  }
  let reply: TokenReply;
  if (message.op !== 'reopen' && (sessionFailure !== undefined || !work || !objects)) {
    reply = { seq: message.seq, ok: false, failure: failureOf(sessionFailure ?? new Error('token thread has no session')), broken: true };
  } else {
    try {
      reply = { seq: message.seq, ok: true, value: run(message) };
    } catch (error) {
      if (message.op === 'reopen') sessionFailure = error;
      else if (!(error instanceof KeyNotFound)) renewWorkSession(error);
      reply = { seq: message.seq, ok: false, failure: failureOf(error), broken: sessionFailure !== undefined || !work || !objects };
    }
  }
  parentPort!.postMessage(reply);
});

/** CKA_EC_POINT is a DER OCTET STRING around the uncompressed point (PKCS#11 v2.40 §2.3.3). */
function unwrapOctetString(der: Buffer): Buffer {
  if (der[0] !== 0x04) return der;
  const first = der[1]!;
  if (first < 0x80) return der.subarray(2, 2 + first);
  const lengthBytes = first & 0x7f;
  const length = der.subarray(2, 2 + lengthBytes).reduce((acc, byte) => acc * 256 + byte, 0);
  return der.subarray(2 + lengthBytes, 2 + lengthBytes + length);
}

/**
 * An Ed25519 CKA_EC_POINT is the 32-byte encoded point, DER-wrapped as an OCTET STRING (what
 * SoftHSM2 returns) or bare (what some tokens return, following PKCS#11 3.0's wording).
 */
function ed25519Spki(point: Buffer): Buffer {
  const bytes = point.length === 32 ? point : unwrapOctetString(point);
  if (bytes.length !== 32) throw new Error('The token returned an Ed25519 public key in an unexpected form');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: bytes.toString('base64url') }, format: 'jwk' }).export({ type: 'spki', format: 'der' });
}

const CURVE_OF_PARAMS = new Map(Object.entries(EC_PARAMS).map(([curve, der]) => [der.toString('hex'), curve as EcCurve]));

function ecSpki(params: Buffer, point: Buffer): Buffer {
  const curve = CURVE_OF_PARAMS.get(params.toString('hex'));
  const bytes = curve ? CURVE_ORDER_BYTES[curve] : 0;
  if (!curve || point[0] !== 0x04 || point.length !== 1 + 2 * bytes) throw new Error('The token returned an EC public key in an unexpected form');
  return createPublicKey({
    key: { kty: 'EC', crv: curve, x: point.subarray(1, 1 + bytes).toString('base64url'), y: point.subarray(1 + bytes).toString('base64url') },
    format: 'jwk',
  }).export({ type: 'spki', format: 'der' });
}
