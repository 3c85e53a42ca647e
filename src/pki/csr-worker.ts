/**
 * A CSR thread: a worker_thread (started by csr-threads.ts through spawn-worker.ts) that runs
 * parseCsr for the main thread, so DER walking, the key import and the proof-of-possession check
 * (~160 µs a CSR) leave the event loop.
 *
 * Requests are handled as they come, several at once (parseCsr awaits ECDSA verification on
 * libuv's pool), each answered with its own seq. The answer is plain data: the ReadCsr, with its
 * two Buffers copied into ArrayBuffers of their own and transferred (a Buffer under 4 KiB lies
 * in Node's shared 8 KiB pool, which structured clone would copy whole), or the AppError's
 * fields, which the main thread makes into the same AppError again.
 */
import { parentPort } from 'node:worker_threads';
import { AppError } from '../errors.js';
import type { CsrReply, CsrRequest } from './csr-threads.js';
import { parseCsr } from './csr.js';

const port = parentPort!;

async function answer({ seq, pem }: CsrRequest): Promise<void> {
  let reply: CsrReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const csr = await parseCsr(pem);
    const subjectDer = new Uint8Array(csr.subjectDer);
    const publicKeySpki = new Uint8Array(csr.publicKeySpki);
    transfer = [subjectDer.buffer, publicKeySpki.buffer];
    reply = { seq, ok: true, csr: { ...csr, subjectDer, publicKeySpki } };
  } catch (error) {
    if (error instanceof AppError) {
      const { details, retryAfterSeconds, problems, reason } = error.options;
      reply = { seq, ok: false, refusal: { kind: error.kind, message: error.message, details, retryAfterSeconds, problems, reason } };
    } else {
      // A bug, not a refusal: the main thread parses this CSR itself, so the answer is the one it would give.
      reply = { seq, ok: false, unexpected: String((error as Error)?.message ?? error) };
    }
  }
  try {
    port.postMessage(reply, transfer);
  } catch (error) {
    // Refusal details that do not clone (none do today) must not leave the request unanswered.
    port.postMessage({ seq, ok: false, unexpected: String((error as Error)?.message ?? error) } satisfies CsrReply);
  }
}

port.on('message', (request: CsrRequest) => void answer(request));
// Loaded: a thread that dies before this was never able to parse anything (csr-threads.ts).
port.postMessage({ ready: true } satisfies CsrReply);
