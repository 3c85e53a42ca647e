/**
 * Holds every answer the tests' HTTP helper (http.ts) sees to the OpenAPI document the service
 * serves (src/http/openapi.ts): the operation is found by method and path, the status must be
 * one the document lists for it (or its `default`), the media type one it lists for that
 * status, and a JSON body must pass the listed schema (ajv, formats checked). Answers to paths
 * that are no operation (a 404 for no route, a wrong method) are not an operation's answers and
 * are left alone; the route-table tests cover those.
 *
 * The service never validates its own answers (no per-request work in production): the tests
 * do, on every answer of every integration test that goes through request().
 */
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { buildOpenApi } from '../../src/http/openapi.js';

const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (ajv: Ajv) => Ajv;

type Json = Record<string, any>;

interface Operation {
  key: string;
  pattern: RegExp;
  /** The same, with the last parameter allowed to span segments (OCSP's GET request). */
  spanning: RegExp;
  responses: Json;
}

let operations: Operation[] | undefined;
let document: Json;
let ajv: Ajv;
const validators = new Map<string, ValidateFunction>();

function load(): Operation[] {
  if (operations) return operations;
  document = buildOpenApi();
  ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addFormat('base64', /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/);
  ajv.addSchema(document, 'openapi.json');
  operations = [];
  for (const [path, item] of Object.entries(document.paths as Record<string, Json>)) {
    const escaped = path.replace(/[.*+?^$()|[\]\\]/g, '\\$&');
    const pattern = new RegExp(`^${escaped.replace(/\{[^}]+\}/g, '[^/]+')}/?$`);
    const spanning = new RegExp(`^${escaped.replace(/\{[^}]+\}$/, '.+').replace(/\{[^}]+\}/g, '[^/]+')}/?$`);
    for (const [method, operation] of Object.entries(item)) operations.push({ key: `${method.toUpperCase()} ${path}`, pattern, spanning, responses: (operation as Json).responses });
  }
  return operations;
}

function resolve(node: Json): Json {
  if (typeof node.$ref === 'string') {
    const path = node.$ref.replace(/^#\//, '').split('/');
    let at: any = document;
    for (const part of path) at = at[part];
    return at as Json;
  }
  return node;
}

function validatorFor(operationKey: string, status: string, mediaType: string, schema: Json): ValidateFunction {
  const id = `${operationKey} ${status} ${mediaType}`;
  let validate = validators.get(id);
  if (!validate) {
    // Refs point into the document: compile a schema that refers through it.
    const local = typeof schema.$ref === 'string' ? { $ref: `openapi.json${schema.$ref}` } : schema;
    validate = ajv.compile(local);
    validators.set(id, validate);
  }
  return validate;
}

/** Which operation a request was, by method and path (query left off); undefined for none. */
export function operationOf(method: string, path: string): Operation | undefined {
  const bare = path.split('?')[0]!;
  const all = load().filter((op) => op.key.startsWith(`${method.toUpperCase()} `));
  return all.find((op) => op.pattern.test(bare)) ?? all.find((op) => op.spanning.test(bare));
}

/**
 * The problems of one answer against the document, empty when it conforms. `body` is the
 * parsed JSON (or the text when it was not JSON).
 */
export function checkAnswer(method: string, path: string, status: number, contentType: string | null, body: unknown): string[] {
  // HEAD answers carry no body: only GET's document applies, and there is nothing to check.
  if (method.toUpperCase() === 'HEAD') return [];
  const operation = operationOf(method, path);
  if (!operation) return [];
  const where = `${operation.key} → ${status}`;
  const documented = operation.responses[String(status)] ?? operation.responses.default;
  if (!documented) return [`${where}: status not in the document (${Object.keys(operation.responses).join(', ')})`];
  const response = resolve(documented);
  const content = (response.content ?? {}) as Record<string, Json>;
  const mediaType = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (Object.keys(content).length === 0) return [];
  if (!(mediaType in content)) return [`${where}: media type ${mediaType || '(none)'} not in the document (${Object.keys(content).join(', ')})`];
  const schema = content[mediaType]!.schema as Json | undefined;
  // JSON bodies (the envelope, ACME's problem+json) are checked against their schema; others by media type only.
  if (!schema || !/^application\/(?:[a-z.+-]+\+)?json$/.test(mediaType)) return [];
  const validate = validatorFor(operation.key, String(status), mediaType, schema);
  if (validate(body)) return [];
  return [`${where}: body does not match the document: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(body)?.slice(0, 400)}`];
}
