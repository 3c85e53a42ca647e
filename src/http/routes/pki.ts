/**
 * PKI routes: sign-certificate (v3, Infisical's; docs/contract.md, PKI), certificate
 * authorities, certificate profiles and certificates under /api/v1/cert-manager, and the
 * unauthenticated DER certificate and CRL URLs that issued certificates name.
 */
import { Router } from 'express';
import { validationFailure } from '../../errors.js';
import type { CaService } from '../../services/ca-service.js';
import type { CertificateService } from '../../services/certificate-service.js';
import { principalOf } from '../request-context.js';
import { on } from '../route.js';

export interface PkiRouteDeps {
  cas: CaService;
  certificates: CertificateService;
}

/** /api/v3/pki */
export function signCertificateRoutes({ certificates }: PkiRouteDeps): Router {
  const router = Router();
  on(router, 'POST /api/v3/pki/certificates/sign-certificate', async ({ body }, res) => {
    // ttl is required, so notBefore/notAfter can only conflict with it (as in Infisical).
    if (body.notBefore !== undefined || body.notAfter !== undefined) {
      throw validationFailure([{ path: 'body', message: 'use either ttl or notBefore/notAfter, not both' }]);
    }
    const issued = await certificates.signCertificate(principalOf(res), body);
    res.locals.auditResourceId = issued.certificateId;
    res.json(issued);
  });
  return router;
}

/** /api/v1/cert-manager */
export function certManagerRoutes({ cas, certificates }: PkiRouteDeps): Router {
  const router = Router();

  on(router, 'POST /api/v1/cert-manager/ca/internal', async ({ body }, res) => {
    const ca = await cas.create(principalOf(res), body);
    res.locals.auditResourceId = ca.id;
    res.json({ ca });
  });
  on(router, 'GET /api/v1/cert-manager/ca/internal', async ({ query }, res) => {
    res.json({ cas: await cas.list(principalOf(res), query.projectId) });
  });
  on(router, 'GET /api/v1/cert-manager/ca/internal/:caId', async ({ params }, res) => {
    res.json({ ca: await cas.get(principalOf(res), params.caId) });
  });
  on(router, 'PATCH /api/v1/cert-manager/ca/internal/:caId', async ({ params, body }, res) => {
    res.json({ ca: await cas.setStatus(principalOf(res), params.caId, body.status) });
  });
  on(router, 'GET /api/v1/cert-manager/ca/internal/:caId/certificate', async ({ params }, res) => {
    res.json(await cas.certificate(principalOf(res), params.caId));
  });
  on(router, 'GET /api/v1/cert-manager/ca/internal/:caId/csr', async ({ params }, res) => {
    res.json(await cas.csr(principalOf(res), params.caId));
  });
  on(router, 'POST /api/v1/cert-manager/ca/internal/:caId/import-certificate', async ({ params, body }, res) => {
    res.json({ ca: await cas.importCertificate(principalOf(res), params.caId, body.certificate, body.certificateChain) });
  });

  on(router, 'POST /api/v1/cert-manager/certificate-profiles', async ({ body }, res) => {
    const certificateProfile = await certificates.createProfile(principalOf(res), body);
    res.locals.auditResourceId = certificateProfile.id;
    res.json({ certificateProfile });
  });
  on(router, 'GET /api/v1/cert-manager/certificate-profiles', async ({ query }, res) => {
    res.json({ certificateProfiles: await certificates.listProfiles(principalOf(res), query.projectId) });
  });
  on(router, 'GET /api/v1/cert-manager/certificate-profiles/:profileId', async ({ params }, res) => {
    res.json({ certificateProfile: await certificates.getProfile(principalOf(res), params.profileId) });
  });
  on(router, 'PATCH /api/v1/cert-manager/certificate-profiles/:profileId', async ({ params, body }, res) => {
    res.json({ certificateProfile: await certificates.updateProfile(principalOf(res), params.profileId, body) });
  });
  on(router, 'GET /api/v1/cert-manager/certificate-profiles/:profileId/acme/eab-secret', async ({ params }, res) => {
    res.json(await certificates.acmeEabSecret(principalOf(res), params.profileId));
  });
  on(router, 'DELETE /api/v1/cert-manager/certificate-profiles/:profileId', async ({ params }, res) => {
    res.json({ certificateProfile: await certificates.deleteProfile(principalOf(res), params.profileId) });
  });

  on(router, 'GET /api/v1/cert-manager/certificates', async ({ query }, res) => {
    res.json(await certificates.list(principalOf(res), query.projectId, query.offset, query.limit));
  });
  on(router, 'GET /api/v1/cert-manager/certificates/:certificateId', async ({ params }, res) => {
    res.json({ certificate: await certificates.get(principalOf(res), params.certificateId) });
  });
  on(router, 'GET /api/v1/cert-manager/certificates/:certificateId/certificate', async ({ params }, res) => {
    res.json(await certificates.body(principalOf(res), params.certificateId));
  });
  on(router, 'POST /api/v1/cert-manager/certificates/:certificateId/revoke', async ({ params, body }, res) => {
    res.json(await certificates.revoke(principalOf(res), params.certificateId, body.revocationReason));
  });
  return router;
}

/** /pki: what relying parties fetch without credentials (named in AIA and CRL DP). */
export function publicPkiRoutes({ cas }: PkiRouteDeps): Router {
  const router = Router();
  on(router, 'GET /pki/ca/:caId/certificate.der', async ({ params }, res) => {
    // Looked up first: an error must not go out under a DER content type.
    const certificate = await cas.publicCertificate(params.caId);
    res.type('application/pkix-cert').send(certificate);
  });
  on(router, 'GET /pki/ca/:caId/crl.der', async ({ params }, res) => {
    const crl = await cas.publicCrl(params.caId);
    res.type('application/pkix-crl').send(crl);
  });
  return router;
}
