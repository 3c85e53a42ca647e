/**
 * ACME's errors (RFC 8555 §6.7): problem documents (RFC 7807) whose type is one of
 * `urn:ietf:params:acme:error:*`, answered as `application/problem+json`. ACME clients read the
 * type to decide what to do (a badNonce is retried with the fresh nonce, say), so every refusal
 * of the ACME routes is one of these, never the service's JSON envelope.
 */
import type { AcmeProblemDocument } from '../store/acme-store.js';

export const ACME_ERROR = 'urn:ietf:params:acme:error:';

export type AcmeErrorType =
  | 'accountDoesNotExist'
  | 'alreadyRevoked'
  | 'badCSR'
  | 'badNonce'
  | 'badPublicKey'
  | 'badRevocationReason'
  | 'badSignatureAlgorithm'
  | 'connection'
  | 'dns'
  | 'externalAccountRequired'
  | 'incorrectResponse'
  | 'invalidContact'
  | 'malformed'
  | 'orderNotReady'
  | 'rateLimited'
  | 'rejectedIdentifier'
  | 'serverInternal'
  | 'unauthorized'
  | 'unsupportedContact'
  | 'unsupportedIdentifier';

/** The HTTP status each type is answered with, unless the thrower says otherwise. */
const STATUS: Record<AcmeErrorType, number> = {
  accountDoesNotExist: 400,
  alreadyRevoked: 400,
  badCSR: 400,
  badNonce: 400,
  badPublicKey: 400,
  badRevocationReason: 400,
  badSignatureAlgorithm: 400,
  connection: 400,
  dns: 400,
  externalAccountRequired: 400,
  incorrectResponse: 400,
  invalidContact: 400,
  malformed: 400,
  orderNotReady: 403,
  rateLimited: 429,
  rejectedIdentifier: 400,
  serverInternal: 500,
  unauthorized: 403,
  unsupportedContact: 400,
  unsupportedIdentifier: 400,
};

export class AcmeProblem extends Error {
  readonly type: string;
  readonly status: number;

  constructor(
    type: AcmeErrorType,
    readonly detail: string,
    readonly options: { status?: number; extra?: Record<string, unknown>; location?: string; retryAfterSeconds?: number; cause?: unknown } = {},
  ) {
    super(detail, { cause: options.cause });
    this.name = 'AcmeProblem';
    this.type = `${ACME_ERROR}${type}`;
    this.status = options.status ?? STATUS[type];
  }

  document(): AcmeProblemDocument & Record<string, unknown> {
    return { type: this.type, detail: this.detail, status: this.status, ...this.options.extra };
  }
}

export const acmeProblem = (type: AcmeErrorType, detail: string, options?: AcmeProblem['options']) => new AcmeProblem(type, detail, options);
