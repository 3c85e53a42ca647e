/**
 * `npm run bench [-- --duration 5 --warmup 2 --sessions 4 --token-threads 2 --connections 32
 *   --ops rsa,p256,aes,cert-rsa,cert-p256,ocsp,ocsp-nonce,healthz --cpu-prof --no-build]`
 * `npm run bench -- --soak [--soak-requests 100000 --soak-warmup 10000]`
 *
 * Measures, side by side in one run on this machine (absolute figures drift between runs and
 * machines; the README's targets are ratios for that reason):
 *   1. the token ceiling: SoftHSM2 through pkcs11js directly, N worker threads making blocking
 *      calls on their own sessions (scripts/bench/raw-token.ts), and the CPU it burns per
 *      operation;
 *   2. the HTTP floor: a bare node:http server that parses a sign-shaped JSON body, before and
 *      after the service, and the CPU per request of server and load generator together;
 *   3. the peer: `cfssl serve` with an RSA-2048 and a P-256 CA signing the same CSR as the
 *      service's sign-certificate runs (scripts/bench/cfssl.ts);
 *   4. the service (`node dist/main.js`) under autocannon: RSA-2048 sign, ECDSA P-256 sign,
 *      AES-256-GCM encrypt of 1 KiB, sign-certificate on an RSA-2048 and a P-256 root CA, OCSP
 *      for a certificate of a P-256 CA (without a nonce, the answer a responder may reuse, and
 *      with one, signed for every request), and /healthz latency from a slow probe while
 *      RSA-4096 signing saturates the token;
 * then reads each KMS figure against the physical limit of the machine in this run,
 * `cores ÷ (token CPU per op + floor CPU per request)`, and each certificate figure against
 * cfssl's, with the project's targets beside them. `--soak` instead sends a long mixed load
 * to one service process and reports its memory, threads and sessions (scripts/bench/soak.ts).
 *
 * It asserts nothing: a target not met is information, and the exit code says only whether
 * the benchmark ran. Each measurement runs alone (the others' processes are stopped),
 * everything listens on 127.0.0.1, and every child and temporary directory is removed on every
 * exit path; a watchdog bounds the whole run.
 */
import { execFile, fork, spawn, type ChildProcess } from 'node:child_process';
import { createPublicKey, randomBytes, verify as verifySignature } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem, arch, platform } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { loadConfig } from '../src/config/load.js';
import { BENCH_CSR_NAME, BENCH_CSR_TTL, checkIssuedCertificate, makeBenchCsr, type BenchCsr } from './bench/certificates.js';
import { CFSSL_SIGN_PATH, cfsslSignBody, checkCfsslAnswer, makeCfsslCa, startCfssl } from './bench/cfssl.js';
import { runLoad, type LoadResult } from './bench/load.js';
import { checkOcspAnswer, ocspRequest } from './bench/ocsp.js';
import { cleanup, cleanupSync, freePort, isRunning, removeDir, stopChild, tempDir, track, treeCpuOf, treeMemoryOf, waitFor, withTimeout, type ExitStatus } from './bench/procs.js';
import { rssTrend, runSoak, soakStatusSummary, type SoakMixEntry, type SoakResult } from './bench/soak.js';
import type { FloorMessage } from './bench/http-floor.js';
import type { RawOp, RawOpResult, RawTokenMessage, RawTokenRequest } from './bench/raw-token.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH_DIR = fileURLToPath(new URL('./bench/', import.meta.url));
const MODULE_PATH = '/usr/lib/softhsm/libsofthsm2.so';

/** sign-certificate on a CA of one kind; its token mechanism is the raw op of the same key. */
type CertOp = 'cert-rsa' | 'cert-p256';
/** OCSP POST for one certificate of a P-256 CA: without a nonce (answers may be reused), with one (signed each time). */
type OcspOp = 'ocsp' | 'ocsp-nonce';
/** Operations loaded on their own at full speed. */
type LoadOp = RawOp | CertOp | OcspOp;
/** /healthz latency beside RSA-4096 signing saturation. */
type BenchOp = LoadOp | 'healthz';
const RAW_OPS: RawOp[] = ['rsa', 'p256', 'aes'];
const CERT_OPS_ALL: CertOp[] = ['cert-rsa', 'cert-p256'];
const OCSP_OPS: OcspOp[] = ['ocsp', 'ocsp-nonce'];
const ALL_OPS: BenchOp[] = [...RAW_OPS, ...CERT_OPS_ALL, ...OCSP_OPS, 'healthz'];
const isOcspOp = (op: BenchOp): op is OcspOp => op === 'ocsp' || op === 'ocsp-nonce';
const isCertOp = (op: BenchOp): op is CertOp => op === 'cert-rsa' || op === 'cert-p256';
const isLoadOp = (op: BenchOp): op is LoadOp => op !== 'healthz';
/**
 * The raw token operation each benchmark operation is read against; OCSP is reported on its own
 * (its figure is requests per second, not a share of a limit), so it adds no ceiling run.
 */
const MECHANISM_OF: Record<LoadOp, RawOp | undefined> = { rsa: 'rsa', p256: 'p256', aes: 'aes', 'cert-rsa': 'rsa', 'cert-p256': 'p256', ocsp: undefined, 'ocsp-nonce': undefined };
/** Which cfssl CA a sign-certificate run is read against. */
const CFSSL_KIND: Record<CertOp, 'rsa' | 'p256'> = { 'cert-rsa': 'rsa', 'cert-p256': 'p256' };

/** The project's targets (README, "Benchmark"): the bar now, and the goal beyond it. */
const LIMIT_TARGET = { now: 0.6, goal: 0.9 };
const CFSSL_TARGET: Record<CertOp, { now: number; goal: number }> = { 'cert-rsa': { now: 1.0, goal: 2.0 }, 'cert-p256': { now: 0.5, goal: 1.0 } };
const HEALTHZ_P99_MS = { now: 5, goal: 2 };
const SOAK_RSS_GROWTH = 0.1;
/** RSA-4096 makes the token the bottleneck; the probe is slow enough not to add load. */
const HEALTHZ_PROBE_PER_SECOND = 100;

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  durationS: number;
  warmupS: number;
  sessions: number;
  httpWorkers: number;
  tokenThreads: number;
  connections: number;
  /** Requests per second of every load run (autocannon overallRate); null: as fast as it answers. */
  rate: number | null;
  ops: BenchOp[];
  build: boolean;
  cpuProf: boolean;
  soak: boolean;
  soakRequests: number;
  soakWarmup: number;
  /** audit.retention for the soak's service (ms notation), with short prune and sign intervals; null: the default. */
  auditRetention: string | null;
}

const USAGE = `usage: npm run bench -- [options]
  --duration S        seconds per measured run (default 5)
  --warmup S          unmeasured seconds before each run (default 2; 0 for none)
  --http-workers N    HTTP_WORKERS of the service: worker processes, each with HSM_SESSIONS
                      token threads (default 1); CPU and memory are summed over them all
  --sessions N        HSM_SESSIONS of the service (default: hsm.sessions from loadConfig(),
                      i.e. config/default.json or HSM_SESSIONS)
  --token-threads N   worker threads of the token ceiling, one session each (default 2)
  --connections N     autocannon connections (default 32)
  --rate N            send N requests/s in every run instead of as many as are answered: the
                      CPU µs/req columns then compare two trees at the same load, which varies
                      less between runs on a shared machine than the saturated figures do (the
                      ratios to the limit and to cfssl mean nothing at a fixed rate)
  --ops LIST          any of rsa,p256,aes,cert-rsa,cert-p256,ocsp,ocsp-nonce,healthz (default
                      all); cert-* is sign-certificate on an RSA-2048 / P-256 root CA, beside
                      cfssl serve with a CA of the same kind; ocsp is an OCSP POST for one
                      certificate of a P-256 CA without a nonce (an answer the responder may
                      reuse), ocsp-nonce the same with a nonce (signed in the token each time);
                      healthz is /healthz latency while RSA-4096 signing saturates the token
  --cpu-prof          run the service with --cpu-prof; the profile is kept under .bench/
  --no-build          do not run tsc -p tsconfig.build.json first (use dist/ as it is)
  --soak              only the soak: mixed requests to one service process, then its memory,
                      threads and sessions after warm-up and at the end
  --soak-requests N   requests in the soak, warm-up included (default 100000)
  --soak-warmup N     requests before the first reading (default 10000)
  --audit-retention D audit.retention of the soak's service (e.g. 20s), pruned and signed every
                      2 s, to see the audit store stay bounded (default: the service's, 365d)`;

function positiveNumber(name: string, value: string | undefined, fallback: number, integer: boolean, min: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < min || (integer && !Number.isInteger(parsed))) throw new Error(`--${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}, got "${value}"`);
  return parsed;
}

