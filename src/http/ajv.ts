/**
 * Request validation: every route's schemas are compiled once, when the app is built.
 * Unknown body properties are removed, not rejected (the official SDK sends `keyId` in the
 * body too, and Infisical strips unknown keys); query strings are coerced to the schema's
 * types; every problem is reported, as `{path, message}`.
 */
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { RequestHandler } from 'express';
import { validationFailure, type ValidationProblem } from '../errors.js';
import type { JSONSchema } from './schemas/common.js';

// ajv-formats is CommonJS; under NodeNext its default export arrives one level down.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (ajv: Ajv) => Ajv;

/** Standard base64 with padding; "" is valid. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function decodedLength(base64: string): number {
  const padding = base64.endsWith('==') ? 2 : base64.endsWith('=') ? 1 : 0;
  return Math.floor((base64.length * 3) / 4) - padding;
}

function newAjv(coerceTypes: boolean): Ajv {
  const ajv = new Ajv({ allErrors: true, removeAdditional: true, useDefaults: true, coerceTypes, strict: false });
  addFormats(ajv);
  ajv.addFormat('base64', { type: 'string', validate: (value: string) => BASE64.test(value) });
  // A byte limit on what a base64 string decodes to (maxLength alone is off by up to 2 bytes).
  ajv.addKeyword({
    keyword: 'maxDecodedBytes',
    type: 'string',
    schemaType: 'number',
    error: { message: (ctx) => `must decode to at most ${ctx.schemaValue as unknown as number} bytes` },
    validate: (limit: number, value: string) => decodedLength(value) <= limit,
  });
  return ajv;
}

const bodyAjv = newAjv(false);
const queryAjv = newAjv(true);

export interface RouteSchemas {
  params?: JSONSchema | undefined;
  query?: JSONSchema | undefined;
  body?: JSONSchema | undefined;
}

/** What a handler reads after validation: never req.body/req.query directly. */
export interface ValidatedInput<P = Record<string, string>, Q = Record<string, unknown>, B = Record<string, unknown>> {
  params: P;
  query: Q;
  body: B;
}

function problemsOf(errors: ErrorObject[] | null | undefined, location: string): ValidationProblem[] {
  return (errors ?? []).map((error) => {
    const missing = error.keyword === 'required' ? `/${(error.params as { missingProperty: string }).missingProperty}` : '';
    const path = `${location}${error.instancePath}${missing}`;
    return { path, message: error.keyword === 'format' ? `must be a valid ${(error.params as { format: string }).format}` : (error.message ?? 'is invalid') };
  });
}

/**
 * Validates a request against its route's schemas and names the request by its route's
 * template (`route`, from the route table) in metrics and the audit trail.
 */
export function validate(schemas: RouteSchemas, route: string): RequestHandler {
  const checkParams = schemas.params !== undefined ? queryAjv.compile(schemas.params) : undefined;
  const checkQuery = schemas.query !== undefined ? queryAjv.compile(schemas.query) : undefined;
  const checkBody = schemas.body !== undefined ? bodyAjv.compile(schemas.body) : undefined;
  return (req, res, next) => {
    // The route template (never the raw path) names the request in metrics and the audit trail.
    res.locals.route = route;
    // No body at all (no Content-Type, or an empty POST) is validated as {}: a schema with
    // required properties still refuses it, one without (rotate, new secret) accepts it.
    if (checkBody && (req.body === undefined || (Buffer.isBuffer(req.body) && req.body.length === 0))) req.body = {};
    // req.query parses the query string on every read (Express 5): only routes with a query schema read it.
    const input: ValidatedInput = {
      params: checkParams ? { ...(req.params as Record<string, string>) } : (req.params as Record<string, string>),
      query: checkQuery ? { ...(req.query as Record<string, unknown>) } : {},
      body: req.body ?? {},
    };
    let problems: ValidationProblem[] | undefined;
    if (checkParams && !checkParams(input.params)) (problems ??= []).push(...problemsOf(checkParams.errors, 'params'));
    if (checkQuery && !checkQuery(input.query)) (problems ??= []).push(...problemsOf(checkQuery.errors, 'query'));
    if (checkBody) {
      const body: unknown = req.body;
      if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) (problems ??= []).push({ path: 'body', message: 'must be a JSON object' });
      else if (!checkBody(body)) (problems ??= []).push(...problemsOf(checkBody.errors, 'body'));
    }
    if (problems) return next(validationFailure(problems));
    res.locals.input = input;
    next();
  };
}
