// Enrolment tokens: single-use and expiring. A token either enrols one new endpoint into a segment, or
// re-enrols exactly one existing endpoint (`endpoint reenroll-token <host>`). Only the token's SHA-256 is
// stored: a token is 192 random bits, so a plain hash cannot be brute-forced and needs no secret key, and a
// database dump yields no usable token.
import { createHash, randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { BadRequest, NotFound } from '../../bot/errors.ts';
import type { Clock } from '../../bot/ports.ts';
import type { Db } from '../../db/client.ts';
import { endpoints, enrolmentTokens, segments } from '../../db/schema.ts';

type Deps = { db: Db; audit: AuditService; clock: Clock };

export function hashEnrolmentSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** A token is `<secret>` or `<secret>.<ca pin>`; the pin lets the agent check the broker before trusting it. */
export function splitEnrolmentToken(token: string): { secret: string; caPin?: string } {
  const [secret, pin] = token.split('.', 2);
  return { secret: secret ?? '', caPin: pin || undefined };
}

function checkTtl(ttlSeconds: number) {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 60 || ttlSeconds > 30 * 86400) {
    throw new BadRequest(
      'enrol.bad_ttl',
      `the token lifetime must be between 1m and 30d, got ${ttlSeconds}s`,
    );
  }
}

async function insertToken(
  deps: Deps,
  values: {
    segmentId: string;
    reenrolEndpointId: string | null;
    ttlSeconds: number;
    createdBy?: string | null;
  },
  details: Record<string, unknown>,
) {
  // The prefix keeps a token from starting with '-', which command-line parsers take for an option.
  const secret = `art_${randomBytes(24).toString('base64url')}`;
  const expiresAt = new Date(deps.clock.now().getTime() + values.ttlSeconds * 1000);
  await deps.db.transaction(async (tx) => {
    const [row] = await tx
      .insert(enrolmentTokens)
      .values({
        tokenHash: hashEnrolmentSecret(secret),
        segmentId: values.segmentId,
        reenrolEndpointId: values.reenrolEndpointId,
        createdBy: values.createdBy ?? null,
        expiresAt,
      })
      .returning({ id: enrolmentTokens.id });
    await deps.audit.append(
      {
        actorType: values.createdBy ? 'user' : 'system',
        actorId: values.createdBy ?? 'cli',
        action: 'enrolment.token_created',
        outcome: 'ok',
        endpointId: values.reenrolEndpointId,
        details: { tokenId: row!.id, ...details, expiresAt: expiresAt.toISOString() },
      },
      tx,
    );
  });
  return { secret, expiresAt };
}

/** A token that enrols one new endpoint into `segment`; it never touches an endpoint that exists. */
export async function createEnrolmentToken(
  deps: Deps,
  input: { segment: string; ttlSeconds: number; createdBy?: string | null; caPin?: string },
): Promise<{ token: string; expiresAt: Date; segmentId: string }> {
  checkTtl(input.ttlSeconds);
  const [segment] = await deps.db.select().from(segments).where(eq(segments.name, input.segment));
  if (!segment) {
    throw new NotFound('segment.unknown', `there is no segment named "${input.segment}"; create it first`);
  }
  const { secret, expiresAt } = await insertToken(
    deps,
    {
      segmentId: segment.id,
      reenrolEndpointId: null,
      ttlSeconds: input.ttlSeconds,
      createdBy: input.createdBy,
    },
    { purpose: 'enrol', segment: segment.name },
  );
  return { token: input.caPin ? `${secret}.${input.caPin}` : secret, expiresAt, segmentId: segment.id };
}

/**
 * A token that re-enrols the endpoint named `hostname` only (a reinstalled machine, a lost key): a new
 * certificate under the same endpoint, name and segment. A revoked endpoint stays revoked until `endpoint
 * unrevoke`.
 */
export async function createReenrolmentToken(
  deps: Deps,
  input: { hostname: string; ttlSeconds: number; createdBy?: string | null; caPin?: string },
) {
  checkTtl(input.ttlSeconds);
  const [ep] = await deps.db
    .select()
    .from(endpoints)
    .where(eq(endpoints.hostname, input.hostname.toLowerCase()));
  if (!ep) throw new NotFound('endpoint.unknown', `there is no endpoint named "${input.hostname}"`);
  const revoked = ep.revokedAt !== null;
  const { secret, expiresAt } = await insertToken(
    deps,
    {
      segmentId: ep.segmentId,
      reenrolEndpointId: ep.id,
      ttlSeconds: input.ttlSeconds,
      createdBy: input.createdBy,
    },
    { purpose: 'reenrol', hostname: ep.hostname, revoked },
  );
  return {
    token: input.caPin ? `${secret}.${input.caPin}` : secret,
    expiresAt,
    endpointId: ep.id,
    hostname: ep.hostname,
    revoked,
  };
}
