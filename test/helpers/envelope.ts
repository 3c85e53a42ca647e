/**
 * Error envelopes checked against the error schemas of Infisical's OpenAPI description of the
 * core endpoints (test/fixtures, transcribed from it; docs/contract.md). 429 and 503 are not in
 * it: they are held to the 500 shape with their own status.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import { expect } from 'vitest';
import type { ApiResponse } from './http.js';

type Schema = { properties: Record<string, unknown> } & Record<string, unknown>;
export const SPEC_ERROR_SCHEMAS = JSON.parse(readFileSync(new URL('../fixtures/spec-error-schemas.json', import.meta.url), 'utf8')) as {
  kms: Record<string, Schema>;
  pki: Record<string, Schema>;
};

const ajv = new Ajv({ allErrors: true, strict: false });
const validators = new Map<string, ValidateFunction>();

export function envelopeValidator(status: number, family: 'kms' | 'pki' = 'kms'): ValidateFunction {
  const cacheKey = `${family}:${status}`;
  let validate = validators.get(cacheKey);
  if (!validate) {
    const schemas = SPEC_ERROR_SCHEMAS[family];
    const fallback = schemas['500']!;
    validate = ajv.compile(schemas[String(status)] ?? { ...fallback, properties: { ...fallback.properties, statusCode: { type: 'number', enum: [status] } } });
    validators.set(cacheKey, validate);
  }
  return validate;
}

/** Checks an error body against the spec's schema for its status, and reqId against the header. */
export function expectSpecEnvelope(res: ApiResponse, family: 'kms' | 'pki' = 'kms'): void {
  const validate = envelopeValidator(res.status, family);
  expect(validate(res.body), `envelope of ${res.status}: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(res.body)?.slice(0, 300)}`).toBe(true);
  expect(res.body.reqId).toBe(res.headers.get('x-request-id'));
}
