/**
 * The CSR threads: `pki.csrThreads` worker threads (csr-worker.ts) that run parseCsr, so the
 * ~160 µs of DER walking, key import and signature check per sign-certificate request leave
 * the event loop and certificates scale with cores. `parse` answers exactly what parseCsr
 * answers: the same ReadCsr, or the same AppError (kind, status, message, details).
 *
 * Invariants:
 * - each request goes to the thread with the fewest requests in flight, and waits in that
 *   thread's port behind the ones before it; the route's body limit bounds each PEM;
 * - every request settles: by the thread's answer, by its deadline (`timeoutMs`, 10 s by
 *   default: then it gets a 503, and its thread, which may be stuck, is terminated and
 *   replaced; the requests it held get a 503 too), or when its thread dies (a 503: the CSR may
 *   be what killed it, so it is not tried again on the event loop);
 * - a thread whose module never loaded (it died before saying `ready`) held requests that never
 *   reached parseCsr: those are parsed on the event loop, and its slot is started again only
 *   after RESTART_DELAY_MS, so a thread that cannot start is not restarted in a loop;
 * - with no live thread (size 0, closed, or every slot waiting to restart) the event loop
 *   parses: the answer is the same, only slower;
 * - a thread answering `unexpected` (parseCsr threw something other than an AppError, a bug)
 *   has the CSR parsed again on the event loop, so the answer is the one it would have given;
 * - a thread keeps the process alive only while it holds requests (ref'd then, unref'd idle);
 * - live and terminating threads together stay under 2 x size: a thread terminated at its
 *   deadline may take a while to stop (inside a native call), and its slot waits for that.
 */
import type { Worker } from 'node:worker_threads';
import { AppError, serviceUnavailable, type ErrorKind, type ValidationProblem } from '../errors.js';
import { asBuffer } from '../pkcs11/token-protocol.js';
import { spawnWorker } from '../spawn-worker.js';
import { parseCsr, type ReadCsr } from './csr.js';

/** One CSR to parse; `seq` names the answer. */
export interface CsrRequest {
  seq: number;
  pem: string;
}

/** A ReadCsr as it crosses: its Buffers arrive as Uint8Arrays (structured clone). */
export type CsrOnTheWire = Omit<ReadCsr, 'subjectDer' | 'publicKeySpki'> & { subjectDer: Uint8Array; publicKeySpki: Uint8Array };

/** An AppError's fields, all a client or the log's summaries see of it (its cause stays behind). */
export interface CsrRefusal {
  kind: ErrorKind;
  message: string;
  details?: unknown;
  retryAfterSeconds?: number;
  problems?: ValidationProblem[];
  reason?: string;
}

export type CsrReply =
  /** The thread's module has loaded. */
  | { ready: true }
  | { seq: number; ok: true; csr: CsrOnTheWire }
  | { seq: number; ok: false; refusal: CsrRefusal }
  /** parseCsr threw something other than an AppError: its message, for nobody but a debugger. */
  | { seq: number; ok: false; unexpected: string };

export interface CsrThreadPoolOptions {
  /** Threads; 0 parses every CSR on the calling thread. */
  size: number;
  /** How long a CSR may take on its thread before its request gets a 503 (default 10 s). */
  timeoutMs?: number;
  /** Starts one thread (startCsrWorker by default; tests wrap it, or start one that misbehaves). */
  startWorker?: () => Worker;
  /** A thread that failed or was ended at a deadline, to log; must not throw. */
  onThreadFailure?: (error: Error) => void;
}

const DEFAULT_TIMEOUT_MS = 10_000;
/** After a thread died before it could load, how long its slot stays empty. */
const RESTART_DELAY_MS = 1000;

/** A CSR thread on a real worker thread, from csr-worker.ts beside this module. */
export function startCsrWorker(): Worker {
  return spawnWorker(import.meta.url, 'csr-worker', { name: 'csr' });
}

