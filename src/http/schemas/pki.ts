/**
 * Request schemas of the PKI routes: sign-certificate transcribed from Infisical's OpenAPI
 * description of it, the rest in the same style (docs/contract.md, PKI).
 */
import { CA_KEY_ALGORITHMS } from '../../services/ca-service.js';
import { REVOCATION_REASONS } from '../../pki/crl.js';
import { EXTENDED_KEY_USAGE_OIDS, KEY_USAGE_BITS, POLICY_KEY_ALGORITHMS } from '../../pki/policy.js';
import { idParams, object, projectId, slug, uuid } from './common.js';

const text = (maxLength: number) => ({ type: 'string', minLength: 1, maxLength }) as const;
const ttl = { type: 'string', minLength: 1, maxLength: 32 } as const;
const patterns = { type: 'array', maxItems: 100, items: text(253) } as const;

/** Infisical's sign-certificate body, field for field. */
export const signCertificateBody = object(
  {
    profileId: uuid,
    csr: { type: 'string', minLength: 1, maxLength: 4096 },
    ttl: { type: 'string', minLength: 1 },
    notBefore: { type: 'string' },
    notAfter: { type: 'string' },
  },
  ['profileId', 'csr', 'ttl'],
);

export const caIdParams = idParams('caId');
export const profileIdParams = idParams('profileId');
export const certificateIdParams = idParams('certificateId');
export const projectQuery = object({ projectId }, ['projectId']);
export const listCertificatesQuery = object(
  { projectId, offset: { type: 'integer', minimum: 0, maximum: 1_000_000_000, default: 0 }, limit: { type: 'integer', minimum: 1, maximum: 100, default: 100 } },
  ['projectId'],
);

export const createCaBody = object(
  {
    projectId,
    type: { type: 'string', enum: ['root', 'intermediate'] },
    commonName: text(64),
    organization: text(64),
    organizationalUnit: text(64),
    country: { type: 'string', pattern: '^[A-Z]{2}$' },
    province: text(128),
    locality: text(128),
    keyAlgorithm: { type: 'string', enum: [...CA_KEY_ALGORITHMS] },
    ttl,
    maxPathLength: { type: 'integer', minimum: -1, maximum: 16 },
    parentCaId: uuid,
  },
  ['projectId', 'type', 'commonName', 'keyAlgorithm'],
);

export const updateCaBody = object({ status: { type: 'string', enum: ['active', 'disabled'] } }, ['status']);

export const importCaCertificateBody = object({ certificate: text(16384), certificateChain: text(65536) }, ['certificate', 'certificateChain']);

const policy = {
  type: 'object',
  additionalProperties: false,
  required: ['maxValidity'],
  properties: {
    subject: {
      type: 'array',
      maxItems: 32,
      default: [{ type: 'CN' }],
      items: object({ type: text(64), allowed: patterns, required: { type: 'boolean' }, denied: { type: 'boolean' } }, ['type']),
    },
    sans: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { dns: patterns, ip: patterns, emailDomains: patterns, uriPrefixes: patterns, required: { type: 'boolean' } },
    },
    keyUsages: {
      type: 'object',
      additionalProperties: false,
      default: { allowed: [], always: ['digitalSignature'] },
      properties: {
        allowed: { type: 'array', uniqueItems: true, items: { enum: Object.keys(KEY_USAGE_BITS) }, default: [] },
        always: { type: 'array', uniqueItems: true, items: { enum: Object.keys(KEY_USAGE_BITS) }, default: [] },
      },
    },
    extendedKeyUsages: {
      type: 'object',
      additionalProperties: false,
      default: { allowed: [], always: [] },
      properties: {
        allowed: { type: 'array', uniqueItems: true, items: { enum: Object.keys(EXTENDED_KEY_USAGE_OIDS) }, default: [] },
        always: { type: 'array', uniqueItems: true, items: { enum: Object.keys(EXTENDED_KEY_USAGE_OIDS) }, default: [] },
      },
    },
    keyAlgorithms: { type: 'array', uniqueItems: true, minItems: 1, items: { enum: [...POLICY_KEY_ALGORITHMS] }, default: [...POLICY_KEY_ALGORITHMS] },
    maxValidity: ttl,
    allowCa: { type: 'boolean', default: false },
  },
} as const;

/** EST (RFC 7030) for the profile: the passphrase is stored as a slow hash and never returned. */
const est = object({ enabled: { type: 'boolean' }, passphrase: { type: 'string', minLength: 12, maxLength: 256 } }, ['enabled']);

/** ACME (RFC 8555) for the profile; with requireEab, accounts need the EAB key of …/acme/eab-secret. */
const acme = object({ enabled: { type: 'boolean' }, requireEab: { type: 'boolean' } }, ['enabled']);

export const createProfileBody = object(
  { projectId, caId: uuid, slug, description: { type: 'string', maxLength: 500 }, policy, defaults: object({ ttl }), est, acme },
  ['projectId', 'caId', 'slug', 'policy'],
);

export const updateProfileBody = object({ caId: uuid, description: { type: 'string', maxLength: 500 }, policy, defaults: object({ ttl }), est, acme });

export const revokeBody = object({ revocationReason: { type: 'string', enum: Object.keys(REVOCATION_REASONS) } }, ['revocationReason']);
