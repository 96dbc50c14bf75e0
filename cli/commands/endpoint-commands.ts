// `npm run cli -- endpoint enroll-token|revoke|list`: thin wrappers the CLI entry wires to argv.
import { asc, eq } from 'drizzle-orm';
import { parseDuration } from '../../app/config.ts';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { BadRequest } from '../../bot/errors.ts';
import type { Clock } from '../../bot/ports.ts';
import { createEnrolmentToken, revokeEndpointCertificate } from '../../broker/enrolment/enrolment-service.ts';
import { caPin } from '../../broker/pki/pki.ts';
import type { Db } from '../../db/client.ts';
import { endpoints, segments } from '../../db/schema.ts';

/**
 * Creates a single-use enrolment token for `segment`. `ttl` is seconds or a duration such as 30m or 24h
 * (default 24h). Pass `caCertPem` (broker/pki `readCaCertificatePem(DATA_DIR/pki)`) so the token carries the
 * CA pin and the agent can check the broker before it sends anything.
 */
export async function enrollToken(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  segment: string;
  ttl?: number | string;
  caCertPem?: string;
  createdBy?: string | null;
}) {
  const ttlSeconds =
    typeof deps.ttl === 'number' ? deps.ttl : deps.ttl === undefined ? 86400 : parseDuration(deps.ttl);
  if (ttlSeconds === undefined) {
    throw new BadRequest('enrol.bad_ttl', `"${deps.ttl}" is not a duration; use e.g. 30m, 24h or 7d`);
  }
  const res = await createEnrolmentToken(deps, {
    segment: deps.segment,
    ttlSeconds,
    createdBy: deps.createdBy,
    caPin: deps.caCertPem ? caPin(deps.caCertPem) : undefined,
  });
  return {
    ...res,
    usage: `npm run agent -- --enroll ${res.token} --broker wss://<broker-host>:<port>`,
  };
}

/** Revokes the endpoint's certificate; its live connection is dropped and new handshakes are refused. */
export async function revokeEndpoint(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  hostname: string;
  actorId?: string | null;
}) {
  return revokeEndpointCertificate(deps, { hostname: deps.hostname, actorId: deps.actorId });
}

export async function listEndpoints(deps: { db: Db }) {
  return deps.db
    .select({
      id: endpoints.id,
      hostname: endpoints.hostname,
      os: endpoints.os,
      osVersion: endpoints.osVersion,
      agentVersion: endpoints.agentVersion,
      segment: segments.name,
      brokerId: endpoints.brokerId,
      lastSeenAt: endpoints.lastSeenAt,
      isolated: endpoints.isolated,
      certNotAfter: endpoints.certNotAfter,
      revokedAt: endpoints.revokedAt,
    })
    .from(endpoints)
    .innerJoin(segments, eq(segments.id, endpoints.segmentId))
    .orderBy(asc(endpoints.hostname));
}
