/**
 * Request schemas of /api/v1/kms: encrypt and sign transcribed from Infisical's OpenAPI
 * description of them, the other routes written in the same style (docs/contract.md, KMS).
 */
import { KEY_ALGORITHMS, KEY_USAGES, SIGNING_ALGORITHMS } from '../../algorithms.js';
import { base64Payload, idParams, object, projectId, slug } from './common.js';

export const keyIdParams = idParams('keyId');

export const createKeyBody = object(
  {
    projectId,
    name: slug,
    description: { type: 'string', maxLength: 500 },
    keyUsage: { type: 'string', enum: [...KEY_USAGES] },
    encryptionAlgorithm: { type: 'string', enum: [...KEY_ALGORITHMS] },
  },
  ['projectId', 'name'],
);

export const updateKeyBody = object({
  name: slug,
  description: { type: 'string', maxLength: 500 },
  isDisabled: { type: 'boolean' },
});

export const keyByNameParams = object({ keyName: slug }, ['keyName']);
export const projectQuery = object({ projectId }, ['projectId']);

export const listKeysQuery = object(
  {
    projectId,
    offset: { type: 'integer', minimum: 0, maximum: 1_000_000_000, default: 0 },
    limit: { type: 'integer', minimum: 1, maximum: 100, default: 100 },
    orderBy: { type: 'string', enum: ['name', 'createdAt', 'updatedAt'], default: 'name' },
    orderDirection: { type: 'string', enum: ['asc', 'desc'], default: 'asc' },
    search: { type: 'string', maxLength: 64 },
  },
  ['projectId'],
);

/** Infisical's encrypt body, field for field. */
export const encryptBody = object({ plaintext: base64Payload }, ['plaintext']);

export const decryptBody = object({ ciphertext: { type: 'string', format: 'base64', minLength: 1, maxLength: base64Payload.maxLength + 64 } }, ['ciphertext']);

const signingAlgorithm = { type: 'string', enum: [...SIGNING_ALGORITHMS] } as const;

/** Infisical's sign body, field for field. */
export const signBody = object(
  {
    signingAlgorithm,
    isDigest: { type: 'boolean', default: false },
    data: base64Payload,
  },
  ['signingAlgorithm', 'data'],
);

export const verifyBody = object(
  {
    signingAlgorithm,
    isDigest: { type: 'boolean', default: false },
    data: base64Payload,
    signature: { type: 'string', format: 'base64', minLength: 1, maxLength: 1024 },
  },
  ['signingAlgorithm', 'data', 'signature'],
);
