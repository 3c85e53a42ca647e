/**
 * Every Prometheus metric of the service, on one private registry (never prom-client's global
 * one, so nothing a dependency registers leaks into /metrics).
 *
 * In cluster mode (server.httpWorkers > 1) the primary's ops port serves these summed over the
 * workers by prom-client's AggregatorRegistry: counters and histograms add up, and so do the
 * gauges, except where the metric says otherwise (`aggregator`).
 *
 * Label values come from fixed sets only: route templates (never raw paths), PKCS#11 function
 * and mechanism names, CKR names, outcomes. A key id or a path in a label would grow the series
 * without bound.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry });
// These three gauges break Prometheus naming (a `_total` suffix means a counter), which
// `promtool check metrics` rejects; each is the sum of its per-type sibling that stays.
for (const misnamed of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(misnamed);

const PREFIX = 'hsm_signer_';

export const httpRequestDuration = new Histogram({
  name: `${PREFIX}http_request_duration_seconds`,
  help: 'HTTP requests by method, route template and status code.',
  labelNames: ['method', 'route', 'status_code'] as const,
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

export const pkcs11OperationDuration = new Histogram({
  name: `${PREFIX}pkcs11_operation_duration_seconds`,
  help: 'Token operations (session lease to result) by operation and mechanism.',
  labelNames: ['operation', 'mechanism'] as const,
  buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5],
  registers: [registry],
});

export const maintenanceLeader = new Gauge({
  name: `${PREFIX}maintenance_leader`,
  help: '1 while this replica holds the maintenance lease and runs the periodic duties (token purge, CRL renewal) for all replicas.',
  registers: [registry],
});

export const tokenErrors = new Counter({
  name: `${PREFIX}pkcs11_errors_total`,
  help: 'Token calls that failed, by CKR code name (POOL_TIMEOUT, OPERATION_TIMEOUT and POOL_DOWN are the pool\'s own).',
  labelNames: ['ckr'] as const,
  registers: [registry],
});

export const kmsOperations = new Counter({
  name: `${PREFIX}kms_operations_total`,
  help: 'KMS encrypt, decrypt, sign and verify requests by outcome.',
  labelNames: ['operation', 'outcome'] as const,
  registers: [registry],
});

export const certificatesIssued = new Counter({
  name: `${PREFIX}certificates_issued_total`,
  help: 'sign-certificate requests by outcome.',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const ocspResponses = new Counter({
  name: `${PREFIX}ocsp_responses_total`,
  help: 'OCSP answers by response status (successful, malformedRequest, unauthorized, tryLater, internalError) and where a successful one came from (cache: signed earlier for the same statuses; token: signed for this request).',
  labelNames: ['status', 'source'] as const,
  registers: [registry],
});

export const rateLimited = new Counter({
  name: `${PREFIX}rate_limited_total`,
  help: 'Requests refused with 429, by reason.',
  labelNames: ['reason'] as const,
  registers: [registry],
});

export const auditRecordFailures = new Counter({
  name: `${PREFIX}audit_record_failures_total`,
  help: 'Audit events that could not be written to the store.',
  registers: [registry],
});

let auditWrittenSource: { readonly eventsWritten: number } | undefined;
let auditWrittenSeen = 0;
/** Where hsm_signer_audit_events_written_total reads from when scraped (the audit service). */
export function observeAuditWrites(source: { readonly eventsWritten: number } | undefined): void {
  auditWrittenSource = source;
  auditWrittenSeen = source?.eventsWritten ?? 0;
}

export const auditEventsWritten = new Counter({
  name: `${PREFIX}audit_events_written_total`,
  help: "Audit events this process's writer threads committed to the store.",
  registers: [registry],
  collect() {
    const now = auditWrittenSource?.eventsWritten ?? auditWrittenSeen;
    if (now > auditWrittenSeen) this.inc(now - auditWrittenSeen);
    auditWrittenSeen = now;
  },
});

export const auditEventsPruned = new Counter({
  name: `${PREFIX}audit_events_pruned_total`,
  help: 'Audit events deleted from the store by retention (audit.retention, audit.maxEvents), by this process while it held the maintenance lease.',
  registers: [registry],
});

export const auditSinkFailures = new Counter({
  name: `${PREFIX}audit_sink_failures_total`,
  help: 'Writes to audit.sink that failed (each retried at the next interval; the events stay in the store meanwhile).',
  registers: [registry],
});

