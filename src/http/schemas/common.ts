/**
 * Schema pieces shared by every route family. Every schema keeps its literal type (`as const`,
 * const type parameters), so a route's input type is derived from the schema it is validated
 * with (json-schema-to-ts's FromSchema, see ajv.ts) instead of being written a second time.
 */
import type { JSONSchema } from 'json-schema-to-ts';

export type { JSONSchema };

export const uuid = { type: 'string', format: 'uuid' } as const;

/** Decoded payloads are capped at 1 MiB (docs/contract.md); maxLength bounds the work before decoding. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
export const MAX_PAYLOAD_BASE64 = 4 * Math.ceil(MAX_PAYLOAD_BYTES / 3);
export const base64Payload = { type: 'string', format: 'base64', maxLength: MAX_PAYLOAD_BASE64, maxDecodedBytes: MAX_PAYLOAD_BYTES } as const;

export const slug = { type: 'string', minLength: 1, maxLength: 32, pattern: '^[a-z0-9]+(?:-[a-z0-9]+)*$' } as const;

export const projectId = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' } as const;

/** A closed object: unknown properties are removed by validation (ajv.ts), never kept. */
export function object<const P extends Record<string, JSONSchema>, const R extends ReadonlyArray<keyof P & string> = readonly []>(properties: P, required?: R) {
  return { type: 'object', properties, required: (required ?? []) as unknown as R, additionalProperties: false } as const;
}

export const idParams = <const N extends string>(name: N) => object({ [name]: uuid } as { [K in N]: typeof uuid }, [name] as const);
