/**
 * The OpenAPI 3.1 document of the service, made from the route table (route-table.ts) and the
 * schemas the routes validate with and answer by (schemas/*.ts): nothing in it is written
 * beside them. Built once, on the first request for it, never on the request path of any
 * other route.
 */
import { createRequire } from 'node:module';
import { FAMILIES, TABLE, type Answer, type FamilyName, type RouteFacts, type TableRoute } from './route-table.js';
import { acmeProblem, errorEnvelope, RESPONSES } from './schemas/responses.js';

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

type Json = Record<string, unknown>;

/** `/api/v1/kms/keys/:keyId` → `/api/v1/kms/keys/{keyId}`; a router's trailing slash dropped. */
export function openApiPath(template: string): string {
  const path = template.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}

/**
 * The schemas as OpenAPI shows them: JSON Schema 2020-12, which OpenAPI 3.1 uses as it is.
 * The one keyword of our own (maxDecodedBytes, ajv.ts) becomes an `x-` annotation and words.
 */
function forDocument(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(forDocument);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Json = {};
  for (const [key, value] of Object.entries(schema as Json)) {
    if (key === 'maxDecodedBytes') {
      out['x-maxDecodedBytes'] = value;
      out.description = `Standard base64 of at most ${value as number} bytes`;
    } else if (key === 'properties' || key === 'patternProperties') {
      out[key] = Object.fromEntries(Object.entries(value as Json).map(([name, property]) => [name, forDocument(property)]));
    } else {
      out[key] = forDocument(value);
    }
  }
  return out;
}

const PERMISSION_TEXT: Record<string, string> = {
  admin: 'an admin: every action on every project',
  account: 'the ACME account that signed the request owns what it names',
  grantor: 'manage-identities on every project the identity names, and every action it grants',
  none: 'nothing beyond the authentication',
};

function parameters(facts: RouteFacts): Json[] {
  const out: Json[] = [];
  for (const [where, schema] of [
    ['path', facts.params],
    ['query', facts.query],
  ] as const) {
    if (!schema || typeof schema !== 'object') continue;
    const required = new Set((schema.required as readonly string[] | undefined) ?? []);
    for (const [name, property] of Object.entries((schema.properties as Json | undefined) ?? {})) {
      out.push({ name, in: where, required: where === 'path' || required.has(name), schema: forDocument(property) });
    }
  }
  return out;
}

function requestBody(facts: RouteFacts): Json | undefined {
  if (facts.body !== undefined) return { required: true, content: { 'application/json': { schema: forDocument(facts.body) } } };
  if (facts.rawBody) {
    const raw = facts.rawBody;
    return { required: true, description: raw.description, content: Object.fromEntries(raw.types.map((type) => [type, { schema: raw.schema }])) };
  }
  return undefined;
}

function answer(item: Answer): Json {
  if ('json' in item) return { description: item.description, content: { 'application/json': { schema: { $ref: `#/components/schemas/${item.json}` } } } };
  return { description: item.description, content: Object.fromEntries(item.types.map((type) => [type, item.schema === undefined ? {} : { schema: item.schema }])) };
}

const ENVELOPE = { $ref: '#/components/responses/Error' };

/** The statuses a route's failures can have, each in the error envelope. */
function errorStatuses(facts: RouteFacts): Record<string, string> {
  const out: Record<string, string> = {};
  const validates = facts.params !== undefined || facts.query !== undefined || facts.body !== undefined;
  out['400'] = 'The request could not be read, or what it asks cannot be done';
  if (facts.auth === 'bearer') out['401'] = 'No bearer token, or one that is malformed, forged, expired or revoked';
  if (facts.auth === 'credentials') out['401'] = 'Wrong credentials, or a token that cannot be renewed';
  if (facts.auth === 'est') out['401'] = 'No credentials, or wrong ones (with a Basic challenge)';
  if (facts.auth === 'bearer' && facts.permission !== 'none') out['403'] = 'The caller lacks the permission (details name the action and the project)';
  if (facts.params !== undefined) out['404'] = 'Nothing has that id';
  if (facts.body !== undefined || facts.rawBody) out['413'] = 'The body is too large';
  if (validates) out['422'] = 'The input fails its schema; message lists every problem as {path, message}';
  out['429'] = facts.auth === 'credentials' ? 'Too many failed logins, or requests, from this client or address (Retry-After)' : 'Too many requests (Retry-After)';
  out['500'] = 'Something unexpected went wrong (logged)';
  out['503'] = 'The token is busy, down or too slow (Retry-After)';
  return out;
}

