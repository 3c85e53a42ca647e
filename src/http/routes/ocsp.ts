/**
 * The OCSP responder of each CA (RFC 6960 appendix A), without authentication, as relying
 * parties and TLS servers (for stapling) call it: `POST /api/v1/cert-manager/ocsp/{caId}` with
 * the DER request as the body, and `GET /api/v1/cert-manager/ocsp/{caId}/{url-encoded base64
 * request}`.
 *
 * Whatever a client sends, the answer is an OCSPResponse with HTTP 200: a request that cannot
 * be read is `malformedRequest`, one about another CA's certificate `unauthorized`, a token
 * that is busy `tryLater`, anything unexpected `internalError` (logged). Never a JSON envelope:
 * OCSP clients read only OCSP.
 *
 * GET answers without a nonce may be cached by HTTP caches until the answer's nextUpdate
 * (RFC 5019 §6.2: max-age, Expires, Last-Modified, ETag); POST answers and anything with a
 * nonce or an error status are `no-store`.
 */
import { createHash } from 'node:crypto';
import express, { Router, type ErrorRequestHandler, type RequestHandler, type Response } from 'express';
import type { Logger } from '../../logger.js';
import { ocspResponses } from '../../metrics.js';
import { decodeGetRequest, ocspErrorResponse, OcspRequestError } from '../../pki/ocsp.js';
import type { OcspAnswer, OcspService } from '../../services/ocsp-service.js';
import { readStatedLength } from '../read-body.js';
import { reqIdOf } from '../request-context.js';
import { on } from '../route.js';

/** Far more than a request of the most CertIDs the responder takes (pki/ocsp.ts MAX_CERT_IDS). */
const OCSP_REQUEST_LIMIT_BYTES = 16 * 1024;
const OCSP_RESPONSE_TYPE = 'application/ocsp-response';
const MALFORMED: OcspAnswer = { der: ocspErrorResponse('malformedRequest'), responseStatus: 'malformedRequest', cacheable: false };

export interface OcspRouteDeps {
  ocsp: OcspService;
  logger: Logger;
}

function send(res: Response, answer: OcspAnswer, httpCacheable: boolean): void {
  ocspResponses.inc({ status: answer.responseStatus, source: answer.source ?? 'none' });
  res.status(200).type(OCSP_RESPONSE_TYPE);
  if (httpCacheable && answer.cacheable && answer.thisUpdate && answer.nextUpdate) {
    const maxAge = Math.max(0, Math.floor((answer.nextUpdate.getTime() - Date.now()) / 1000));
    res.setHeader('Cache-Control', `max-age=${maxAge}, public, no-transform, must-revalidate`);
    res.setHeader('Expires', answer.nextUpdate.toUTCString());
    res.setHeader('Last-Modified', answer.thisUpdate.toUTCString());
    res.setHeader('ETag', `"${createHash('sha1').update(answer.der).digest('hex')}"`);
  } else {
    res.setHeader('Cache-Control', 'no-store');
  }
  res.end(answer.der);
}

/**
 * The body of the requests OCSP clients send (a stated length within the limit, not
 * compressed), read straight off the socket: body-parser's per-request work (media type,
 * raw-body set-up) was a visible share of an answer that is otherwise a store read and a Map
 * lookup. Anything else (chunked, compressed, too large) goes to `fallback`, body-parser itself.
 */
function leanRaw(limit: number, fallback: RequestHandler): RequestHandler {
  return (req, res, next) => {
    const length = req.headers['content-length'];
    const expected = length === undefined ? NaN : Number(length);
    if (!(expected <= limit) || req.headers['content-encoding'] !== undefined || req.headers['transfer-encoding'] !== undefined || req.readableEnded) return fallback(req, res, next);
    readStatedLength(req, expected, (error, body) => {
      if (error) return next(error);
      req.body = body;
      next();
    });
  };
}

export function ocspRoutes({ ocsp, logger }: OcspRouteDeps): Router {
  const router = Router();

  async function answer(res: Response, caId: string, request: Buffer, httpCacheable: boolean): Promise<void> {
    let result: OcspAnswer;
    try {
      result = await ocsp.answer(caId, request);
    } catch (error) {
      logger.error({ reqId: reqIdOf(res), err: error }, 'OCSP answer failed');
      result = ocsp.internalError();
    }
    send(res, result, httpCacheable);
  }

  on(
    router,
    'POST /api/v1/cert-manager/ocsp/:caId',
    async (_input, res, req) => {
      await answer(res, String(req.params.caId), Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0), false);
    },
    {
      // OCSP answers bad input with malformedRequest, never the JSON envelope: nothing is validated here.
      validate: false,
      // Any Content-Type: clients send application/ocsp-request, but curl --data-binary does not,
      // and a body that is not an OCSP request is answered malformedRequest either way.
      after: [leanRaw(OCSP_REQUEST_LIMIT_BYTES, express.raw({ type: () => true, limit: OCSP_REQUEST_LIMIT_BYTES }))],
    },
  );

  on(
    router,
    'GET /api/v1/cert-manager/ocsp/:caId/:request',
    async (_input, res, req) => {
      // The raw path, not Express's decoded parameters: the request is everything after the CA
      // id, and its '/' may or may not have been percent-encoded by the client.
      const path = req.path.slice(1);
      const slash = path.indexOf('/');
      const caId = path.slice(0, slash);
      let request: Buffer;
      try {
        request = decodeGetRequest(path.slice(slash + 1));
      } catch (error) {
        if (!(error instanceof OcspRequestError)) throw error;
        return send(res, MALFORMED, false);
      }
      await answer(res, caId, request, true);
    },
    { validate: false },
  );

  // A body too large, cut short or undecodable, or a path Express could not decode: still an
  // OCSP answer, never the JSON envelope.
  const unreadable: ErrorRequestHandler = (error, _req, res, next) => {
    if (res.headersSent) return next(error);
    logger.debug({ reqId: reqIdOf(res), err: error }, 'unreadable OCSP request');
    send(res, MALFORMED, false);
  };
  router.use(unreadable);
  return router;
}
