/**
 * What the routes answer: the shapes of their JSON bodies, and the one error envelope. The
 * route table (route-table.ts) names one of these per route and status; the OpenAPI document is
 * made from them, and the tests hold every live answer they see to them. Nothing here runs on
 * the request path: handlers build answers from the services' own types.
 */
import { STATUS_OF } from '../../errors.js';
import { KEY_ALGORITHMS, KEY_USAGES, SIGNING_ALGORITHMS } from '../../algorithms.js';
import { RESOURCE_TYPES } from './audit.js';
import { policy } from './pki.js';
import { uuid } from './common.js';

const string = { type: 'string' } as const;
const nullableString = { type: ['string', 'null'] } as const;
const dateTime = { type: 'string', format: 'date-time' } as const;
const integer = { type: 'integer' } as const;
const pem = { type: 'string', description: 'PEM' } as const;
const pemChain = { type: 'string', description: 'PEM certificates, one after another' } as const;

/** A closed object whose every property is present. */
function record(properties: Record<string, object>, description?: string) {
  return { type: 'object', properties, required: Object.keys(properties), additionalProperties: false, ...(description ? { description } : {}) };
}

export const kmsKey = record({
  id: uuid,
  orgId: string,
  name: string,
  description: string,
  isDisabled: { type: 'boolean' },
  projectId: string,
  keyUsage: { type: 'string', enum: [...KEY_USAGES] },
  version: integer,
  encryptionAlgorithm: { type: 'string', enum: [...KEY_ALGORITHMS] },
  createdAt: dateTime,
  updatedAt: dateTime,
});

const signingAlgorithm = { type: 'string', enum: [...SIGNING_ALGORITHMS] };

const permission = record({ projectId: string, actions: { type: 'array', items: string } });

export const identity = record({
  id: uuid,
  name: string,
  clientId: string,
  permissions: { type: 'array', items: permission },
  createdAt: dateTime,
  updatedAt: dateTime,
});

const clientSecret = record({
  id: uuid,
  identityId: uuid,
  clientSecretPrefix: string,
  description: string,
  createdAt: dateTime,
});

const loginResult = record({ accessToken: string, expiresIn: integer, accessTokenMaxTTL: integer, tokenType: { const: 'Bearer' } });

const ca = record({
  id: uuid,
  projectId: string,
  type: { type: 'string', enum: ['root', 'intermediate'] },
  status: { type: 'string', enum: ['active', 'disabled', 'pending-certificate'] },
  parentCaId: { type: ['string', 'null'], format: 'uuid' },
  subject: string,
  keyAlgorithm: string,
  maxPathLength: { type: ['integer', 'null'] },
  serialNumber: nullableString,
  notBefore: { type: ['string', 'null'], format: 'date-time' },
  notAfter: { type: ['string', 'null'], format: 'date-time' },
  createdAt: dateTime,
  updatedAt: dateTime,
});

const profile = record({
  id: uuid,
  projectId: string,
  caId: uuid,
  slug: string,
  description: string,
  policy: { ...policy, required: ['subject', 'sans', 'keyUsages', 'extendedKeyUsages', 'keyAlgorithms', 'maxValidity', 'allowCa'] },
  defaults: { type: 'object', properties: { ttl: string }, additionalProperties: false },
  est: record({ enabled: { type: 'boolean' }, passphraseSet: { type: 'boolean' } }, 'Whether EST is open and a passphrase is set; never the passphrase'),
  acme: record({ enabled: { type: 'boolean' }, requireEab: { type: 'boolean' } }, 'Whether ACME is open, and whether new accounts need the external account binding key'),
  createdAt: dateTime,
  updatedAt: dateTime,
});

const certificate = record({
  id: uuid,
  projectId: string,
  caId: uuid,
  profileId: { type: ['string', 'null'], format: 'uuid' },
  serialNumber: string,
  subject: string,
  subjectAltNames: { type: 'array', items: record({ type: string, value: string }) },
  notBefore: dateTime,
  notAfter: dateTime,
  status: { type: 'string', enum: ['active', 'revoked'] },
  revocationReason: nullableString,
  revokedAt: { type: ['string', 'null'], format: 'date-time' },
  fingerprints: record({ sha256: string, sha1: string }),
  createdAt: dateTime,
});

const auditEvent = record({
  seq: integer,
  id: { ...nullableString, description: 'Only events written before the compact format have one; seq names an event' },
  time: dateTime,
  reqId: string,
  identityId: nullableString,
  action: string,
  resourceType: { type: ['string', 'null'], enum: [...RESOURCE_TYPES, null] },
  resourceId: nullableString,
  outcome: { type: 'string', enum: ['success', 'denied', 'failure'] },
  statusCode: integer,
  clientAddress: nullableString,
  prevHash: { type: 'string', pattern: '^[0-9a-f]{64}$' },
  hash: { type: 'string', pattern: '^[0-9a-f]{64}$' },
});

