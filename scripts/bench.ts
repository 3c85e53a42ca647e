/**
 * `npm run bench [-- --duration 5 --sessions 4 --connections 32 --warmup 2 --ops rsa,p256,aes,cert-rsa,cert-p256 --cpu-prof --no-build]`
 *
 * Measures, side by side in one run on this machine (absolute figures drift between runs and
 * machines; PERFORMANCE.md's targets are ratios for that reason):
 *   1. the token ceiling: SoftHSM2 through pkcs11js directly, same session count and thread
 *      pool size as the service, one operation in flight per session (child process);
 *   2. the HTTP floor: a bare node:http server that parses a sign-shaped JSON body (child),
 *      measured before and after the service (this machine is noisy; ratios use the mean);
 *   3. the service itself (`node dist/main.js`, child) under autocannon at 32 connections:
 *      RSA-2048 sign, ECDSA P-256 sign, AES-256-GCM encrypt of 1 KiB, and sign-certificate
 *      (one fixed EC P-256 CSR, ttl 1d) on an RSA-2048 root CA and on a P-256 root CA, each
 *      read against the token's rate for the CA's mechanism and PERFORMANCE.md's cfssl figures;
 * and prints the figures with PERFORMANCE.md's targets beside them. It asserts nothing: a
 * target not met is information, and the exit code says only whether the benchmark ran.
 *
 * Each measurement runs alone (the others' processes are stopped), everything listens on
 * 127.0.0.1, and every child and temporary directory is removed on every exit path; a
 * watchdog bounds the whole run.
 */
import { execFile, fork, spawn, type ChildProcess } from 'node:child_process';
import { createPublicKey, randomBytes, verify as verifySignature } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, existsSync } from 'node:fs';
import { cpus, loadavg, release, totalmem, arch, platform } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { loadConfig } from '../src/config/load.js';
import { BENCH_CSR_NAME, BENCH_CSR_TTL, checkIssuedCertificate, makeBenchCsr, type BenchCsr } from './bench/certificates.js';
import { runLoad, type LoadResult } from './bench/load.js';
import { cleanup, cleanupSync, freePort, isRunning, memoryOf, removeDir, stopChild, tempDir, threadCpuOf, track, waitFor, withTimeout, type ExitStatus } from './bench/procs.js';
import type { FloorMessage } from './bench/http-floor.js';
import type { RawOp, RawOpResult, RawTokenMessage, RawTokenRequest } from './bench/raw-token.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH_DIR = fileURLToPath(new URL('./bench/', import.meta.url));
const MODULE_PATH = '/usr/lib/softhsm/libsofthsm2.so';

/** sign-certificate on a CA of one kind; its token mechanism is the raw op of the same key. */
type CertOp = 'cert-rsa' | 'cert-p256';
type BenchOp = RawOp | CertOp;
const RAW_OPS: RawOp[] = ['rsa', 'p256', 'aes'];
const ALL_OPS: BenchOp[] = [...RAW_OPS, 'cert-rsa', 'cert-p256'];
const isCertOp = (op: BenchOp): op is CertOp => op === 'cert-rsa' || op === 'cert-p256';
/** The raw token operation each benchmark operation is read against. */
const MECHANISM_OF: Record<BenchOp, RawOp> = { rsa: 'rsa', p256: 'p256', aes: 'aes', 'cert-rsa': 'rsa', 'cert-p256': 'p256' };

/**
 * cfssl's sign figures from PERFORMANCE.md (a range over its runs there), not measured here;
 * the targets use the midpoint.
 */
const CFSSL: Record<CertOp, { low: number; high: number; targetMultiple: number }> = {
  'cert-rsa': { low: 656, high: 671, targetMultiple: 2 },
  'cert-p256': { low: 2_745, high: 2_848, targetMultiple: 1 },
};
const cfsslMid = (op: CertOp) => (CFSSL[op].low + CFSSL[op].high) / 2;

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  durationS: number;
  warmupS: number;
  sessions: number;
  connections: number;
  ops: BenchOp[];
  build: boolean;
  cpuProf: boolean;
}

