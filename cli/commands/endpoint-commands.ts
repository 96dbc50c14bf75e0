// `npm run cli -- endpoint enroll-token|reenroll-token|revoke|unrevoke|list`: thin wrappers the CLI entry
// wires to argv.
import { asc, eq } from 'drizzle-orm';
import { parseDuration } from '../../app/config.ts';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { BadRequest } from '../../bot/errors.ts';
import type { Clock } from '../../bot/ports.ts';
import {
  revokeEndpointCertificate,
  unrevokeEndpointCertificate,
} from '../../broker/enrolment/endpoint-revocation.ts';
import { createEnrolmentToken, createReenrolmentToken } from '../../broker/enrolment/enrolment-tokens.ts';
import { caPin } from '../../broker/pki/pki.ts';
import type { Db } from '../../db/client.ts';
import { endpoints, segments } from '../../db/schema.ts';

function ttlSeconds(ttl: number | string | undefined): number {
  const s = typeof ttl === 'number' ? ttl : ttl === undefined ? 86400 : parseDuration(ttl);
  if (s === undefined) {
    throw new BadRequest('enrol.bad_ttl', `"${ttl}" is not a duration; use e.g. 30m, 24h or 7d`);
  }
  return s;
}

/**
 * Creates a single-use enrolment token for `segment`; it enrols a new endpoint only. `ttl` is seconds or a duration such as 30m or 24h
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
  const res = await createEnrolmentToken(deps, {
    segment: deps.segment,
    ttlSeconds: ttlSeconds(deps.ttl),
    createdBy: deps.createdBy,
    caPin: deps.caCertPem ? caPin(deps.caCertPem) : undefined,
  });
  return {
    ...res,
    usage: `npm run agent -- --enroll ${res.token} --broker wss://<broker-host>:<port>`,
  };
}

/**
 * Creates a single-use token that re-enrols the endpoint named `hostname` only (a reinstalled machine, a
 * lost key). It keeps the endpoint's segment; a revoked endpoint stays revoked until `unrevokeEndpoint`.
 */
export async function reenrollToken(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  hostname: string;
  ttl?: number | string;
  caCertPem?: string;
  createdBy?: string | null;
}) {
  return createReenrolmentToken(deps, {
    hostname: deps.hostname,
    ttlSeconds: ttlSeconds(deps.ttl),
    createdBy: deps.createdBy,
    caPin: deps.caCertPem ? caPin(deps.caCertPem) : undefined,
  });
}

/** Lifts a revocation: the endpoint's current certificate is accepted again. Audited. */
export async function unrevokeEndpoint(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  hostname: string;
  actorId?: string | null;
}) {
  return unrevokeEndpointCertificate(deps, { hostname: deps.hostname, actorId: deps.actorId });
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
