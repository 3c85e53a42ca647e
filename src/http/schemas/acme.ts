/**
 * What the ACME routes take, for the route table and the OpenAPI document. The routes do not
 * validate with these: ACME refuses bad input with problem documents of its own types
 * (services/acme-service.ts checks every JWS), never the JSON envelope.
 */
import { object } from './common.js';

const id = { type: 'string', minLength: 1 } as const;

export const profileParams = object({ profileId: id }, ['profileId']);
export const accountParams = object({ profileId: id, accountId: id }, ['profileId', 'accountId']);
export const orderParams = object({ profileId: id, orderId: id }, ['profileId', 'orderId']);
export const authorizationParams = object({ profileId: id, authorizationId: id }, ['profileId', 'authorizationId']);
export const challengeParams = object({ profileId: id, authorizationId: id, challengeId: id }, ['profileId', 'authorizationId', 'challengeId']);

const base64url = { type: 'string', pattern: '^[A-Za-z0-9_-]*$' } as const;
export const jws = object({ protected: base64url, payload: base64url, signature: base64url }, ['protected', 'payload', 'signature']);