// ----- ACME (RFC 8555 §7.1): the resources as clients read them --------------------------------
const url = { type: 'string', format: 'uri' } as const;
/** RFC 7807 problem document with an ACME error type (RFC 8555 §6.7). */
export const acmeProblem = {
  type: 'object',
  properties: { type: { type: 'string', pattern: '^urn:ietf:params:acme:error:' }, detail: string, status: integer },
  required: ['type', 'detail'],
  description: 'RFC 7807 problem document; `type` is one of RFC 8555 §6.7',
} as const;
const acmeIdentifier = record({ type: { const: 'dns' }, value: string });
const acmeChallenge = {
  type: 'object',
  properties: { type: { const: 'http-01' }, url, token: string, status: { enum: ['pending', 'processing', 'valid', 'invalid'] }, validated: dateTime, error: acmeProblem },
  required: ['type', 'url', 'token', 'status'],
  additionalProperties: false,
} as const;
const acmeOrder = {
  type: 'object',
  properties: {
    status: { enum: ['pending', 'ready', 'processing', 'valid', 'invalid'] },
    expires: dateTime,
    identifiers: { type: 'array', items: acmeIdentifier },
    authorizations: { type: 'array', items: url },
    finalize: url,
    certificate: url,
    error: acmeProblem,
  },
  required: ['status', 'expires', 'identifiers', 'authorizations', 'finalize'],
  additionalProperties: false,
} as const;

/** Answer bodies by name; route-table.ts refers to them by these names. */
export const RESPONSES = {
  login: loginResult,
  key: record({ key: kmsKey }),
  keyList: record({ keys: { type: 'array', items: kmsKey }, totalCount: integer }),
  ciphertext: record({ ciphertext: { type: 'string', format: 'base64' } }),
  plaintext: record({ plaintext: { type: 'string', format: 'base64' } }),
  signature: record({ signature: { type: 'string', format: 'base64' }, keyId: uuid, signingAlgorithm }),
  verification: record({ signatureValid: { type: 'boolean' }, keyId: uuid, signingAlgorithm }),
  publicKey: record({ publicKey: { type: 'string', format: 'base64', description: 'DER SubjectPublicKeyInfo' } }),
  signingAlgorithms: record({ signingAlgorithms: { type: 'array', items: signingAlgorithm } }),
  identity: record({ identity }),
  identityList: record({ identities: { type: 'array', items: identity } }),
  newClientSecret: record({ clientSecret: { type: 'string', description: 'Shown this once; only its hash is kept' }, clientSecretData: clientSecret }),
  clientSecretList: record({ clientSecretData: { type: 'array', items: clientSecret } }),
  clientSecret: record({ clientSecretData: clientSecret }),
  issuedCertificate: record({ certificate: pem, issuingCaCertificate: pem, certificateChain: pemChain, serialNumber: string, certificateId: uuid }),
  ca: record({ ca }),
  caList: record({ cas: { type: 'array', items: ca } }),
  caCertificate: record({ certificate: pem, certificateChain: pemChain, serialNumber: string }),
  caCsr: record({ csr: pem }),
  profile: record({ certificateProfile: profile }),
  profileList: record({ certificateProfiles: { type: 'array', items: profile } }),
  certificate: record({ certificate }),
  certificateList: record({ certificates: { type: 'array', items: certificate }, totalCount: integer }),
  certificateBody: record({ certificate: pem, certificateChain: pemChain, serialNumber: string }),
  revocation: record({ message: string, serialNumber: string, revokedAt: dateTime }),
  auditList: record({ auditLogs: { type: 'array', items: auditEvent }, totalCount: integer }),
  eabSecret: record({ eabKid: string, eabSecret: { type: 'string', description: 'base64url HMAC key for ACME external account binding' } }),
  acmeDirectory: record({ newNonce: url, newAccount: url, newOrder: url, revokeCert: url, keyChange: url, meta: record({ externalAccountRequired: { type: 'boolean' } }) }),
  acmeAccount: record({ status: { enum: ['valid', 'deactivated', 'revoked'] }, contact: { type: 'array', items: string }, orders: url }),
  acmeOrderList: record({ orders: { type: 'array', items: url } }),
  acmeOrder,
  acmeAuthorization: {
    type: 'object',
    properties: { identifier: acmeIdentifier, status: { enum: ['pending', 'valid', 'invalid', 'deactivated', 'expired', 'revoked'] }, expires: dateTime, challenges: { type: 'array', items: acmeChallenge }, wildcard: { type: 'boolean' } },
    required: ['identifier', 'status', 'expires', 'challenges'],
    additionalProperties: false,
  },
  acmeChallenge,
  healthy: record({ status: { const: 'ok' } }),
  failed: record({ status: { const: 'failed' }, message: string }),
  ready: record({ status: { const: 'ready' } }),
  unavailable: record({ status: { const: 'unavailable' }, message: string }),
} as const;

export type ResponseName = keyof typeof RESPONSES;

/**
 * The error envelope every JSON route answers a failure with (errors.ts, error-handler.ts):
 * `message` is a sentence, except for a 422, where it is the list of problems.
 */
export const errorEnvelope = {
  type: 'object',
  properties: {
    reqId: string,
    statusCode: integer,
    message: {
      anyOf: [string, { type: 'array', items: record({ path: string, message: string }) }],
    },
    error: {
      type: 'string',
      enum: Object.keys(STATUS_OF),
    },
    details: { description: 'Only on 400 and 403: what was refused (a 403 names the action and the project)' },
  },
  required: ['reqId', 'statusCode', 'message', 'error'],
  additionalProperties: false,
} as const;