// The next three are read by the maintenance lease holder only (0 on every other process), so
// over several workers the largest is the holder's.
export const auditSinkLag = new Gauge({
  name: `${PREFIX}audit_sink_lag_events`,
  help: 'Events in the store not yet written to audit.sink (on the maintenance lease holder, which feeds the sink; 0 elsewhere).',
  registers: [registry],
  aggregator: 'max',
});

export const auditStoreEvents = new Gauge({
  name: `${PREFIX}audit_store_events`,
  help: 'Audit events kept in the store, as of the last prune round (on the maintenance lease holder; 0 elsewhere).',
  registers: [registry],
  aggregator: 'max',
});

export const auditPruneOverdue = new Gauge({
  name: `${PREFIX}audit_prune_overdue_events`,
  help: 'Events past audit.retention or audit.maxEvents still kept after the last prune round: held back by the sink, by no signed checkpoint yet, or by the round running out of time (on the maintenance lease holder; 0 elsewhere).',
  registers: [registry],
  aggregator: 'max',
});

/** What the pool gauges read when scraped; set by the composition root. */
export interface PoolGaugeSource {
  stats: { size: number; live: number; busy: number; idle: number; waiting: number; stuck: number; state: 'up' | 'down' | 'failed' | 'closed' };
}
let poolSource: PoolGaugeSource | undefined;
export function observePool(source: PoolGaugeSource | undefined): void {
  poolSource = source;
}

/** A gauge read from `source()` when scraped (0 while there is none, before start and after close). */
function scrapedGauge<S>(name: string, help: string, source: () => S | undefined, read: (stats: S) => number, aggregator: 'sum' | 'min' = 'sum'): void {
  new Gauge({
    name: `${PREFIX}${name}`,
    help,
    registers: [registry],
    aggregator,
    collect() {
      const current = source();
      this.set(current === undefined ? 0 : read(current));
    },
  });
}
const poolGauge = (name: string, help: string, read: (stats: PoolGaugeSource['stats']) => number, aggregator: 'sum' | 'min' = 'sum') =>
  scrapedGauge(name, help, () => poolSource?.stats, read, aggregator);

poolGauge('pkcs11_sessions', 'Usable token threads, each with its own sessions (hsm.sessions while the token is up; 0 while it is down).', (stats) => stats.live);
poolGauge('pkcs11_sessions_busy', 'Token threads in a call right now.', (stats) => stats.busy);
poolGauge('pkcs11_sessions_stuck', 'Token threads whose call outlived its request; never used again, they exit when the call returns.', (stats) => stats.stuck);
poolGauge('pkcs11_session_waiters', 'Requests waiting for a free token thread.', (stats) => stats.waiting);
/** What the CSR thread gauges read when scraped (pki/csr-threads.ts); set by the composition root. */
let csrThreadSource: { stats: { threads: number; inFlight: number; terminating: number; answered: number } } | undefined;
export function observeCsrThreads(source: typeof csrThreadSource): void {
  csrThreadSource = source;
}
const csrThreadStats = () => csrThreadSource?.stats;
scrapedGauge('csr_threads', 'CSR threads running (pki.csrThreads while they are healthy).', csrThreadStats, (stats) => stats.threads);
scrapedGauge('csr_threads_in_flight', 'CSRs handed to CSR threads and not answered yet.', csrThreadStats, (stats) => stats.inFlight);
scrapedGauge('csr_threads_terminating', 'CSR threads ended (at a deadline, or by shutdown) and not stopped yet.', csrThreadStats, (stats) => stats.terminating);
let csrAnswersCounted = 0;
new Counter({
  name: `${PREFIX}csr_thread_answers_total`,
  help: 'CSRs a CSR thread parsed or refused (the rest, if any, were parsed on the event loop).',
  registers: [registry],
  collect() {
    const answered = csrThreadSource?.stats.answered ?? csrAnswersCounted;
    if (answered > csrAnswersCounted) this.inc(answered - csrAnswersCounted);
    csrAnswersCounted = answered;
  },
});
export const csrThreadFailures = new Counter({
  name: `${PREFIX}csr_thread_failures_total`,
  help: 'Failure events on CSR threads (an uncaught error, an exit, a missed deadline); a thread that fails with an error and then exits counts both.',
  registers: [registry],
});

// Over several workers (the cluster primary's /metrics) the thread gauges add up, but the token
// is up only if it is up for every worker: one reconnecting worker answers 503s for its share.
poolGauge('token_up', '1 while the token answers, 0 while the pool is down and reconnecting.', (stats) => (stats.state === 'up' ? 1 : 0), 'min');
