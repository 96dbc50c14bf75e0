// Revoking an endpoint's certificate, and lifting that again. Both are admin commands with their own audit
// records; enrolment and re-enrolment never lift a revocation.
import { and, desc, eq, sql } from 'drizzle-orm';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { NotFound } from '../../bot/errors.ts';
import type { Clock } from '../../bot/ports.ts';
import type { Db, DbOrTx } from '../../db/client.ts';
import { auditLog, endpoints } from '../../db/schema.ts';

/**
 * Brokers listen here and close the live connection of the endpoint named in the payload: `<endpoint id>`
 * when it was revoked, `<endpoint id>:reenrolled:<new certificate fingerprint>` when a re-enrolment replaced
 * its certificate.
 */
export const REVOKE_CHANNEL = 'ar_revoke';

export function notifyCertificateReplaced(tx: DbOrTx, endpointId: string, fingerprint: string) {
  return tx.execute(sql`select pg_notify(${REVOKE_CHANNEL}, ${`${endpointId}:reenrolled:${fingerprint}`})`);
}

type Deps = { db: Db; audit: AuditService; clock: Clock };

/** Revokes an endpoint's certificate and tells every broker to drop its live connection. */
export async function revokeEndpointCertificate(
  deps: Deps,
  input: { hostname: string; actorId?: string | null },
) {
  const { db, audit, clock } = deps;
  return db.transaction(async (tx) => {
    const [ep] = await tx
      .select()
      .from(endpoints)
      .where(eq(endpoints.hostname, input.hostname.toLowerCase()))
      .for('update');
    if (!ep) throw new NotFound('endpoint.unknown', `there is no endpoint named "${input.hostname}"`);
    const already = ep.revokedAt !== null;
    const revokedAt = ep.revokedAt ?? clock.now();
    if (!already) {
      await tx.update(endpoints).set({ revokedAt }).where(eq(endpoints.id, ep.id));
      await audit.append(
        {
          actorType: input.actorId ? 'user' : 'system',
          actorId: input.actorId ?? 'cli',
          action: 'endpoint.revoked',
          outcome: 'ok',
          endpointId: ep.id,
          details: { hostname: ep.hostname, certSerial: ep.certSerial, certFingerprint: ep.certFingerprint },
        },
        tx,
      );
      await tx.execute(sql`select pg_notify(${REVOKE_CHANNEL}, ${ep.id})`);
    }
    return { endpointId: ep.id, hostname: ep.hostname, revokedAt, alreadyRevoked: already };
  });
}

/**
 * Lifts a revocation: the endpoint's current certificate opens a connection again. `certificateReplaced`
 * says whether that certificate was issued after the revocation (a re-enrolment) or is the very one that
 * was revoked, so the admin knows which they are letting back in.
 */
export async function unrevokeEndpointCertificate(
  deps: Deps,
  input: { hostname: string; actorId?: string | null },
) {
  const { db, audit } = deps;
  return db.transaction(async (tx) => {
    const [ep] = await tx
      .select()
      .from(endpoints)
      .where(eq(endpoints.hostname, input.hostname.toLowerCase()))
      .for('update');
    if (!ep) throw new NotFound('endpoint.unknown', `there is no endpoint named "${input.hostname}"`);
    if (ep.revokedAt === null) {
      return { endpointId: ep.id, hostname: ep.hostname, wasRevoked: false, certificateReplaced: false };
    }
    // The revocation's audit record names the certificate it revoked.
    const [revocation] = await tx
      .select({ details: auditLog.details })
      .from(auditLog)
      .where(and(eq(auditLog.endpointId, ep.id), eq(auditLog.action, 'endpoint.revoked')))
      .orderBy(desc(auditLog.seq))
      .limit(1);
    const revokedFingerprint = (revocation?.details as { certFingerprint?: string } | undefined)
      ?.certFingerprint;
    const issuedAfter = revokedFingerprint !== undefined && revokedFingerprint !== ep.certFingerprint;
    await tx.update(endpoints).set({ revokedAt: null }).where(eq(endpoints.id, ep.id));
    await audit.append(
      {
        actorType: input.actorId ? 'user' : 'system',
        actorId: input.actorId ?? 'cli',
        action: 'endpoint.unrevoked',
        outcome: 'ok',
        endpointId: ep.id,
        details: {
          hostname: ep.hostname,
          revokedAt: ep.revokedAt.toISOString(),
          certSerial: ep.certSerial,
          certFingerprint: ep.certFingerprint,
          certificateReplaced: issuedAfter,
        },
      },
      tx,
    );
    return { endpointId: ep.id, hostname: ep.hostname, wasRevoked: true, certificateReplaced: issuedAfter };
  });
}
