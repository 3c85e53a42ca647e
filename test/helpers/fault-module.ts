/**
 * The fault-injecting PKCS#11 module (test/fault-pkcs11) for tests: builds it once per source
 * version and steers it through its control file. See test/fault-pkcs11/README.md.
 *
 * The module reads FAULT_PKCS11_CONTROL and FAULT_PKCS11_TARGET when it is loaded
 * (C_GetFunctionList) and at C_Initialize, so create the FaultControl before the service (or
 * pkcs11js) loads the module.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const FAULT_MODULE_SOURCE = fileURLToPath(new URL('../fault-pkcs11/fault-pkcs11.c', import.meta.url));
export const DEFAULT_FAULT_TARGET = '/usr/lib/softhsm/libsofthsm2.so';

const GCC_FLAGS = ['-shared', '-fPIC', '-O2', '-Wall', '-Werror'];
const GCC_LIBS = ['-ldl', '-lpthread'];

let built: string | undefined;

/**
 * Compiles the module into a cache directory keyed by the source's hash and returns the .so
 * path. Parallel vitest forks may all build it: each compiles to its own temporary name and
 * renames it into place, so none ever loads a half-written file.
 */
export function buildFaultModule(): string {
  if (built && existsSync(built)) return built;
  const source = readFileSync(FAULT_MODULE_SOURCE);
  const hash = createHash('sha256').update(source).update(JSON.stringify([GCC_FLAGS, GCC_LIBS])).digest('hex');
  const dir = join(tmpdir(), 'hsm-signer-fault-pkcs11');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // tmpdir() is shared: never dlopen a library someone else could have put there.
  const owner = statSync(dir).uid;
  if (typeof process.getuid === 'function' && owner !== process.getuid()) {
    throw new Error(`${dir} belongs to uid ${owner}, not to this user; remove it or set TMPDIR`);
  }
  const out = join(dir, `${hash}.so`);
  if (!existsSync(out)) {
    const tmp = join(dir, `${hash}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const result = spawnSync('gcc', [...GCC_FLAGS, '-o', tmp, FAULT_MODULE_SOURCE, ...GCC_LIBS], { encoding: 'utf8' });
    if (result.error) {
      rmSync(tmp, { force: true });
      if ((result.error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new Error('gcc not found: the fault-injecting PKCS#11 module (test/fault-pkcs11) needs gcc and libc6-dev (apt-get install gcc libc6-dev)');
      }
      throw result.error;
    }
    if (result.status !== 0) {
      rmSync(tmp, { force: true });
      throw new Error(`gcc failed to build ${FAULT_MODULE_SOURCE} (exit ${result.status ?? result.signal}):\n${result.stderr}`);
    }
    renameSync(tmp, out);
  }
  built = out;
  return out;
}

/** Every function the module wraps, read from its source so there is one list only. */
export const FAULT_FUNCTION_NAMES: readonly string[] = [...readFileSync(FAULT_MODULE_SOURCE, 'utf8').matchAll(/^ {2}[XG]\((C_\w+),/gm)].map((m) => m[1]!);

export interface FaultRule {
  /** PKCS#11 function names (`C_Sign`, ...) or '*' for every function. */
  functions: readonly string[] | '*';
  /** The CKR code to answer instead of calling the token, or 'stall' to delay the call and then make it. */
  ckr: number | 'stall';
  /** How long the rule applies, from now. */
  forMs: number;
}

export type FaultCounts = Record<string, number>;

interface ActiveRule {
  line: string;
  until: number;
}

export class FaultControl {
  private rules: ActiveRule[] = [];
  /** Identities of every version written, to guarantee the module sees each new one as new. */
  private readonly versions = new Set<string>();
  private dumps = 0;
  private ownedDir: string | undefined;

  /** Starts with an empty control file at `path` (no faults). */
  constructor(readonly path: string) {
    this.write();
  }

  /**
   * A control file in a new temporary directory, named in FAULT_PKCS11_CONTROL; also sets
   * FAULT_PKCS11_TARGET (default: the environment's, else SoftHSM2). Call before the module is
   * loaded (before startTestService).
   */
  static create(options: { target?: string } = {}): FaultControl {
    const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-fault-'));
    const control = new FaultControl(join(dir, 'control'));
    control.ownedDir = dir;
    process.env.FAULT_PKCS11_CONTROL = control.path;
    process.env.FAULT_PKCS11_TARGET = options.target ?? process.env.FAULT_PKCS11_TARGET ?? DEFAULT_FAULT_TARGET;
    return control;
  }

  /**
   * Adds a rule that holds for `forMs` from now and returns its end (epoch ms). The newest rule
   * wins where rules overlap. Takes effect on the module's next call (it stats the file on
   * every call).
   */
  inject(rule: FaultRule): number {
    const names = rule.functions === '*' ? ['*'] : [...rule.functions];
    if (names.length === 0) throw new Error('inject: no functions given');
    const unknown = names.filter((name) => name !== '*' && !FAULT_FUNCTION_NAMES.includes(name));
    if (unknown.length > 0) throw new Error(`inject: unknown PKCS#11 function(s) ${unknown.join(', ')}`);
    if (rule.ckr !== 'stall' && !(Number.isInteger(rule.ckr) && rule.ckr >= 0 && rule.ckr <= 0xffffffff)) throw new Error(`inject: bad CKR code ${rule.ckr}`);
    if (!(Number.isFinite(rule.forMs) && rule.forMs > 0)) throw new Error(`inject: forMs must be a positive number, not ${rule.forMs}`);
    const until = Date.now() + Math.ceil(rule.forMs);
    const action = rule.ckr === 'stall' ? 'stall' : `0x${rule.ckr.toString(16)}`;
    this.rules = [...names.map((name) => ({ line: `${name} ${action} ${until}`, until })), ...this.rules];
    this.write();
    return until;
  }

  /** Removes every rule; a stalled call goes on within a few milliseconds. */
  clear(): void {
    this.rules = [];
    this.write();
  }

  /**
   * Calls per function since the module was loaded in this process, faulted calls included.
   * The module answers on its next re-read of the control file: at once on its next PKCS#11
   * call, else within ~10 ms from its polling thread. That thread starts when the module is
   * loaded (C_GetFunctionList); before that this waits `timeoutMs` and throws.
   */
  async counts(options: { timeoutMs?: number } = {}): Promise<FaultCounts> {
    const timeoutMs = options.timeoutMs ?? 2000;
    // A new file per request, so an older dump can never be mistaken for this one.
    const dumpPath = `${this.path}.counts-${process.pid}-${++this.dumps}`;
    rmSync(dumpPath, { force: true });
    this.write(dumpPath);
    const deadline = Date.now() + timeoutMs;
    let text: string | undefined;
    while (text === undefined) {
      try {
        text = readFileSync(dumpPath, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        if (Date.now() > deadline) {
          throw new Error(`The fault module wrote no counters to ${dumpPath} within ${timeoutMs} ms: is it loaded in this process with FAULT_PKCS11_CONTROL=${this.path}?`);
        }
        await sleep(5);
      }
    }
    rmSync(dumpPath, { force: true });
    const counts: FaultCounts = {};
    for (const line of text.split('\n')) {
      const [name, count] = line.split(' ');
      if (name && count !== undefined) counts[name] = Number(count);
    }
    return counts;
  }

  /** Clears the rules; removes the temporary directory and environment that create() made. */
  dispose(): void {
    this.clear();
    if (!this.ownedDir) return;
    if (process.env.FAULT_PKCS11_CONTROL === this.path) delete process.env.FAULT_PKCS11_CONTROL;
    rmSync(this.ownedDir, { recursive: true, force: true });
    this.ownedDir = undefined;
  }

  /**
   * Writes the control file atomically (temporary file + rename). The module re-reads only when
   * (dev, inode, size, mtime ns, ctime ns) changes; mtimes come from a coarse clock and ext4
   * reuses freed inodes, so a version that could match an earlier one is padded until it cannot.
   */
  private write(dumpPath?: string): void {
    const now = Date.now();
    this.rules = this.rules.filter((rule) => rule.until > now);
    const lines = ['# fault-pkcs11 control file: <FUNCTION|*> <CKR|stall> <UNTIL_EPOCH_MS>', ...this.rules.map((rule) => rule.line)];
    if (dumpPath) lines.push(`dump ${dumpPath}`);
    const tmp = `${this.path}.${process.pid}.tmp`;
    for (let padding = 0; ; padding++) {
      writeFileSync(tmp, `${lines.join('\n')}\n${'#\n'.repeat(padding)}`);
      renameSync(tmp, this.path);
      const st = statSync(this.path, { bigint: true });
      const version = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      if (!this.versions.has(version)) {
        this.versions.add(version);
        return;
      }
    }
  }
}