interface Pending {
  pem: string;
  resolve: (csr: ReadCsr | Promise<ReadCsr>) => void;
  reject: (error: AppError) => void;
  timer: NodeJS.Timeout;
}

interface CsrThread {
  worker: Worker;
  /** Its module loaded (see CsrReply `ready`). */
  ready: boolean;
  /** Set once the pool let go of it (deadline, close): its exit then changes nothing. */
  retired: boolean;
  pending: Map<number, Pending>;
}

function fromWire(csr: CsrOnTheWire): ReadCsr {
  // In place, without copying: the arrays own ArrayBuffers of their own (csr-worker.ts).
  const read = csr as unknown as ReadCsr;
  read.subjectDer = asBuffer(csr.subjectDer);
  read.publicKeySpki = asBuffer(csr.publicKeySpki);
  return read;
}

function fromRefusal(refusal: CsrRefusal): AppError {
  const options: AppError['options'] = {};
  if (refusal.details !== undefined) options.details = refusal.details;
  if (refusal.retryAfterSeconds !== undefined) options.retryAfterSeconds = refusal.retryAfterSeconds;
  if (refusal.problems !== undefined) options.problems = refusal.problems;
  if (refusal.reason !== undefined) options.reason = refusal.reason;
  return new AppError(refusal.kind, refusal.message, options);
}

export class CsrThreadPool {
  private readonly slots: Array<CsrThread | undefined>;
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private readonly timeoutMs: number;
  private readonly startWorker: () => Worker;
  /** Threads terminated at a deadline or on close that have not exited yet. */
  private terminating = 0;
  private nextSeq = 1;
  private closed = false;

