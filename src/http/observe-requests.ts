/**
 * Request metrics and the access log (debug level), taken when each response is done: the duration histogram by method, route
 * template and status, and the KMS and certificate counters by outcome. A request that never
 * reached a route is labelled by its route family (`/api/v1/kms/*`) or `unmatched`, never by
 * its raw path, so label values stay a fixed set whatever clients send.
 */
import type { RequestHandler, Response } from 'express';
import type { Logger } from '../logger.js';
import { certificatesIssued, httpRequestDuration, kmsOperations } from '../metrics.js';
import { reqIdOf } from './request-context.js';
import { FAMILIES, familyOf, TABLE } from './route-table.js';

/** Route template → what its request counts in beyond the duration histogram (route-table.ts). */
const KMS_OPERATION_ROUTES = new Map<string, string>();
const CERTIFICATE_ISSUING_ROUTES = new Set<string>();
for (const { template, facts } of TABLE) {
  if (facts.metric !== null && typeof facts.metric === 'object') KMS_OPERATION_ROUTES.set(template, facts.metric.kmsOperation);
  else if (facts.metric === 'certificates-issued') CERTIFICATE_ISSUING_ROUTES.add(template);
}
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * The status a response went out with; 499 (nginx's "client closed request") when the client
 * went away before it was sent, whatever res.statusCode still holds by default.
 */
export function statusOf(res: Response): number {
  return res.writableFinished ? res.statusCode : CLIENT_CLOSED_REQUEST;
}
const CLIENT_CLOSED_REQUEST = 499;

function outcomeOf(statusCode: number): string {
  if (statusCode === CLIENT_CLOSED_REQUEST) return 'aborted';
  if (statusCode < 400) return 'success';
  if (statusCode === 503) return 'unavailable';
  return statusCode < 500 ? 'rejected' : 'error';
}

/** Label values of requests that reached no route: their family's prefix, `/api/v1/kms/*`. */
const FAMILY_LABELS = new Map(Object.entries(FAMILIES).map(([name, family]) => [name, `${family.prefix}/*`]));
function familyLabelOf(path: string): string {
  const family = familyOf(path);
  return family === undefined ? 'unmatched' : FAMILY_LABELS.get(family)!;
}

type DurationLabels = Readonly<{ method: string; route: string; status_code: string }>;

/**
 * Label objects are made once per (route, method, status) and reused: the values come from
 * fixed sets (see above), so this holds a bounded number of small objects.
 */
const durationLabels = new Map<string, Map<string, DurationLabels>>();
function durationLabelsOf(route: string, method: string, status: number): DurationLabels {
  let byRoute = durationLabels.get(route);
  if (!byRoute) durationLabels.set(route, (byRoute = new Map()));
  const key = method + status;
  let labels = byRoute.get(key);
  if (!labels) byRoute.set(key, (labels = Object.freeze({ method, route, status_code: String(status) })));
  return labels;
}

const outcomeLabels = new Map<string, Readonly<{ outcome: string }>>();
const operationLabels = new Map<string, Readonly<{ operation: string; outcome: string }>>();
const outcomeLabelsOf = (outcome: string) => outcomeLabels.get(outcome) ?? (outcomeLabels.set(outcome, Object.freeze({ outcome })), outcomeLabels.get(outcome)!);
function operationLabelsOf(operation: string, outcome: string) {
  const key = `${operation} ${outcome}`;
  let labels = operationLabels.get(key);
  if (!labels) operationLabels.set(key, (labels = Object.freeze({ operation, outcome })));
  return labels;
}

export const observeRequests = (logger: Logger): RequestHandler => (req, res, next) => {
  const started = process.hrtime.bigint();
  res.once('close', () => {
    const status = statusOf(res);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const route = (res.locals.route as string | undefined) ?? familyLabelOf(req.path);
    const method = KNOWN_METHODS.has(req.method) ? req.method : 'OTHER';
    httpRequestDuration.observe(durationLabelsOf(route, method, status), seconds);
    const kmsOperation = KMS_OPERATION_ROUTES.get(route);
    if (kmsOperation) kmsOperations.inc(operationLabelsOf(kmsOperation, outcomeOf(status)));
    else if (CERTIFICATE_ISSUING_ROUTES.has(route)) certificatesIssued.inc(outcomeLabelsOf(outcomeOf(status)));
    // The template, not the path: a path can carry what a client should not have sent.
    if (logger.isLevelEnabled('debug')) logger.debug({ reqId: reqIdOf(res), method, route, status, ms: Math.round(seconds * 1e4) / 10, completed: res.writableFinished }, 'request');
  });
  next();
};