const USAGE = `usage: npm run bench -- [options]
  --duration S      seconds per measured run (default 5)
  --warmup S        unmeasured seconds before each run (default 2; 0 for none)
  --sessions N      token sessions, for the raw measurement and HSM_SESSIONS of the service
                    (default: hsm.sessions from loadConfig(), i.e. config/default.json or HSM_SESSIONS)
  --connections N   autocannon connections (default 32)
  --ops LIST        any of rsa,p256,aes,cert-rsa,cert-p256 (default all five); cert-* is
                    sign-certificate on an RSA-2048 / P-256 root CA, and also measures the raw
                    token rate of that CA's mechanism (rsa / p256)
  --cpu-prof        run the service with --cpu-prof; the profile is kept under .bench/
  --no-build        do not run tsc -p tsconfig.build.json first (use dist/ as it is)`;

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
      connections: { type: 'string' },
      ops: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
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
  return {
    durationS: positiveNumber('duration', values.duration, 5, false, 1),
    warmupS: positiveNumber('warmup', values.warmup, 2, false, 0),
    sessions: positiveNumber('sessions', values.sessions, configured, true, 1),
    connections: positiveNumber('connections', values.connections, 32, true, 1),
    ops: ALL_OPS.filter((op) => ops.includes(op)),
    build: !values['no-build'],
    cpuProf: values['cpu-prof'],
  };
}

// ---------------------------------------------------------------------------------------------
// What the run found; filled as it goes so a failure still prints what was measured.

/** The raw token operations a run needs: those selected, and the mechanisms of selected cert-* ops. */
const rawOpsOf = (options: Options): RawOp[] => RAW_OPS.filter((raw) => options.ops.some((op) => MECHANISM_OF[op] === raw));

interface ServiceRun {
  op: BenchOp;
  sample: string;
  load?: Measured;
  /** Service VmRSS right after this run, KiB. */
  rssAfterKiB?: number;
}

interface Report {
  options: Options;
  raw?: Extract<RawTokenMessage, { type: 'result' }>;
  /** Before the service runs, and after them. */
  floorBefore?: Measured;
  floorAfter?: Measured;
  service: ServiceRun[];
  rssBefore?: { rssKiB: number; hwmKiB: number };
  rssAfter?: { rssKiB: number; hwmKiB: number };
  serviceExit?: ExitStatus & { duringRun: boolean };
  serviceLog?: ServiceLog;
  cpuProfiles?: string[];
  failure?: string;
}

// ---------------------------------------------------------------------------------------------
// 1. The token ceiling (child process with UV_THREADPOOL_SIZE set before it starts)

