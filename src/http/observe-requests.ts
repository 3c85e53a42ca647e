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

const KMS_OPERATION_ROUTES: Record<string, string> = {
  '/api/v1/kms/keys/:keyId/encrypt': 'encrypt',
  '/api/v1/kms/keys/:keyId/decrypt': 'decrypt',
  '/api/v1/kms/keys/:keyId/sign': 'sign',
  '/api/v1/kms/keys/:keyId/verify': 'verify',
};
const SIGN_CERTIFICATE_ROUTE = '/api/v3/pki/certificates/sign-certificate';

const FAMILIES = ['/api/v1/auth', '/api/v1/kms', '/api/v1/identities', '/api/v3/pki', '/api/v1/cert-manager/ocsp', '/api/v1/cert-manager/acme', '/api/v1/cert-manager', '/api/v1/audit-logs', '/pki', '/.well-known/est'];
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

function familyOf(path: string): string {
  const family = FAMILIES.find((prefix) => path === prefix || path.startsWith(`${prefix}/`));
  return family ? `${family}/*` : 'unmatched';
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
    const route = (res.locals.route as string | undefined) ?? familyOf(req.path);
    const method = KNOWN_METHODS.has(req.method) ? req.method : 'OTHER';
    httpRequestDuration.observe(durationLabelsOf(route, method, status), seconds);
    const kmsOperation = KMS_OPERATION_ROUTES[route];
    if (kmsOperation) kmsOperations.inc(operationLabelsOf(kmsOperation, outcomeOf(status)));
    else if (route === SIGN_CERTIFICATE_ROUTE) certificatesIssued.inc(outcomeLabelsOf(outcomeOf(status)));
    // The template, not the path: a path can carry what a client should not have sent.
    if (logger.isLevelEnabled('debug')) logger.debug({ reqId: reqIdOf(res), method, route, status, ms: Math.round(seconds * 1e4) / 10, completed: res.writableFinished }, 'request');
  });
  next();
};
