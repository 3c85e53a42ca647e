/**
 * EST (RFC 7030) under /.well-known/est/{profileId}/: `cacerts` without authentication,
 * `simpleenroll` and `simplereenroll` with HTTP Basic (the profile's EST passphrase) or, for
 * re-enrollment, a client certificate (services/est-service.ts says which are honoured).
 *
 * Enrollments are audited one event each (pki.est.enroll / pki.est.reenroll) whenever the
 * client presented a credential; `cacerts` is a public read, like the CRL, and is not.
 *
 * Bodies are `application/pkcs10`, base64 of the DER CSR (PEM and bare DER are taken too);
 * answers are `application/pkcs7-mime; smime-type=certs-only`, base64 in 64-character lines
 * (RFC 8951). Errors are the service's JSON envelope, a 401 with a Basic challenge.
 *
 * A client certificate comes from this listener's TLS handshake, or from
 * `estClientCertificateHeader` only when the connection comes from a trusted proxy: from
 * anyone else that header would let a client claim any certificate it has seen.
 */
import express, { Router, type Request, type Response } from 'express';
import { AppError } from '../../errors.js';
import { base64Lines, EST_CERTS_ONLY_TYPE } from '../../pki/est.js';
import type { EstOperation, EstService } from '../../services/est-service.js';
import { auditIndividually } from '../audit-trail.js';
import { clientAddressOf } from '../client-address.js';
import { basicPassword, certificateFromHeader, tlsClientCertificate } from '../est-credentials.js';
import type { LoginThrottle } from '../rate-limit.js';
import { on } from '../route.js';

/** A CSR is a few KiB at most (RSA-4096 with many SANs); base64 adds a third. */
const EST_REQUEST_LIMIT_BYTES = 64 * 1024;

export interface EstRouteDeps {
  est: EstService;
  /** Counts failed passphrases per profile and per address, as logins are counted. */
  estThrottle: LoginThrottle;
  /** The header a trusted TLS-terminating proxy puts the client certificate in, if any. */
  estClientCertificateHeader?: string | undefined;
  /** True when the request's peer is a configured trusted proxy. */
  fromTrustedProxy: (req: Request) => boolean;
}

function sendCertsOnly(res: Response, der: Buffer): void {
  res.status(200);
  res.setHeader('Content-Type', EST_CERTS_ONLY_TYPE);
  res.setHeader('Content-Transfer-Encoding', 'base64');
  res.setHeader('Cache-Control', 'no-store');
  // A Buffer, so Express adds no charset to the type.
  res.end(Buffer.from(base64Lines(der), 'latin1'));
}

export function estRoutes(deps: EstRouteDeps): Router {
  const router = Router();

  on(router, 'GET /.well-known/est/:profileId/cacerts', async ({ params }, res) => {
    sendCertsOnly(res, await deps.est.cacerts(params.profileId));
  });

  const enroll = async (operation: EstOperation, profileId: string, res: Response, req: Request) => {
    const address = clientAddressOf(res);
    const throttleKey = `est:${profileId}`;
    deps.estThrottle.check(throttleKey, address);
    const header = deps.estClientCertificateHeader;
    const clientCertificate = tlsClientCertificate(req.socket) ?? (header && deps.fromTrustedProxy(req) ? certificateFromHeader(req.headers, header) : undefined);
    const password = basicPassword(req.headers.authorization);
    if (password !== undefined) deps.estThrottle.attempting(throttleKey, address);
    // Like a login whose secret is checked: one audit event each (passphrase guesses are
    // throttled, so these stay bounded). Requests with no credentials at all are only counted.
    if (password !== undefined || clientCertificate) auditIndividually(res);
    try {
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const issued = await deps.est.enroll(profileId, operation, { password, clientCertificate }, body, () => {
        if (password !== undefined) deps.estThrottle.succeeded(throttleKey, address);
      });
      res.locals.auditResourceId = issued.certificateId;
      sendCertsOnly(res, issued.pkcs7);
    } catch (error) {
      // RFC 7030 §3.2.3 / RFC 7235: a 401 names the scheme the client should use.
      if (error instanceof AppError && error.statusCode === 401) res.setHeader('WWW-Authenticate', 'Basic realm="EST", charset="UTF-8"');
      throw error;
    }
  };

  const body = express.raw({ type: () => true, limit: EST_REQUEST_LIMIT_BYTES });
  on(router, 'POST /.well-known/est/:profileId/simpleenroll', ({ params }, res, req) => enroll('simpleenroll', params.profileId, res, req), { after: [body] });
  on(router, 'POST /.well-known/est/:profileId/simplereenroll', ({ params }, res, req) => enroll('simplereenroll', params.profileId, res, req), { after: [body] });
  return router;
}