function parseOptions(): Options | undefined {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      sessions: { type: 'string' },
      'http-workers': { type: 'string' },
      'token-threads': { type: 'string' },
      connections: { type: 'string' },
      rate: { type: 'string' },
      ops: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      soak: { type: 'boolean', default: false },
      'soak-requests': { type: 'string' },
      'soak-warmup': { type: 'string' },
      'audit-retention': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    return undefined;
  }
  // The service reads HSM_SESSIONS over config/default.json; so does this default.
  const configured = loadConfig({}, { HSM_SESSIONS: process.env.HSM_SESSIONS }).hsm.sessions;
  const ops = values.ops === undefined ? ALL_OPS : values.ops.split(',').map((op) => op.trim());
  for (const op of ops) if (!ALL_OPS.includes(op as BenchOp)) throw new Error(`--ops: unknown operation "${op}" (use ${ALL_OPS.join(',')})`);
  const soakRequests = positiveNumber('soak-requests', values['soak-requests'], 100_000, true, 2);
  const soakWarmup = positiveNumber('soak-warmup', values['soak-warmup'], Math.min(10_000, Math.floor(soakRequests / 10)), true, 1);
  if (soakWarmup >= soakRequests) throw new Error('--soak-warmup must be below --soak-requests');
  return {
    durationS: positiveNumber('duration', values.duration, 5, false, 1),
    warmupS: positiveNumber('warmup', values.warmup, 2, false, 0),
    sessions: positiveNumber('sessions', values.sessions, configured, true, 1),
    httpWorkers: positiveNumber('http-workers', values['http-workers'], 1, true, 1),
    tokenThreads: positiveNumber('token-threads', values['token-threads'], 2, true, 1),
    connections: positiveNumber('connections', values.connections, 32, true, 1),
    rate: values.rate === undefined ? null : positiveNumber('rate', values.rate, 0, true, 1),
    ops: ALL_OPS.filter((op) => ops.includes(op)),
    build: !values['no-build'],
    cpuProf: values['cpu-prof'],
    soak: values.soak,
    soakRequests,
    soakWarmup,
    auditRetention: values['audit-retention'] ?? null,
  };
}

// ---------------------------------------------------------------------------------------------
// What the run found; filled as it goes so a failure still prints what was measured.

/** The raw token operations a run needs: those selected, and the mechanisms of selected cert-* ops. */
const rawOpsOf = (options: Options): RawOp[] => RAW_OPS.filter((raw) => options.ops.some((op) => isLoadOp(op) && MECHANISM_OF[op] === raw));

interface ServiceRun {
  op: LoadOp;
  sample: string;
  load?: Measured;
  /** Service VmRSS right after this run, KiB. */
  rssAfterKiB?: number;
}

interface CfsslRun {
  op: CertOp;
  sample: string;
  load?: Measured;
}

interface HealthRun {
  keygenMs: number;
  sample?: string;
  /** RSA-4096 signing at full load. */
  saturation?: Measured;
  /** The slow /healthz probe beside it. */
  probe?: LoadResult;
}

interface Report {
  options: Options;
  raw?: Extract<RawTokenMessage, { type: 'result' }>;
  /** Before the service runs, and after them. */
  floorBefore?: Measured;
  floorAfter?: Measured;
  expressFloor?: Measured;
  cfssl: CfsslRun[];
  service: ServiceRun[];
  health?: HealthRun;
  soak?: SoakResult;
  rssBefore?: { rssKiB: number; hwmKiB: number; threads: number };
  rssAfter?: { rssKiB: number; hwmKiB: number; threads: number };
  serviceExit?: ExitStatus & { duringRun: boolean };
  serviceLog?: ServiceLog;
  cpuProfiles?: string[];
  failure?: string;
}

// ---------------------------------------------------------------------------------------------
// 1. The token ceiling (child process: its CPU time is the token's alone)

