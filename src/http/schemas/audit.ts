/** Request schemas of /api/v1/audit-logs (admins page through the audit trail). */
import type { AuditOutcome, AuditResourceType } from '../../services/audit-service.js';
import { object, uuid } from './common.js';

const dateTime = { type: 'string', format: 'date-time', maxLength: 64 } as const;

export const listAuditLogsQuery = object({
  /** Inclusive. */
  startTime: dateTime,
  /** Exclusive, so consecutive windows never show an event twice. */
  endTime: dateTime,
  identityId: uuid,
  resourceType: { type: 'string', enum: ['key', 'ca', 'profile', 'certificate', 'identity', 'audit', 'acme-account', 'acme-order'] satisfies AuditResourceType[] },
  resourceId: { type: 'string', minLength: 1, maxLength: 128 },
  action: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-z0-9]+(?:[.-][a-z0-9]+)*$' },
  outcome: { type: 'string', enum: ['success', 'denied', 'failure'] satisfies AuditOutcome[] },
  offset: { type: 'integer', minimum: 0, maximum: 1_000_000_000, default: 0 },
  limit: { type: 'integer', minimum: 1, maximum: 100, default: 50 },
  orderDirection: { type: 'string', enum: ['asc', 'desc'], default: 'desc' },
});
