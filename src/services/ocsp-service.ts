/**
 * The OCSP responder of each CA (RFC 6960, with RFC 5019's practice of reusing signed answers).
 *
 * Every request reads the status of each certificate it names from the store (one indexed
 * read per CertID: the serial number is unique), on every replica, so a revocation anywhere is
 * in the very next answer everywhere. What is reused is only the signature work: a signed
 * answer is kept per process under a key made of the CA, the CertIDs exactly as sent and the
 * statuses just read (status, time, reason). A revocation changes the statuses, hence the key,
 * so a "good" signed earlier can never answer for a certificate the store now says is revoked.
 * A kept answer is served until it is `refreshAfterMs` old, then signed again, so every answer
 * still has most of its validity (`validityMs`, thisUpdate to nextUpdate) left. A request with
 * a nonce is always signed fresh: the nonce is inside the signed data.
 *
 * The per-CA parts (issuer hashes, responder id, signer, the CA certificate sent along) are
 * kept for the life of the process: a CA's certificate and key never change once it has a
 * certificate (ca-service.ts), and a CA without one is looked up again on every request.
 *
 * Answers are signed by the CA key itself (RFC 6960 §4.2.2.2, "the CA who issued the
 * certificate"), in the token, and carry the CA certificate so clients find the signer.
 */
import { AppError } from '../errors.js';
import { TokenError } from '../pkcs11/errors.js';
import type { CertificateSigner } from '../pki/certificate-builder.js';
import { REVOCATION_REASONS, type RevocationReason } from '../pki/crl.js';
import {
  buildOcspResponse,
  issuerMatcher,
  ocspErrorResponse,
  OcspRequestError,
  parseOcspRequest,
  responderKeyHash,
  type CertStatus,
  type OcspCertId,
  type OcspErrorStatus,
} from '../pki/ocsp.js';
import type { CaRecord, CertificateStatusRecord } from '../store/pki-store.js';
import { wholeSecond } from '../pki/ttl.js';

export interface OcspStore {
  getCa(id: string): Promise<CaRecord | undefined>;
  /** The status of the certificate with this serial (lowercase hex) issued by this CA; undefined when there is none. */
  certificateStatus(caId: string, serialHex: string): Promise<CertificateStatusRecord | undefined>;
}

export interface OcspDeps {
  pkiStore: OcspStore;
  cas: { signerFor(ca: Pick<CaRecord, 'objectId' | 'keyAlgorithm'>): CertificateSigner };
  /** thisUpdate to nextUpdate of every answer. */
  validityMs?: number;
  /** A kept answer older than this is signed again (so it has at least validityMs - refreshAfterMs left). */
  refreshAfterMs?: number;
  /** Signed answers kept per process, oldest dropped first. */
  cacheEntries?: number;
  now?: () => number;
}

export interface OcspAnswer {
  /** The DER OCSPResponse. */
  der: Buffer;
  responseStatus: 'successful' | OcspErrorStatus;
  /** successful answers only. */
  thisUpdate?: Date;
  nextUpdate?: Date;
  /** True when HTTP caches may keep it until nextUpdate: successful and without a nonce. */
  cacheable: boolean;
  /** Where a successful answer's signature came from. */
  source?: 'cache' | 'token';
}

export const OCSP_VALIDITY_MS = 60 * 60_000;
export const OCSP_REFRESH_AFTER_MS = 10 * 60_000;
const CACHE_ENTRIES = 10_000;

interface Responder {
  matches: (certId: OcspCertId) => boolean;
  keyHash: Buffer;
  signer: CertificateSigner;
  certificate: Buffer;
}

interface Signed {
  der: Buffer;
  thisUpdate: Date;
  nextUpdate: Date;
  signedAt: number;
}

const statusKey = (status: CertStatus) => (status.kind === 'revoked' ? `r${status.revokedAt.getTime()}.${status.reason ?? ''}` : status.kind[0]!);

