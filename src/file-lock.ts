/**
 * A lock between processes that share a directory (replicas, or cluster workers, on one
 * DATA_DIR), for the few seconds of first-start work that must happen once: creating the
 * embedded token. The lock is a file created with O_EXCL; a holder that died leaves it
 * behind, so a lock file older than `staleAfterMs` is taken over. Age rather than a process id
 * decides, because replicas in different containers cannot see each other's processes.
 *
 * Synchronous on purpose: it runs before the service serves anything, and the work it guards
 * (C_Initialize, C_InitToken) is synchronous too.
 */
import { closeSync, mkdirSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';

const POLL_MS = 50;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function withFileLockSync<T>(lockPath: string, work: () => T, options: { staleAfterMs?: number; waitMs?: number } = {}): T {
  const staleAfterMs = options.staleAfterMs ?? 60_000;
  const giveUpAt = Date.now() + (options.waitMs ?? 120_000);
  mkdirSync(dirname(lockPath), { recursive: true });
  for (;;) {
    let fd: number | undefined;
    try {
      fd = openSync(lockPath, 'wx', 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    if (fd !== undefined) {
      try {
        // Who holds it, for an operator looking at a lock left behind.
        writeSync(fd, `${hostname()} ${process.pid} ${new Date().toISOString()}\n`);
      } finally {
        closeSync(fd);
      }
      try {
        return work();
      } finally {
        rmSync(lockPath, { force: true });
      }
    }
    const age = lockAge(lockPath);
    if (age !== undefined && age > staleAfterMs) {
      // Left by a holder that died: remove it and race for it again like everyone else.
      rmSync(lockPath, { force: true });
      continue;
    }
    if (Date.now() > giveUpAt) throw new Error(`Timed out waiting for the lock ${lockPath}; if no other hsm-signer is starting, remove it`);
    sleepSync(POLL_MS);
  }
}

function lockAge(path: string): number | undefined {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch {
    return undefined; // released meanwhile
  }
}
