/** /api/v1/auth: universal-auth login and token renew (no bearer token needed). */
import { Router } from 'express';
import type { IdentityService } from '../../services/identity-service.js';
import { inputOf, validate } from '../ajv.js';
import { loginBody, renewBody } from '../schemas/auth.js';

export function authRoutes(deps: { identities: IdentityService }): Router {
  const router = Router();

  router.post('/universal-auth/login', validate({ body: loginBody }), async (_req, res) => {
    const { body } = inputOf<{}, {}, { clientId: string; clientSecret: string }>(res);
    res.json(await deps.identities.login(body.clientId, body.clientSecret));
  });

  router.post('/token/renew', validate({ body: renewBody }), async (_req, res) => {
    const { body } = inputOf<{}, {}, { accessToken: string }>(res);
    res.json(await deps.identities.renew(body.accessToken));
  });

  return router;
}
