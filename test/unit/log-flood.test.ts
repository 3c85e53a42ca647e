/**
 * The log's flood summaries (src/log-flood.ts): events are counted and written as one line at
 * most per interval, with counts that add up to every event; the token's state changes are one
 * line each, however often the token fails, reconnects and fails again.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { FloodSummary, refusedRequestsSummary, tokenStateLog } from '../../src/log-flood.js';
import { TokenError } from '../../src/pkcs11/errors.js';

interface Line {
  level: number;
  msg: string;
  [key: string]: unknown;
}

function capture(level = 'info') {
  const lines: Line[] = [];
  const logger = createLogger(level, { write: (text: string) => void lines.push(JSON.parse(text) as Line) });
  return { logger, lines };
}

const down = (ckr: string) => new TokenError('unavailable', `failed with ${ckr}`, ckr, 0x30);

describe('FloodSummary', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('writes nothing per event and one line per interval whose counts add up to every event', () => {
    const { logger, lines } = capture();
    const summary = refusedRequestsSummary(logger, 1000);
    let sent = 0;
    // Ten seconds of a flood: 3,000 events per second, of three kinds.
    for (let ms = 0; ms < 10_000; ms += 10) {
      for (let i = 0; i < 30; i++, sent++) summary.add(i % 3 === 0 ? '503 POOL_DOWN' : i % 3 === 1 ? '503 CKR_DEVICE_ERROR' : '429 identity');
      vi.advanceTimersByTime(10);
    }
    summary.close();
    expect(sent).toBe(30_000);
    // One line per interval (and the rest at close), never one per event.
    expect(lines.length).toBeGreaterThanOrEqual(10);
    expect(lines.length).toBeLessThanOrEqual(11);
    expect(lines.every((line) => line.msg.startsWith('requests refused (summary') && line.summary === 'refused-requests')).toBe(true);
    // Warn: the lines hold 503s.
    expect(new Set(lines.map((line) => line.level))).toEqual(new Set([40]));
    const total = lines.reduce((sum, line) => sum + (line.count as number), 0);
    expect(total).toBe(sent);
    const byReason: Record<string, number> = {};
    for (const line of lines) for (const [reason, n] of Object.entries(line.byReason as Record<string, number>)) byReason[reason] = (byReason[reason] ?? 0) + n;
    expect(byReason).toEqual({ '503 POOL_DOWN': 10_000, '503 CKR_DEVICE_ERROR': 10_000, '429 identity': 10_000 });
    // since/until bound each line's events; lines after the first name when the run began.
    const first = lines[0]!;
    expect(Date.parse(first.until as string) - Date.parse(first.since as string)).toBeLessThanOrEqual(1000);
    expect(first.runningSince).toBeUndefined();
    expect(lines[3]!.runningSince).toBe(first.since);
  });

  it('is at info level without a 5xx, starts a new run after a quiet interval, and is quiet when nothing happens', () => {
    const { logger, lines } = capture();
    const summary = refusedRequestsSummary(logger, 1000);
    summary.add('401 UnauthorizedError');
    summary.add('429 address');
    vi.advanceTimersByTime(1000);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 30, count: 2, byReason: { '401 UnauthorizedError': 1, '429 address': 1 } });
    vi.advanceTimersByTime(10_000);
    expect(lines).toHaveLength(1);
    summary.add('401 UnauthorizedError');
    vi.advanceTimersByTime(1000);
    expect(lines).toHaveLength(2);
    expect(lines[1]!.runningSince).toBeUndefined();
    summary.close();
    expect(lines).toHaveLength(2);
  });

  it('keeps its reasons bounded', () => {
    const { logger, lines } = capture();
    const summary = new FloodSummary(logger, { intervalMs: 1000, msg: 'x', level: () => 'warn' });
    for (let i = 0; i < 1000; i++) summary.add(`reason-${i}`);
    summary.flush();
    const byReason = lines[0]!.byReason as Record<string, number>;
    expect(Object.keys(byReason).length).toBeLessThanOrEqual(101);
    expect(Object.values(byReason).reduce((a, b) => a + b, 0)).toBe(1000);
    expect(byReason.other).toBe(900);
  });
});

describe('tokenStateLog', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('a token that fails, reconnects and fails again every 200 ms for a minute: one failed line, summaries, one reconnected line', () => {
    const { logger, lines } = capture();
    let flushedBeforeRecovered = 0;
    const log = tokenStateLog(logger, { intervalMs: 5000, settleMs: 1000, beforeRecoveredLine: () => flushedBeforeRecovered++ });
    const started = Date.now();
    for (let ms = 0; ms < 60_000; ms += 200) {
      log.onDown(down('CKR_DEVICE_ERROR'));
      vi.advanceTimersByTime(100);
      log.onRecovered();
      vi.advanceTimersByTime(100);
    }
    // Then it stays up.
    vi.advanceTimersByTime(1000);
    const messages = lines.map((line) => line.msg);
    expect(messages[0]).toBe('the HSM failed; answering 503 while reconnecting');
    expect(lines[0]).toMatchObject({ level: 50, ckr: 'CKR_DEVICE_ERROR' });
    expect(messages.at(-1)).toBe('reconnected to the HSM');
    const stillFailing = lines.filter((line) => line.summary === 'token-failures');
    expect(stillFailing.length).toBeLessThanOrEqual(13);
    expect(lines.length).toBe(2 + stillFailing.length);
    expect(stillFailing.reduce((sum, line) => sum + (line.count as number), 0)).toBe(299);
    expect(lines.at(-1)).toMatchObject({ level: 30, failuresAfterReconnecting: 299, failedReconnects: 0, ckr: 'CKR_DEVICE_ERROR', downSince: new Date(started).toISOString() });
    expect(lines.at(-1)!.downMs).toBe(60_000 - 100);
    expect(flushedBeforeRecovered).toBe(1);
  });

  it('a token away for a while: failed, first failed reconnect, summaries of the rest, reconnected', () => {
    const { logger, lines } = capture();
    const log = tokenStateLog(logger, { intervalMs: 1000, settleMs: 500 });
    log.onDown(down('CKR_TOKEN_NOT_PRESENT'));
    for (let i = 0; i < 25; i++) {
      vi.advanceTimersByTime(200);
      log.onRecoveryFailed(down('CKR_TOKEN_NOT_PRESENT'));
    }
    vi.advanceTimersByTime(200);
    log.onRecovered();
    expect(lines.at(-1)!.msg).not.toBe('reconnected to the HSM');
    vi.advanceTimersByTime(500);
    const messages = lines.map((line) => line.msg);
    expect(messages[0]).toBe('the HSM failed; answering 503 while reconnecting');
    expect(messages[1]).toBe('reconnecting to the HSM failed; will retry');
    expect(messages.at(-1)).toBe('reconnected to the HSM');
    const summaries = lines.filter((line) => line.summary === 'token-failures');
    expect(summaries.reduce((sum, line) => sum + (line.count as number), 0)).toBe(24);
    expect(summaries.length).toBeLessThanOrEqual(6);
    expect(lines.at(-1)).toMatchObject({ failedReconnects: 25, downMs: 5200 });

    // A later failure, after the token had settled, is a new outage with its own line.
    vi.advanceTimersByTime(10_000);
    log.onDown(down('CKR_DEVICE_ERROR'));
    expect(lines.at(-1)).toMatchObject({ msg: 'the HSM failed; answering 503 while reconnecting', ckr: 'CKR_DEVICE_ERROR' });
    // A wrong PIN while reconnecting is logged at once.
    log.onRecoveryFailed(new TokenError('fatal-login', 'reconnecting failed with CKR_PIN_INCORRECT', 'CKR_PIN_INCORRECT', 0xa0));
    expect(lines.at(-1)!.msg).toMatch(/refused the PIN while reconnecting/);
    log.close();
  });

  it('at shutdown, a reconnect that had not settled yet is reported', () => {
    const { logger, lines } = capture();
    const log = tokenStateLog(logger, { intervalMs: 1000, settleMs: 1000 });
    log.onDown(down('CKR_DEVICE_ERROR'));
    vi.advanceTimersByTime(300);
    log.onRecovered();
    log.close();
    expect(lines.map((line) => line.msg)).toEqual(['the HSM failed; answering 503 while reconnecting', 'reconnected to the HSM']);
  });
});