async function measureRawToken(options: Options): Promise<Extract<RawTokenMessage, { type: 'result' }>> {
  const dir = tempDir('hsm-signer-bench-token-');
  const request: RawTokenRequest = {
    modulePath: MODULE_PATH,
    dir,
    threads: options.tokenThreads,
    durationMs: options.durationS * 1000,
    warmupMs: options.warmupS * 1000,
    ops: rawOpsOf(options),
  };
  // fork() passes this process's execArgv (tsx's loader) on, so the child can be TypeScript.
  const child = track(
    fork(join(BENCH_DIR, 'raw-token.ts'), [JSON.stringify(request)], {
      cwd: ROOT,
      env: { ...process.env, SOFTHSM2_CONF: join(dir, 'softhsm2.conf') },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  try {
    const message = await withTimeout(
      new Promise<RawTokenMessage>((resolve, reject) => {
        child.once('message', (m) => resolve(m as RawTokenMessage));
        child.once('exit', (code, signal) => reject(new Error(`the raw token child exited early (code ${code}, signal ${signal})`)));
      }),
      request.ops.length * (options.durationS + options.warmupS) * 1000 + 120_000,
      'raw token measurement',
    );
    if (message.type === 'error') throw new Error(`raw token measurement failed: ${message.message}`);
    return message;
  } finally {
    await stopChild(child, 5_000);
    removeDir(dir);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. The HTTP floor

const signBody = (signingAlgorithm: string) => JSON.stringify({ signingAlgorithm, data: randomBytes(32).toString('base64') });

/** `http-floor`: bare node:http; `express-floor`: the same through Express 5 (what Express itself costs). */
async function measureFloor(options: Options, server: 'http-floor' | 'express-floor' = 'http-floor'): Promise<Measured> {
  const child = track(fork(join(BENCH_DIR, `${server}.ts`), [], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  try {
    const { port } = await withTimeout(
      new Promise<FloorMessage>((resolve, reject) => {
        child.once('message', (m) => resolve(m as FloorMessage));
        child.once('exit', (code, signal) => reject(new Error(`the HTTP floor server exited early (code ${code}, signal ${signal})`)));
      }),
      30_000,
      'HTTP floor server start',
    );
    const url = `http://127.0.0.1:${port}/api/v1/kms/keys/00000000-0000-4000-8000-000000000000/sign`;
    const body = signBody('ECDSA_SHA_256');
    const sample = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(5_000) });
    if (sample.status !== 200) throw new Error(`HTTP floor sample answered ${sample.status}`);
    await sample.arrayBuffer();
    return await load(options, url, body, {}, child.pid);
  } finally {
    await stopChild(child, 5_000);
  }
}

/**
 * CPU spent during a measured run, in ms: the server's main thread, its other threads, and
 * this process (autocannon, which has the machine's cores to share with the server).
 */
interface CpuShare {
  serverMainMs: number;
  serverOtherMs: number;
  loaderMs: number;
}

type Measured = LoadResult & { cpu?: CpuShare };

/** CPU seconds per 2xx response of a run, server and load generator together. */
const cpuPerOk = (m: Measured | undefined) => (m?.cpu && m.ok > 0 ? (m.cpu.serverMainMs + m.cpu.serverOtherMs + m.cpu.loaderMs) / 1000 / m.ok : undefined);

async function load(options: Options, url: string, body: string | Buffer | undefined, headers: Record<string, string>, serverPid: number | undefined, extra: { warmup?: boolean } = {}): Promise<Measured> {
  const rate = options.rate === null ? {} : { overallRate: options.rate };
  if (options.warmupS > 0 && extra.warmup !== false) await runLoad({ url, body, headers, connections: options.connections, durationS: options.warmupS, ...rate });
  const serverBefore = serverPid === undefined ? undefined : treeCpuOf(serverPid);
  const loaderBefore = process.cpuUsage();
  const result: Measured = await runLoad({ url, body, headers, connections: options.connections, durationS: options.durationS, ...rate });
  const loader = process.cpuUsage(loaderBefore);
  const serverAfter = serverPid === undefined ? undefined : treeCpuOf(serverPid);
  if (serverBefore && serverAfter) {
    result.cpu = {
      serverMainMs: serverAfter.mainMs - serverBefore.mainMs,
      serverOtherMs: serverAfter.otherMs - serverBefore.otherMs,
      loaderMs: (loader.user + loader.system) / 1000,
    };
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// 3. The peer: cfssl serve, one CA at a time

async function measureCfssl(options: Options, csr: BenchCsr, report: Report): Promise<void> {
  const dir = tempDir('hsm-signer-bench-cfssl-');
  try {
    for (const op of options.ops.filter(isCertOp)) {
      const ca = await makeCfsslCa(CFSSL_KIND[op], dir);
      const port = await freePort();
      const child = startCfssl(ca, port);
      const stderr: string[] = [];
      if (child.stderr) createInterface({ input: child.stderr }).on('line', (line) => stderr.push(line) > 20 && stderr.shift());
      const url = `http://127.0.0.1:${port}${CFSSL_SIGN_PATH}`;
      const body = cfsslSignBody(csr);
      try {
        let sample: unknown;
        await waitFor(
          `cfssl serve (${CFSSL_KIND[op]} CA)`,
          async () => {
            const response = await fetch(url, { method: 'POST', body, signal: AbortSignal.timeout(2_000) });
            sample = response.status === 200 ? await response.json() : undefined;
            return sample !== undefined;
          },
          30_000,
          child,
        );
        const run: CfsslRun = { op, sample: checkCfsslAnswer(sample, csr, ca) };
        report.cfssl.push(run);
        log(`cfssl ${CFSSL_KIND[op]} CA: sample ${run.sample}; loading for ${options.warmupS} s warm-up + ${options.durationS} s`);
        run.load = await load(options, url, body, {}, child.pid);
        if (!isRunning(child)) throw new Error(`cfssl serve exited during its run: ${stderr.join(' | ')}`);
      } catch (error) {
        throw new Error(`cfssl ${CFSSL_KIND[op]} CA: ${(error as Error).message}${stderr.length ? ` (cfssl said: ${stderr.slice(-3).join(' | ')})` : ''}`);
      } finally {
        await stopChild(child, 5_000);
      }
    }
  } finally {
    removeDir(dir);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. The service

/**
 * The service's stdout/stderr (pino JSON at LOG_LEVEL=warn): counted by level and by phase
 * (start and runs, or shutdown after SIGTERM, when requests autocannon abandoned at the end of
 * a run may still be queued for a session), tail kept.
 */
type LogPhase = 'runs' | 'shutdown';

class ServiceLog {
  readonly tail: string[] = [];
  phase: LogPhase = 'runs';
  readonly warnings: Record<LogPhase, number> = { runs: 0, shutdown: 0 };
  readonly errors: Record<LogPhase, number> = { runs: 0, shutdown: 0 };
  other = 0;
  readonly firstProblems: string[] = [];
  /** Distinct error messages of warn+ lines, with counts. */
  readonly messages = new Map<string, number>();

  attach(child: ChildProcess): void {
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream }).on('line', (line) => this.add(line));
    }
  }

  private add(line: string): void {
    this.tail.push(line);
    if (this.tail.length > 40) this.tail.shift();
    let entry: { level?: number; msg?: string; err?: { message?: string } } | undefined;
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      entry = undefined;
    }
    const level = entry?.level;
    if (level === undefined) this.other++;
    else if (level >= 50) this.errors[this.phase]++;
    else if (level >= 40) this.warnings[this.phase]++;
    if (level === undefined || level >= 40) {
      const key = `${this.phase}: ${entry?.err?.message ?? entry?.msg ?? line.slice(0, 200)}`;
      this.messages.set(key, (this.messages.get(key) ?? 0) + 1);
      if (this.firstProblems.length < 3) this.firstProblems.push(line.length > 400 ? `${line.slice(0, 400)}…` : line);
    }
  }
}

interface ApiResponse {
  status: number;
  body: any;
}

async function api(base: string, method: string, path: string, body?: unknown, token?: string, timeoutMs = 30_000): Promise<ApiResponse> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: keep the text for the message.
  }
  return { status: response.status, body: parsed };
}

function expectStatus(what: string, response: ApiResponse, status = 200): void {
  if (response.status !== status) throw new Error(`${what}: HTTP ${response.status} ${JSON.stringify(response.body).slice(0, 500)}`);
}

interface ServiceOp {
  op: RawOp;
  keyName: string;
  encryptionAlgorithm: string;
  keyUsage: 'sign-verify' | 'encrypt-decrypt';
  path: (keyId: string) => string;
  body: () => string;
  /** Checks one response beyond its status; returns a short description. */
  check: (base: string, token: string, keyId: string, requestBody: string, response: ApiResponse) => Promise<string>;
}

async function checkSignature(base: string, token: string, keyId: string, requestBody: string, response: ApiResponse, dsaEncoding: 'der' | undefined): Promise<string> {
  const signature = Buffer.from(String(response.body?.signature ?? ''), 'base64');
  const publicKey = await api(base, 'GET', `/api/v1/kms/keys/${keyId}/public-key`, undefined, token);
  expectStatus('public key', publicKey);
  const key = createPublicKey({ key: Buffer.from(publicKey.body.publicKey as string, 'base64'), format: 'der', type: 'spki' });
  const data = Buffer.from((JSON.parse(requestBody) as { data: string }).data, 'base64');
  const valid = verifySignature('sha256', data, dsaEncoding ? { key, dsaEncoding } : key, signature);
  return valid ? `200, ${signature.length}-byte signature verifies with node:crypto` : `200, but the ${signature.length}-byte signature does NOT verify with node:crypto`;
}

const SERVICE_OPS: Record<RawOp, ServiceOp> = {
  rsa: {
    op: 'rsa',
    keyName: 'bench-rsa-2048',
    encryptionAlgorithm: 'RSA_2048',
    keyUsage: 'sign-verify',
    path: (id) => `/api/v1/kms/keys/${id}/sign`,
    body: () => signBody('RSASSA_PKCS1_V1_5_SHA_256'),
    check: (base, token, id, body, response) => checkSignature(base, token, id, body, response, undefined),
  },
  p256: {
    op: 'p256',
    keyName: 'bench-p256',
    encryptionAlgorithm: 'ECC_NIST_P256',
    keyUsage: 'sign-verify',
    path: (id) => `/api/v1/kms/keys/${id}/sign`,
    body: () => signBody('ECDSA_SHA_256'),
    check: (base, token, id, body, response) => checkSignature(base, token, id, body, response, 'der'),
  },
  aes: {
    op: 'aes',
    keyName: 'bench-aes-256',
    encryptionAlgorithm: 'aes-256-gcm',
    keyUsage: 'encrypt-decrypt',
    path: (id) => `/api/v1/kms/keys/${id}/encrypt`,
    body: () => JSON.stringify({ plaintext: randomBytes(1024).toString('base64') }),
    async check(base, token, id, body, response) {
      const ciphertext = String(response.body?.ciphertext ?? '');
      const decrypted = await api(base, 'POST', `/api/v1/kms/keys/${id}/decrypt`, { ciphertext }, token);
      const roundTrip = decrypted.status === 200 && decrypted.body?.plaintext === (JSON.parse(body) as { plaintext: string }).plaintext;
      return roundTrip ? `200, ${Buffer.from(ciphertext, 'base64').length}-byte ciphertext decrypts back` : `200, but decrypt answered ${decrypted.status} / a different plaintext`;
    },
  },
};

/** sign-certificate on a root CA made for the run, with a permissive profile on it. */
interface CertOpSpec {
  op: CertOp;
  keyAlgorithm: 'RSA_2048' | 'EC_prime256v1';
  caKind: 'RSA' | 'ECDSA';
  commonName: string;
  slug: string;
}

const CERT_OPS: Record<CertOp, CertOpSpec> = {
  'cert-rsa': { op: 'cert-rsa', keyAlgorithm: 'RSA_2048', caKind: 'RSA', commonName: 'hsm-signer bench RSA-2048 root CA', slug: 'bench-rsa-2048' },
  'cert-p256': { op: 'cert-p256', keyAlgorithm: 'EC_prime256v1', caKind: 'ECDSA', commonName: 'hsm-signer bench P-256 root CA', slug: 'bench-p256' },
};

/** What one measured run loads: made before any run, so key and CA generation stay out of them. */
interface PreparedOp {
  path: string;
  /** The key a KMS operation uses. */
  keyId?: string;
  body: string | Buffer;
  /** Headers of every request; the bearer token when absent. */
  headers?: Record<string, string>;
  /** Sends one request and checks it, for operations that are not JSON (OCSP). */
  sample?: () => Promise<string>;
  /** Checks one response beyond its status; returns a short description. */
  check: (response: ApiResponse) => Promise<string>;
}

async function prepareOp(op: LoadOp, base: string, token: string, csr: BenchCsr | undefined): Promise<PreparedOp> {
  if (isOcspOp(op)) return prepareOcsp(op, base, token, csr);
  if (!isCertOp(op)) {
    const spec = SERVICE_OPS[op];
    const created = await api(base, 'POST', '/api/v1/kms/keys', { projectId: 'default', name: spec.keyName, keyUsage: spec.keyUsage, encryptionAlgorithm: spec.encryptionAlgorithm }, token);
    expectStatus(`create ${spec.encryptionAlgorithm} key`, created);
    const keyId = created.body.key.id as string;
    const body = spec.body();
    return { path: spec.path(keyId), keyId, body, check: (response) => spec.check(base, token, keyId, body, response) };
  }
  const spec = CERT_OPS[op];
  const ca = await api(base, 'POST', '/api/v1/cert-manager/ca/internal', { projectId: 'default', type: 'root', commonName: spec.commonName, keyAlgorithm: spec.keyAlgorithm }, token);
  expectStatus(`create ${spec.keyAlgorithm} root CA`, ca);
  const caId = ca.body.ca.id as string;
  const profile = await api(
    base,
    'POST',
    '/api/v1/cert-manager/certificate-profiles',
    { projectId: 'default', caId, slug: spec.slug, policy: { maxValidity: '397d', subject: [{ type: 'CN', allowed: ['**'] }], sans: { dns: ['**'] } } },
    token,
  );
  expectStatus(`create a profile on the ${spec.keyAlgorithm} CA`, profile);
  const profileId = profile.body.certificateProfile.id as string;
  const request = csr;
  if (!request) throw new Error('sign-certificate needs the run\'s CSR');
  return {
    path: '/api/v3/pki/certificates/sign-certificate',
    body: JSON.stringify({ profileId, csr: request.pem, ttl: BENCH_CSR_TTL }),
    check: (response) => checkIssuedCertificate(response.body ?? {}, request, spec.caKind),
  };
}

/** A P-256 root CA and one certificate under it, and the OCSP request for that certificate. */
async function prepareOcsp(op: OcspOp, base: string, token: string, csr: BenchCsr | undefined): Promise<PreparedOp> {
  if (!csr) throw new Error('OCSP needs the run\'s CSR for its certificate');
  const ca = await api(base, 'POST', '/api/v1/cert-manager/ca/internal', { projectId: 'default', type: 'root', commonName: `hsm-signer bench OCSP CA (${op})`, keyAlgorithm: 'EC_prime256v1' }, token);
  expectStatus('create the OCSP bench CA', ca);
  const caId = ca.body.ca.id as string;
  const profile = await api(base, 'POST', '/api/v1/cert-manager/certificate-profiles', { projectId: 'default', caId, slug: `bench-${op}`, policy: { maxValidity: '397d', subject: [{ type: 'CN', allowed: ['**'] }], sans: { dns: ['**'] } } }, token);
  expectStatus('create a profile on the OCSP bench CA', profile);
  const issued = await api(base, 'POST', '/api/v3/pki/certificates/sign-certificate', { profileId: profile.body.certificateProfile.id, csr: csr.pem, ttl: BENCH_CSR_TTL }, token);
  expectStatus('issue the certificate OCSP is asked about', issued);
  const caPem = (await api(base, 'GET', `/api/v1/cert-manager/ca/internal/${caId}/certificate`, undefined, token)).body.certificate as string;
  const caDer = Buffer.from(caPem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
  const body = ocspRequest(caDer, issued.body.serialNumber as string, op === 'ocsp-nonce');
  const path = `/api/v1/cert-manager/ocsp/${caId}`;
  const headers = { 'content-type': 'application/ocsp-request' };
  return {
    path,
    body,
    headers,
    check: async () => 'unused',
    sample: async () => {
      const response = await fetch(`${base}${path}`, { method: 'POST', headers, body, signal: AbortSignal.timeout(30_000) });
      if (response.status !== 200) throw new Error(`sample ${op} request: HTTP ${response.status}`);
      return checkOcspAnswer(Buffer.from(await response.arrayBuffer()), caDer);
    },
  };
}

/** The environment the service child gets: nothing from ours that would point it elsewhere. */
function serviceEnv(options: Options, dataDir: string, port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // UV_THREADPOOL_SIZE too: the service runs with libuv's pool as `npm start` gives it.
  const foreign = ['CONFIG_FILE', 'DATABASE_PATH', 'NODE_ENV', 'SOFTHSM2_CONF', 'PUBLIC_BASE_URL', 'ACCESS_TOKEN_TTL', 'ACCESS_TOKEN_MAX_TTL', 'NODE_OPTIONS', 'UV_THREADPOOL_SIZE'];
  for (const name of Object.keys(env)) if (name.startsWith('HSM_') || foreign.includes(name)) delete env[name];
  return {
    ...env,
    DATA_DIR: dataDir,
    HOST: '127.0.0.1',
    PORT: String(port),
    HSM_SESSIONS: String(options.sessions),
    HTTP_WORKERS: String(options.httpWorkers),
    LOG_LEVEL: 'warn',
    // Stopped with SIGTERM after its runs: nothing to drain for.
    SHUTDOWN_DELAY_MS: '0',
    // The benchmark is one identity from one address at full speed: measure the service, not its rate limits.
    RATE_LIMIT_PER_SECOND: '0',
    RATE_LIMIT_PER_ADDRESS_PER_SECOND: '0',
  };
}

async function build(): Promise<void> {
  log('building the service (tsc -p tsconfig.build.json)');
  await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, timeout: 300_000 });
}


async function measureService(options: Options, report: Report, csr: BenchCsr | undefined): Promise<void> {
  if (options.build) await build();
  if (!existsSync(join(ROOT, 'dist', 'main.js'))) throw new Error('dist/main.js is missing: run without --no-build');

  const dataDir = tempDir('hsm-signer-bench-data-');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let profileDir: string | undefined;
  const nodeArgs: string[] = [];
  if (options.cpuProf) {
    profileDir = join(ROOT, '.bench', `cpu-prof-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    mkdirSync(profileDir, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${profileDir}`);
  }
  log(`starting the service on ${base} (HTTP_WORKERS=${options.httpWorkers}, HSM_SESSIONS=${options.sessions})`);
  const env = serviceEnv(options, dataDir, port);
  if (options.soak && options.auditRetention) {
    // Checkpoints and prune rounds every 2 s, so what is kept is the retention plus a few seconds.
    const configFile = join(dataDir, 'bench-config.json');
    writeFileSync(configFile, JSON.stringify({ audit: { retention: options.auditRetention, signIntervalMs: 2000, pruneIntervalMs: 2000 } }));
    env.CONFIG_FILE = configFile;
  }
  const child = track(spawn(process.execPath, [...nodeArgs, join(ROOT, 'dist', 'main.js')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }));
  const serviceLog = new ServiceLog();
  report.serviceLog = serviceLog;
  serviceLog.attach(child);
  let runsDone = false;
  const exited = new Promise<ExitStatus & { duringRun: boolean }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal: signal as NodeJS.Signals | null, killed: false, duringRun: !runsDone })),
  );

  try {
    await waitFor(
      'service /healthz',
      async () => (await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2_000) })).status === 200,
      60_000,
      child,
    );
    // The service writes the credentials after it starts listening (the demo CAs it makes
    // first name its own URLs), so /healthz can answer before the file exists or is complete.
    type AdminCredentials = { clientId: string; clientSecret: string; projectId: string; caId?: string; profileId?: string };
    let admin: AdminCredentials | undefined;
    await waitFor(
      'admin-credentials.json',
      async () => {
        const parsed = JSON.parse(readFileSync(join(dataDir, 'admin-credentials.json'), 'utf8')) as Partial<AdminCredentials>;
        if (typeof parsed.clientId !== 'string' || typeof parsed.clientSecret !== 'string') return false;
        admin = parsed as AdminCredentials;
        return true;
      },
      60_000,
      child,
    );
    if (!admin) throw new Error('admin-credentials.json: not readable');
    const login = await api(base, 'POST', '/api/v1/auth/universal-auth/login', { clientId: admin.clientId, clientSecret: admin.clientSecret });
    expectStatus('login', login);
    const token = login.body.accessToken as string;

    report.rssBefore = treeMemoryOf(child.pid!);
    if (options.soak) {
      await soak(options, report, base, token, csr, child.pid!, dataDir);
    } else {
      const prepared = new Map<LoadOp, PreparedOp>();
      for (const op of options.ops) if (isLoadOp(op)) prepared.set(op, await prepareOp(op, base, token, csr));
      for (const op of options.ops) {
        if (!isLoadOp(op)) continue;
        const { path, body, check, headers, sample: sampleOf } = prepared.get(op)!;
        if (!isRunning(child)) throw new Error('the service is no longer running');
        let described: string;
        if (sampleOf) described = await sampleOf();
        else {
          const sample = await api(base, 'POST', path, body, token);
          expectStatus(`sample ${op} request`, sample);
          described = await check(sample);
        }
        const run: ServiceRun = { op, sample: described };
        report.service.push(run);
        log(`service ${op}: sample ${run.sample}; loading for ${options.warmupS} s warm-up + ${options.durationS} s`);
        run.load = await load(options, `${base}${path}`, body, headers ?? { authorization: `Bearer ${token}` }, child.pid);
        if (!isRunning(child)) throw new Error(`the service exited during the ${op} run (code ${child.exitCode}, signal ${child.signalCode})`);
        run.rssAfterKiB = treeMemoryOf(child.pid!)?.rssKiB;
      }
      if (options.ops.includes('healthz')) await healthBesideSaturation(options, report, base, token, child);
    }
    report.rssAfter = treeMemoryOf(child.pid!);
    runsDone = true;
  } finally {
    runsDone = true;
    if (isRunning(child)) {
      // Read what the service wrote before SIGTERM, so the phases are told apart correctly.
      await new Promise((resolve) => setTimeout(resolve, 250));
      serviceLog.phase = 'shutdown';
      const status = await stopChild(child, 15_000);
      report.serviceExit = { ...status, duringRun: false };
    } else {
      report.serviceExit = await exited;
    }
    // Let the last log lines through before the report reads them.
    await new Promise((resolve) => setImmediate(resolve));
    removeDir(dataDir);
    if (profileDir) report.cpuProfiles = readdirSync(profileDir).map((file) => join(profileDir!, file));
  }
}

