/**
 * The audit sink: every event of the chain, in seq order, with the checkpoints and the audit
 * public key, streamed as JSON lines (audit-export.ts) to a file, stdout or syslog, so the trail
 * reaches a SIEM or an archive whatever the store later prunes.
 *
 * Who writes, and in which order: the sink is fed from the store, not from each process's
 * requests. The maintenance lease holder (one process among all replicas, services/leases.ts)
 * reads the events after the cursor kept in the store (`audit_sink.exported_seq`), writes them,
 * and only then moves the cursor, with a compare-and-set so that a second feeder (a lease
 * changing hands) stops instead of interleaving. So the export is in chain order however many
 * processes write the chain, and at least once: a crash between a write and the cursor's move
 * writes those lines again after the restart (the verifier skips exact repeats). With several
 * replicas, point every replica's sink at the same place (a syslog collector, stdout shipped by
 * the platform, a shared volume): the feeder is whichever replica holds the lease.
 *
 * When the sink cannot write, the cursor stays, the failure is recorded in the store
 * (`failing_since`) and the write is retried every interval. The events stay in the store
 * meanwhile (retention never prunes past the cursor while a sink is configured); with
 * audit.sinkFailure = block every process also refuses audited requests until a write succeeds
 * (src/http/audit-trail.ts).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../logger.js';
import type { AuditStore } from '../store/audit-store.js';
import { checkpointLine, eventLine, keyLine } from './audit-export.js';

export interface SinkDestination {
  /** For log lines: the file, `stdout` or `syslog`. */
  readonly name: string;
  /**
   * Writes the lines (without newlines) and resolves once they are written: for a file, on disk
   * (fdatasync); for stdout and syslog, handed to the pipe. `header` starts every file or
   * stream this destination opens, so each one verifies on its own.
   */
  write(lines: string[], header: string): Promise<void>;
  /** Starts a new file or stream at the next write (SIGHUP, after logrotate moved the file). */
  reopen(): void;
  close(): Promise<void>;
}

/** audit.sink as a destination ('file:/path', 'stdout', 'syslog', 'syslog:/socket'). */
export function sinkDestination(spec: string): SinkDestination {
  if (spec === 'stdout') return streamDestination('stdout', process.stdout);
  if (spec === 'syslog' || spec.startsWith('syslog:')) return syslogDestination(spec === 'syslog' ? '/dev/log' : spec.slice('syslog:'.length));
  if (spec.startsWith('file:')) return fileDestination(spec.slice('file:'.length));
  throw new Error(`audit.sink must be file:/path, stdout, syslog or syslog:/socket, not ${spec}`);
}

function fileDestination(path: string): SinkDestination {
  let file: FileHandle | undefined;
  let fresh = true;
  let reopenAsked = false;
  /** After a failed write a partial line may end the file: start on a line of our own. */
  let afterFailure = false;
  const closeFile = async () => {
    const current = file;
    file = undefined;
    await current?.close().catch(() => undefined);
  };
  return {
    name: path,
    async write(lines, header) {
      if (reopenAsked) {
        reopenAsked = false;
        await closeFile();
      }
      try {
        if (!file) {
          mkdirSync(dirname(path), { recursive: true });
          file = await open(path, 'a', 0o600);
          fresh = true;
        }
        const text = `${afterFailure ? '\n' : ''}${fresh ? `${header}\n` : ''}${lines.join('\n')}\n`;
        await file.write(text);
        await file.datasync();
        fresh = false;
        afterFailure = false;
      } catch (error) {
        afterFailure = true;
        await closeFile();
        throw error;
      }
    },
    reopen() {
      reopenAsked = true;
    },
    close: closeFile,
  };
}

function streamDestination(name: string, stream: NodeJS.WritableStream): SinkDestination {
  let fresh = true;
  return {
    name,
    write(lines, header) {
      const text = `${fresh ? `${header}\n` : ''}${lines.join('\n')}\n`;
      return new Promise<void>((resolve, reject) => {
        stream.write(text, (error) => {
          if (error) reject(error);
          else {
            fresh = false;
            resolve();
          }
        });
      });
    },
    reopen() {
      fresh = true;
    },
    async close() {},
  };
}

/**
 * Local syslog through util-linux's `logger` (always installed on Debian), one message per line
 * on its standard input, facility auth, tag hsm-signer-audit: Node has no Unix datagram socket
 * of its own. "Written" here means handed to logger, as syslog itself acknowledges nothing: a
 * missing socket fails the write (checked before logger starts), a logger that exits fails the
 * next write and a new one is started for the write after, but lines a dying logger had taken
 * are gone. For an export that must be complete, use a file.
 */
function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