export function createOcspService(deps: OcspDeps) {
  const { pkiStore: store, cas } = deps;
  const validityMs = deps.validityMs ?? OCSP_VALIDITY_MS;
  const refreshAfterMs = deps.refreshAfterMs ?? OCSP_REFRESH_AFTER_MS;
  const cacheEntries = deps.cacheEntries ?? CACHE_ENTRIES;
  const now = deps.now ?? Date.now;

  const responders = new Map<string, Responder>();
  async function responderFor(caId: string): Promise<Responder | undefined> {
    const known = responders.get(caId);
    if (known) return known;
    const ca = await store.getCa(caId);
    if (!ca?.certificate) return undefined;
    const responder: Responder = {
      matches: issuerMatcher({ name: ca.subject, publicKey: ca.publicKey }),
      keyHash: responderKeyHash(ca.publicKey),
      signer: cas.signerFor(ca),
      certificate: ca.certificate,
    };
    // Bounded by the number of CAs that have a certificate: ids that name none are not kept.
    responders.set(caId, responder);
    return responder;
  }

  const signedAnswers = new Map<string, Signed>();
  const signing = new Map<string, Promise<Signed>>();

  async function sign(responder: Responder, responses: Array<{ certId: OcspCertId; status: CertStatus }>, nonce: Buffer | undefined): Promise<Signed> {
    const signedAt = now();
    const thisUpdate = wholeSecond(signedAt);
    const nextUpdate = wholeSecond(signedAt + validityMs);
    const der = await buildOcspResponse(
      { responderKeyHash: responder.keyHash, producedAt: thisUpdate, thisUpdate, nextUpdate, responses, nonce, certificates: [responder.certificate] },
      responder.signer,
    );
    return { der, thisUpdate, nextUpdate, signedAt };
  }

  /** A kept answer for these CertIDs and statuses, or one signed now (once, however many ask at the same time). */
  function signedFor(caId: string, responder: Responder, responses: Array<{ certId: OcspCertId; status: CertStatus }>): { signed: Promise<Signed>; reused: boolean } {
    let key = caId;
    for (const { certId, status } of responses) key += `|${certId.raw.toString('base64')}:${statusKey(status)}`;
    const kept = signedAnswers.get(key);
    if (kept && now() - kept.signedAt < refreshAfterMs) return { signed: Promise.resolve(kept), reused: true };
    let pending = signing.get(key);
    if (!pending) {
      pending = sign(responder, responses, undefined);
      signing.set(key, pending);
      pending.then(
        (signed) => {
          signing.delete(key);
          // Re-inserted at the end, so the first key in the map is always the oldest answer.
          signedAnswers.delete(key);
          if (signedAnswers.size >= cacheEntries) signedAnswers.delete(signedAnswers.keys().next().value!);
          signedAnswers.set(key, signed);
        },
        () => signing.delete(key),
      );
    }
    return { signed: pending, reused: false };
  }

  async function statusOf(caId: string, certId: OcspCertId): Promise<CertStatus> {
    // A negative serial, or one longer than any this service makes, names no certificate here.
    if (certId.serialHex === undefined || certId.serialHex.length > 64) return { kind: 'unknown' };
    const record = await store.certificateStatus(caId, certId.serialHex);
    if (!record) return { kind: 'unknown' };
    if (record.status !== 'revoked') return { kind: 'good' };
    const reason = REVOCATION_REASONS[record.revocationReason as RevocationReason];
    return { kind: 'revoked', revokedAt: new Date(record.revokedAt!), ...(reason !== undefined ? { reason } : {}) };
  }

  const failure = (responseStatus: OcspErrorStatus): OcspAnswer => ({ der: ocspErrorResponse(responseStatus), responseStatus, cacheable: false });

  return {
    /**
     * Answers one DER OCSPRequest for one CA. Never throws for what a client sent: a request
     * that cannot be read is malformedRequest, one about another CA (or a CA id that names no
     * CA with a certificate) unauthorized, a token that is busy or away tryLater.
     */
    async answer(caId: string, request: Buffer): Promise<OcspAnswer> {
      let parsed;
      try {
        parsed = parseOcspRequest(request);
      } catch (error) {
        if (error instanceof OcspRequestError) return failure(error.status);
        throw error;
      }
      try {
        const responder = /^[0-9a-fA-F-]{1,64}$/.test(caId) ? await responderFor(caId) : undefined;
        if (!responder || !parsed.certIds.every(responder.matches)) return failure('unauthorized');
        const statuses = await Promise.all(parsed.certIds.map((certId) => statusOf(caId, certId)));
        const responses = parsed.certIds.map((certId, index) => ({ certId, status: statuses[index]! }));
        if (parsed.nonce) {
          const signed = await sign(responder, responses, parsed.nonce);
          return { der: signed.der, responseStatus: 'successful', thisUpdate: signed.thisUpdate, nextUpdate: signed.nextUpdate, cacheable: false, source: 'token' };
        }
        const { signed: pending, reused } = signedFor(caId, responder, responses);
        const signed = await pending;
        return { der: signed.der, responseStatus: 'successful', thisUpdate: signed.thisUpdate, nextUpdate: signed.nextUpdate, cacheable: true, source: reused ? 'cache' : 'token' };
      } catch (error) {
        // The token busy, timing out or down is temporary: RFC 6960's tryLater says so to the client.
        if (error instanceof TokenError && error.errorClass !== 'operation' && error.errorClass !== 'stale-handle') return failure('tryLater');
        if (error instanceof AppError && error.statusCode === 503) return failure('tryLater');
        throw error;
      }
    },

    /** OCSP's internalError answer, for the route when answer() itself failed. */
    internalError: () => failure('internalError'),
  };
}

export type OcspService = ReturnType<typeof createOcspService>;
