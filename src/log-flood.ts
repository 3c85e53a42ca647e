/**
 * Log lines that a flood cannot multiply. Whatever happens once per request (a 503 while the
 * token is down, a 429, a 401) or once per retry (a failed reconnect every 200 ms) is counted
 * here and written as one summary line at most every `intervalMs`, so an outage of any length
 * under any traffic writes a number of lines bounded by its duration, never by its requests.
 * What changes state (the token failed, it is back) is still logged at once, one line each.
 * The per-request detail stays at debug level (error-handler.ts) and in the metrics.
 *
 * The same idea as the audit trail's auth.denied rows (http/audit-trail.ts), for the log.
 */
import type { Logger } from './logger.js';
import type { TokenError } from './pkcs11/errors.js';

/** Past this many distinct reasons in one summary, further ones share one "other" counter. */
const MAX_REASONS = 100;

export type SummaryLevel = 'info' | 'warn' | 'error';

export interface FloodSummaryOptions {
  intervalMs: number;
  /** The summary line's message. */
  msg: string;
  /** The level of a summary line, from its counts by reason. */
  level: (byReason: ReadonlyMap<string, number>) => SummaryLevel;
  /** Extra fields on every summary line (what kind of summary it is). */
  fields?: Record<string, unknown>;
}

/**
 * Counts events by reason; the first event after a quiet spell arms a timer, and when it fires
 * one line carries the counts: `{count, byReason, since, until}` (`since`: the first event
 * counted, `until`: the last). While events keep coming, one line per interval, each with its
 * own counts (they add up to every event counted); `runningSince` names when the current
 * unbroken run of summaries began, so a long outage can be read from any one line.
 */
export class FloodSummary {
  private byReason = new Map<string, number>();
  private count = 0;
  private firstAt = 0;
  private lastAt = 0;
  private timer: NodeJS.Timeout | undefined;
  /** When the current run of back-to-back summaries began (undefined: no run). */
  private runSince: number | undefined;
  private lastFlushAt = 0;
  private closed = false;

  constructor(
    private readonly logger: Logger,
    private readonly options: FloodSummaryOptions,
  ) {}

  /** Counts one event; logs nothing now. */
  add(reason: string): void {
    const now = Date.now();
    if (this.count === 0) {
      this.firstAt = now;
      // A quiet interval ends a run: the next summary starts a new one.
      if (this.runSince === undefined || now - this.lastFlushAt > this.options.intervalMs) this.runSince = now;
      if (!this.closed && !this.timer) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.flush();
        }, this.options.intervalMs);
        this.timer.unref();
      }
    }
    this.lastAt = now;
    this.count++;
    const key = this.byReason.has(reason) || this.byReason.size < MAX_REASONS ? reason : 'other';
    this.byReason.set(key, (this.byReason.get(key) ?? 0) + 1);
  }

  /** Events counted since the last summary line. */
  get pending(): number {
    return this.count;
  }

  /** Writes the summary of what was counted now (nothing when nothing was) and starts afresh. */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.count === 0) return;
    const byReason = this.byReason;
    const line: Record<string, unknown> = {
      ...this.options.fields,
      count: this.count,
      byReason: Object.fromEntries(byReason),
      since: new Date(this.firstAt).toISOString(),
      until: new Date(this.lastAt).toISOString(),
    };
    if (this.runSince !== undefined && this.runSince < this.firstAt) line.runningSince = new Date(this.runSince).toISOString();
    this.logger[this.options.level(byReason)](line, this.options.msg);
    this.byReason = new Map();
    this.count = 0;
    this.lastFlushAt = Date.now();
  }

  /** Flushes and counts no more on a timer (a later add is written by the next flush only). */
  close(): void {
    this.closed = true;
    this.flush();
  }
}

/** The statuses whose answers are summarized instead of logged one by one. */
export const SUMMARIZED_STATUSES: ReadonlySet<number> = new Set([401, 429, 503]);

/**
 * Refused requests (401, 429, 503), by `"<status> <reason>"`: one summary line at most per
 * interval, at warn when it holds a 5xx, else at info.
 */