/**
 * /healthz while the token is saturated: RSA-4096 signing (tens of ms of token time each) at
 * full load, and beside it a slow probe on one connection, whose latency is what an
 * orchestrator's liveness check would see. A service whose event loop waits on the token
 * shows it here.
 */
async function healthBesideSaturation(options: Options, report: Report, base: string, token: string, child: ChildProcess): Promise<void> {
  log('service healthz: generating an RSA-4096 key');
  const keygenStart = performance.now();
  const created = await api(base, 'POST', '/api/v1/kms/keys', { projectId: 'default', name: 'bench-rsa-4096', keyUsage: 'sign-verify', encryptionAlgorithm: 'RSA_4096' }, token, 180_000);
  expectStatus('create RSA_4096 key', created);
  const health: HealthRun = { keygenMs: performance.now() - keygenStart };
  report.health = health;
  const keyId = created.body.key.id as string;
  const body = signBody('RSASSA_PKCS1_V1_5_SHA_256');
  const path = `/api/v1/kms/keys/${keyId}/sign`;
  const sample = await api(base, 'POST', path, body, token);
  expectStatus('sample RSA-4096 sign', sample);
  health.sample = await checkSignature(base, token, keyId, body, sample, undefined);
  log(`service healthz: RSA-4096 sample ${health.sample}; ${options.connections} connections of RSA-4096 signing with a /healthz probe at ${HEALTHZ_PROBE_PER_SECOND}/s beside, ${options.warmupS} s warm-up + ${options.durationS} s`);
  const headers = { authorization: `Bearer ${token}` };
  if (options.warmupS > 0) await runLoad({ url: `${base}${path}`, body, headers, connections: options.connections, durationS: options.warmupS });
  const [saturation, probe] = await Promise.all([
    load(options, `${base}${path}`, body, headers, child.pid, { warmup: false }),
    runLoad({ url: `${base}/healthz`, headers: {}, connections: 1, durationS: options.durationS, overallRate: HEALTHZ_PROBE_PER_SECOND }),
  ]);
  health.saturation = saturation;
  health.probe = probe;
  if (!isRunning(child)) throw new Error(`the service exited during the healthz run (code ${child.exitCode}, signal ${child.signalCode})`);
}

