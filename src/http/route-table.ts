/**
 * Every route of the service and every fact about it, in one place: method and path, the
 * family (mount prefix) it belongs to, the schemas its input is validated with, what it
 * answers, who may call it, what it leaves in the audit trail and which metric it feeds.
 *
 * Read by: the routers (routes/*.ts register handlers by a route's key, which gives them its
 * path, validation and typed input), the audit trail (audit-trail.ts: action and resource
 * type), the metrics (observe-requests.ts: families and the KMS and certificate counters), the
 * OpenAPI document (openapi.ts) and the hostile-input test. A route that is not here cannot be
 * registered; test/unit/http/route-table.test.ts fails when one lacks a fact.
 *
 * The key is `METHOD template`, the template being what names the route in metrics and the
 * audit trail (`res.locals.route`): `/api/v1/identities/` keeps the slash its router gives it.
 */
import type { Action } from '../services/permissions.js';
import type { AuditResourceType } from '../services/audit-service.js';
import * as acme from './schemas/acme.js';
import * as audit from './schemas/audit.js';
import * as auth from './schemas/auth.js';
import type { JSONSchema } from './schemas/common.js';
import * as kms from './schemas/kms.js';
import * as pki from './schemas/pki.js';
import type { ResponseName } from './schemas/responses.js';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PATCH' | 'DELETE';

/**
 * Route families: the prefix a router is mounted at, which labels requests that reached no
 * route in metrics (`/api/v1/kms/*`), and whether requests to it are audited at all.
 */
export const FAMILIES = {
  health: { prefix: '', audited: false, tag: 'Operations', errors: 'own' },
  docs: { prefix: '/api/docs', audited: false, tag: 'API reference', errors: 'envelope' },
  auth: { prefix: '/api/v1/auth', audited: true, tag: 'Authentication', errors: 'envelope' },
  kms: { prefix: '/api/v1/kms', audited: true, tag: 'KMS keys', errors: 'envelope' },
  identities: { prefix: '/api/v1/identities', audited: true, tag: 'Machine identities', errors: 'envelope' },
  signCertificate: { prefix: '/api/v3/pki', audited: true, tag: 'Certificates', errors: 'envelope' },
  ocsp: { prefix: '/api/v1/cert-manager/ocsp', audited: false, tag: 'OCSP', errors: 'ocsp' },
  acme: { prefix: '/api/v1/cert-manager/acme', audited: true, tag: 'ACME (RFC 8555)', errors: 'problem' },
  certManager: { prefix: '/api/v1/cert-manager', audited: true, tag: 'Certificate authorities and profiles', errors: 'envelope' },
  auditLogs: { prefix: '/api/v1/audit-logs', audited: true, tag: 'Audit log', errors: 'envelope' },
  publicPki: { prefix: '/pki', audited: false, tag: 'Public CA files', errors: 'envelope' },
  est: { prefix: '/.well-known/est', audited: true, tag: 'EST (RFC 7030)', errors: 'envelope' },
} as const satisfies Record<string, FamilyFacts>;

export interface FamilyFacts {
  prefix: string;
  audited: boolean;
  tag: string;
  /** How failures are answered: the JSON error envelope, ACME problem documents, OCSPResponse statuses, or the route's own JSON. */
  errors: 'envelope' | 'problem' | 'ocsp' | 'own';
}

export type FamilyName = keyof typeof FAMILIES;

/** How a caller proves who it is. */
export type Authentication =
  /** A bearer access token from login. */
  | 'bearer'
  /** The credential is the request itself (a client secret to log in, a token to renew). */
  | 'credentials'
  /** HTTP Basic with the profile's EST passphrase, or a client certificate (re-enrollment). */
  | 'est'
  /** A JWS in the body, signed by an ACME account's key (`kid`), or by the key it carries (`jwk`: new-account, revoke-cert). */
  | 'acme-jws'
  | 'none';

/**
 * What the caller must be allowed: an action on the project of the resource named (or of the
 * `projectId` given), `admin` (every action on every project), `grantor` (manage-identities
 * on every project the identity's permissions name, and every action they grant: nobody manages
 * an identity stronger than itself), `account` (the ACME account that signed owns what it
 * names), or nothing beyond the authentication (`none`).
 */
export type RoutePermission = Action | 'admin' | 'grantor' | 'account' | 'none';

