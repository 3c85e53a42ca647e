/**
 * PKI routes: sign-certificate (v3, Infisical's; docs/contract.md, PKI), certificate
 * authorities, certificate profiles and certificates under /api/v1/cert-manager, and the
 * unauthenticated DER certificate and CRL URLs that issued certificates name.
 */
import { Router } from 'express';
import { validationFailure } from '../../errors.js';
import type { RevocationReason } from '../../pki/crl.js';
import type { CaService, CreateCaInput } from '../../services/ca-service.js';
import type { CertificateService, ProfileInput } from '../../services/certificate-service.js';
import { inputOf, validate } from '../ajv.js';
import { principalOf } from '../request-context.js';
import * as schemas from '../schemas/pki.js';

export interface PkiRouteDeps {
  cas: CaService;
  certificates: CertificateService;
}

/** /api/v3/pki */
export function signCertificateRoutes({ certificates }: PkiRouteDeps): Router {
  const router = Router();
  router.post('/certificates/sign-certificate', validate({ body: schemas.signCertificateBody }), async (_req, res) => {
    const { body } = inputOf<{}, {}, { profileId: string; csr: string; ttl: string; notBefore?: string; notAfter?: string }>(res);
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
  type CaParams = { caId: string };
  type ProfileParams = { profileId: string };
  type CertificateParams = { certificateId: string };

  router.post('/ca/internal', validate({ body: schemas.createCaBody }), async (_req, res) => {
    const ca = await cas.create(principalOf(res), inputOf<{}, {}, CreateCaInput>(res).body);
    res.locals.auditResourceId = ca.id;
    res.json({ ca });
  });
  router.get('/ca/internal', validate({ query: schemas.projectQuery }), async (_req, res) => {
    res.json({ cas: await cas.list(principalOf(res), inputOf<{}, { projectId: string }>(res).query.projectId) });
  });
  router.get('/ca/internal/:caId', validate({ params: schemas.caIdParams }), async (_req, res) => {
    res.json({ ca: await cas.get(principalOf(res), inputOf<CaParams>(res).params.caId) });
  });
  router.patch('/ca/internal/:caId', validate({ params: schemas.caIdParams, body: schemas.updateCaBody }), async (_req, res) => {
    const { params, body } = inputOf<CaParams, {}, { status: 'active' | 'disabled' }>(res);
    res.json({ ca: await cas.setStatus(principalOf(res), params.caId, body.status) });
  });
  router.get('/ca/internal/:caId/certificate', validate({ params: schemas.caIdParams }), async (_req, res) => {
    res.json(await cas.certificate(principalOf(res), inputOf<CaParams>(res).params.caId));
  });
  router.get('/ca/internal/:caId/csr', validate({ params: schemas.caIdParams }), async (_req, res) => {
    res.json(await cas.csr(principalOf(res), inputOf<CaParams>(res).params.caId));
  });
  router.post('/ca/internal/:caId/import-certificate', validate({ params: schemas.caIdParams, body: schemas.importCaCertificateBody }), async (_req, res) => {
    const { params, body } = inputOf<CaParams, {}, { certificate: string; certificateChain: string }>(res);
    res.json({ ca: await cas.importCertificate(principalOf(res), params.caId, body.certificate, body.certificateChain) });
  });

  router.post('/certificate-profiles', validate({ body: schemas.createProfileBody }), async (_req, res) => {
    const certificateProfile = await certificates.createProfile(principalOf(res), inputOf<{}, {}, ProfileInput>(res).body);
    res.locals.auditResourceId = certificateProfile.id;
    res.json({ certificateProfile });
  });
  router.get('/certificate-profiles', validate({ query: schemas.projectQuery }), async (_req, res) => {
    res.json({ certificateProfiles: await certificates.listProfiles(principalOf(res), inputOf<{}, { projectId: string }>(res).query.projectId) });
  });
  router.get('/certificate-profiles/:profileId', validate({ params: schemas.profileIdParams }), async (_req, res) => {
    res.json({ certificateProfile: await certificates.getProfile(principalOf(res), inputOf<ProfileParams>(res).params.profileId) });
  });
  router.patch('/certificate-profiles/:profileId', validate({ params: schemas.profileIdParams, body: schemas.updateProfileBody }), async (_req, res) => {
    const { params, body } = inputOf<ProfileParams, {}, Partial<ProfileInput>>(res);
    res.json({ certificateProfile: await certificates.updateProfile(principalOf(res), params.profileId, body) });
  });
  router.get('/certificate-profiles/:profileId/acme/eab-secret', validate({ params: schemas.profileIdParams }), async (_req, res) => {
    res.json(await certificates.acmeEabSecret(principalOf(res), inputOf<ProfileParams>(res).params.profileId));
  });
  router.delete('/certificate-profiles/:profileId', validate({ params: schemas.profileIdParams }), async (_req, res) => {
    res.json({ certificateProfile: await certificates.deleteProfile(principalOf(res), inputOf<ProfileParams>(res).params.profileId) });
  });

  router.get('/certificates', validate({ query: schemas.listCertificatesQuery }), async (_req, res) => {
    const { query } = inputOf<{}, { projectId: string; offset: number; limit: number }>(res);
    res.json(await certificates.list(principalOf(res), query.projectId, query.offset, query.limit));
  });
  router.get('/certificates/:certificateId', validate({ params: schemas.certificateIdParams }), async (_req, res) => {
    res.json({ certificate: await certificates.get(principalOf(res), inputOf<CertificateParams>(res).params.certificateId) });
  });
  router.get('/certificates/:certificateId/certificate', validate({ params: schemas.certificateIdParams }), async (_req, res) => {
    res.json(await certificates.body(principalOf(res), inputOf<CertificateParams>(res).params.certificateId));
  });
  router.post('/certificates/:certificateId/revoke', validate({ params: schemas.certificateIdParams, body: schemas.revokeBody }), async (_req, res) => {
    const { params, body } = inputOf<CertificateParams, {}, { revocationReason: RevocationReason }>(res);
    res.json(await certificates.revoke(principalOf(res), params.certificateId, body.revocationReason));
  });
  return router;
}

/** /pki: what relying parties fetch without credentials (named in AIA and CRL DP). */
export function publicPkiRoutes({ cas }: PkiRouteDeps): Router {
  const router = Router();
  router.get('/ca/:caId/certificate.der', validate({ params: schemas.caIdParams }), async (_req, res) => {
    // Looked up first: an error must not go out under a DER content type.
    const certificate = await cas.publicCertificate(inputOf<{ caId: string }>(res).params.caId);
    res.type('application/pkix-cert').send(certificate);
  });
  router.get('/ca/:caId/crl.der', validate({ params: schemas.caIdParams }), async (_req, res) => {
    const crl = await cas.publicCrl(inputOf<{ caId: string }>(res).params.caId);
    res.type('application/pkix-crl').send(crl);
  });
  return router;
}
