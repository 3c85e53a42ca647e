/** /api/v1/audit-logs: the audit trail, newest first, for admins. */
import { Router } from 'express';
import type { AuditService } from '../../services/audit-service.js';
import { principalOf } from '../request-context.js';
import { on } from '../route.js';

export function auditRoutes(deps: { audit: AuditService }): Router {
  const { audit } = deps;
  const router = Router();

  on(router, 'GET /api/v1/audit-logs/', async ({ query }, res) => {
    res.json(await audit.list(principalOf(res), query));
  });

  return router;
}
