/**
 * Every request to an audited route leaves a trace in the audit trail when its response is
 * sent, whatever the outcome: the route template says which action it was, the path parameters
 * (or, for a create, the id the handler put in `res.locals.auditResourceId`) which resource.
 *
 * One event per request for everything an identity did (a valid bearer token), for every login
 * whose secret was checked (those are bounded by login throttling, and each one matters), and
 * for every successful renew. Requests refused before any of that (no token or a bad one, a
 * renew of a dead token, a login refused by throttling or for its body, the per-address limit)
 * are counted instead: anyone can send them, as fast as the network allows, and one row each
 * would let them grow the table without bound. Each interval (and at shutdown) every counter
 * becomes one `auth.denied` event (see DeniedSummary), so what a flood leaves is bounded by the
 * number of distinct counters per interval, never by the number of requests.
 */
import { randomUUID } from 'node:crypto';
import type { Request, RequestHandler, Response } from 'express';
import type { AuditEventInput, AuditResourceType, AuditService } from '../services/audit-service.js';
import { serviceUnavailable } from '../errors.js';
import { clientAddressOf } from './client-address.js';
import { statusOf } from './observe-requests.js';
import { reqIdOf } from './request-context.js';

/** `METHOD route-template` → action name and the kind of resource it acts on. */
const ACTIONS: Record<string, [action: string, resourceType: AuditResourceType | null]> = {
  'POST /api/v1/auth/universal-auth/login': ['auth.login', 'identity'],
  'POST /api/v1/auth/token/renew': ['auth.renew', 'identity'],

  'POST /api/v1/kms/keys': ['kms.key.create', 'key'],
  'GET /api/v1/kms/keys': ['kms.key.list', 'key'],
  'GET /api/v1/kms/keys/key-name/:keyName': ['kms.key.read', 'key'],
  'GET /api/v1/kms/keys/:keyId': ['kms.key.read', 'key'],
  'PATCH /api/v1/kms/keys/:keyId': ['kms.key.update', 'key'],
  'DELETE /api/v1/kms/keys/:keyId': ['kms.key.delete', 'key'],
  'POST /api/v1/kms/keys/:keyId/rotate': ['kms.key.rotate', 'key'],
  'POST /api/v1/kms/keys/:keyId/encrypt': ['kms.key.encrypt', 'key'],
  'POST /api/v1/kms/keys/:keyId/decrypt': ['kms.key.decrypt', 'key'],
  'POST /api/v1/kms/keys/:keyId/sign': ['kms.key.sign', 'key'],
  'POST /api/v1/kms/keys/:keyId/verify': ['kms.key.verify', 'key'],
  'GET /api/v1/kms/keys/:keyId/public-key': ['kms.key.read-public-key', 'key'],
  'GET /api/v1/kms/keys/:keyId/signing-algorithms': ['kms.key.read-signing-algorithms', 'key'],

  'POST /api/v1/identities/': ['identity.create', 'identity'],
  'GET /api/v1/identities/': ['identity.list', 'identity'],
  'GET /api/v1/identities/:identityId': ['identity.read', 'identity'],
  'DELETE /api/v1/identities/:identityId': ['identity.delete', 'identity'],
  'POST /api/v1/identities/:identityId/client-secrets': ['identity.client-secret.create', 'identity'],
  'GET /api/v1/identities/:identityId/client-secrets': ['identity.client-secret.list', 'identity'],
  'DELETE /api/v1/identities/:identityId/client-secrets/:clientSecretId': ['identity.client-secret.delete', 'identity'],

  'POST /api/v3/pki/certificates/sign-certificate': ['pki.certificate.issue', 'certificate'],
  'POST /api/v1/cert-manager/ca/internal': ['pki.ca.create', 'ca'],
  'GET /api/v1/cert-manager/ca/internal': ['pki.ca.list', 'ca'],
  'GET /api/v1/cert-manager/ca/internal/:caId': ['pki.ca.read', 'ca'],
  'PATCH /api/v1/cert-manager/ca/internal/:caId': ['pki.ca.update', 'ca'],
  'GET /api/v1/cert-manager/ca/internal/:caId/certificate': ['pki.ca.read-certificate', 'ca'],
  'GET /api/v1/cert-manager/ca/internal/:caId/csr': ['pki.ca.read-csr', 'ca'],
  'POST /api/v1/cert-manager/ca/internal/:caId/import-certificate': ['pki.ca.import-certificate', 'ca'],
  'POST /api/v1/cert-manager/certificate-profiles': ['pki.profile.create', 'profile'],
  'GET /api/v1/cert-manager/certificate-profiles': ['pki.profile.list', 'profile'],
  'GET /api/v1/cert-manager/certificate-profiles/:profileId': ['pki.profile.read', 'profile'],
  'PATCH /api/v1/cert-manager/certificate-profiles/:profileId': ['pki.profile.update', 'profile'],
  'DELETE /api/v1/cert-manager/certificate-profiles/:profileId': ['pki.profile.delete', 'profile'],
  'GET /api/v1/cert-manager/certificates': ['pki.certificate.list', 'certificate'],
  'GET /api/v1/cert-manager/certificates/:certificateId': ['pki.certificate.read', 'certificate'],
  'GET /api/v1/cert-manager/certificates/:certificateId/certificate': ['pki.certificate.read-body', 'certificate'],
  'POST /api/v1/cert-manager/certificates/:certificateId/revoke': ['pki.certificate.revoke', 'certificate'],

  'GET /api/v1/audit-logs/': ['audit.list', 'audit'],

  'POST /.well-known/est/:profileId/simpleenroll': ['pki.est.enroll', 'certificate'],
  'POST /.well-known/est/:profileId/simplereenroll': ['pki.est.reenroll', 'certificate'],

  'GET /api/v1/cert-manager/certificate-profiles/:profileId/acme/eab-secret': ['pki.profile.read-acme-eab-secret', 'profile'],
  // ACME requests whose JWS verified and that change something (acme.ts marks reads unaudited).
  'POST /api/v1/cert-manager/acme/profiles/:profileId/new-account': ['pki.acme.account.create', 'acme-account'],
  'POST /api/v1/cert-manager/acme/profiles/:profileId/accounts/:accountId': ['pki.acme.account.update', 'acme-account'],
  'POST /api/v1/cert-manager/acme/profiles/:profileId/key-change': ['pki.acme.account.key-change', 'acme-account'],
  'POST /api/v1/cert-manager/acme/profiles/:profileId/new-order': ['pki.acme.order.create', 'acme-order'],
  'POST /api/v1/cert-manager/acme/profiles/:profileId/authorizations/:authorizationId': ['pki.acme.authorization.deactivate', 'acme-order'],
  'POST /api/v1/cert-manager/acme/profiles/:profileId/authorizations/:authorizationId/challenges/:challengeId': ['pki.acme.challenge.respond', 'acme-order'],
  'POST /api/v1/cert-manager/acme/profiles/:profileId/orders/:orderId/finalize': ['pki.acme.certificate.issue', 'certificate'],
  'POST /api/v1/cert-manager/acme/profiles/:profileId/revoke-cert': ['pki.acme.certificate.revoke', 'certificate'],
};

