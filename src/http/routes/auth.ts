/** /api/v1/auth: universal-auth login and token renew (no bearer token needed). */
import { Router } from 'express';
import type { IdentityService } from '../../services/identity-service.js';
import { auditIndividually } from '../audit-trail.js';
import { clientAddressOf } from '../client-address.js';
import type { LoginThrottle } from '../rate-limit.js';
import { on } from '../route.js';

export function authRoutes(deps: { identities: IdentityService; loginThrottle: LoginThrottle }): Router {
  const router = Router();

  on(router, 'POST /api/v1/auth/universal-auth/login', async ({ body }, res) => {
    const address = clientAddressOf(res);
    // For the audit trail: who tried, whether or not the secret was right.
    res.locals.auditIdentityId = await deps.identities.identityIdOf(body.clientId);
    deps.loginThrottle.check(body.clientId, address);
    deps.loginThrottle.attempting(body.clientId, address);
    // Its secret gets checked: one audit event of its own (throttling bounds how many there are).
    auditIndividually(res);
    const result = await deps.identities.login(body.clientId, body.clientSecret);
    deps.loginThrottle.succeeded(body.clientId, address);
    res.json(result);
  });

  on(router, 'POST /api/v1/auth/token/renew', async ({ body }, res) => {
    const renewed = await deps.identities.renew(body.accessToken);
    // Whoever holds a live token is audited like any identity; a dead one is only counted.
    auditIndividually(res);
    res.json(renewed);
  });

  return router;
}
