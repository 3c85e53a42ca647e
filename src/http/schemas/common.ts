/** Schema pieces shared by every route family. */

export const uuid = { type: 'string', format: 'uuid' } as const;

/** Decoded payloads are capped at 1 MiB (docs/contract.md); maxLength bounds the work before decoding. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
export const MAX_PAYLOAD_BASE64 = 4 * Math.ceil(MAX_PAYLOAD_BYTES / 3);
export const base64Payload = { type: 'string', format: 'base64', maxLength: MAX_PAYLOAD_BASE64, maxDecodedBytes: MAX_PAYLOAD_BYTES } as const;

export const slug = { type: 'string', minLength: 1, maxLength: 32, pattern: '^[a-z0-9]+(?:-[a-z0-9]+)*$' } as const;

export const projectId = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' } as const;

export function object(properties: Record<string, object>, required: string[] = []) {
  return { type: 'object', properties, required, additionalProperties: false } as const;
}

export const idParams = (name: string) => object({ [name]: uuid }, [name]);
