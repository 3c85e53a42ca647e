/**
 * Refused unauthenticated requests are counted, not audited one by one
 * (src/http/audit-trail.ts): one event per address, status and identity per interval, with
 * the right count, flushed by the timer and at close, and bounded whatever arrives.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createDeniedSummary, DENIED_SUMMARY_ACTION } from '../../../src/http/audit-trail.js';
import type { AuditEventInput } from '../../../src/services/audit-service.js';

describe('denied-request summary', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('records one event per (address, status, identity) per interval carrying the count', () => {
    const recorded: AuditEventInput[] = [];
    const summary = createDeniedSummary({ record: (event) => recorded.push(event) }, { intervalMs: 1000 });
    for (let i = 0; i < 700; i++) summary.count({ reqId: `a-${i}`, identityId: null, statusCode: 401, clientAddress: '203.0.113.1' });
    for (let i = 0; i < 300; i++) summary.count({ reqId: `b-${i}`, identityId: null, statusCode: 429, clientAddress: '203.0.113.1' });
    summary.count({ reqId: 'c-0', identityId: 'identity-1', statusCode: 429, clientAddress: '203.0.113.1' });
    summary.count({ reqId: 'd-0', identityId: null, statusCode: 401, clientAddress: '2001:db8::1' });
    expect(recorded).toEqual([]);

    vi.advanceTimersByTime(1000);
    expect(recorded).toHaveLength(4);
    expect(recorded.every((event) => event.action === DENIED_SUMMARY_ACTION && event.resourceType === null)).toBe(true);
    expect(recorded.find((e) => e.statusCode === 401 && e.clientAddress === '203.0.113.1')).toMatchObject({ resourceId: '700', reqId: 'a-0', identityId: null });
    expect(recorded.find((e) => e.statusCode === 429 && e.identityId === null)).toMatchObject({ resourceId: '300', reqId: 'b-0' });
    expect(recorded.find((e) => e.identityId === 'identity-1')).toMatchObject({ resourceId: '1', statusCode: 429 });
    expect(recorded.find((e) => e.clientAddress === '2001:db8::1')).toMatchObject({ resourceId: '1' });

    // Counting starts afresh; an idle interval records nothing; close flushes what is left.
    vi.advanceTimersByTime(1000);
    expect(recorded).toHaveLength(4);
    summary.count({ reqId: 'e-0', identityId: null, statusCode: 400, clientAddress: '203.0.113.1' });
    summary.close();
    expect(recorded).toHaveLength(5);
    expect(recorded[4]).toMatchObject({ resourceId: '1', statusCode: 400 });
    vi.advanceTimersByTime(5000);
    expect(recorded).toHaveLength(5);
  });

  it('stays bounded when every request comes from another address', () => {
    const recorded: AuditEventInput[] = [];
    const summary = createDeniedSummary({ record: (event) => recorded.push(event) }, { intervalMs: 1000 });
    const total = 50_000;
    for (let i = 0; i < total; i++) summary.count({ reqId: `r-${i}`, identityId: null, statusCode: 401, clientAddress: `2001:db8::${i.toString(16)}` });
    summary.close();
    expect(recorded.length).toBeLessThanOrEqual(1001);
    expect(recorded.reduce((sum, event) => sum + Number(event.resourceId), 0)).toBe(total);
    expect(recorded.find((event) => event.clientAddress === null)).toMatchObject({ resourceId: String(total - 1000) });
  });
});
