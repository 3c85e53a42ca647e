/**
 * The token ceiling: SoftHSM2 driven by pkcs11js directly, with no service code in the way,
 * the way the service's token layer drives it: N worker_threads, each with its own session,
 * making blocking C_*Init + operation calls, one operation in flight per thread.
 *
 * Runs as a child process (forked by scripts/bench.ts) so that its CPU time is the token's
 * alone: cores used = process CPU time ÷ wall time over a measured run, and token CPU per
 * operation = CPU time ÷ operations, the first term of the physical limit (README, "Benchmark").
 *
 * It makes a fresh token in the directory it is given, logs in once from this thread (login is
 * per process), generates RSA-2048, P-256 and AES-256 keys with the service's own templates
 * (src/pkcs11/templates.ts: token objects, private, sensitive, never extractable; SoftHSM2 is
 * slower with those than with session objects, so the ceiling must use the same kind) and uses
 * session copies of them (C_CopyObject with CKA_TOKEN false), as src/pkcs11/token.ts does for
 * hot keys.
 *
 * Input: argv[2] is a JSON `RawTokenRequest`. Output: one `RawTokenMessage` over IPC.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Worker } from 'node:worker_threads';
import pkcs11js from 'pkcs11js';
import { aesKeyTemplate, privateKeyTemplate, publicKeyTemplate } from '../../src/pkcs11/templates.js';
import { spawnWorker } from '../../src/spawn-worker.js';
import type { TokenWorkerCommand, TokenWorkerData, TokenWorkerReply } from './token-worker.js';

export type RawOp = 'rsa' | 'p256' | 'aes';

export interface RawTokenRequest {
  modulePath: string;
  /** A fresh directory owned by the parent, which removes it. */
  dir: string;
  threads: number;
  durationMs: number;
  warmupMs: number;
  ops: RawOp[];
}

export interface RawOpResult {
  op: RawOp;
  ops: number;
  seconds: number;
  opsPerSec: number;
  /** CPU time of the whole process (every thread) over the measured run, ms. */
  cpuMs: number;
  /** Output length of one operation, as a sanity check (256, 64, 1040). */
  outputBytes: number;
  /** Operations each thread completed: a thread far behind the others would show here. */
  perThread: number[];
  /**
   * The same threads driven as the service's pool drives its own: one message per operation and
   * its answer, one in flight per thread. Its CPU per operation less the loop's is what one
   * thread hop costs (both threads' share of posting, waking and dispatching the two messages).
   */
  messaged: { ops: number; seconds: number; opsPerSec: number; cpuMs: number };
}

export type RawTokenMessage =
  | { type: 'result'; results: RawOpResult[]; threads: number; sessionCopies: boolean; keygenMs: number }
  | { type: 'error'; message: string };

const RW_SESSION = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');
const LABEL = 'bench-raw';

type Handle = Buffer;

function createToken(lib: pkcs11js.PKCS11): { slot: Handle; userPin: string } {
  const soPin = randomBytes(8).toString('hex');
  const userPin = randomBytes(8).toString('hex');
  const free = lib.C_GetSlotList(true).find((slot) => (lib.C_GetTokenInfo(slot).flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0);
  if (!free) throw new Error('SoftHSM2 offers no free slot');
  lib.C_InitToken(free, soPin, LABEL.padEnd(32, ' '));
  // SoftHSM2 moves an initialized token to a new slot id: find it again by label.
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === LABEL);
  if (!slot) throw new Error('the new token vanished');
  const so = lib.C_OpenSession(slot, RW_SESSION);
  lib.C_Login(so, pkcs11js.CKU_SO, soPin);
  lib.C_InitPIN(so, userPin);
  lib.C_Logout(so);
  lib.C_CloseSession(so);
  return { slot, userPin };
}

/** A token worker thread (started as the service starts its own), and a queue of its replies. */
class TokenThread {
  private readonly worker: Worker;
  private readonly replies: TokenWorkerReply[] = [];
  private waiting: ((reply: TokenWorkerReply) => void) | undefined;
  private failure: Error | undefined;

  constructor(data: TokenWorkerData) {
    this.worker = spawnWorker(import.meta.url, 'token-worker', { workerData: data });
    this.worker.on('message', (reply: TokenWorkerReply) => this.deliver(reply));
    this.worker.on('error', (error) => this.deliver({ type: 'error', message: error.stack ?? error.message }));
    this.worker.on('exit', (code) => {
      this.failure ??= new Error(`a token worker exited (code ${code})`);
      this.deliver({ type: 'error', message: this.failure.message });
    });
  }

