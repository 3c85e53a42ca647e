/**
 * Child processes and temporary directories of one benchmark run. Everything made here is
 * registered, so a failure anywhere (or Ctrl-C) still ends every child and removes every
 * directory: `cleanup()` on the normal and error paths, `cleanupSync()` from process 'exit'.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const children = new Set<ChildProcess>();
const dirs = new Set<string>();

export function track<T extends ChildProcess>(child: T): T {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(dir);
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  dirs.delete(dir);
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when SIGTERM was not enough and the child had to be killed. */
  killed: boolean;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<ExitStatus> {
  if (!isRunning(child)) return { code: child.exitCode, signal: child.signalCode, killed: false };
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  let killed = false;
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, graceMs);
  const [code, signal] = await exited;
  clearTimeout(timer);
  return { code, signal, killed };
}

export async function cleanup(): Promise<void> {
  await Promise.all([...children].map((child) => stopChild(child, 5_000)));
  for (const dir of [...dirs]) removeDir(dir);
}

/** Last resort from process 'exit': nothing asynchronous can run any more. */
export function cleanupSync(): void {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }
  for (const dir of dirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // Best effort on the way out.
    }
  }
}

/** A port free on the loopback interface right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (!address || typeof address === 'string') throw new Error('could not find a free port');
  return address.port;
}

/** Polls `probe` until it returns true, the child dies, or `timeoutMs` passes. */
export async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs: number, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child && !isRunning(child)) throw new Error(`${what}: the process exited (code ${child.exitCode}, signal ${child.signalCode})`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** VmRSS and VmHWM of a process, in KiB, and its thread count (Linux /proc). */
export function memoryOf(pid: number): { rssKiB: number; hwmKiB: number; threads: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
    return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM'), threads: field('Threads') };
  } catch {
    return undefined;
  }
}

/** Rejects after `ms` unless `promise` settles first. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${Math.round(ms / 1000)} s`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** CPU time of a process so far, in ms: its main thread (tid = pid) and all its other threads. */
export function threadCpuOf(pid: number): { mainMs: number; otherMs: number } | undefined {
  const ticksToMs = 1000 / 100; // USER_HZ is 100 on Linux.
  try {
    let mainMs = 0;
    let otherMs = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // Fields after "(comm)": state is field 3, utime 14 and stime 15 of the whole line.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ms = (Number(fields[11]) + Number(fields[12])) * ticksToMs;
      if (tid === String(pid)) mainMs += ms;
      else otherMs += ms;
    }
    return { mainMs, otherMs };
  } catch {
    return undefined;
  }
}

/**
 * A process and its descendants (the service's worker processes under HTTP_WORKERS), by each
 * process's parent in /proc/PID/stat.
 */
export function processTree(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // Exited while listing.
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) for (const [child, parent] of parentOf) if (parent === tree[i]) tree.push(child);
  return tree;
}

/** threadCpuOf summed over a process tree: every process's main thread, and all other threads. */
export function treeCpuOf(pid: number): { mainMs: number; otherMs: number } | undefined {
  const root = threadCpuOf(pid);
  if (!root) return undefined;
  for (const descendant of processTree(pid).slice(1)) {
    const cpu = threadCpuOf(descendant);
    if (!cpu) continue;
    root.mainMs += cpu.mainMs;
    root.otherMs += cpu.otherMs;
  }
  return root;
}

/** memoryOf summed over a process tree. */
export function treeMemoryOf(pid: number): { rssKiB: number; hwmKiB: number; threads: number } | undefined {
  const root = memoryOf(pid);
  if (!root) return undefined;
  for (const descendant of processTree(pid).slice(1)) {
    const memory = memoryOf(descendant);
    if (!memory) continue;
    root.rssKiB += memory.rssKiB;
    root.hwmKiB += memory.hwmKiB;
    root.threads += memory.threads;
  }
  return root;
}