/**
 * The soak's mix, one cycle per connection at a time: mostly the hot KMS operations, some
 * certificates, reads, and three requests a correct service refuses (bad algorithm, unknown
 * key, no credentials), so error paths are soaked too.
 */
async function soak(options: Options, report: Report, base: string, token: string, csr: BenchCsr | undefined, pid: number, dataDir: string): Promise<void> {
  const prepared = new Map<LoadOp, PreparedOp>();
  for (const op of [...RAW_OPS, ...CERT_OPS_ALL]) prepared.set(op, await prepareOp(op, base, token, csr));
  const aes = prepared.get('aes')!;
  const encrypted = await api(base, 'POST', aes.path, aes.body, token);
  expectStatus('soak: encrypt for the decrypt requests', encrypted);
  const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  // Only JSON operations are in the mix.
  const post = (op: LoadOp) => ({ method: 'POST' as const, path: prepared.get(op)!.path, headers: auth, body: String(prepared.get(op)!.body) });
  const p256KeyId = prepared.get('p256')!.keyId!;
  const entry = (label: string, expect: number, request: SoakMixEntry['request'], times = 1): SoakMixEntry[] => Array.from({ length: times }, () => ({ label, expect, request }));
  const mix: SoakMixEntry[] = [
    ...entry('sign P-256', 200, post('p256'), 5),
    ...entry('sign RSA-2048', 200, post('rsa'), 3),
    ...entry('encrypt 1 KiB', 200, post('aes'), 4),
    ...entry('decrypt 1 KiB', 200, { method: 'POST', path: `/api/v1/kms/keys/${prepared.get('aes')!.keyId}/decrypt`, headers: auth, body: JSON.stringify({ ciphertext: encrypted.body.ciphertext }) }, 3),
    ...entry('sign-certificate P-256 CA', 200, post('cert-p256')),
    ...entry('sign-certificate RSA-2048 CA', 200, post('cert-rsa')),
    ...entry('list keys', 200, { method: 'GET', path: '/api/v1/kms/keys?projectId=default', headers: auth }),
    ...entry('get key', 200, { method: 'GET', path: `/api/v1/kms/keys/${p256KeyId}`, headers: auth }),
    ...entry('sign, unknown algorithm', 422, { method: 'POST', path: prepared.get('p256')!.path, headers: auth, body: signBody('NO_SUCH_ALGORITHM') }),
    ...entry('get, unknown key', 404, { method: 'GET', path: '/api/v1/kms/keys/00000000-0000-4000-8000-000000000000', headers: auth }),
    ...entry('sign, no credentials', 401, { method: 'POST', path: prepared.get('p256')!.path, headers: { 'content-type': 'application/json' }, body: String(prepared.get('p256')!.body) }),
  ];
  // Each kind once, so a mix entry that does not answer what it should is caught before the soak.
  const seen = new Set<string>();
  for (const { label, expect, request } of mix) {
    if (seen.has(label)) continue;
    seen.add(label);
    const response = await fetch(`${base}${request.path}`, { method: request.method, headers: request.headers, body: request.body, signal: AbortSignal.timeout(30_000) });
    await response.arrayBuffer();
    if (response.status !== expect) throw new Error(`soak mix "${label}": HTTP ${response.status}, expected ${expect}`);
  }
  report.soak = { requests: options.soakRequests, warmup: options.soakWarmup, mix, auditRetention: options.auditRetention };
  await runSoak({ base, pid, connections: options.connections, requests: options.soakRequests, warmup: options.soakWarmup, mix, log, auditStore: join(dataDir, 'hsm-signer.db') }, report.soak);
}

// ---------------------------------------------------------------------------------------------
// 4. The report

const OP_LABEL: Record<BenchOp, string> = {
  rsa: 'RSA-2048 sign, PKCS#1 v1.5 SHA-256',
  p256: 'ECDSA P-256 sign, SHA-256',
  aes: 'AES-256-GCM encrypt, 1 KiB',
  'cert-rsa': 'sign-certificate, RSA-2048 CA',
  'cert-p256': 'sign-certificate, P-256 CA',
  ocsp: 'OCSP POST, P-256 CA, no nonce (reused answer)',
  'ocsp-nonce': 'OCSP POST, P-256 CA, nonce (signed per request)',
  healthz: '/healthz beside RSA-4096 saturation',
};

const RAW_LABEL: Record<RawOp, string> = { rsa: 'RSA-2048 PKCS#1 sign', p256: 'ECDSA P-256 sign', aes: 'AES-256-GCM encrypt 1 KiB' };

const fmtInt = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : Math.round(n).toLocaleString('en-US'));
const fmtMs = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : n < 10 ? n.toFixed(2) : n.toFixed(1));
const fmtRatio = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(2));
const fmtUs = (seconds: number | undefined) => (seconds === undefined || !Number.isFinite(seconds) ? '—' : fmtInt(seconds * 1e6));
const fmtMiB = (kib: number | undefined) => (kib === undefined || !Number.isFinite(kib) ? '—' : `${(kib / 1024).toFixed(1)} MiB`);
const status = (measured: number | undefined, target: number, goal: number, higherIsBetter = true) => {
  if (measured === undefined || !Number.isFinite(measured)) return 'not measured';
  const meets = (bar: number) => (higherIsBetter ? measured >= bar : measured < bar);
  return meets(goal) ? 'goal met' : meets(target) ? 'target met' : 'not met';
};

