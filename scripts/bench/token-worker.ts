/**
 * One thread of the token ceiling (scripts/bench/raw-token.ts): its own session on the token the
 * parent thread made and logged in to, and blocking pkcs11js calls, C_*Init then the operation,
 * one operation in flight, as a token worker thread of the service makes them.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import pkcs11js from 'pkcs11js';
import type { RawOp } from './raw-token.js';

export interface TokenWorkerData {
  modulePath: string;
  slot: Uint8Array;
  /** Session copies of the keys, made by the parent thread (their handles are process-wide). */
  keys: Record<RawOp, Uint8Array>;
  rsaInput: Uint8Array;
  digest: Uint8Array;
  plaintext: Uint8Array;
}

/** `run` loops inside the thread; `one` is a single operation, answered by a message of its own. */
export type TokenWorkerCommand = { type: 'run'; op: RawOp; durationMs: number } | { type: 'one'; op: RawOp } | { type: 'stop' };
export type TokenWorkerReply =
  | { type: 'ready' }
  | { type: 'done'; op: RawOp; ops: number; seconds: number; outputBytes: number }
  | { type: 'answer'; value: Uint8Array }
  | { type: 'error'; message: string };

const data = workerData as TokenWorkerData;
const port = parentPort!;
const RW_SESSION = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;

const lib = new pkcs11js.PKCS11();
lib.load(data.modulePath);
try {
  lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
} catch (error) {
  // The parent thread initialized the module: Cryptoki state is per process, not per thread.
  if ((error as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw error;
}
const session = lib.C_OpenSession(Buffer.from(data.slot), RW_SESSION);
const keys = { rsa: Buffer.from(data.keys.rsa), p256: Buffer.from(data.keys.p256), aes: Buffer.from(data.keys.aes) };
const rsaInput = Buffer.from(data.rsaInput);
const digest = Buffer.from(data.digest);
const plaintext = Buffer.from(data.plaintext);
const output = Buffer.alloc(plaintext.length + 16);

const operations: Record<RawOp, () => Buffer> = {
  rsa: () => {
    lib.C_SignInit(session, { mechanism: pkcs11js.CKM_RSA_PKCS }, keys.rsa);
    return lib.C_Sign(session, rsaInput, output);
  },
  p256: () => {
    lib.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, keys.p256);
    return lib.C_Sign(session, digest, output);
  },
  aes: () => {
    // A fresh CSPRNG IV per call, as the service does.
    const parameter: pkcs11js.AesGCM = { type: pkcs11js.CK_PARAMS_AES_GCM, iv: randomBytes(12), ivBits: 96, tagBits: 128 };
    lib.C_EncryptInit(session, { mechanism: pkcs11js.CKM_AES_GCM, parameter }, keys.aes);
    return lib.C_Encrypt(session, plaintext, output);
  },
};

port.on('message', (command: TokenWorkerCommand) => {
  if (command.type === 'stop') {
    // C_Finalize belongs to the parent thread: it would end every thread's sessions.
    lib.C_CloseSession(session);
    port.close();
    return;
  }
  try {
    const operation = operations[command.op];
    if (command.type === 'one') {
      // As a token thread of the service answers: the output in a buffer of its own.
      port.postMessage({ type: 'answer', value: new Uint8Array(operation()) } satisfies TokenWorkerReply);
      return;
    }
    const outputBytes = operation().length;
    let ops = 0;
    const start = performance.now();
    const deadline = start + command.durationMs;
    while (performance.now() < deadline) {
      operation();
      ops++;
    }
    port.postMessage({ type: 'done', op: command.op, ops, seconds: (performance.now() - start) / 1000, outputBytes } satisfies TokenWorkerReply);
  } catch (error) {
    port.postMessage({ type: 'error', message: error instanceof Error ? `${error.message}\n${error.stack}` : String(error) } satisfies TokenWorkerReply);
  }
});
port.postMessage({ type: 'ready' } satisfies TokenWorkerReply);
