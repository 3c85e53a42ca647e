/** /api/v1/identities: machine identities and their client secrets (manage-identities). */
import { Router } from 'express';
import type { IdentityService } from '../../services/identity-service.js';
import { principalOf } from '../request-context.js';
import { on } from '../route.js';

export function identityRoutes(deps: { identities: IdentityService }): Router {
  const { identities } = deps;
  const router = Router();

  on(router, 'POST /api/v1/identities/', async ({ body }, res) => {
    const identity = await identities.createIdentity(principalOf(res), body.name, body.permissions);
    res.locals.auditResourceId = identity.id;
    res.json({ identity });
  });

  on(router, 'GET /api/v1/identities/', async (_input, res) => {
    res.json({ identities: await identities.listIdentities(principalOf(res)) });
  });

  on(router, 'GET /api/v1/identities/:identityId', async ({ params }, res) => {
    res.json({ identity: await identities.getIdentity(principalOf(res), params.identityId) });
  });

  on(router, 'DELETE /api/v1/identities/:identityId', async ({ params }, res) => {
    res.json({ identity: await identities.deleteIdentity(principalOf(res), params.identityId) });
  });

  on(router, 'POST /api/v1/identities/:identityId/client-secrets', async ({ params, body }, res) => {
    res.json(await identities.createClientSecret(principalOf(res), params.identityId, body.description));
  });

  on(router, 'GET /api/v1/identities/:identityId/client-secrets', async ({ params }, res) => {
    res.json({ clientSecretData: await identities.listClientSecrets(principalOf(res), params.identityId) });
  });

  on(router, 'DELETE /api/v1/identities/:identityId/client-secrets/:clientSecretId', async ({ params }, res) => {
    res.json({ clientSecretData: await identities.deleteClientSecret(principalOf(res), params.identityId, params.clientSecretId) });
  });

  return router;
}