function table(headers: string[], rows: string[][], leftColumns = 1): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function version(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

async function commandVersion(command: string, args: string[]): Promise<string> {
  try {
    return (await promisify(execFile)(command, args, { timeout: 5_000 })).stdout.trim().split('\n')[0]!;
  } catch {
    return '?';
  }
}

/** Everything the physical limit of one KMS operation is made of, from this run. */
interface Limit {
  cores: number;
  tokenCpuPerOp?: number;
  floorCpuPerReq?: number;
  limit?: number;
}

function limitOf(report: Report, op: RawOp): Limit {
  const cores = availableParallelism();
  const raw = report.raw?.results.find((r) => r.op === op);
  const tokenCpuPerOp = raw && raw.ops > 0 ? raw.cpuMs / 1000 / raw.ops : undefined;
  // Over both floor runs together: CPU of all of them over the requests of all of them.
  const floors = [report.floorBefore, report.floorAfter].filter((f): f is Measured => f?.cpu !== undefined && f.ok > 0);
  const floorCpuPerReq = floors.length
    ? floors.reduce((sum, f) => sum + f.cpu!.serverMainMs + f.cpu!.serverOtherMs + f.cpu!.loaderMs, 0) / 1000 / floors.reduce((sum, f) => sum + f.ok, 0)
    : undefined;
  const limit = tokenCpuPerOp !== undefined && floorCpuPerReq !== undefined ? cores / (tokenCpuPerOp + floorCpuPerReq) : undefined;
  return { cores, tokenCpuPerOp, floorCpuPerReq, limit };
}

function printReport(report: Report, versions: { softhsm: string; cfssl: string }): void {
  const { options } = report;
  const out: string[] = [];
  const cpu = cpus();
  const cores = availableParallelism();
  out.push('');
  out.push('hsm-signer benchmark');
  out.push(`  machine   ${cores} cores (${cpu[0]?.model.trim() ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${platform()} ${release()} ${arch()}, load avg ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  out.push(`  software  node ${process.version}, SoftHSM2 ${versions.softhsm}, pkcs11js ${version('pkcs11js')}, autocannon ${version('autocannon')}, cfssl ${versions.cfssl}`);
  out.push(
    `  settings  service HTTP_WORKERS ${options.httpWorkers}, HSM_SESSIONS ${options.sessions}; token ceiling ${options.tokenThreads} worker threads; ` +
      `${options.durationS} s per run after ${options.warmupS} s warm-up, autocannon ${options.connections} connections, pipelining 1, 127.0.0.1` +
      (options.rate === null ? '' : `, a fixed ${options.rate} requests/s (compare CPU µs/req; ratios to the limit and cfssl do not apply)`),
  );
  out.push('');

  if (options.soak) {
    if (report.soak) printSoak(out, report.soak, options);
  } else printRuns(out, report);

  const before = report.rssBefore?.rssKiB;
  const after = report.rssAfter?.rssKiB;
  out.push(
    `service memory (VmRSS): before the runs ${fmtMiB(before)}, after ${fmtMiB(after)}` +
      (before && after ? ` (${after >= before ? '+' : ''}${(((after - before) / before) * 100).toFixed(1)} %)` : '') +
      `, peak VmHWM ${fmtMiB(report.rssAfter?.hwmKiB ?? report.rssBefore?.hwmKiB)}; threads ${report.rssBefore?.threads ?? '—'} before, ${report.rssAfter?.threads ?? '—'} after`,
  );
  for (const run of report.service) {
    const codes = run.load ? Object.entries(run.load.statusCodes).map(([c, n]) => `${c}×${n}`).join(' ') : '—';
    out.push(`service ${run.op}: sample ${run.sample}; status codes ${codes}; max latency ${fmtMs(run.load?.max)} ms; VmRSS after this run ${fmtMiB(run.rssAfterKiB)}`);
  }
  for (const run of report.cfssl) {
    const codes = run.load ? Object.entries(run.load.statusCodes).map(([c, n]) => `${c}×${n}`).join(' ') : '—';
    out.push(`cfssl ${CFSSL_KIND[run.op]} CA: sample ${run.sample}; status codes ${codes}; max latency ${fmtMs(run.load?.max)} ms`);
  }
  if (report.raw) {
    out.push(
      `token ceiling: key generation ${fmtInt(report.raw.keygenMs)} ms; session copies ${report.raw.sessionCopies ? 'used' : 'REFUSED by the token (token objects used)'}; ` +
        `output sizes ${report.raw.results.map((r) => `${r.op} ${r.outputBytes} B`).join(', ')}`,
    );
  }
  const sl = report.serviceLog;
  if (sl) {
    out.push(
      `service log at LOG_LEVEL=warn: during start and runs ${sl.warnings.runs} warning(s), ${sl.errors.runs} error(s); ` +
        `after SIGTERM ${sl.warnings.shutdown} warning(s), ${sl.errors.shutdown} error(s); ${sl.other} non-JSON line(s)`,
    );
    for (const [message, count] of sl.messages) out.push(`  ${count} × ${message}`);
    for (const line of sl.firstProblems) out.push(`  | ${line}`);
  }
  if (report.serviceExit) {
    const e = report.serviceExit;
    out.push(`service exit: ${e.duringRun ? 'DIED DURING THE RUN, ' : 'after SIGTERM, '}code ${e.code}, signal ${e.signal}${e.killed ? ' (needed SIGKILL after 15 s)' : ''}`);
  }
  if (report.cpuProfiles?.length) out.push(`service CPU profile(s): ${report.cpuProfiles.join(', ')}`);
  if (report.failure) {
    out.push('');
    out.push(`THE BENCHMARK DID NOT COMPLETE: ${report.failure}`);
    if (sl?.tail.length) {
      out.push('last service output:');
      for (const line of sl.tail.slice(-15)) out.push(`  | ${line}`);
    }
  }
  console.log(out.join('\n'));
}

function printRuns(out: string[], report: Report): void {
  const { options } = report;
  const serviceRun = (op: LoadOp) => report.service.find((r) => r.op === op)?.load;
  const targets: string[][] = [];

  if (report.raw) {
    out.push(`token ceiling: SoftHSM2 through pkcs11js, ${report.raw.threads} worker threads, blocking C_*Init + operation, one in flight per thread, service key templates and session copies`);
    out.push(
      table(
        ['mechanism', 'ops/s', 'ops per thread', 'cores used', 'CPU µs/op', 'one message per op: ops/s', 'CPU µs/op', 'hop µs/op'],
        report.raw.results.map((r) => {
          const perOp = r.cpuMs / 1000 / r.ops;
          const messagedPerOp = r.messaged.ops > 0 ? r.messaged.cpuMs / 1000 / r.messaged.ops : undefined;
          return [RAW_LABEL[r.op], fmtInt(r.opsPerSec), r.perThread.map(fmtInt).join(' / '), (r.cpuMs / 1000 / r.seconds).toFixed(2), fmtUs(perOp), fmtInt(r.messaged.opsPerSec), fmtUs(messagedPerOp), fmtUs(messagedPerOp === undefined ? undefined : messagedPerOp - perOp)];
        }),
      ),
    );
    out.push('  cores used: CPU time of the whole ceiling process ÷ wall time; CPU µs/op: that CPU time ÷ operations (the token\'s share of the limit).');
    out.push('  one message per op: each operation sent to the same threads in a message and answered in one, one in flight per thread, as');
    out.push('  the service\'s token pool does; hop µs/op: what that adds per operation, on both sides of the two messages.');
    out.push('');
  }

  const floorRows: string[][] = [];
  for (const [label, f] of [['before the service', report.floorBefore], ['after the service', report.floorAfter]] as const) {
    if (!f) continue;
    const perReq = (ms: number | undefined) => (ms === undefined || f.ok === 0 ? '—' : fmtUs(ms / 1000 / f.ok));
    floorRows.push([`HTTP floor, ${label}`, fmtInt(f.okPerSec), fmtMs(f.p50), fmtMs(f.p99), perReq(f.cpu && f.cpu.serverMainMs + f.cpu.serverOtherMs), perReq(f.cpu?.loaderMs), fmtUs(cpuPerOk(f))]);
  }
  if (report.expressFloor) {
    const f = report.expressFloor;
    const perReq = (ms: number | undefined) => (ms === undefined || f.ok === 0 ? '—' : fmtUs(ms / 1000 / f.ok));
    floorRows.push(['Express floor (the same handler, one route)', fmtInt(f.okPerSec), fmtMs(f.p50), fmtMs(f.p99), perReq(f.cpu && f.cpu.serverMainMs + f.cpu.serverOtherMs), perReq(f.cpu?.loaderMs), fmtUs(cpuPerOk(f))]);
  }
  if (floorRows.length) {
    out.push('HTTP floor: bare node:http server reading the body and JSON.parse-ing it, same load (and the same through Express 5, not part of the limit)');
    out.push(table(['run', 'req/s', 'p50 ms', 'p99 ms', 'server CPU µs/req', 'autocannon CPU µs/req', 'CPU µs/req'], floorRows));
    out.push('  CPU µs/req = (server CPU, all threads + autocannon CPU) ÷ requests: the HTTP share of the limit (both runs pooled).');
    out.push('');
  }

  const kmsOps = options.ops.filter((op): op is RawOp => (RAW_OPS as BenchOp[]).includes(op));
  if (kmsOps.length) {
    const rows = kmsOps.map((op) => {
      const http = serviceRun(op);
      const limit = limitOf(report, op);
      const share = http && limit.limit ? http.okPerSec / limit.limit : undefined;
      const raw = report.raw?.results.find((r) => r.op === op);
      targets.push([`KMS ${OP_LABEL[op]}`, `≥ ${LIMIT_TARGET.now.toFixed(2)} × limit`, `≥ ${LIMIT_TARGET.goal.toFixed(2)} × limit`, share === undefined ? '—' : `${share.toFixed(2)} × limit`, status(share, LIMIT_TARGET.now, LIMIT_TARGET.goal)]);
      return [
        OP_LABEL[op],
        fmtInt(http?.okPerSec),
        fmtMs(http?.p50),
        fmtMs(http?.p99),
        http ? fmtInt(http.non2xx + http.errors) : '—',
        fmtUs(cpuPerOk(http)),
        fmtUs(limit.tokenCpuPerOp),
        fmtUs(limit.floorCpuPerReq),
        fmtInt(raw?.opsPerSec),
        `${fmtInt(limit.limit)}${raw && limit.limit !== undefined && limit.limit > raw.opsPerSec ? ' *' : ''}`,
        fmtRatio(share),
        status(share, LIMIT_TARGET.now, LIMIT_TARGET.goal),
      ];
    });
    out.push(`KMS over HTTP against the physical limit of this machine in this run (limit = ${availableParallelism()} cores ÷ (token CPU per op + floor CPU per request))`);
    out.push(table(['operation', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx+err', 'CPU µs/req', 'token µs/op', 'floor µs/req', 'ceiling ops/s', 'limit req/s', 'service/limit', `status (≥ ${LIMIT_TARGET.now} / goal ${LIMIT_TARGET.goal})`], rows));
    out.push('  CPU µs/req: the service\'s CPU (all threads) and autocannon\'s per 2xx response, comparable with token µs/op + floor µs/req.');
    out.push('  * the limit is above what the ceiling itself reached: its threads used fewer cores than the machine has (the token serialising its');
    out.push('    callers, or a busy machine; see "cores used" above), so this limit assumes a token that scales to every core.');
    const expressCpu = report.expressFloor && report.expressFloor.ok > 0 ? cpuPerOk(report.expressFloor) : undefined;
    if (expressCpu !== undefined) {
      /** Each op's bound with the Express floor and the token CPU per op `tokenCpuOf` gives, and its share of the limit. */
      const boundsWith = (tokenCpuOf: (op: RawOp) => number | undefined) =>
        kmsOps
          .map((op) => {
            const tokenCpu = tokenCpuOf(op);
            const { limit } = limitOf(report, op);
            const bound = tokenCpu === undefined ? undefined : availableParallelism() / (tokenCpu + expressCpu);
            return `${op} ${fmtInt(bound)} req/s (${fmtRatio(bound !== undefined && limit ? bound / limit : undefined)} × limit)`;
          })
          .join(', ');
      const messagedCpuPerOp = (op: RawOp) => {
        const messaged = report.raw?.results.find((r) => r.op === op)?.messaged;
        return messaged && messaged.ops > 0 ? messaged.cpuMs / 1000 / messaged.ops : undefined;
      };
      out.push(`  With Express: no Express service can pass cores ÷ (token CPU per op + Express floor CPU per request): ${boundsWith((op) => limitOf(report, op).tokenCpuPerOp)}.`);
      out.push(`  With Express and token threads: nor can one that also sends each operation to a token thread in a message, cores ÷ (token CPU per`);
      out.push(`  op with one message per op + Express floor CPU per request): ${boundsWith(messagedCpuPerOp)}.`);
    }
    out.push('');
  }

  const certOps = options.ops.filter(isCertOp);
  if (certOps.length) {
    const rows = certOps.map((op) => {
      const http = serviceRun(op);
      const peer = report.cfssl.find((r) => r.op === op)?.load;
      const versus = http && peer && peer.okPerSec > 0 ? http.okPerSec / peer.okPerSec : undefined;
      const { now, goal } = CFSSL_TARGET[op];
      targets.push([OP_LABEL[op], `≥ ${now.toFixed(2)} × cfssl`, `≥ ${goal.toFixed(2)} × cfssl`, versus === undefined ? '—' : `${versus.toFixed(2)} × cfssl`, status(versus, now, goal)]);
      const raw = report.raw?.results.find((r) => r.op === MECHANISM_OF[op]);
      return [
        OP_LABEL[op],
        fmtInt(http?.okPerSec),
        fmtMs(http?.p50),
        fmtMs(http?.p99),
        http ? fmtInt(http.non2xx + http.errors) : '—',
        fmtUs(cpuPerOk(http)),
        fmtInt(peer?.okPerSec),
        fmtMs(peer?.p50),
        fmtMs(peer?.p99),
        peer ? fmtInt(peer.non2xx + peer.errors) : '—',
        fmtUs(cpuPerOk(peer)),
        fmtInt(raw?.opsPerSec),
        fmtRatio(versus),
        status(versus, now, goal),
      ];
    });
    out.push(`sign-certificate against cfssl serve in this run (same CSR, same load; service: POST /api/v3/pki/certificates/sign-certificate, cfssl: POST ${CFSSL_SIGN_PATH})`);
    out.push(table(['operation', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx+err', 'CPU µs/req', 'cfssl req/s', 'cfssl p50', 'cfssl p99', 'cfssl non-2xx+err', 'cfssl CPU µs/req', 'token ops/s', 'HTTP/cfssl', 'status (target / goal)'], rows));
    out.push(`  every request carries one fixed CSR (EC P-256 key, CN=${BENCH_CSR_NAME}, SAN DNS:${BENCH_CSR_NAME}); the service is asked for ttl ${BENCH_CSR_TTL} under a permissive profile, cfssl signs with`);
    out.push('  expiry 24h and usages digital signature + server auth. Both CAs are roots made for this run (service: key in the token; cfssl: key in a file, made by cfssl gencert -initca).');
    out.push('  token ops/s: the ceiling of the CA key\'s mechanism; CPU µs/req: server (all threads) + autocannon per 2xx response.');
    out.push('');
  }

  const ocspOps = options.ops.filter(isOcspOp);
  if (ocspOps.length) {
    const rows = ocspOps.map((op) => {
      const http = serviceRun(op);
      return [OP_LABEL[op], fmtInt(http?.okPerSec), fmtMs(http?.p50), fmtMs(http?.p99), http ? fmtInt(http.non2xx + http.errors) : '—', fmtUs(cpuPerOk(http))];
    });
    out.push('OCSP responder (POST /api/v1/cert-manager/ocsp/{caId}, application/ocsp-request, no credentials), one certificate of a P-256 root CA made for the run');
    out.push(table(['operation', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx+err', 'CPU µs/req'], rows));
    out.push('  every request reads the certificate\'s status from the store; without a nonce the answer signed for that status is reused (re-signed every');
    out.push('  10 minutes), with a nonce (32 octets, the same in every request here) the token signs each answer. CPU µs/req: server (all threads) + autocannon.');
    out.push('');
  }

  const health = report.health;
  if (options.ops.includes('healthz')) {
    const probe = health?.probe;
    const probeOk = probe ? probe.ok : undefined;
    targets.push(['/healthz p99 beside RSA-4096 saturation', `< ${HEALTHZ_P99_MS.now} ms`, `< ${HEALTHZ_P99_MS.goal} ms`, probe ? `${fmtMs(probe.p99)} ms` : '—', status(probe?.p99, HEALTHZ_P99_MS.now, HEALTHZ_P99_MS.goal, false)]);
    out.push(`/healthz beside RSA-4096 saturation: ${options.connections} connections sign with an RSA-4096 key while one connection probes GET /healthz at ${HEALTHZ_PROBE_PER_SECOND}/s`);
    out.push(
      table(
        ['load', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'non-2xx+err'],
        [
          ['RSA-4096 sign (saturating)', fmtInt(health?.saturation?.okPerSec), fmtMs(health?.saturation?.p50), fmtMs(health?.saturation?.p99), fmtMs(health?.saturation?.max), health?.saturation ? fmtInt(health.saturation.non2xx + health.saturation.errors) : '—'],
          ['GET /healthz (probe)', fmtInt(probe?.okPerSec), fmtMs(probe?.p50), fmtMs(probe?.p99), fmtMs(probe?.max), probe ? fmtInt(probe.non2xx + probe.errors) : '—'],
        ],
      ),
    );
    out.push(`  RSA-4096 key generation took ${fmtInt(health?.keygenMs)} ms (outside the measurement); sample ${health?.sample ?? '—'}; ${fmtInt(probeOk)} probes answered 2xx.`);
    out.push('');
  }

  if (targets.length) {
    out.push('targets (README, "Benchmark"; information only, nothing is asserted)');
    out.push(table(['what', 'target', 'goal', 'measured', 'status'], targets, 1));
    out.push('');
  }

  const cpuRows: string[][] = [];
  const cpuRow = (label: string, m: Measured | undefined) => {
    if (!m?.cpu) return;
    const perSec = (ms: number) => `${((ms / 1000 / m.seconds) * 100).toFixed(0)} %`;
    const perReq = (ms: number) => (m.ok ? fmtInt((ms * 1000) / m.ok) : '—');
    cpuRows.push([label, perSec(m.cpu.serverMainMs), perReq(m.cpu.serverMainMs), perSec(m.cpu.serverOtherMs), perReq(m.cpu.serverOtherMs), perSec(m.cpu.loaderMs), perReq(m.cpu.loaderMs), fmtUs(cpuPerOk(m))]);
  };
  for (const op of options.ops) if (isLoadOp(op)) cpuRow(`service ${OP_LABEL[op]}`, serviceRun(op));
  if (report.health?.saturation) cpuRow('service RSA-4096 sign (healthz run)', report.health.saturation);
  for (const run of report.cfssl) cpuRow(`cfssl serve, ${CFSSL_KIND[run.op] === 'rsa' ? 'RSA-2048' : 'P-256'} CA`, run.load);
  cpuRow('HTTP floor, before', report.floorBefore);
  cpuRow('HTTP floor, after', report.floorAfter);
  cpuRow('Express floor', report.expressFloor);
  if (cpuRows.length) {
    out.push(`CPU during the measured runs (% of one core; µs per 2xx response; ${availableParallelism()} cores in all)`);
    out.push(table(['server', 'main thread', 'µs/req', 'other threads', 'µs/req', 'autocannon', 'µs/req', 'all µs/req'], cpuRows));
    out.push('  other threads: the token work (worker threads or libuv\'s pool), GC and compiler helpers; for cfssl (Go) the main thread is just one of its threads.');
    out.push('  A main thread near 100 % is the bottleneck.');
    out.push('');
  }
}

function printSoak(out: string[], soak: SoakResult, options: Options): void {
  const { afterWarmup: a, end: e } = soak;
  const pointGrowth = a && e ? (e.rssKiB - a.rssKiB) / a.rssKiB : undefined;
  const trend = rssTrend(soak.rssSamplesKiB);
  const growth = trend?.growth;
  const sessionsConstant = a && e ? a.sessions === e.sessions && e.sessionsStuck === 0 : undefined;
  const mixCounts = new Map<string, { n: number; expect: number }>();
  for (const m of soak.mix) mixCounts.set(m.label, { n: (mixCounts.get(m.label)?.n ?? 0) + 1, expect: m.expect });
  out.push(`soak: ${fmtInt(soak.requests)} mixed requests at ${options.connections} connections, first ${fmtInt(soak.warmup)} as warm-up; each connection cycles through ${soak.mix.length}:`);
  out.push(`  ${[...mixCounts].map(([label, { n, expect }]) => `${n} × ${label} (${expect})`).join(', ')}`);
  const point = (label: string, p: typeof a) =>
    p ? [label, fmtInt(p.afterRequests), fmtMiB(p.rssKiB), fmtMiB(p.hwmKiB), String(p.threads), String(p.sessions), String(p.sessionsBusy), String(p.sessionsStuck)] : [label, '—', '—', '—', '—', '—', '—', '—'];
  out.push(table(['reading', 'after requests', 'VmRSS', 'VmHWM', 'threads', 'sessions', 'busy', 'stuck'], [point('after warm-up', a), point('at the end', e)]));
  out.push(`  VmRSS sampled every second after warm-up: ${fmtMiB(soak.rssMinKiB)} – ${fmtMiB(soak.rssMaxKiB)}, ${soak.rssSamplesKiB?.length ?? 0} samples`);
  const percent = (value: number | undefined) => (value === undefined ? '—' : `${value >= 0 ? '+' : ''}${(value * 100).toFixed(1)} %`);
  out.push(`  growth: median of the last fifth of the samples ${fmtMiB(trend?.last)} over the first fifth's ${fmtMiB(trend?.first)}: ${percent(trend?.growth)} (the target's figure);`);
  out.push(`  the two single readings above differ by ${percent(pointGrowth)}, which mostly says where the heap was in its collection cycle at each`);
  out.push(`  audit trail (audit.retention ${soak.auditRetention ?? 'as configured'}):`);
  const audit = (label: string, p: typeof a) =>
    p?.audit
      ? [label, fmtInt(p.afterRequests), fmtInt(p.audit.written), fmtInt(p.audit.kept), fmtInt(p.audit.pruned), fmtMiB(p.audit.storeBytes / 1024), p.audit.kept > 0 ? `${fmtInt(p.audit.auditBytes / p.audit.kept)} B` : '—']
      : [label, '—', '—', '—', '—', '—', '—'];
  out.push(table(['reading', 'after requests', 'events written', 'kept in store', 'pruned', 'store file + WAL', 'audit bytes per kept event'], [audit('after warm-up', a), audit('at the end', e)]));
  out.push(`  largest store file + WAL sampled every second after warm-up: ${soak.storeMaxBytes === undefined ? '—' : fmtMiB(soak.storeMaxBytes / 1024)}`);
  for (const [label, phase] of [['warm-up', soak.warm], ['rest', soak.main]] as const) {
    if (!phase) continue;
    out.push(`  ${label}: ${fmtInt(phase.completed)} answered in ${phase.seconds.toFixed(1)} s (${fmtInt(phase.completed / phase.seconds)} req/s), ${fmtInt(phase.errors)} socket errors/timeouts, 2xx p50 ${fmtMs(phase.p50)} ms p99 ${fmtMs(phase.p99)} ms`);
  }
  const { observed, expected } = soakStatusSummary(soak);
  // "About": autocannon splits the count over connections, and each connection's last cycle is cut short.
  out.push(`  status codes: ${Object.entries(observed).map(([c, n]) => `${c}×${fmtInt(n)}`).join(' ')} (the mix expects about ${Object.entries(expected).map(([c, n]) => `${c}×${fmtInt(n)}`).join(' ')})`);
  const unexpected = Object.entries(observed).filter(([code]) => !(code in expected));
  const socketErrors = (soak.warm?.errors ?? 0) + (soak.main?.errors ?? 0);
  out.push(`  answers no mix entry asks for: ${unexpected.length ? unexpected.map(([c, n]) => `${c}×${fmtInt(n)}`).join(' ') : 'none'}; socket errors and timeouts: ${fmtInt(socketErrors)}`);
  out.push('');
  out.push('targets (README, "Benchmark"; information only, nothing is asserted)');
  out.push(
    table(
      ['what', 'target', 'measured', 'status'],
      [
        ['VmRSS growth after warm-up (medians)', `< ${SOAK_RSS_GROWTH * 100} %`, percent(growth), growth === undefined ? 'not measured' : growth < SOAK_RSS_GROWTH ? 'met' : 'not met'],
        ['open sessions constant, none stuck', 'same count', a && e ? `${a.sessions} → ${e.sessions}, ${e.sessionsStuck} stuck` : '—', sessionsConstant === undefined ? 'not measured' : sessionsConstant ? 'met' : 'not met'],
        ['threads', 'information', a && e ? `${a.threads} → ${e.threads}` : '—', ''],
      ],
      1,
    ),
  );
  out.push('');
}

// ---------------------------------------------------------------------------------------------

function budgetSeconds(options: Options): number {
  if (options.soak) return 600 + options.soakRequests / 20;
  const perRun = options.durationS + options.warmupS;
  const certOps = options.ops.filter(isCertOp).length;
  const loadOps = options.ops.filter(isLoadOp).length;
  return 300 + (2 * rawOpsOf(options).length * perRun + 120) + 2 * (perRun + 60) + certOps * (perRun + 60) + loadOps * (perRun + 60) + (options.ops.includes('healthz') ? perRun + 240 : 0);
}

async function main(): Promise<number> {
  let options: Options | undefined;
  try {
    options = parseOptions();
  } catch (error) {
    console.error(`bench: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!options) return 0;
  const report: Report = { options, service: [], cfssl: [] };
  const budgetMs = budgetSeconds(options) * 1000;
  const watchdog = setTimeout(() => {
    log(`watchdog: the benchmark ran past ${Math.round(budgetMs / 1000)} s; killing every child`);
    cleanupSync();
    process.exit(2);
  }, budgetMs);
  const versions = { softhsm: await commandVersion('softhsm2-util', ['--version']), cfssl: await commandVersion('cfssl', ['version']) };
  try {
    // One CSR for the whole run: the service and cfssl sign the same request.
    const needsCsr = options.soak || options.ops.some((op) => isCertOp(op) || isOcspOp(op));
    const csr = needsCsr ? await makeBenchCsr() : undefined;
    if (options.soak) {
      await measureService(options, report, csr);
    } else {
      if (rawOpsOf(options).length) {
        log(`token ceiling: ${rawOpsOf(options).join(', ')} on ${options.tokenThreads} worker threads, ${options.warmupS} s warm-up + ${options.durationS} s each`);
        report.raw = await measureRawToken(options);
      }
      log(`HTTP floor: ${options.connections} connections, ${options.warmupS} s warm-up + ${options.durationS} s`);
      report.floorBefore = await measureFloor(options);
      if (csr && options.ops.some(isCertOp)) await measureCfssl(options, csr, report);
      await measureService(options, report, csr);
      log('HTTP floor again, after the service runs');
      report.floorAfter = await measureFloor(options);
      log('Express floor: the same handler as the one route of an Express 5 application');
      report.expressFloor = await measureFloor(options, 'express-floor');
    }
  } catch (error) {
    report.failure = error instanceof Error ? error.message : String(error);
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
  printReport(report, versions);
  return report.failure ? 1 : 0;
}

process.on('exit', cleanupSync);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping children and removing temporary directories`);
    void cleanup().finally(() => process.exit(130));
  });
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