function responses(route: TableRoute): Json {
  const facts = route.facts;
  const out: Json = {};
  for (const [status, item] of Object.entries(facts.responses)) out[status] = answer(item);
  const errors = FAMILIES[facts.family].errors;
  if (errors === 'problem') {
    for (const [status, description] of Object.entries(PROBLEM_STATUSES)) if (!(status in out)) out[status] = { description, content: PROBLEM_CONTENT };
    out.default = { description: 'An ACME problem document', content: PROBLEM_CONTENT };
  }
  if (errors === 'envelope') {
    for (const [status, description] of Object.entries(errorStatuses(facts))) {
      if (!(status in out)) out[status] = { description, content: ENVELOPE_CONTENT };
    }
    out.default = ENVELOPE;
  }
  return out;
}

const ENVELOPE_CONTENT = { 'application/json': { schema: { $ref: '#/components/schemas/ErrorEnvelope' } } };

/** ACME answers every refusal with a problem document (RFC 8555 §6.7), never the envelope. */
const PROBLEM_CONTENT = { 'application/problem+json': { schema: { $ref: '#/components/schemas/AcmeProblem' } } };
const PROBLEM_STATUSES: Record<string, string> = {
  '400': 'malformed, badNonce (retry with the fresh Replay-Nonce), badCSR, badPublicKey, rejectedIdentifier, …',
  '403': 'unauthorized: the signer does not own what it names, or the policy refuses it',
  '404': 'No such profile, or no ACME on it',
  '415': 'The body is not application/jose+json',
  '503': 'The token is busy or down (Retry-After)',
};

function security(facts: RouteFacts): Json[] {
  if (facts.auth === 'bearer') return [{ bearer: [] }];
  if (facts.auth === 'est') return [{ estPassphrase: [] }, { clientCertificate: [] }];
  // ACME's JWS is in the body, not a scheme OpenAPI can name: the operation says it in words.
  return [];
}

function operationId(route: TableRoute): string {
  const words = `${route.method.toLowerCase()} ${route.template}`.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return words.map((word, index) => (index === 0 ? word : word[0]!.toUpperCase() + word.slice(1))).join('');
}

function operation(route: TableRoute): Json {
  const facts = route.facts;
  const permission = facts.permission in PERMISSION_TEXT ? PERMISSION_TEXT[facts.permission]! : `${facts.permission} on the project of the resource`;
  const lines = [facts.description, `Requires: ${permission}.`].filter(Boolean);
  const op: Json = {
    operationId: operationId(route),
    tags: [FAMILIES[facts.family].tag],
    summary: facts.summary,
    description: lines.join('\n\n'),
    security: security(facts),
    'x-permission': facts.permission,
    'x-audit': facts.audit === null ? null : { action: facts.audit[0], resourceType: facts.audit[1] },
    'x-metric': facts.metric,
  };
  const params = parameters(facts);
  if (params.length > 0) op.parameters = params;
  const body = requestBody(facts);
  if (body) op.requestBody = body;
  op.responses = responses(route);
  return op;
}

export function buildOpenApi(routes: readonly TableRoute[] = TABLE): Json {
  const paths: Record<string, Json> = {};
  for (const route of routes) {
    const path = openApiPath(route.template);
    paths[path] ??= {};
    paths[path][route.method.toLowerCase()] = operation(route);
  }
  const tags = [...new Set(routes.map((route) => route.facts.family))].map((family: FamilyName) => ({ name: FAMILIES[family].tag }));
  return {
    openapi: '3.1.0',
    info: {
      title: 'hsm-signer',
      version,
      summary: "Signing and encryption with keys that never leave a PKCS#11 token, on Infisical's KMS and PKI wire format.",
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    tags,
    paths,
    components: {
      schemas: { ...Object.fromEntries(Object.entries(RESPONSES).map(([name, schema]) => [name, forDocument(schema)])), ErrorEnvelope: errorEnvelope, AcmeProblem: acmeProblem },
      responses: { Error: { description: 'The error envelope: every failure of a JSON route', content: ENVELOPE_CONTENT } },
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'An access token from POST /api/v1/auth/universal-auth/login' },
        estPassphrase: { type: 'http', scheme: 'basic', description: "The profile's EST passphrase (any user name)" },
        clientCertificate: { type: 'mutualTLS', description: 'For re-enrollment: the certificate being renewed, as the TLS client certificate' },
      },
    },
  };
}