  constructor(private readonly options: CsrThreadPoolOptions) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.startWorker = options.startWorker ?? startCsrWorker;
    this.slots = new Array<CsrThread | undefined>(options.size).fill(undefined);
    // Started now, not at the first CSR: loading the module takes a thread tens of milliseconds.
    for (let i = 0; i < options.size; i++) this.fill(i);
  }

  /** CSRs a thread answered (parsed or refused) since start. */
  private answered = 0;

  /** Live threads, the requests they hold, and how many they answered. */
  get stats(): { threads: number; inFlight: number; terminating: number; answered: number } {
    let threads = 0;
    let inFlight = 0;
    for (const thread of this.slots) {
      if (!thread) continue;
      threads++;
      inFlight += thread.pending.size;
    }
    return { threads, inFlight, terminating: this.terminating, answered: this.answered };
  }

  /** parseCsr, on the least busy thread. */
  parse(pem: string): Promise<ReadCsr> {
    const thread = this.leastBusy();
    if (!thread) return parseCsr(pem);
    return new Promise<ReadCsr>((resolve, reject) => {
      const seq = this.nextSeq++;
      const timer = setTimeout(() => this.expire(thread, seq), this.timeoutMs);
      // The thread, ref'd while it holds a request, is what keeps the process waiting.
      timer.unref();
      if (thread.pending.size === 0) thread.worker.ref();
      thread.pending.set(seq, { pem, resolve, reject, timer });
      thread.worker.postMessage({ seq, pem } satisfies CsrRequest);
    });
  }

  /** Ends every thread; requests they still held get a 503. Later CSRs are parsed on the calling thread. */
  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.restartTimers) clearTimeout(timer);
    this.restartTimers.clear();
    const exits: Array<Promise<unknown>> = [];
    for (let i = 0; i < this.slots.length; i++) {
      const thread = this.slots[i];
      if (!thread) continue;
      this.slots[i] = undefined;
      exits.push(this.retire(thread, () => serviceUnavailable('The service is shutting down; retry shortly')));
    }
    await Promise.all(exits);
  }

  private leastBusy(): CsrThread | undefined {
    let best: CsrThread | undefined;
    for (const thread of this.slots) if (thread && (!best || thread.pending.size < best.pending.size)) best = thread;
    return best;
  }

  /** Starts a thread in an empty slot, unless closed or too many threads are still stopping. */
  private fill(index: number): void {
    if (this.closed || this.slots[index] || this.live() + this.terminating >= 2 * this.options.size) return;
    let worker: Worker;
    try {
      worker = this.startWorker();
    } catch (error) {
      this.failed(error);
      this.restartLater(index);
      return;
    }
    // Idle, a thread must not keep the process alive.
    worker.unref();
    const thread: CsrThread = { worker, ready: false, retired: false, pending: new Map() };
    this.slots[index] = thread;
    worker.on('message', (reply: CsrReply) => this.answer(thread, reply));
    worker.on('error', (error) => this.failed(error));
    worker.once('exit', (code) => this.exited(thread, code));
  }

  private live(): number {
    return this.slots.reduce((count, thread) => count + (thread ? 1 : 0), 0);
  }

  private restartLater(index: number): void {
    const timer = setTimeout(() => {
      this.restartTimers.delete(timer);
      this.fill(index);
    }, RESTART_DELAY_MS);
    timer.unref();
    this.restartTimers.add(timer);
  }

  private take(thread: CsrThread, seq: number): Pending | undefined {
    const pending = thread.pending.get(seq);
    if (!pending) return undefined;
    thread.pending.delete(seq);
    clearTimeout(pending.timer);
    if (thread.pending.size === 0 && !thread.retired) thread.worker.unref();
    return pending;
  }

  private answer(thread: CsrThread, reply: CsrReply): void {
    if ('ready' in reply) {
      thread.ready = true;
      return;
    }
    const pending = this.take(thread, reply.seq);
    if (!pending) return;
    if (reply.ok || 'refusal' in reply) this.answered++;
    if (reply.ok) pending.resolve(fromWire(reply.csr));
    else if ('refusal' in reply) pending.reject(fromRefusal(reply.refusal));
    else pending.resolve(parseCsr(pending.pem));
  }

  /** A request outlived its deadline: its thread may be stuck, so it goes, and another takes its slot. */
  private expire(thread: CsrThread, seq: number): void {
    if (!thread.pending.has(seq) || thread.retired) return;
    const index = this.slots.indexOf(thread);
    if (index >= 0) this.slots[index] = undefined;
    this.failed(new Error(`A CSR thread did not answer within ${this.timeoutMs} ms; replacing it`));
    void this.retire(thread, () => serviceUnavailable(`The CSR was not checked within ${this.timeoutMs} ms; retry shortly`));
    if (index >= 0) this.fill(index);
  }

  /** Takes the thread out of service: its requests fail with `error()`, and it is terminated. */
  private retire(thread: CsrThread, error: () => AppError): Promise<unknown> {
    thread.retired = true;
    for (const seq of [...thread.pending.keys()]) this.take(thread, seq)!.reject(error());
    this.terminating++;
    return thread.worker
      .terminate()
      .catch(() => undefined)
      .finally(() => {
        this.terminating--;
        // A slot left empty while too many threads were stopping can have its thread now.
        for (let i = 0; i < this.slots.length; i++) this.fill(i);
      });
  }

  private exited(thread: CsrThread, code: number): void {
    if (thread.retired) return;
    const index = this.slots.indexOf(thread);
    if (index >= 0) this.slots[index] = undefined;
    if (!this.closed) this.failed(new Error(`A CSR thread exited (code ${code})`));
    for (const seq of [...thread.pending.keys()]) {
      const pending = this.take(thread, seq)!;
      // Before `ready` no CSR reached parseCsr: nothing to fear from parsing them here.
      if (thread.ready) pending.reject(serviceUnavailable('The CSR could not be checked: the thread reading it stopped; retry shortly'));
      else pending.resolve(parseCsr(pending.pem));
    }
    if (index < 0) return;
    if (thread.ready) this.fill(index);
    else this.restartLater(index);
  }

  private failed(error: unknown): void {
    try {
      this.options.onThreadFailure?.(error instanceof Error ? error : new Error(String(error)));
    } catch {
      // A log line must not turn into an exception here.
    }
  }
}
