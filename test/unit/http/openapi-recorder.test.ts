/**
 * The check every integration test's answers go through (test/helpers/openapi-recorder.ts):
 * it must refuse what contradicts the document, or the integration tests prove nothing about it.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkAnswer, operationOf } from '../../helpers/openapi-recorder.js';

const encrypt = `/api/v1/kms/keys/${randomUUID()}/encrypt`;
const envelope = { reqId: 'r1', statusCode: 404, message: 'Key not found', error: 'NotFound' };

describe('answers held to the OpenAPI document', () => {
  it('finds the operation by method and path, a router slash and a spanning OCSP request included', () => {
    expect(operationOf('POST', encrypt)?.key).toBe('POST /api/v1/kms/keys/{keyId}/encrypt');
    expect(operationOf('GET', '/api/v1/identities/?x=1')?.key).toBe('GET /api/v1/identities');
    expect(operationOf('GET', '/api/v1/cert-manager/ocsp/abc/MEow/Q%3D')?.key).toBe('GET /api/v1/cert-manager/ocsp/{caId}/{request}');
    expect(operationOf('PUT', encrypt)).toBeUndefined();
    expect(operationOf('GET', '/nowhere')).toBeUndefined();
  });

  it('passes answers that match', () => {
    expect(checkAnswer('POST', encrypt, 200, 'application/json; charset=utf-8', { ciphertext: 'AAAA' })).toEqual([]);
    expect(checkAnswer('POST', encrypt, 404, 'application/json; charset=utf-8', envelope)).toEqual([]);
    expect(checkAnswer('POST', encrypt, 422, 'application/json', { ...envelope, statusCode: 422, error: 'ValidationFailure', message: [{ path: 'body/plaintext', message: 'is required' }] })).toEqual([]);
    expect(checkAnswer('GET', '/nowhere', 404, 'text/plain', 'anything')).toEqual([]);
  });

  it('refuses a body, a status or a media type the document does not have', () => {
    expect(checkAnswer('POST', encrypt, 200, 'application/json', { ciphertext: 'not base64!' })).toHaveLength(1);
    expect(checkAnswer('POST', encrypt, 200, 'application/json', { ciphertext: 'AAAA', extra: 1 })).toHaveLength(1);
    expect(checkAnswer('POST', encrypt, 200, 'text/html', '<p>')).toHaveLength(1);
    expect(checkAnswer('POST', encrypt, 404, 'application/json', { message: 'no envelope' })).toHaveLength(1);
    expect(checkAnswer('POST', encrypt, 404, 'application/json', { ...envelope, error: 'Teapot' })).toHaveLength(1);
    // OCSP answers only 200, in its own media type: anything else is not in the document.
    expect(checkAnswer('POST', '/api/v1/cert-manager/ocsp/x', 500, 'application/json', envelope)).toHaveLength(1);
    expect(checkAnswer('POST', '/api/v1/cert-manager/ocsp/x', 200, 'application/json', {})).toHaveLength(1);
  });
});