/**
 * The audit event of a request: action and resource type, recorded for every request with a
 * known caller (a route may still mark a read as not worth one: ACME's polls); refused requests
 * without one are counted. Null: the route is never audited nor counted (a public read).
 */
export type RouteAudit = readonly [action: string, resourceType: AuditResourceType | null] | null;

/** The metric a route feeds beyond the request duration histogram every route feeds. */
export type RouteMetric =
  | { kmsOperation: 'encrypt' | 'decrypt' | 'sign' | 'verify' }
  | 'certificates-issued'
  | 'ocsp-responses'
  | null;

/** One answer of a route: a named JSON body (schemas/responses.ts), or another media type. */
export type Answer = { description: string; json: ResponseName } | { description: string; types: readonly string[]; schema?: JSONSchema };

export interface RouteFacts {
  family: FamilyName;
  summary: string;
  description?: string;
  auth: Authentication;
  permission: RoutePermission;
  audit: RouteAudit;
  metric: RouteMetric;
  params?: JSONSchema;
  query?: JSONSchema;
  body?: JSONSchema;
  /** A body that is not JSON: its media types and what it holds. */
  rawBody?: { types: readonly string[]; description: string; schema: JSONSchema };
  /** Express's own path syntax, where it differs from the template (a wildcard). */
  expressPath?: string;
  responses: Readonly<Record<number, Answer>>;
}

const json = (name: ResponseName, description = 'Success'): Answer => ({ description, json: name });

/** ACME requests: a flattened JWS (RFC 7515 §7.2.2) as application/jose+json (RFC 8555 §6.2). */
const JWS_BODY = {
  types: ['application/jose+json'],
  description: 'Flattened JWS: the protected header names alg, nonce, url and kid (or jwk); the payload is the request, empty for POST-as-GET',
  schema: acme.jws,
} as const;

