/** /api/v1/audit-logs: the audit trail, newest first, for admins. */
import { Router } from 'express';
import type { AuditListInput, AuditService } from '../../services/audit-service.js';
import { inputOf, validate } from '../ajv.js';
import { principalOf } from '../request-context.js';
import { listAuditLogsQuery } from '../schemas/audit.js';

export function auditRoutes(deps: { audit: AuditService }): Router {
  const { audit } = deps;
  const router = Router();

  router.get('/', validate({ query: listAuditLogsQuery }), async (_req, res) => {
    res.json(await audit.list(principalOf(res), inputOf<{}, AuditListInput>(res).query));
  });

  return router;
}