export function refusedRequestsSummary(logger: Logger, intervalMs: number): FloodSummary {
  return new FloodSummary(logger, {
    intervalMs,
    msg: 'requests refused (summary; each one is logged at debug level)',
    fields: { summary: 'refused-requests' },
    level: (byReason) => ([...byReason.keys()].some((reason) => reason.startsWith('5')) ? 'warn' : 'info'),
  });
}

/** The pool's callbacks (TokenThreadPoolOptions), logging state changes and summarizing the rest. */
export interface TokenStateLog {
  onDown(error: TokenError): void;
  onRecovered(): void;
  onRecoveryFailed(error: TokenError): void;
  /** Writes what is pending (at shutdown). */
  close(): void;
}

/**
 * The token's state changes as an operator wants to read them, one line each, however the
 * token behaves:
 * - `the HSM failed; answering 503 while reconnecting` (error, with the CKR) when an outage begins;
 * - `reconnecting to the HSM failed; will retry` (warn) for its first failed reconnect;
 * - `the HSM is still failing` (warn, summary at most every interval) for further failed
 *   reconnects and for failures again right after a reconnect, by CKR;
 * - `reconnected to the HSM` (info, with how long it was down) once the token has stayed up
 *   for `settleMs` after reconnecting. A token that fails again within `settleMs` (a device
 *   that accepts a login but fails every signature, say) is the same outage, not a new one:
 *   otherwise each 200 ms reconnect cycle would write two lines.
 * `beforeRecoveredLine` runs just before the `reconnected` line (the refused-requests summary
 * is flushed there, so the outage's 503s are counted before the line that ends it).
 */
export function tokenStateLog(logger: Logger, options: { intervalMs: number; settleMs: number; beforeRecoveredLine?: () => void }): TokenStateLog {
  const stillFailing = new FloodSummary(logger, {
    intervalMs: options.intervalMs,
    msg: 'the HSM is still failing; answering 503 while reconnecting',
    fields: { summary: 'token-failures' },
    level: () => 'warn',
  });
  let outage: { since: number; ckr: string; failedReconnects: number; relapses: number; reconnectedAt?: number } | undefined;
  let settle: NodeJS.Timeout | undefined;
  const cancelSettle = () => {
    if (settle) clearTimeout(settle);
    settle = undefined;
  };
  const recovered = () => {
    settle = undefined;
    if (!outage) return;
    const done = outage;
    outage = undefined;
    stillFailing.flush();
    options.beforeRecoveredLine?.();
    const at = done.reconnectedAt ?? Date.now();
    logger.info(
      { downSince: new Date(done.since).toISOString(), reconnectedAt: new Date(at).toISOString(), downMs: at - done.since, ckr: done.ckr, failedReconnects: done.failedReconnects, failuresAfterReconnecting: done.relapses },
      'reconnected to the HSM',
    );
  };
  return {
    onDown(error) {
      if (outage) {
        // Failed again before the reconnect had settled: the same outage.
        cancelSettle();
        outage.relapses++;
        delete outage.reconnectedAt;
        stillFailing.add(`failed again ${error.ckr}`);
        return;
      }
      outage = { since: Date.now(), ckr: error.ckr, failedReconnects: 0, relapses: 0 };
      logger.error({ ckr: error.ckr }, 'the HSM failed; answering 503 while reconnecting');
    },
    onRecoveryFailed(error) {
      if (error.errorClass === 'fatal-login') {
        cancelSettle();
        stillFailing.flush();
        logger.error({ ckr: error.ckr }, 'the HSM refused the PIN while reconnecting; not retrying (it could lock the token): /healthz now fails, restart with the right PIN');
        return;
      }
      outage ??= { since: Date.now(), ckr: error.ckr, failedReconnects: 0, relapses: 0 };
      outage.failedReconnects++;
      if (outage.failedReconnects === 1) logger.warn({ ckr: error.ckr }, 'reconnecting to the HSM failed; will retry');
      else stillFailing.add(`reconnect ${error.ckr}`);
    },
    onRecovered() {
      if (!outage) return;
      outage.reconnectedAt = Date.now();
      cancelSettle();
      settle = setTimeout(recovered, options.settleMs);
      settle.unref();
    },
    close() {
      // A reconnect that had not settled yet still ended the outage as far as this process saw.
      if (settle) {
        cancelSettle();
        recovered();
      }
      stillFailing.close();
    },
  };
}
