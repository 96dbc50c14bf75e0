// Enrolment: single-use, expiring tokens an admin hands to an endpoint, redeemed once over server-authenticated
// TLS for a client certificate. Only the token's SHA-256 is stored: a token is 192 random bits, so a plain
// hash cannot be brute-forced and needs no secret key, and a database dump yields no usable token.
import { createHash, randomBytes } from 'node:crypto';
import { and, eq, isNull, sql } from 'drizzle-orm';
import { z } from 'zod';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { BadRequest, Forbidden, NotFound } from '../../bot/errors.ts';
import type { Clock } from '../../bot/ports.ts';
import type { Db } from '../../db/client.ts';
import { endpoints, enrolmentTokens, segments } from '../../db/schema.ts';
import type { Pki } from '../pki/pki.ts';

export const REVOKE_CHANNEL = 'ar_revoke';

export function hashEnrolmentSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** A token is `<secret>` or `<secret>.<ca pin>`; the pin lets the agent check the broker before trusting it. */
export function splitEnrolmentToken(token: string): { secret: string; caPin?: string } {
  const [secret, pin] = token.split('.', 2);
  return { secret: secret ?? '', caPin: pin || undefined };
}

export async function createEnrolmentToken(
  deps: { db: Db; audit: AuditService; clock: Clock },
  input: { segment: string; ttlSeconds: number; createdBy?: string | null; caPin?: string },
): Promise<{ token: string; expiresAt: Date; segmentId: string }> {
  const { db, audit, clock } = deps;
  if (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds < 60 || input.ttlSeconds > 30 * 86400) {
    throw new BadRequest(
      'enrol.bad_ttl',
      `the token lifetime must be between 1m and 30d, got ${input.ttlSeconds}s`,
    );
  }
  const [segment] = await db.select().from(segments).where(eq(segments.name, input.segment));
  if (!segment) {
    throw new NotFound('segment.unknown', `there is no segment named "${input.segment}"; create it first`);
  }
  // The prefix keeps a token from starting with '-', which command-line parsers take for an option.
  const secret = `art_${randomBytes(24).toString('base64url')}`;
  const expiresAt = new Date(clock.now().getTime() + input.ttlSeconds * 1000);
  await db.transaction(async (tx) => {
    const [row] = await tx
      .insert(enrolmentTokens)
      .values({
        tokenHash: hashEnrolmentSecret(secret),
        segmentId: segment.id,
        createdBy: input.createdBy ?? null,
        expiresAt,
      })
      .returning({ id: enrolmentTokens.id });
    await audit.append(
      {
        actorType: input.createdBy ? 'user' : 'system',
        actorId: input.createdBy ?? 'cli',
        action: 'enrolment.token_created',
        outcome: 'ok',
        details: { tokenId: row!.id, segment: segment.name, expiresAt: expiresAt.toISOString() },
      },
      tx,
    );
  });
  return { token: input.caPin ? `${secret}.${input.caPin}` : secret, expiresAt, segmentId: segment.id };
}

export const enrolRequest = z.strictObject({
  token: z.string().min(10).max(200),
  csr: z.string().min(100).max(16_384),
  hostname: z
    .string()
    .min(1)
    .max(253)
    .regex(
      /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/,
      'is not a valid hostname',
    ),
  os: z.enum(['windows', 'linux', 'macos']),
  osVersion: z.string().max(200).default(''),
  agentVersion: z.string().max(40).default('0.0.0'),
});
export type EnrolRequest = z.infer<typeof enrolRequest>;

/**
 * Redeems a token for a client certificate. The token is consumed and the endpoint row created (or, for a
 * re-enrolled hostname, its certificate replaced) in one transaction, so a token works exactly once.
 */
export async function redeemEnrolment(
  deps: { db: Db; audit: AuditService; clock: Clock; pki: Pki },
  input: EnrolRequest,
  sourceIp: string | undefined,
) {
  const { db, audit, clock, pki } = deps;
  const now = clock.now();
  const { secret } = splitEnrolmentToken(input.token);
  const refuse = async (reason: string, message: string) => {
    await audit.append({
      actorType: 'anonymous',
      actorId: sourceIp ?? null,
      action: 'endpoint.enrolment',
      outcome: 'refused',
      details: { hostname: input.hostname, reason },
    });
    return new Forbidden(`enrol.${reason}`, message);
  };
  const issued = await db.transaction(async (tx) => {
    const [token] = await tx
      .select()
      .from(enrolmentTokens)
      .where(eq(enrolmentTokens.tokenHash, hashEnrolmentSecret(secret)))
      .for('update');
    if (!token) return { error: 'token_unknown' as const };
    if (token.usedAt) return { error: 'token_used' as const };
    if (token.expiresAt.getTime() <= now.getTime()) return { error: 'token_expired' as const };
    // Host names are case-insensitive: `WS-02` and `ws-02` are one endpoint, stored lower-case, shown as
    // the agent reported it.
    const hostname = input.hostname.toLowerCase();
    const [existing] = await tx.select().from(endpoints).where(eq(endpoints.hostname, hostname));
    let endpointId = existing?.id;
    if (!endpointId) {
      const [row] = await tx
        .insert(endpoints)
        .values({
          hostname,
          reportedHostname: input.hostname,
          os: input.os,
          osVersion: input.osVersion,
          agentVersion: input.agentVersion,
          segmentId: token.segmentId,
        })
        .returning({ id: endpoints.id });
      endpointId = row!.id;
    }
    const cert = await pki.issueClientCert(input.csr, endpointId, now);
    await tx
      .update(endpoints)
      .set({
        reportedHostname: input.hostname,
        os: input.os,
        osVersion: input.osVersion,
        agentVersion: input.agentVersion,
        segmentId: token.segmentId,
        certFingerprint: cert.fingerprint,
        certSerial: cert.serial,
        certNotAfter: cert.notAfter,
        revokedAt: null,
      })
      .where(eq(endpoints.id, endpointId));
    const used = await tx
      .update(enrolmentTokens)
      .set({ usedAt: now, endpointId })
      .where(and(eq(enrolmentTokens.id, token.id), isNull(enrolmentTokens.usedAt)))
      .returning({ id: enrolmentTokens.id });
    if (used.length !== 1) return { error: 'token_used' as const };
    await audit.append(
      {
        actorType: 'agent',
        actorId: endpointId,
        action: 'endpoint.enrolled',
        outcome: 'ok',
        endpointId,
        details: {
          hostname: input.hostname,
          os: input.os,
          tokenId: token.id,
          reEnrolled: Boolean(existing),
          certSerial: cert.serial,
          certFingerprint: cert.fingerprint,
          sourceIp: sourceIp ?? null,
        },
      },
      tx,
    );
    return { endpointId, cert };
  });
  if ('error' in issued && issued.error) {
    const messages = {
      token_unknown: 'the enrolment token is not known; ask an admin for a new one',
      token_used: 'the enrolment token was already used; ask an admin for a new one',
      token_expired: 'the enrolment token has expired; ask an admin for a new one',
    };
    throw await refuse(issued.error, messages[issued.error]);
  }
  return {
    endpointId: issued.endpointId,
    certificate: issued.cert.pem,
    caCertificate: pki.caPem,
    signingPublicKey: pki.signingPublicKeyPem,
    notAfter: issued.cert.notAfter.toISOString(),
  };
}

/** Revokes an endpoint's certificate and tells every broker to drop its live connection. */
export async function revokeEndpointCertificate(
  deps: { db: Db; audit: AuditService; clock: Clock },
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
