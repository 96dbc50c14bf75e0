// Refused connections are audited, but a flood (a scanner, a looping agent with a revoked certificate) must
// not fill the audit log: one record per source and reason per window, carrying how many were suppressed,
// and a global cap per window.
import type { AuditService } from '../../bot/audit/audit-service.ts';
import type { Clock, Logger } from '../../bot/ports.ts';

export function createRefusalAudit(deps: {
  audit: AuditService;
  clock: Clock;
  logger: Logger;
  windowMs?: number;
  maxPerWindow?: number;
}) {
  const windowMs = deps.windowMs ?? 60_000;
  const maxPerWindow = deps.maxPerWindow ?? 100;
  const seen = new Map<string, { windowStart: number; suppressed: number }>();
  let globalWindow = 0;
  let globalCount = 0;

  return {
    /** Records a refusal unless the same source and reason was recorded within the window. */
    async refused(reason: string, remoteAddress: string, details: Record<string, unknown> = {}) {
      const now = deps.clock.now().getTime();
      const key = `${reason}|${remoteAddress}`;
      const s = seen.get(key);
      if (now - globalWindow >= windowMs) {
        globalWindow = now;
        globalCount = 0;
        if (seen.size > 10_000) seen.clear();
      }
      if ((s && now - s.windowStart < windowMs) || globalCount >= maxPerWindow) {
        if (s) s.suppressed++;
        else seen.set(key, { windowStart: now, suppressed: 1 });
        return false;
      }
      const suppressed = s?.suppressed ?? 0;
      seen.set(key, { windowStart: now, suppressed: 0 });
      globalCount++;
      deps.logger.info({ reason, remoteAddress }, 'agent connection refused');
      await deps.audit
        .append({
          actorType: 'anonymous',
          actorId: remoteAddress,
          action: 'broker.connection_refused',
          outcome: 'refused',
          endpointId: (details.endpointId as string | undefined) ?? null,
          details: { reason, remoteAddress, suppressedSinceLast: suppressed, ...details },
        })
        .catch((e) => deps.logger.error({ err: e }, 'audit of a refused connection failed'));
      return true;
    },
  };
}
