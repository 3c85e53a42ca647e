/**
 * The token ceiling: SoftHSM2 driven by pkcs11js directly, with no service code in the way.
 *
 * Runs as a child process (forked by scripts/bench.ts) because UV_THREADPOOL_SIZE must be set
 * before the process starts. It makes a fresh token in the directory it is given, generates
 * RSA-2048, P-256 and AES-256 keys with the attributes the service gives its own (token
 * objects, private, sensitive, never extractable: SoftHSM2 is slower with those than with
 * session objects, so the ceiling must use the same kind), then for each mechanism runs one
 * loop per session, one operation in flight per session, exactly as the service's pool does:
 * C_*Init on the main thread, then the asynchronous call on libuv's thread pool.
 *
 * Input: argv[2] is a JSON `RawTokenRequest`. Output: one `RawTokenMessage` over IPC.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pkcs11js from 'pkcs11js';

export type RawOp = 'rsa' | 'p256' | 'aes';

export interface RawTokenRequest {
  modulePath: string;
  /** A fresh directory owned by the parent, which removes it. */
  dir: string;
  sessions: number;
  durationMs: number;
  warmupMs: number;
  ops: RawOp[];
}

export interface RawOpResult {
  op: RawOp;
  ops: number;
  seconds: number;
  opsPerSec: number;
  /** Output length of one operation, as a sanity check (256, 64, 1040). */
  outputBytes: number;
}

export type RawTokenMessage =
  | { type: 'result'; results: RawOpResult[]; threadpool: string | undefined; keygenMs: number }
  | { type: 'error'; message: string };

const RW_SESSION = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;
const P256_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');
const LABEL = 'bench-raw';

type Handle = Buffer;

function privateObject(id: Buffer): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_MODIFIABLE, value: false },
    { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_LABEL, value: `bench-${id.toString('hex')}` },
  ];
}

function publicObject(id: Buffer, keyType: number, extra: pkcs11js.Template): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: keyType },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_VERIFY, value: true },
    { type: pkcs11js.CKA_ID, value: id },
    ...extra,
  ];
}

function signingPrivateKey(id: Buffer, keyType: number): pkcs11js.Template {
  return [...privateObject(id), { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_KEY_TYPE, value: keyType }, { type: pkcs11js.CKA_SIGN, value: true }];
}

function createToken(lib: pkcs11js.PKCS11): Handle {
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
  // The anchor session keeps the user login alive for the whole run.
  const anchor = lib.C_OpenSession(slot, RW_SESSION);
  lib.C_Login(anchor, pkcs11js.CKU_USER, userPin);
  return slot;
}

/**
 * Runs `once` in a loop on every session until the deadline; each loop has one operation in
 * flight. Returns completed operations over the wall time until the last one finished.
 */
async function measure(sessions: Handle[], durationMs: number, once: (session: Handle) => Promise<unknown>): Promise<{ ops: number; seconds: number }> {
  let ops = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  await Promise.all(
    sessions.map(async (session) => {
      while (performance.now() < deadline) {
        await once(session);
        ops++;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  return { ops, seconds };
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
  try {
    const slot = createToken(lib);
    const sessions = Array.from({ length: request.sessions }, () => lib.C_OpenSession(slot, RW_SESSION));
    const setup = sessions[0]!;

    const keygenStart = performance.now();
    const rsa = await lib.C_GenerateKeyPairAsync(
      setup,
      { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
      publicObject(Buffer.from('01', 'hex'), pkcs11js.CKK_RSA, [
        { type: pkcs11js.CKA_MODULUS_BITS, value: 2048 },
        { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([0x01, 0x00, 0x01]) },
      ]),
      signingPrivateKey(Buffer.from('01', 'hex'), pkcs11js.CKK_RSA),
    );
    const ec = await lib.C_GenerateKeyPairAsync(
      setup,
      { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      publicObject(Buffer.from('02', 'hex'), pkcs11js.CKK_EC, [{ type: pkcs11js.CKA_EC_PARAMS, value: P256_PARAMS }]),
      signingPrivateKey(Buffer.from('02', 'hex'), pkcs11js.CKK_EC),
    );
    const aes = await lib.C_GenerateKeyAsync(setup, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      ...privateObject(Buffer.from('03', 'hex')),
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
    ]);
    const keygenMs = performance.now() - keygenStart;

    // Inputs made once: the token's work does not depend on them. Outputs: one buffer per
    // session (one operation in flight per session), kept referenced until the callback.
    const digest = createHash('sha256').update(randomBytes(32)).digest();
    const rsaInput = Buffer.concat([SHA256_DIGEST_INFO, digest]);
    const plaintext = randomBytes(1024);
    const outputs = new Map<Handle, Buffer>(sessions.map((s) => [s, Buffer.alloc(1024 + 16)]));
    const output = (session: Handle) => outputs.get(session)!;

    const operations: Record<RawOp, (session: Handle) => Promise<Buffer>> = {
      rsa: (session) => {
        lib.C_SignInit(session, { mechanism: pkcs11js.CKM_RSA_PKCS }, rsa.privateKey);
        return lib.C_SignAsync(session, rsaInput, output(session));
      },
      p256: (session) => {
        lib.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, ec.privateKey);
        return lib.C_SignAsync(session, digest, output(session));
      },
      aes: (session) => {
        // A fresh CSPRNG IV per call, as the service does.
        const iv = randomBytes(12);
        const parameter: pkcs11js.AesGCM = { type: pkcs11js.CK_PARAMS_AES_GCM, iv, ivBits: 96, tagBits: 128 };
        lib.C_EncryptInit(session, { mechanism: pkcs11js.CKM_AES_GCM, parameter }, aes);
        return lib.C_EncryptAsync(session, plaintext, output(session));
      },
    };

    const results: RawOpResult[] = [];
    for (const op of request.ops) {
      const outputBytes = (await operations[op](setup)).length;
      if (request.warmupMs > 0) await measure(sessions, request.warmupMs, operations[op]);
      const { ops, seconds } = await measure(sessions, request.durationMs, operations[op]);
      results.push({ op, ops, seconds, opsPerSec: ops / seconds, outputBytes });
    }
    for (const session of sessions) lib.C_CloseSession(session);
    return { type: 'result', results, threadpool: process.env.UV_THREADPOOL_SIZE, keygenMs };
  } finally {
    // Every asynchronous call has been awaited: finalizing now is safe.
    lib.C_Finalize();
  }
}

// The parent going away (even by SIGKILL) must not leave this process looping on the token.
process.on('disconnect', () => process.exit(1));

const request = JSON.parse(process.argv[2] ?? '{}') as RawTokenRequest;
run(request).then(
  (message) => process.send!(message, () => process.exit(0)),
  (error: unknown) => process.send!({ type: 'error', message: error instanceof Error ? `${error.message}\n${error.stack}` : String(error) } satisfies RawTokenMessage, () => process.exit(1)),
);