  private deliver(reply: TokenWorkerReply): void {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = undefined;
      resolve(reply);
    } else this.replies.push(reply);
  }

  async next(): Promise<TokenWorkerReply> {
    const reply = this.replies.shift() ?? (await new Promise<TokenWorkerReply>((resolve) => (this.waiting = resolve)));
    if (reply.type === 'error') throw new Error(`token worker: ${reply.message}`);
    return reply;
  }

  send(command: TokenWorkerCommand): void {
    this.worker.postMessage(command);
  }

  async stop(): Promise<void> {
    this.failure = new Error('stopped');
    this.send({ type: 'stop' });
    await new Promise((resolve) => this.worker.once('exit', resolve));
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

async function runAll(threads: TokenThread[], op: RawOp, durationMs: number): Promise<Array<Extract<TokenWorkerReply, { type: 'done' }>>> {
  for (const thread of threads) thread.send({ type: 'run', op, durationMs });
  return Promise.all(threads.map(async (thread) => (await thread.next()) as Extract<TokenWorkerReply, { type: 'done' }>));
}

/** What `run` returns, the wall time it took and the CPU time of the whole process meanwhile (ms). */
async function measured<T>(run: () => Promise<T>): Promise<{ value: T; seconds: number; cpuMs: number }> {
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const value = await run();
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  return { value, seconds, cpuMs: (cpu.user + cpu.system) / 1000 };
}

/** One operation per message, the next sent when its answer is in, for `durationMs`; the operations done. */
async function runMessaged(threads: TokenThread[], op: RawOp, durationMs: number): Promise<number> {
  const deadline = performance.now() + durationMs;
  const perThread = await Promise.all(
    threads.map(async (thread) => {
      let ops = 0;
      while (performance.now() < deadline) {
        thread.send({ type: 'one', op });
        await thread.next();
        ops++;
      }
      return ops;
    }),
  );
  return perThread.reduce((sum, ops) => sum + ops, 0);
}

async function run(request: RawTokenRequest): Promise<RawTokenMessage> {
  mkdirSync(join(request.dir, 'tokens'), { recursive: true, mode: 0o700 });
  const conf = join(request.dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${join(request.dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  // Read by SoftHSM2 in C_Initialize; the parent sets it too, this makes the child self-contained.
  process.env.SOFTHSM2_CONF = conf;

  const lib = new pkcs11js.PKCS11();
  lib.load(request.modulePath);
  lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  const threads: TokenThread[] = [];
  try {
    const { slot, userPin } = createToken(lib);
    // The anchor session holds the user login (per process, so the workers' sessions share it)
    // and the session copies for the whole run.
    const anchor = lib.C_OpenSession(slot, RW_SESSION);
    lib.C_Login(anchor, pkcs11js.CKU_USER, userPin);
    const keygenStart = performance.now();
    const keys = generateKeys(lib, anchor);
    const keygenMs = performance.now() - keygenStart;
    let sessionCopies = true;
    const hot = (object: Handle): Handle => {
      try {
        return lib.C_CopyObject(anchor, object, [{ type: pkcs11js.CKA_TOKEN, value: false }]);
      } catch {
        sessionCopies = false;
        return object;
      }
    };
    const hotKeys = { rsa: hot(keys.rsa), p256: hot(keys.p256), aes: hot(keys.aes) };

    // Inputs made once: the token's work does not depend on them.
    const digest = createHash('sha256').update(randomBytes(32)).digest();
    const data = { modulePath: request.modulePath, slot, keys: hotKeys, rsaInput: Buffer.concat([SHA256_DIGEST_INFO, digest]), digest, plaintext: randomBytes(1024) };
    for (let i = 0; i < request.threads; i++) threads.push(new TokenThread(data));
    await Promise.all(threads.map((thread) => thread.next()));

    const results: RawOpResult[] = [];
    for (const op of request.ops) {
      if (request.warmupMs > 0) await runAll(threads, op, request.warmupMs);
      const looped = await measured(() => runAll(threads, op, request.durationMs));
      const done = looped.value;
      const ops = done.reduce((sum, d) => sum + d.ops, 0);
      if (request.warmupMs > 0) await runMessaged(threads, op, request.warmupMs);
      const messaged = await measured(() => runMessaged(threads, op, request.durationMs));
      results.push({
        op,
        ops,
        seconds: looped.seconds,
        opsPerSec: ops / looped.seconds,
        cpuMs: looped.cpuMs,
        outputBytes: done[0]!.outputBytes,
        perThread: done.map((d) => d.ops),
        messaged: { ops: messaged.value, seconds: messaged.seconds, opsPerSec: messaged.value / messaged.seconds, cpuMs: messaged.cpuMs },
      });
    }
    await Promise.all(threads.map((thread) => thread.stop()));
    threads.length = 0;
    lib.C_CloseSession(anchor);
    return { type: 'result', results, threads: request.threads, sessionCopies, keygenMs };
  } finally {
    // No thread may be inside a call when the module is finalized.
    await Promise.all(threads.map((thread) => thread.terminate()));
    lib.C_Finalize();
  }
}

function generateKeys(lib: pkcs11js.PKCS11, session: Handle): Record<RawOp, Handle> {
  const id = (n: number) => Buffer.from([n]);
  const rsa = lib.C_GenerateKeyPair(
    session,
    { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
    publicKeyTemplate(id(1), 'bench-rsa-2048', { kind: 'rsa', bits: 2048 }),
    privateKeyTemplate(id(1), 'bench-rsa-2048', 'rsa'),
  );
  const ec = lib.C_GenerateKeyPair(
    session,
    { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
    publicKeyTemplate(id(2), 'bench-p256', { kind: 'ec', curve: 'P-256' }),
    privateKeyTemplate(id(2), 'bench-p256', 'ec'),
  );
  const aes = lib.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, aesKeyTemplate(id(3), 'bench-aes-256', 256));
  return { rsa: rsa.privateKey, p256: ec.privateKey, aes };
}

// The parent going away (even by SIGKILL) must not leave this process looping on the token.
process.on('disconnect', () => process.exit(1));

const request = JSON.parse(process.argv[2] ?? '{}') as RawTokenRequest;
run(request).then(
  (message) => process.send!(message, () => process.exit(0)),
  (error: unknown) => process.send!({ type: 'error', message: error instanceof Error ? `${error.message}\n${error.stack}` : String(error) } satisfies RawTokenMessage, () => process.exit(1)),
);