export const ROUTES = {
  // ----- operations ----------------------------------------------------------------------------
  'GET /healthz': {
    family: 'health',
    summary: 'Liveness',
    description: 'Whether the process can serve at all; a 503 means only a restart helps (the token refused the PIN).',
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    responses: { 200: json('healthy', 'Alive'), 503: json('failed', 'Failed for good: restart it') },
  },
  'GET /readyz': {
    family: 'health',
    summary: 'Readiness',
    description: 'Whether to send traffic: the token answers a real call within hsm.readyTimeoutMs and the service is not shutting down.',
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    responses: { 200: json('ready', 'Ready'), 503: json('unavailable', 'Not ready now (Retry-After: 1)') },
  },
  'GET /metrics': {
    family: 'health',
    summary: 'Prometheus metrics',
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    responses: { 200: { description: 'Prometheus text exposition format', types: ['text/plain'], schema: { type: 'string' } } },
  },

  // ----- API reference -------------------------------------------------------------------------
  'GET /api/docs': {
    family: 'docs',
    summary: 'API reference page',
    description: 'This document, rendered by Swagger UI served from the service itself (no CDN).',
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    responses: { 200: { description: 'HTML page', types: ['text/html'], schema: { type: 'string' } } },
  },
  'GET /api/docs/openapi.json': {
    family: 'docs',
    summary: 'This OpenAPI 3.1 document',
    description: 'Generated from the route table and the schemas the routes validate with.',
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    responses: { 200: { description: 'OpenAPI 3.1 document', types: ['application/json'], schema: { type: 'object' } } },
  },
  'GET /api/docs/assets/:file': {
    family: 'docs',
    summary: 'Files of the reference page',
    description: "Swagger UI's script and style sheet, and the page's start-up script.",
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    params: { type: 'object', properties: { file: { type: 'string', enum: ['swagger-ui-bundle.js', 'swagger-ui.css', 'start.js'] } }, required: ['file'], additionalProperties: false },
    responses: {
      200: { description: 'JavaScript or CSS', types: ['text/javascript', 'text/css'], schema: { type: 'string' } },
    },
  },

  // ----- auth ----------------------------------------------------------------------------------
  'POST /api/v1/auth/universal-auth/login': {
    family: 'auth',
    summary: 'Log in with a client id and secret (universal auth)',
    description: 'Failed logins are throttled per clientId and per address (429).',
    auth: 'credentials',
    permission: 'none',
    audit: ['auth.login', 'identity'],
    metric: null,
    body: auth.loginBody,
    responses: { 200: json('login', 'A bearer access token') },
  },
  'POST /api/v1/auth/token/renew': {
    family: 'auth',
    summary: 'Renew a live access token',
    auth: 'credentials',
    permission: 'none',
    audit: ['auth.renew', 'identity'],
    metric: null,
    body: auth.renewBody,
    responses: { 200: json('login', 'The same token, valid for longer') },
  },

  // ----- kms -----------------------------------------------------------------------------------
  'POST /api/v1/kms/keys/:keyId/encrypt': {
    family: 'kms',
    summary: 'Encrypt with an encrypt-decrypt key',
    auth: 'bearer',
    permission: 'encrypt',
    audit: ['kms.key.encrypt', 'key'],
    metric: { kmsOperation: 'encrypt' },
    params: kms.keyIdParams,
    body: kms.encryptBody,
    responses: { 200: json('ciphertext', 'The ciphertext, with its version trailer') },
  },
  'POST /api/v1/kms/keys/:keyId/decrypt': {
    family: 'kms',
    summary: 'Decrypt with an encrypt-decrypt key',
    auth: 'bearer',
    permission: 'decrypt',
    audit: ['kms.key.decrypt', 'key'],
    metric: { kmsOperation: 'decrypt' },
    params: kms.keyIdParams,
    body: kms.decryptBody,
    responses: { 200: json('plaintext') },
  },
  'POST /api/v1/kms/keys/:keyId/sign': {
    family: 'kms',
    summary: 'Sign data or a digest with a sign-verify key',
    auth: 'bearer',
    permission: 'sign',
    audit: ['kms.key.sign', 'key'],
    metric: { kmsOperation: 'sign' },
    params: kms.keyIdParams,
    body: kms.signBody,
    responses: { 200: json('signature') },
  },
  'POST /api/v1/kms/keys/:keyId/verify': {
    family: 'kms',
    summary: 'Verify a signature with a sign-verify key',
    auth: 'bearer',
    permission: 'verify',
    audit: ['kms.key.verify', 'key'],
    metric: { kmsOperation: 'verify' },
    params: kms.keyIdParams,
    body: kms.verifyBody,
    responses: { 200: json('verification') },
  },
  'POST /api/v1/kms/keys': {
    family: 'kms',
    summary: 'Create a key (generated in the token)',
    auth: 'bearer',
    permission: 'create',
    audit: ['kms.key.create', 'key'],
    metric: null,
    body: kms.createKeyBody,
    responses: { 200: json('key') },
  },
  'GET /api/v1/kms/keys': {
    family: 'kms',
    summary: "List a project's keys",
    auth: 'bearer',
    permission: 'read',
    audit: ['kms.key.list', 'key'],
    metric: null,
    query: kms.listKeysQuery,
    responses: { 200: json('keyList') },
  },
  'GET /api/v1/kms/keys/key-name/:keyName': {
    family: 'kms',
    summary: 'Find a key by its name in a project',
    auth: 'bearer',
    permission: 'read',
    audit: ['kms.key.read', 'key'],
    metric: null,
    params: kms.keyByNameParams,
    query: kms.projectQuery,
    responses: { 200: json('key') },
  },
  'GET /api/v1/kms/keys/:keyId': {
    family: 'kms',
    summary: 'Read a key',
    auth: 'bearer',
    permission: 'read',
    audit: ['kms.key.read', 'key'],
    metric: null,
    params: kms.keyIdParams,
    responses: { 200: json('key') },
  },
  'PATCH /api/v1/kms/keys/:keyId': {
    family: 'kms',
    summary: 'Rename, describe, disable or enable a key',
    auth: 'bearer',
    permission: 'update',
    audit: ['kms.key.update', 'key'],
    metric: null,
    params: kms.keyIdParams,
    body: kms.updateKeyBody,
    responses: { 200: json('key') },
  },
  'DELETE /api/v1/kms/keys/:keyId': {
    family: 'kms',
    summary: 'Delete a key (and its objects in the token)',
    auth: 'bearer',
    permission: 'delete',
    audit: ['kms.key.delete', 'key'],
    metric: null,
    params: kms.keyIdParams,
    responses: { 200: json('key', 'The key as it was') },
  },
  'POST /api/v1/kms/keys/:keyId/rotate': {
    family: 'kms',
    summary: 'Rotate an encrypt-decrypt key (a new version encrypts; old ones still decrypt)',
    auth: 'bearer',
    permission: 'update',
    audit: ['kms.key.rotate', 'key'],
    metric: null,
    params: kms.keyIdParams,
    responses: { 200: json('key') },
  },
  'GET /api/v1/kms/keys/:keyId/public-key': {
    family: 'kms',
    summary: "A sign-verify key's public key",
    auth: 'bearer',
    permission: 'read',
    audit: ['kms.key.read-public-key', 'key'],
    metric: null,
    params: kms.keyIdParams,
    responses: { 200: json('publicKey') },
  },
  'GET /api/v1/kms/keys/:keyId/signing-algorithms': {
    family: 'kms',
    summary: 'The signing algorithms a key can use',
    auth: 'bearer',
    permission: 'read',
    audit: ['kms.key.read-signing-algorithms', 'key'],
    metric: null,
    params: kms.keyIdParams,
    responses: { 200: json('signingAlgorithms') },
  },

  // ----- identities ----------------------------------------------------------------------------
  'POST /api/v1/identities/': {
    family: 'identities',
    summary: 'Create a machine identity',
    description: 'The caller must hold manage-identities on every project named, and every action it grants.',
    auth: 'bearer',
    permission: 'grantor',
    audit: ['identity.create', 'identity'],
    metric: null,
    body: auth.createIdentityBody,
    responses: { 200: json('identity') },
  },
  'GET /api/v1/identities/': {
    family: 'identities',
    summary: 'List the identities the caller manages',
    auth: 'bearer',
    permission: 'grantor',
    audit: ['identity.list', 'identity'],
    metric: null,
    responses: { 200: json('identityList') },
  },
  'GET /api/v1/identities/:identityId': {
    family: 'identities',
    summary: 'Read an identity',
    auth: 'bearer',
    permission: 'grantor',
    audit: ['identity.read', 'identity'],
    metric: null,
    params: auth.identityIdParams,
    responses: { 200: json('identity') },
  },
  'DELETE /api/v1/identities/:identityId': {
    family: 'identities',
    summary: 'Delete an identity (its tokens stop working)',
    auth: 'bearer',
    permission: 'grantor',
    audit: ['identity.delete', 'identity'],
    metric: null,
    params: auth.identityIdParams,
    responses: { 200: json('identity', 'The identity as it was') },
  },
  'POST /api/v1/identities/:identityId/client-secrets': {
    family: 'identities',
    summary: 'Make a client secret for an identity',
    auth: 'bearer',
    permission: 'grantor',
    audit: ['identity.client-secret.create', 'identity'],
    metric: null,
    params: auth.identityIdParams,
    body: auth.createClientSecretBody,
    responses: { 200: json('newClientSecret') },
  },
  'GET /api/v1/identities/:identityId/client-secrets': {
    family: 'identities',
    summary: "List an identity's client secrets (prefixes only)",
    auth: 'bearer',
    permission: 'grantor',
    audit: ['identity.client-secret.list', 'identity'],
    metric: null,
    params: auth.identityIdParams,
    responses: { 200: json('clientSecretList') },
  },
  'DELETE /api/v1/identities/:identityId/client-secrets/:clientSecretId': {
    family: 'identities',
    summary: 'Revoke a client secret',
    auth: 'bearer',
    permission: 'grantor',
    audit: ['identity.client-secret.delete', 'identity'],
    metric: null,
    params: auth.clientSecretParams,
    responses: { 200: json('clientSecret', 'The secret as it was') },
  },

  // ----- pki -----------------------------------------------------------------------------------
  'POST /api/v3/pki/certificates/sign-certificate': {
    family: 'signCertificate',
    summary: 'Issue a certificate for a CSR under a profile',
    description: 'ttl is required; notBefore/notAfter alongside it are refused (as in Infisical).',
    auth: 'bearer',
    permission: 'issue-certificate',
    audit: ['pki.certificate.issue', 'certificate'],
    metric: 'certificates-issued',
    body: pki.signCertificateBody,
    responses: { 200: json('issuedCertificate') },
  },
  'POST /api/v1/cert-manager/ca/internal': {
    family: 'certManager',
    summary: 'Create a root or intermediate CA (its key generated in the token)',
    auth: 'bearer',
    permission: 'manage-pki',
    audit: ['pki.ca.create', 'ca'],
    metric: null,
    body: pki.createCaBody,
    responses: { 200: json('ca') },
  },
  'GET /api/v1/cert-manager/ca/internal': {
    family: 'certManager',
    summary: "List a project's CAs",
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.ca.list', 'ca'],
    metric: null,
    query: pki.projectQuery,
    responses: { 200: json('caList') },
  },
  'GET /api/v1/cert-manager/ca/internal/:caId': {
    family: 'certManager',
    summary: 'Read a CA',
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.ca.read', 'ca'],
    metric: null,
    params: pki.caIdParams,
    responses: { 200: json('ca') },
  },
  'PATCH /api/v1/cert-manager/ca/internal/:caId': {
    family: 'certManager',
    summary: 'Enable or disable a CA',
    auth: 'bearer',
    permission: 'manage-pki',
    audit: ['pki.ca.update', 'ca'],
    metric: null,
    params: pki.caIdParams,
    body: pki.updateCaBody,
    responses: { 200: json('ca') },
  },
  'GET /api/v1/cert-manager/ca/internal/:caId/certificate': {
    family: 'certManager',
    summary: "A CA's certificate and the chain above it",
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.ca.read-certificate', 'ca'],
    metric: null,
    params: pki.caIdParams,
    responses: { 200: json('caCertificate') },
  },
  'GET /api/v1/cert-manager/ca/internal/:caId/csr': {
    family: 'certManager',
    summary: 'The CSR of an intermediate made for an outside parent',
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.ca.read-csr', 'ca'],
    metric: null,
    params: pki.caIdParams,
    responses: { 200: json('caCsr') },
  },
  'POST /api/v1/cert-manager/ca/internal/:caId/import-certificate': {
    family: 'certManager',
    summary: 'Import the certificate an outside parent signed for a pending CA',
    auth: 'bearer',
    permission: 'manage-pki',
    audit: ['pki.ca.import-certificate', 'ca'],
    metric: null,
    params: pki.caIdParams,
    body: pki.importCaCertificateBody,
    responses: { 200: json('ca') },
  },
  'POST /api/v1/cert-manager/certificate-profiles': {
    family: 'certManager',
    summary: 'Create a certificate profile on a CA',
    auth: 'bearer',
    permission: 'manage-pki',
    audit: ['pki.profile.create', 'profile'],
    metric: null,
    body: pki.createProfileBody,
    responses: { 200: json('profile') },
  },
  'GET /api/v1/cert-manager/certificate-profiles': {
    family: 'certManager',
    summary: "List a project's certificate profiles",
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.profile.list', 'profile'],
    metric: null,
    query: pki.projectQuery,
    responses: { 200: json('profileList') },
  },
  'GET /api/v1/cert-manager/certificate-profiles/:profileId': {
    family: 'certManager',
    summary: 'Read a certificate profile',
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.profile.read', 'profile'],
    metric: null,
    params: pki.profileIdParams,
    responses: { 200: json('profile') },
  },
  'PATCH /api/v1/cert-manager/certificate-profiles/:profileId': {
    family: 'certManager',
    summary: 'Change a certificate profile',
    auth: 'bearer',
    permission: 'manage-pki',
    audit: ['pki.profile.update', 'profile'],
    metric: null,
    params: pki.profileIdParams,
    body: pki.updateProfileBody,
    responses: { 200: json('profile') },
  },
  'DELETE /api/v1/cert-manager/certificate-profiles/:profileId': {
    family: 'certManager',
    summary: 'Delete a certificate profile',
    auth: 'bearer',
    permission: 'manage-pki',
    audit: ['pki.profile.delete', 'profile'],
    metric: null,
    params: pki.profileIdParams,
    responses: { 200: json('profile', 'The profile as it was') },
  },
  'GET /api/v1/cert-manager/certificate-profiles/:profileId/acme/eab-secret': {
    family: 'certManager',
    summary: "The profile's ACME external account binding key (made on first read)",
    description: 'Give eabKid and eabSecret to an ACME client for a profile that requires external account binding.',
    auth: 'bearer',
    permission: 'manage-pki',
    audit: ['pki.profile.read-acme-eab-secret', 'profile'],
    metric: null,
    params: pki.profileIdParams,
    responses: { 200: json('eabSecret') },
  },
  'GET /api/v1/cert-manager/certificates': {
    family: 'certManager',
    summary: "List a project's certificates",
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.certificate.list', 'certificate'],
    metric: null,
    query: pki.listCertificatesQuery,
    responses: { 200: json('certificateList') },
  },
  'GET /api/v1/cert-manager/certificates/:certificateId': {
    family: 'certManager',
    summary: 'Read a certificate',
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.certificate.read', 'certificate'],
    metric: null,
    params: pki.certificateIdParams,
    responses: { 200: json('certificate') },
  },
  'GET /api/v1/cert-manager/certificates/:certificateId/certificate': {
    family: 'certManager',
    summary: 'A certificate as PEM, with its chain',
    auth: 'bearer',
    permission: 'read',
    audit: ['pki.certificate.read-body', 'certificate'],
    metric: null,
    params: pki.certificateIdParams,
    responses: { 200: json('certificateBody') },
  },
  'POST /api/v1/cert-manager/certificates/:certificateId/revoke': {
    family: 'certManager',
    summary: 'Revoke a certificate (the CRL is made again at once)',
    auth: 'bearer',
    permission: 'issue-certificate',
    audit: ['pki.certificate.revoke', 'certificate'],
    metric: null,
    params: pki.certificateIdParams,
    body: pki.revokeBody,
    responses: { 200: json('revocation') },
  },

  // ----- OCSP ----------------------------------------------------------------------------------
  'POST /api/v1/cert-manager/ocsp/:caId': {
    family: 'ocsp',
    summary: "Ask the CA's OCSP responder (RFC 6960), request in the body",
    description: 'Always an OCSPResponse with HTTP 200: a request that cannot be read is malformedRequest, a busy token tryLater. Answers are no-store.',
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: 'ocsp-responses',
    params: { type: 'object', properties: { caId: { type: 'string' } }, required: ['caId'] },
    rawBody: { types: ['application/ocsp-request'], description: 'DER OCSPRequest (any Content-Type is read as one)', schema: { type: 'string', contentMediaType: 'application/ocsp-request' } },
    responses: { 200: { description: 'DER OCSPResponse', types: ['application/ocsp-response'], schema: { type: 'string', contentMediaType: 'application/ocsp-response' } } },
  },
  'GET /api/v1/cert-manager/ocsp/:caId/:request': {
    family: 'ocsp',
    summary: "Ask the CA's OCSP responder (RFC 6960 appendix A), request in the path",
    description:
      'request is the base64 DER OCSPRequest, URL-encoded; its "/" may be left unencoded, so it may span several path segments. Answers without a nonce may be cached until nextUpdate (RFC 5019).',
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: 'ocsp-responses',
    expressPath: '/:caId/*request',
    params: { type: 'object', properties: { caId: { type: 'string' }, request: { type: 'string' } }, required: ['caId', 'request'] },
    responses: { 200: { description: 'DER OCSPResponse', types: ['application/ocsp-response'], schema: { type: 'string', contentMediaType: 'application/ocsp-response' } } },
  },

  // ----- ACME (RFC 8555) ------------------------------------------------------------------------
  'GET /api/v1/cert-manager/acme/profiles/:profileId/directory': {
    family: 'acme',
    summary: "The profile's ACME directory (RFC 8555 §7.1.1)",
    description: 'A read: not audited when answered; a refusal is counted like other requests without credentials.',
    auth: 'none',
    permission: 'none',
    audit: ['pki.acme.directory.read', null],
    metric: null,
    params: acme.profileParams,
    responses: { 200: json('acmeDirectory') },
  },
  'HEAD /api/v1/cert-manager/acme/profiles/:profileId/new-nonce': {
    family: 'acme',
    summary: 'A fresh nonce in Replay-Nonce (RFC 8555 §7.2)',
    auth: 'none',
    permission: 'none',
    audit: ['pki.acme.nonce.read', null],
    metric: null,
    params: acme.profileParams,
    responses: { 200: { description: 'No body; the nonce is in Replay-Nonce', types: [] } },
  },
  'GET /api/v1/cert-manager/acme/profiles/:profileId/new-nonce': {
    family: 'acme',
    summary: 'A fresh nonce in Replay-Nonce (RFC 8555 §7.2)',
    auth: 'none',
    permission: 'none',
    audit: ['pki.acme.nonce.read', null],
    metric: null,
    params: acme.profileParams,
    responses: { 204: { description: 'No body; the nonce is in Replay-Nonce', types: [] } },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/new-account': {
    family: 'acme',
    summary: 'Create an account, or find the one of this key (onlyReturnExisting)',
    description: 'Signed with the new key itself (jwk). A profile with requireEab needs the external account binding made with its eab-secret.',
    auth: 'acme-jws',
    permission: 'none',
    audit: ['pki.acme.account.create', 'acme-account'],
    metric: null,
    params: acme.profileParams,
    rawBody: JWS_BODY,
    responses: { 201: json('acmeAccount', 'Created (Location: the account URL)'), 200: json('acmeAccount', 'The existing account of this key') },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/accounts/:accountId': {
    family: 'acme',
    summary: 'Read, update the contacts of, or deactivate an account',
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.account.update', 'acme-account'],
    metric: null,
    params: acme.accountParams,
    rawBody: JWS_BODY,
    responses: { 200: json('acmeAccount') },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/accounts/:accountId/orders': {
    family: 'acme',
    summary: "The account's orders (POST-as-GET)",
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.account.list-orders', 'acme-account'],
    metric: null,
    params: acme.accountParams,
    rawBody: JWS_BODY,
    responses: { 200: json('acmeOrderList') },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/new-order': {
    family: 'acme',
    summary: 'Order a certificate for DNS names',
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.order.create', 'acme-order'],
    metric: null,
    params: acme.profileParams,
    rawBody: JWS_BODY,
    responses: { 201: json('acmeOrder', 'Created (Location: the order URL)') },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/orders/:orderId': {
    family: 'acme',
    summary: 'Read an order (POST-as-GET)',
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.order.read', 'acme-order'],
    metric: null,
    params: acme.orderParams,
    rawBody: JWS_BODY,
    responses: { 200: json('acmeOrder') },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/orders/:orderId/finalize': {
    family: 'acme',
    summary: 'Finalize a ready order with a CSR: the certificate is issued under the profile',
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.certificate.issue', 'certificate'],
    metric: null,
    params: acme.orderParams,
    rawBody: JWS_BODY,
    responses: { 200: json('acmeOrder', 'The order, valid, with its certificate URL') },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/orders/:orderId/certificate': {
    family: 'acme',
    summary: 'The issued certificate and its chain (POST-as-GET)',
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.certificate.read', 'acme-order'],
    metric: null,
    params: acme.orderParams,
    rawBody: JWS_BODY,
    responses: { 200: { description: 'PEM chain, leaf first', types: ['application/pem-certificate-chain'], schema: { type: 'string' } } },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/authorizations/:authorizationId': {
    family: 'acme',
    summary: 'Read (POST-as-GET) or deactivate an authorization',
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.authorization.deactivate', 'acme-order'],
    metric: null,
    params: acme.authorizationParams,
    rawBody: JWS_BODY,
    responses: { 200: json('acmeAuthorization') },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/authorizations/:authorizationId/challenges/:challengeId': {
    family: 'acme',
    summary: 'Ask for a challenge to be validated (POST {}), or read it',
    description: 'Validation (http-01) runs in the background; the answer is processing at once.',
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.challenge.respond', 'acme-order'],
    metric: null,
    params: acme.challengeParams,
    rawBody: JWS_BODY,
    responses: { 200: json('acmeChallenge') },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/revoke-cert': {
    family: 'acme',
    summary: 'Revoke a certificate',
    description: "Signed by the account that ordered it, or by the certificate's own key (jwk).",
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.certificate.revoke', 'certificate'],
    metric: null,
    params: acme.profileParams,
    rawBody: JWS_BODY,
    responses: { 200: { description: 'Revoked; no body', types: [] } },
  },
  'POST /api/v1/cert-manager/acme/profiles/:profileId/key-change': {
    family: 'acme',
    summary: 'Roll the account over to a new key (an inner JWS signed by it)',
    auth: 'acme-jws',
    permission: 'account',
    audit: ['pki.acme.account.key-change', 'acme-account'],
    metric: null,
    params: acme.profileParams,
    rawBody: JWS_BODY,
    responses: { 200: json('acmeAccount') },
  },

  // ----- audit ---------------------------------------------------------------------------------
  'GET /api/v1/audit-logs/': {
    family: 'auditLogs',
    summary: 'The audit trail, newest first (admins)',
    auth: 'bearer',
    permission: 'admin',
    audit: ['audit.list', 'audit'],
    metric: null,
    query: audit.listAuditLogsQuery,
    responses: { 200: json('auditList') },
  },

  // ----- public PKI files ----------------------------------------------------------------------
  'GET /pki/ca/:caId/certificate.der': {
    family: 'publicPki',
    summary: "A CA's certificate, DER (named in issued certificates' AIA)",
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    params: pki.caIdParams,
    responses: { 200: { description: 'DER certificate', types: ['application/pkix-cert'], schema: { type: 'string', contentMediaType: 'application/pkix-cert' } } },
  },
  'GET /pki/ca/:caId/crl.der': {
    family: 'publicPki',
    summary: "A CA's current CRL, DER (named in issued certificates' CRL distribution points)",
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    params: pki.caIdParams,
    responses: { 200: { description: 'DER CRL', types: ['application/pkix-crl'], schema: { type: 'string', contentMediaType: 'application/pkix-crl' } } },
  },

  // ----- EST -----------------------------------------------------------------------------------
  'GET /.well-known/est/:profileId/cacerts': {
    family: 'est',
    summary: "The profile's CA certificates (RFC 7030 §4.1)",
    description: 'A public read, like the CRL: not audited one by one.',
    auth: 'none',
    permission: 'none',
    audit: null,
    metric: null,
    params: pki.profileIdParams,
    responses: { 200: { description: 'Base64 certs-only PKCS#7 (RFC 8951)', types: ['application/pkcs7-mime'], schema: { type: 'string' } } },
  },
  'POST /.well-known/est/:profileId/simpleenroll': {
    family: 'est',
    summary: 'Enroll: a certificate for a CSR (RFC 7030 §4.2.1)',
    description: 'HTTP Basic with the profile\'s EST passphrase (a 401 carries a Basic challenge).',
    auth: 'est',
    permission: 'none',
    audit: ['pki.est.enroll', 'certificate'],
    metric: null,
    params: pki.profileIdParams,
    rawBody: { types: ['application/pkcs10'], description: 'Base64 of the DER CSR (PEM and bare DER are taken too)', schema: { type: 'string' } },
    responses: { 200: { description: 'Base64 certs-only PKCS#7 holding the certificate', types: ['application/pkcs7-mime'], schema: { type: 'string' } } },
  },
  'POST /.well-known/est/:profileId/simplereenroll': {
    family: 'est',
    summary: 'Re-enroll: renew a certificate (RFC 7030 §4.2.2)',
    description: 'The passphrase, or the certificate being renewed as the TLS client certificate.',
    auth: 'est',
    permission: 'none',
    audit: ['pki.est.reenroll', 'certificate'],
    metric: null,
    params: pki.profileIdParams,
    rawBody: { types: ['application/pkcs10'], description: 'Base64 of the DER CSR (PEM and bare DER are taken too)', schema: { type: 'string' } },
    responses: { 200: { description: 'Base64 certs-only PKCS#7 holding the renewed certificate', types: ['application/pkcs7-mime'], schema: { type: 'string' } } },
  },
} as const satisfies Record<string, RouteFacts>;