async function measureRawToken(options: Options): Promise<Extract<RawTokenMessage, { type: 'result' }>> {
  const dir = tempDir('hsm-signer-bench-token-');
  const request: RawTokenRequest = {
    modulePath: MODULE_PATH,
    dir,
    sessions: options.sessions,
    durationMs: options.durationS * 1000,
    warmupMs: options.warmupS * 1000,
    ops: rawOpsOf(options),
  };
  // fork() passes this process's execArgv (tsx's loader) on, so the child can be TypeScript.
  const child = track(
    fork(join(BENCH_DIR, 'raw-token.ts'), [JSON.stringify(request)], {
      cwd: ROOT,
      env: { ...process.env, UV_THREADPOOL_SIZE: String(2 * options.sessions + 2), SOFTHSM2_CONF: join(dir, 'softhsm2.conf') },
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

async function measureFloor(options: Options): Promise<Measured> {
  const child = track(fork(join(BENCH_DIR, 'http-floor.ts'), [], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
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

/** CPU spent during a measured run, in ms: the server's main thread, its other threads, and this process (autocannon). */
interface CpuShare {
  serverMainMs: number;
  serverOtherMs: number;
  loaderMs: number;
}

type Measured = LoadResult & { cpu?: CpuShare };

async function load(options: Options, url: string, body: string, headers: Record<string, string>, serverPid: number | undefined): Promise<Measured> {
  if (options.warmupS > 0) await runLoad({ url, body, headers, connections: options.connections, durationS: options.warmupS });
  const serverBefore = serverPid === undefined ? undefined : threadCpuOf(serverPid);
  const loaderBefore = process.cpuUsage();
  const result: Measured = await runLoad({ url, body, headers, connections: options.connections, durationS: options.durationS });
  const loader = process.cpuUsage(loaderBefore);
  const serverAfter = serverPid === undefined ? undefined : threadCpuOf(serverPid);
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

async function api(base: string, method: string, path: string, body?: unknown, token?: string): Promise<ApiResponse> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
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
  body: string;
  /** Checks one response beyond its status; returns a short description. */
  check: (response: ApiResponse) => Promise<string>;
}

async function prepareOp(op: BenchOp, base: string, token: string, csr: () => Promise<BenchCsr>): Promise<PreparedOp> {
  if (!isCertOp(op)) {
    const spec = SERVICE_OPS[op];
    const created = await api(base, 'POST', '/api/v1/kms/keys', { projectId: 'default', name: spec.keyName, keyUsage: spec.keyUsage, encryptionAlgorithm: spec.encryptionAlgorithm }, token);
    expectStatus(`create ${spec.encryptionAlgorithm} key`, created);
    const keyId = created.body.key.id as string;
    const body = spec.body();
    return { path: spec.path(keyId), body, check: (response) => spec.check(base, token, keyId, body, response) };
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
  const request = await csr();
  return {
    path: '/api/v3/pki/certificates/sign-certificate',
    body: JSON.stringify({ profileId, csr: request.pem, ttl: BENCH_CSR_TTL }),
    check: (response) => checkIssuedCertificate(response.body ?? {}, request, spec.caKind),
  };
}

/** The environment the service child gets: nothing from ours that would point it elsewhere. */
function serviceEnv(options: Options, dataDir: string, port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  const foreign = ['CONFIG_FILE', 'DATABASE_PATH', 'NODE_ENV', 'SOFTHSM2_CONF', 'PUBLIC_BASE_URL', 'ACCESS_TOKEN_TTL', 'ACCESS_TOKEN_MAX_TTL', 'NODE_OPTIONS'];
  for (const name of Object.keys(env)) if (name.startsWith('HSM_') || foreign.includes(name)) delete env[name];
  return {
    ...env,
    DATA_DIR: dataDir,
    HOST: '127.0.0.1',
    PORT: String(port),
    HSM_SESSIONS: String(options.sessions),
    LOG_LEVEL: 'warn',
    // The benchmark is one identity at full speed: measure the service, not its rate limit.
    RATE_LIMIT_PER_SECOND: '0',
    // Set here so dist/main.js does not re-exec itself: the pid we watch is the service.
    UV_THREADPOOL_SIZE: String(2 * options.sessions + 2),
  };
}

async function build(): Promise<void> {
  log('building the service (tsc -p tsconfig.build.json)');
  await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, timeout: 300_000 });
}

async function measureService(options: Options, report: Report): Promise<void> {
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
  log(`starting the service on ${base} (HSM_SESSIONS=${options.sessions}, UV_THREADPOOL_SIZE=${2 * options.sessions + 2})`);
  const child = track(spawn(process.execPath, [...nodeArgs, join(ROOT, 'dist', 'main.js')], { cwd: ROOT, env: serviceEnv(options, dataDir, port), stdio: ['ignore', 'pipe', 'pipe'] }));
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

    // One CSR for the whole run, made only when a cert-* operation is selected.
    let csr: Promise<BenchCsr> | undefined;
    const benchCsr = () => (csr ??= makeBenchCsr());
    const prepared = new Map<BenchOp, PreparedOp>();
    for (const op of options.ops) prepared.set(op, await prepareOp(op, base, token, benchCsr));

    report.rssBefore = memoryOf(child.pid!);
    for (const op of options.ops) {
      const { path, body, check } = prepared.get(op)!;
      if (!isRunning(child)) throw new Error('the service is no longer running');
      const sample = await api(base, 'POST', path, body, token);
      expectStatus(`sample ${op} request`, sample);
      const run: ServiceRun = { op, sample: await check(sample) };
      report.service.push(run);
      log(`service ${op}: sample ${run.sample}; loading for ${options.warmupS} s warm-up + ${options.durationS} s`);
      run.load = await load(options, `${base}${path}`, body, { authorization: `Bearer ${token}` }, child.pid);
      if (!isRunning(child)) throw new Error(`the service exited during the ${op} run (code ${child.exitCode}, signal ${child.signalCode})`);
      run.rssAfterKiB = memoryOf(child.pid!)?.rssKiB;
    }
    report.rssAfter = memoryOf(child.pid!);
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

// ---------------------------------------------------------------------------------------------
// 4. The report

const OP_LABEL: Record<BenchOp, string> = {
  rsa: 'RSA-2048 sign, PKCS#1 v1.5 SHA-256',
  p256: 'ECDSA P-256 sign, SHA-256',
  aes: 'AES-256-GCM encrypt, 1 KiB',
  'cert-rsa': 'sign-certificate, RSA-2048 CA',
  'cert-p256': 'sign-certificate, P-256 CA',
};

/** The token mechanism a CA of each kind signs certificates with, as measured raw. */
const CERT_MECHANISM_LABEL: Record<CertOp, string> = {
  'cert-rsa': 'RSA-2048 PKCS#1 sign',
  'cert-p256': 'ECDSA P-256 sign',
};

const fmtInt = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : Math.round(n).toLocaleString('en-US'));
const fmtMs = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : n < 10 ? n.toFixed(2) : n.toFixed(1));
const fmtRatio = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(2));
const fmtMiB = (kib: number | undefined) => (kib === undefined || !Number.isFinite(kib) ? '—' : `${(kib / 1024).toFixed(1)} MiB`);

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

async function softhsmVersion(): Promise<string> {
  try {
    return (await promisify(execFile)('softhsm2-util', ['--version'], { timeout: 5_000 })).stdout.trim();
  } catch {
    return '?';
  }
}

function printReport(report: Report, softhsm: string): void {
  const { options } = report;
  const rawOf = (op: RawOp): RawOpResult | undefined => report.raw?.results.find((r) => r.op === op);
  const floors = [report.floorBefore, report.floorAfter].filter((f): f is Measured => f !== undefined);
  const floor = floors.length ? floors.reduce((sum, f) => sum + f.okPerSec, 0) / floors.length : undefined;
  const out: string[] = [];
  const cpu = cpus();
  out.push('');
  out.push('hsm-signer benchmark');
  out.push(`  machine   ${cpu.length} cores (${cpu[0]?.model.trim() ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${platform()} ${release()} ${arch()}, load avg ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  out.push(`  software  node ${process.version}, SoftHSM2 ${softhsm}, pkcs11js ${version('pkcs11js')}, autocannon ${version('autocannon')}`);
  out.push(
    `  settings  sessions ${options.sessions} (raw token and service HSM_SESSIONS; UV_THREADPOOL_SIZE ${2 * options.sessions + 2} in both), ` +
      `${options.durationS} s per run after ${options.warmupS} s warm-up, autocannon ${options.connections} connections, pipelining 1`,
  );
  out.push('');

  const rows: string[][] = [];
  for (const op of options.ops) {
    if (isCertOp(op)) continue;
    const run = report.service.find((r) => r.op === op);
    const raw = rawOf(op);
    const http = run?.load;
    rows.push([
      OP_LABEL[op],
      fmtInt(http?.okPerSec),
      fmtMs(http?.p50),
      fmtMs(http?.p99),
      http ? fmtInt(http.non2xx) : '—',
      http ? fmtInt(http.errors) : '—',
      fmtInt(raw?.opsPerSec),
      fmtRatio(http && raw ? http.okPerSec / raw.opsPerSec : undefined),
      fmtRatio(http && floor ? http.okPerSec / floor : undefined),
    ]);
  }
  for (const [label, f] of [['before', report.floorBefore], ['after', report.floorAfter]] as const) {
    rows.push([`HTTP floor, ${label} the service runs`, fmtInt(f?.okPerSec), fmtMs(f?.p50), fmtMs(f?.p99), f ? fmtInt(f.non2xx) : '—', f ? fmtInt(f.errors) : '—', '', '', fmtRatio(f && floor ? f.okPerSec / floor : undefined)]);
  }
  out.push(table(['operation', 'HTTP req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'token ops/s', 'HTTP/token', 'HTTP/floor'], rows));
  out.push('  HTTP req/s counts 2xx responses only; p50/p99 are of 2xx responses; errors are socket errors and timeouts.');
  out.push(`  HTTP floor: bare node:http server reading the body and JSON.parse-ing it; HTTP/floor uses the mean of its runs (${fmtInt(floor)} req/s).`);
  out.push(`  token ops/s: pkcs11js async calls on ${options.sessions} sessions of a fresh SoftHSM2 token, one operation in flight per session, same key attributes as the service.`);
  out.push('');

  const certOps = options.ops.filter(isCertOp);
  if (certOps.length) {
    const certRows = certOps.map((op) => {
      const load = report.service.find((r) => r.op === op)?.load;
      const raw = rawOf(MECHANISM_OF[op]);
      const versusCfssl = load ? load.okPerSec / cfsslMid(op) : undefined;
      const { low, high, targetMultiple } = CFSSL[op];
      return [
        OP_LABEL[op],
        fmtInt(load?.okPerSec),
        fmtMs(load?.p50),
        fmtMs(load?.p99),
        load ? fmtInt(load.non2xx) : '—',
        load ? fmtInt(load.errors) : '—',
        CERT_MECHANISM_LABEL[op],
        fmtInt(raw?.opsPerSec),
        fmtRatio(load && raw ? load.okPerSec / raw.opsPerSec : undefined),
        `${fmtInt(low)}–${fmtInt(high)}`,
        fmtRatio(versusCfssl),
        `≥ ${targetMultiple.toFixed(2)}`,
        versusCfssl === undefined ? 'not measured' : versusCfssl >= targetMultiple ? 'met' : 'not met',
      ];
    });
    out.push(`sign-certificate over HTTP (POST /api/v3/pki/certificates/sign-certificate, ${options.connections} connections)`);
    out.push(table(['operation', 'HTTP req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'CA token mechanism', 'token ops/s', 'HTTP/token', 'cfssl req/s *', 'HTTP/cfssl', 'target', 'status'], certRows, 1));
    out.push(`  every request carries one fixed CSR (EC P-256 key, CN=${BENCH_CSR_NAME}, SAN DNS:${BENCH_CSR_NAME}) and ttl ${BENCH_CSR_TTL}; each CA is a root made for this run,`);
    out.push("  with a profile allowing any CN and DNS SAN, maxValidity 397d; the certificate is signed in the token with the CA's key (one token signature per request).");
    out.push('  token ops/s: the raw rate of the CA key\'s mechanism measured above in this run; HTTP/token is the share of it the service turns into certificates.');
    out.push(
      `  * cfssl figures from PERFORMANCE.md, not measured here (cfssl, Go, CA key in a file, same load on this kind of machine): ` +
        certOps.map((op) => `${OP_LABEL[op].replace('sign-certificate, ', '')} ${fmtInt(CFSSL[op].low)}–${fmtInt(CFSSL[op].high)} req/s, midpoint ${cfsslMid(op).toLocaleString('en-US')}`).join('; ') +
        '. HTTP/cfssl and the target use the midpoint; met/not met is information only.',
    );
    out.push('');
  }

  const targets: Array<{ op: BenchOp; text: string; measured: number | undefined; against: string; min: number }> = [];
  const http = (op: BenchOp) => report.service.find((r) => r.op === op)?.load?.okPerSec;
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? a / b : undefined);
  targets.push({ op: 'rsa', text: 'KMS sign RSA-2048', measured: ratio(http('rsa'), rawOf('rsa')?.opsPerSec), against: 'token', min: 0.9 });
  targets.push({ op: 'p256', text: 'KMS sign ECDSA P-256', measured: ratio(http('p256'), floor), against: 'floor', min: 0.5 });
  targets.push({ op: 'aes', text: 'KMS encrypt 1 KiB', measured: ratio(http('aes'), floor), against: 'floor', min: 0.5 });
  targets.push({ op: 'cert-rsa', text: 'sign-certificate, RSA-2048 CA', measured: ratio(http('cert-rsa'), cfsslMid('cert-rsa')), against: 'cfssl*', min: CFSSL['cert-rsa'].targetMultiple });
  targets.push({ op: 'cert-p256', text: 'sign-certificate, P-256 CA', measured: ratio(http('cert-p256'), cfsslMid('cert-p256')), against: 'cfssl*', min: CFSSL['cert-p256'].targetMultiple });
  out.push('targets from PERFORMANCE.md (information only; nothing is asserted)');
  out.push(
    table(
      ['what', 'target', 'measured', 'status'],
      targets
        .filter((t) => options.ops.includes(t.op))
        .map((t) => [t.text, `≥ ${t.min.toFixed(2)} × ${t.against}`, t.measured === undefined ? '—' : `${t.measured.toFixed(2)} × ${t.against}`, t.measured === undefined ? 'not measured' : t.measured >= t.min ? 'met' : 'not met']),
      2,
    ),
  );
  if (certOps.length) out.push('  cfssl*: midpoint of PERFORMANCE.md\'s cfssl figures, not measured here (see the sign-certificate table).');
  out.push('');

  const cpuRows: string[][] = [];
  const cpuRow = (label: string, m: Measured | undefined) => {
    if (!m?.cpu) return;
    const perSec = (ms: number) => `${((ms / 1000 / m.seconds) * 100).toFixed(0)} %`;
    const perReq = (ms: number) => (m.ok ? fmtInt((ms * 1000) / m.ok) : '—');
    cpuRows.push([label, perSec(m.cpu.serverMainMs), perReq(m.cpu.serverMainMs), perSec(m.cpu.serverOtherMs), perReq(m.cpu.serverOtherMs), perSec(m.cpu.loaderMs), perReq(m.cpu.loaderMs)]);
  };
  for (const op of options.ops) cpuRow(OP_LABEL[op], report.service.find((r) => r.op === op)?.load);
  cpuRow('HTTP floor, before', report.floorBefore);
  cpuRow('HTTP floor, after', report.floorAfter);
  if (cpuRows.length) {
    out.push(`CPU during the measured runs (% of one core; µs per 2xx response; ${cpus().length} cores in all)`);
    out.push(table(['server', 'main thread', 'µs/req', 'other threads', 'µs/req', 'autocannon', 'µs/req'], cpuRows));
    out.push('  other threads: libuv pool (the token work), GC and compiler helpers. A main thread near 100 % is the bottleneck.');
    out.push('');
  }

  const before = report.rssBefore?.rssKiB;
  const after = report.rssAfter?.rssKiB;
  const served = report.service.reduce((sum, r) => sum + (r.load?.completed ?? 0), 0);
  out.push(
    `service memory (VmRSS): before the runs ${fmtMiB(before)}, after ${fmtMiB(after)}` +
      (before && after ? ` (${after >= before ? '+' : ''}${(((after - before) / before) * 100).toFixed(1)} %)` : '') +
      `, peak VmHWM ${fmtMiB(report.rssAfter?.hwmKiB ?? report.rssBefore?.hwmKiB)}; ${fmtInt(served)} requests answered in the measured runs (plus warm-ups)`,
  );
  for (const run of report.service) {
    const codes = run.load ? Object.entries(run.load.statusCodes).map(([c, n]) => `${c}×${n}`).join(' ') : '—';
    out.push(`service ${run.op}: sample ${run.sample}; status codes ${codes}; max latency ${fmtMs(run.load?.max)} ms; VmRSS after this run ${fmtMiB(run.rssAfterKiB)}`);
  }
  if (report.raw) out.push(`raw token: key generation ${fmtInt(report.raw.keygenMs)} ms; output sizes ${report.raw.results.map((r) => `${r.op} ${r.outputBytes} B`).join(', ')}; UV_THREADPOOL_SIZE ${report.raw.threadpool}`);
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

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  let options: Options | undefined;
  try {
    options = parseOptions();
  } catch (error) {
    console.error(`bench: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!options) return 0;
  const report: Report = { options, service: [] };
  const perRun = options.durationS + options.warmupS;
  const budgetMs = (rawOpsOf(options).length * perRun + 120) * 1000 + 2 * (perRun + 60) * 1000 + (300 + 60 + options.ops.length * (perRun + 60) + 30) * 1000;
  const watchdog = setTimeout(() => {
    log(`watchdog: the benchmark ran past ${Math.round(budgetMs / 1000)} s; killing every child`);
    cleanupSync();
    process.exit(2);
  }, budgetMs);
  const softhsm = await softhsmVersion();
  try {
    log(`raw token: ${rawOpsOf(options).join(', ')} on ${options.sessions} sessions, ${options.warmupS} s warm-up + ${options.durationS} s each`);
    report.raw = await measureRawToken(options);
    log(`HTTP floor: ${options.connections} connections, ${options.warmupS} s warm-up + ${options.durationS} s`);
    report.floorBefore = await measureFloor(options);
    await measureService(options, report);
    log('HTTP floor again, after the service runs');
    report.floorAfter = await measureFloor(options);
  } catch (error) {
    report.failure = error instanceof Error ? error.message : String(error);
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
  printReport(report, softhsm);
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