function syslogDestination(socket: string): SinkDestination {
  let child: ChildProcessWithoutNullStreams | undefined;
  let exited: Error | undefined;
  const start = () => {
    exited = undefined;
    const started = spawn('logger', ['--socket-errors=on', '--socket', socket, '--tag', 'hsm-signer-audit', '--priority', 'auth.info', '--size', '65536'], { stdio: 'pipe' });
    let stderr = '';
    started.stderr.on('data', (chunk: Buffer) => (stderr = `${stderr}${chunk.toString('utf8')}`.slice(-500)));
    started.on('error', (error) => (exited = error));
    started.on('exit', (code, signal) => {
      exited ??= new Error(`logger exited (${signal ?? `code ${code}`})${stderr ? `: ${stderr.trim()}` : ''}`);
      if (child === started) child = undefined;
    });
    started.stdin.on('error', (error) => (exited ??= error));
    started.unref();
    (started.stdin as unknown as { unref?: () => void }).unref?.();
    child = started;
    return started;
  };
  return {
    name: `syslog ${socket}`,
    write(lines, header) {
      if (exited) {
        const error = exited;
        exited = undefined;
        child = undefined;
        return Promise.reject(error);
      }
      const fresh = !child;
      // logger reports a missing socket only by exiting after it has taken the lines: look first.
      if (fresh && !isSocket(socket)) return Promise.reject(new Error(`syslog socket ${socket}: No such file or directory (or not a socket)`));
      const target = child ?? start();
      const text = `${fresh ? `${header}\n` : ''}${lines.join('\n')}\n`;
      return new Promise<void>((resolve, reject) => {
        target.stdin.write(text, (error) => (error ? reject(error) : exited ? reject(exited) : resolve()));
      });
    },
    reopen() {
      child?.stdin.end();
      child = undefined;
    },
    async close() {
      const current = child;
      child = undefined;
      if (!current || current.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        current.once('exit', () => resolve());
        current.stdin.end();
      });
    },
  };
}

/** Lines per write: one transaction-sized read, one fdatasync. */
const BATCH = 2000;

export interface SinkRound {
  /** Events written this round. */
  written: number;
  /** Whether there may be more right away (the batch was full). */
  more: boolean;
  /** Events stored after the cursor once this round is done (the lag). */
  lag: number;
}

/**
 * One round of the feeder: the events after the cursor (and the checkpoints not yet exported up
 * to the last of them) in one write, then the cursor moved. Throws only for store errors; a
 * destination that fails is recorded (failing_since) and reported through `onFailure`.
 */
export function createSinkFeeder(deps: {
  auditStore: AuditStore;
  destination: SinkDestination;
  logger: Logger;
  onFailure?: (error: unknown) => void;
  batch?: number;
}): { round(): Promise<SinkRound>; close(): Promise<void>; reopen(): void } {
  const { auditStore, destination, logger } = deps;
  const batch = deps.batch ?? BATCH;
  let header: string | undefined;
  let lastFailureLog = 0;
  return {
    async round() {
      const state = await auditStore.sinkState();
      const events = await auditStore.eventsAfter(state.exportedSeq, batch);
      const upto = events.at(-1)?.seq ?? state.exportedSeq;
      const checkpoints = await auditStore.checkpointsBetween(state.exportedCheckpointSeq, upto);
      const { last } = await auditStore.bounds();
      if (events.length === 0 && checkpoints.length === 0) return { written: 0, more: false, lag: Math.max(last - state.exportedSeq, 0) };
      if (!header) {
        const key = await auditStore.auditKey();
        if (!key) throw new Error('no audit public key in the store yet');
        header = keyLine(key.publicKey);
      }
      // Checkpoints signed after their event was exported come first; the rest after their event.
      const lines: string[] = [];
      let next = 0;
      while (next < checkpoints.length && checkpoints[next]!.seq <= state.exportedSeq) lines.push(checkpointLine(checkpoints[next++]!));
      for (const event of events) {
        lines.push(eventLine(event));
        while (next < checkpoints.length && checkpoints[next]!.seq <= event.seq) lines.push(checkpointLine(checkpoints[next++]!));
      }
      try {
        await destination.write(lines, header);
      } catch (error) {
        deps.onFailure?.(error);
        const message = (error as Error).message ?? String(error);
        await auditStore.sinkFailed(message.slice(0, 500), Date.now());
        // Every failure is counted; the log says so at once and then once a minute.
        if (Date.now() - lastFailureLog >= 60_000) {
          lastFailureLog = Date.now();
          logger.error({ err: error, sink: destination.name, exportedSeq: state.exportedSeq, lag: last - state.exportedSeq }, 'the audit sink cannot write; the events stay in the store until it can');
        }
        return { written: 0, more: false, lag: Math.max(last - state.exportedSeq, 0) };
      }
      const to = { exportedSeq: upto, exportedCheckpointSeq: Math.max(state.exportedCheckpointSeq, checkpoints.at(-1)?.seq ?? 0) };
      if (!(await auditStore.advanceSink(state, to))) {
        logger.warn({ sink: destination.name }, 'another process moved the audit sink cursor meanwhile (the maintenance lease changed hands); this one stops until it holds the lease again');
        return { written: events.length, more: false, lag: Math.max(last - upto, 0) };
      }
      if (state.failingSince !== null) {
        lastFailureLog = 0;
        logger.info({ sink: destination.name, failedForMs: Date.now() - state.failingSince }, 'the audit sink writes again');
      }
      return { written: events.length, more: events.length === batch, lag: Math.max(last - upto, 0) };
    },
    reopen: () => destination.reopen(),
    close: () => destination.close(),
  };
}