export type RouteKey = keyof typeof ROUTES;

export interface TableRoute {
  key: RouteKey;
  method: Method;
  /** The template as metrics and the audit trail name it. */
  template: string;
  facts: RouteFacts;
}

/** Every route, in the table's order. */
export const TABLE: readonly TableRoute[] = Object.entries(ROUTES).map(([key, facts]) => {
  const space = key.indexOf(' ');
  return { key: key as RouteKey, method: key.slice(0, space) as Method, template: key.slice(space + 1), facts };
});

/** A route's facts by its key (`METHOD template`), for lookups on the request path. */
export const BY_KEY: ReadonlyMap<string, TableRoute> = new Map(TABLE.map((route) => [route.key, route]));

/** Families with a prefix, longest first: the first that matches a path is its family. */
const PREFIXES = (Object.entries(FAMILIES) as Array<[FamilyName, FamilyFacts]>)
  .filter(([, family]) => family.prefix !== '')
  .sort(([, a], [, b]) => b.prefix.length - a.prefix.length);

/** The family a request path belongs to, whether or not it reached a route. */
export function familyOf(path: string): FamilyName | undefined {
  for (const [name, family] of PREFIXES) {
    if (path.startsWith(family.prefix) && (path.length === family.prefix.length || path[family.prefix.length] === '/')) return name;
  }
  return undefined;
}

/** The path a route is registered at on its family's router. */
export function routerPathOf(route: TableRoute): string {
  return route.facts.expressPath ?? route.template.slice(FAMILIES[route.facts.family].prefix.length);
}