/** The path parameter that names the resource, by resource type. */
const ID_PARAM: Record<AuditResourceType, string> = {
  key: 'keyId',
  ca: 'caId',
  profile: 'profileId',
  certificate: 'certificateId',
  identity: 'identityId',
  audit: '',
  'acme-account': 'accountId',
  'acme-order': 'orderId',
};

/** Route families whose requests are audited even when they are refused before a route. */
const AUDITED_PREFIXES = ['/api/v1/auth/', '/api/v1/kms/', '/api/v1/identities', '/api/v3/pki/', '/api/v1/cert-manager/', '/api/v1/audit-logs', '/.well-known/est/'];
/**
 * OCSP and EST's cacerts are public reads like the CRL (OCSP is asked by every TLS client on
 * every connection): an event per query would drown the trail; OCSP answers are counted in
 * metrics instead.
 */
const unaudited = (path: string) => path.startsWith('/api/v1/cert-manager/ocsp/') || (path.startsWith('/.well-known/est/') && path.endsWith('/cacerts'));

function resourceIdOf(req: Request, res: Response, resourceType: AuditResourceType | null): string | null {
  const given = res.locals.auditResourceId as string | undefined;
  if (given) return given;
  if (!resourceType) return null;
  const params = (res.locals.input as { params?: Record<string, string> } | undefined)?.params ?? (req.params as Record<string, string>);
  return params[ID_PARAM[resourceType]] ?? null;
}

/** Set by a route when its request must be audited on its own although no bearer token was given. */
export const auditIndividually = (res: Response): void => {
  res.locals.auditIndividually = true;
};

/**
 * Set by a route whose answered request is a read not worth an event of its own although it
 * sits under an audited prefix (ACME's directory, nonces and POST-as-GET polls, which clients
 * repeat every second).
 */
