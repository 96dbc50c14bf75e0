// Prometheus metrics. Every security-relevant event already passes through the audit service, so counting
// appends by action and outcome gives step-up attempts, refusals, requests, decisions and delivery results
// without sprinkling counters through the core.
import { Counter, type Registry } from 'prom-client';
import type { AuditService } from '../bot/audit/audit-service.ts';

export function countAuditEvents(audit: AuditService, registry: Registry): AuditService {
  const events = new Counter({
    name: 'ar_audit_events_total',
    help: 'Audit records written, by action and outcome',
    labelNames: ['action', 'outcome'] as const,
    registers: [registry],
  });
  return {
    ...audit,
    async append(entry, tx) {
      const record = await audit.append(entry, tx);
      events.inc({ action: entry.action, outcome: entry.outcome });
      return record;
    },
  };
}
