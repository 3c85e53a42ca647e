/** Request schemas of /api/v1/auth and /api/v1/identities. */
import { ACTIONS } from '../../services/permissions.js';
import { idParams, object, projectId, uuid } from './common.js';

export const loginBody = object(
  {
    clientId: { type: 'string', minLength: 1, maxLength: 128 },
    clientSecret: { type: 'string', minLength: 1, maxLength: 256 },
  },
  ['clientId', 'clientSecret'],
);

export const renewBody = object({ accessToken: { type: 'string', minLength: 1, maxLength: 512 } }, ['accessToken']);

const permission = object(
  {
    projectId: { anyOf: [projectId, { const: '*' }] },
    actions: { type: 'array', minItems: 1, maxItems: ACTIONS.length + 1, uniqueItems: true, items: { type: 'string', enum: [...ACTIONS, '*'] } },
  },
  ['projectId', 'actions'],
);

export const createIdentityBody = object(
  {
    name: { type: 'string', minLength: 1, maxLength: 64 },
    permissions: { type: 'array', minItems: 1, maxItems: 100, items: permission },
  },
  ['name', 'permissions'],
);

export const identityIdParams = idParams('identityId');
export const clientSecretParams = object({ identityId: uuid, clientSecretId: uuid }, ['identityId', 'clientSecretId']);
export const createClientSecretBody = object({ description: { type: 'string', maxLength: 256 } });