export const notAudited = (res: Response): void => {
  res.locals.notAudited = true;
};

/**
 * `refuse`, when given, is asked for every audited request: true (the audit sink cannot write and
 * audit.sinkFailure is block) answers it 503 before anything else runs, as Vault does with a
 * blocking audit device. The refusal itself is recorded in the store (before any identity is
 * known, it is counted like other refused unauthenticated requests).
 */
export function auditTrail(audit: Pick<AuditService, 'record'>, denied: Pick<DeniedSummary, 'count'>, refuse?: () => boolean): RequestHandler {
  return (req, res, next) => {
    const path = req.path;
    if (!AUDITED_PREFIXES.some((prefix) => path.startsWith(prefix)) || unaudited(path)) return next();

    res.once('close', () => {
      if (res.locals.notAudited === true) return;
      const status = statusOf(res);
      const principal = res.locals.principal as { identityId: string } | undefined;
      const identityId = principal?.identityId ?? (res.locals.auditIdentityId as string | null | undefined) ?? null;
      if (!principal && res.locals.auditIndividually !== true) {
        denied.count({ reqId: reqIdOf(res), identityId, statusCode: status, clientAddress: clientAddressOf(res) });
        return;
      }
      const route = res.locals.route as string | undefined;
      const [action, resourceType] = (route && ACTIONS[`${req.method} ${route}`]) || ['http.rejected', null];
      audit.record({
        reqId: reqIdOf(res),
        identityId,
        action,
        resourceType,
        resourceId: resourceIdOf(req, res, resourceType),
        statusCode: status,
        clientAddress: clientAddressOf(res),
      });
    });
    if (refuse?.()) next(serviceUnavailable('The audit sink cannot write and audited requests are refused until it can (audit.sinkFailure is block)'));
    else next();
  };
}

/** The action of a summary event. */
export const DENIED_SUMMARY_ACTION = 'auth.denied';

/** Past this many distinct counters in one interval, further ones share one per status code. */
const MAX_COUNTERS = 1000;

interface Counter {
  firstReqId: string;
  identityId: string | null;
  statusCode: number;
  clientAddress: string | null;
  count: number;
}

export interface DeniedSummary {
  /** Counts one refused unauthenticated request. */
  count(request: { reqId: string; identityId: string | null; statusCode: number; clientAddress: string }): void;
  /** Records one summary event per counter now and starts counting afresh. */
  flush(): void;
  /** Stops the timer and flushes; call before the audit service closes. */
  close(): void;
}

/**
 * Counters of refused unauthenticated requests, one per (client address, status code, the
 * identity a login's clientId named), each recorded every `intervalMs` as one event:
 * action `auth.denied`, `resourceId` the number of requests (decimal), `reqId` the first of
 * them (to find it in the access log), status, outcome, address and identity as counted.
 * At most MAX_COUNTERS + a handful of events per interval, whatever arrives: past that, new
 * keys fall into one counter per status code with no address and no identity.
 */
export function createDeniedSummary(audit: Pick<AuditService, 'record'>, options: { intervalMs: number }): DeniedSummary {
  let counters = new Map<string, Counter>();
  const flush = () => {
    if (counters.size === 0) return;
    const done = counters;
    counters = new Map();
    for (const counter of done.values()) {
      const event: AuditEventInput = {
        reqId: counter.firstReqId,
        identityId: counter.identityId,
        action: DENIED_SUMMARY_ACTION,
        resourceType: null,
        resourceId: String(counter.count),
        statusCode: counter.statusCode,
        clientAddress: counter.clientAddress,
      };
      audit.record(event);
    }
  };
  const timer = setInterval(flush, options.intervalMs);
  timer.unref();
  return {
    count(request) {
      let key = `${request.statusCode} ${request.clientAddress} ${request.identityId ?? ''}`;
      let counter = counters.get(key);
      if (!counter) {
        const overflow = counters.size >= MAX_COUNTERS;
        if (overflow) {
          key = `${request.statusCode} overflow`;
          counter = counters.get(key);
        }
        if (!counter) {
          counter = {
            firstReqId: request.reqId || `req-${randomUUID()}`,
            identityId: overflow ? null : request.identityId,
            statusCode: request.statusCode,
            clientAddress: overflow ? null : request.clientAddress,
            count: 0,
          };
          counters.set(key, counter);
        }
      }
      counter.count++;
    },
    flush,
    close() {
      clearInterval(timer);
      flush();
    },
  };
}
