/** /api/v1/identities: machine identities and their client secrets (manage-identities). */
import { Router } from 'express';
import type { IdentityService } from '../../services/identity-service.js';
import type { Permission } from '../../store/identity-store.js';
import { inputOf, validate } from '../ajv.js';
import { principalOf } from '../request-context.js';
import { clientSecretParams, createClientSecretBody, createIdentityBody, identityIdParams } from '../schemas/auth.js';

type IdentityParams = { identityId: string };

export function identityRoutes(deps: { identities: IdentityService }): Router {
  const { identities } = deps;
  const router = Router();

  router.post('/', validate({ body: createIdentityBody }), async (_req, res) => {
    const { body } = inputOf<{}, {}, { name: string; permissions: Permission[] }>(res);
    const identity = await identities.createIdentity(principalOf(res), body.name, body.permissions);
    res.locals.auditResourceId = identity.id;
    res.json({ identity });
  });

  router.get('/', validate({}), async (_req, res) => {
    res.json({ identities: await identities.listIdentities(principalOf(res)) });
  });

  router.get('/:identityId', validate({ params: identityIdParams }), async (_req, res) => {
    res.json({ identity: await identities.getIdentity(principalOf(res), inputOf<IdentityParams>(res).params.identityId) });
  });

  router.delete('/:identityId', validate({ params: identityIdParams }), async (_req, res) => {
    res.json({ identity: await identities.deleteIdentity(principalOf(res), inputOf<IdentityParams>(res).params.identityId) });
  });

  router.post('/:identityId/client-secrets', validate({ params: identityIdParams, body: createClientSecretBody }), async (_req, res) => {
    const { params, body } = inputOf<IdentityParams, {}, { description?: string }>(res);
    res.json(await identities.createClientSecret(principalOf(res), params.identityId, body.description));
  });

  router.get('/:identityId/client-secrets', validate({ params: identityIdParams }), async (_req, res) => {
    res.json({ clientSecretData: await identities.listClientSecrets(principalOf(res), inputOf<IdentityParams>(res).params.identityId) });
  });

  router.delete('/:identityId/client-secrets/:clientSecretId', validate({ params: clientSecretParams }), async (_req, res) => {
    const { params } = inputOf<IdentityParams & { clientSecretId: string }>(res);
    res.json({ clientSecretData: await identities.deleteClientSecret(principalOf(res), params.identityId, params.clientSecretId) });
  });

  return router;
}
