/**
 * The service as `npm start` runs it, in a separate process (`node --import tsx src/main.ts`,
 * as test/integration/startup.test.ts does), so signals and exit codes here are the real ones.
 * Its pino JSON log (stdout) and stderr are captured whole.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AdminCredentials } from './service.js';

export const ROOT = join(import.meta.dirname, '..', '..');

export interface LogLine {
  level: number;
  time: number;
  msg?: string;
  [key: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() when the process exited. */
  at: number;
}

export interface ChildService {
  child: ChildProcess;
  dataDir: string;
  /** Everything written to stdout and stderr so far, in arrival order. */
  output(): string;
  stdout(): string;
  stderr(): string;
  exited: Promise<Exit>;
  /** Pino lines of stdout, parsed; lines that are not JSON are in `notJson`. */
  logLines(): { lines: LogLine[]; notJson: string[] };
  /** Waits until a log line matches, or throws after `timeoutMs` (or when the process exits). */
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
}

export interface ListeningChildService extends ChildService {
  url: string;
  admin: AdminCredentials & { caId?: string; profileId?: string };
  /** Sends `signal` and returns Date.now() just before it was sent. */
  signal(signal?: NodeJS.Signals): number;
  /** SIGKILLs the process group (for `finally` blocks; harmless after the exit), then waits for the exit. */
  kill(): Promise<Exit>;
}

export function newChildDataDir(prefix = 'hsm-signer-child-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function spawnService(dataDir: string, extraEnv: Record<string, string | undefined> = {}): ChildService {
  // SHUTDOWN_DELAY_MS=0: tests that stop the service with SIGTERM stop it at once, as before the
  // drain delay existed; the tests of the delay itself set it.
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', SHUTDOWN_DELAY_MS: '0', ...extraEnv };
  // libuv's pool at its default, as under `npm start`.
  delete env.UV_THREADPOOL_SIZE;
  delete env.NODE_ENV;
  for (const [name, value] of Object.entries(extraEnv)) if (value === undefined) delete env[name];
  // Its own process group, so that a SIGKILL cleanup reaches whatever the service started too.
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let all = '';
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    all += chunk;
    out += chunk;
  });
  child.stderr!.on('data', (chunk: string) => {
    all += chunk;
    err += chunk;
  });
  // 'close' (not 'exit'): every byte of stdout and stderr has been read by then.
  const exited = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, at: Date.now() })));

  const logLines = () => {
    const lines: LogLine[] = [];
    const notJson: string[] = [];
    for (const text of out.split('\n')) {
      if (!text.trim()) continue;
      try {
        lines.push(JSON.parse(text) as LogLine);
      } catch {
        notJson.push(text);
      }
    }
    return { lines, notJson };
  };

  const waitForLog = async (predicate: (line: LogLine) => boolean, timeoutMs = 30_000): Promise<LogLine> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = logLines().lines.find(predicate);
      if (found) return found;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the service exited (${child.exitCode ?? child.signalCode}) before the awaited log line:\n${all}`);
      if (Date.now() > deadline) throw new Error(`no matching log line within ${timeoutMs} ms:\n${all}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  return { child, dataDir, output: () => all, stdout: () => out, stderr: () => err, exited, logLines, waitForLog };
}

/** SIGKILLs the process group of a spawned service. */
export async function killGroup(started: ChildService): Promise<Exit> {
  const pid = started.child.pid;
  // Only while the process runs: once it is reaped its id (and group id) could belong to
  // someone else.
  if (pid !== undefined && started.child.exitCode === null && started.child.signalCode === null) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  return started.exited;
}

/** Spawns the service and waits for 'hsm-signer is listening'; reads the admin credentials. */
export async function startChildService(dataDir: string, extraEnv: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<ListeningChildService> {
  const started = spawnService(dataDir, extraEnv);
  let listening: LogLine;
  try {
    listening = await started.waitForLog((line) => line.msg === 'hsm-signer is listening' && typeof line.url === 'string', timeoutMs);
  } catch (error) {
    await killGroup(started);
    throw error;
  }
  const admin = JSON.parse(readFileSync(join(dataDir, 'admin-credentials.json'), 'utf8')) as ListeningChildService['admin'];
  return {
    ...started,
    url: listening.url as string,
    admin,
    signal(signal: NodeJS.Signals = 'SIGTERM') {
      const at = Date.now();
      started.child.kill(signal);
      return at;
    },
    kill: () => killGroup(started),
  };
}

/** pino's numeric levels. */
export const LEVEL = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
