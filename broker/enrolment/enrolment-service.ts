// Enrolment: an endpoint gets a client certificate, either by redeeming a single-use token over
// server-authenticated TLS (`POST /enroll`) or, to re-enrol with a new key, by proving it holds its current
// one (`POST /reenroll` over mutual TLS). The rules that keep one endpoint from taking over another:
// - a token made for new endpoints never touches an existing one: a host name already enrolled is refused;
// - a re-enrolment token re-enrols the one endpoint it names, under that name;
// - enrolment never changes an endpoint's segment and never lifts a revocation.
// Every refusal is audited as `endpoint.enrolment` / `refused` with its reason, and changes nothing.
import { randomUUID } from 'node:crypto';
import { and, eq, isNull } from 'drizzle-orm';
import { z } from 'zod';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { type AppError, BadRequest, Conflict, Forbidden } from '../../bot/errors.ts';
import type { Clock } from '../../bot/ports.ts';
import type { Db } from '../../db/client.ts';
import { endpoints, enrolmentTokens } from '../../db/schema.ts';
import type { IssuedCert, Pki } from '../pki/pki.ts';
import { notifyCertificateReplaced } from './endpoint-revocation.ts';
import { hashEnrolmentSecret, splitEnrolmentToken } from './enrolment-tokens.ts';

const hostnameSchema = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/, 'is not a valid hostname');

const endpointFields = {
  csr: z.string().min(100).max(16_384),
  hostname: hostnameSchema,
  os: z.enum(['windows', 'linux', 'macos']),
  osVersion: z.string().max(200).default(''),
  agentVersion: z.string().max(40).default('0.0.0'),
};

/** `POST /enroll`: a token, and what the endpoint says about itself. */
export const enrolRequest = z.strictObject({ token: z.string().min(10).max(200), ...endpointFields });
export type EnrolRequest = z.infer<typeof enrolRequest>;

/** `POST /reenroll`: no token; the caller's client certificate is the proof. */
export const reenrolRequest = z.strictObject(endpointFields);
export type ReenrolRequest = z.infer<typeof reenrolRequest>;

type Deps = { db: Db; audit: AuditService; clock: Clock; pki: Pki };

const REFUSALS = {
  token_unknown: [Forbidden, 'the enrolment token is not known; ask an admin for a new one'],
  token_used: [Forbidden, 'the enrolment token was already used; ask an admin for a new one'],
  token_expired: [Forbidden, 'the enrolment token has expired; ask an admin for a new one'],
  bad_csr: [BadRequest, 'the certificate request is not a valid PKCS#10 request signed by its own key'],
  hostname_taken: [Conflict, ''],
  hostname_mismatch: [Forbidden, ''],
  certificate_unknown: [
    Forbidden,
    "re-enrolment needs the endpoint's current client certificate; without it, ask an admin for a " +
      're-enrolment token (endpoint reenroll-token <host>)',
  ],
  revoked: [
    Forbidden,
    "this endpoint's certificate is revoked; an admin re-enrols it with a token (endpoint reenroll-token " +
      '<host>) and then lifts the revocation (endpoint unrevoke <host>)',
  ],
} as const satisfies Record<string, [new (code: string, msg: string) => AppError, string]>;
type RefusalReason = keyof typeof REFUSALS;
/** Every reason the service refuses an enrolment for; its error code is `enrol.<reason>`. */
export const ENROLMENT_REFUSALS = Object.keys(REFUSALS) as RefusalReason[];
type Refusal = { refused: RefusalReason; message?: string; endpointId?: string; tokenId?: string };

async function refuse(
  deps: Deps,
  r: Refusal,
  hostname: string,
  sourceIp: string | undefined,
): Promise<never> {
  await deps.audit.append({
    actorType: 'anonymous',
    actorId: sourceIp ?? null,
    action: 'endpoint.enrolment',
    outcome: 'refused',
    endpointId: r.endpointId ?? null,
    details: { hostname, reason: r.refused, tokenId: r.tokenId ?? null, sourceIp: sourceIp ?? null },
  });
  const [Err, message] = REFUSALS[r.refused];
  throw new Err(`enrol.${r.refused}`, r.message ?? message);
}

/** Issues the certificate before anything is written, so a bad CSR leaves no trace but its audit record. */
async function issue(pki: Pki, csr: string, endpointId: string, now: Date): Promise<IssuedCert | undefined> {
  try {
    return await pki.issueClientCert(csr, endpointId, now);
  } catch {
    return undefined;
  }
}

function answer(pki: Pki, endpointId: string, cert: IssuedCert) {
  return {
    endpointId,
    certificate: cert.pem,
    caCertificate: pki.caPem,
    signingPublicKey: pki.signingPublicKeyPem,
    notAfter: cert.notAfter.toISOString(),
  };
}

/**
 * Redeems a token for a client certificate. The token is consumed and the endpoint created (or, for a
 * re-enrolment token, its certificate replaced) in one transaction, so a token works exactly once; a
 * refused attempt leaves the token as it was.
 */
export async function redeemEnrolment(deps: Deps, input: EnrolRequest, sourceIp: string | undefined) {
  const { db, audit, clock, pki } = deps;
  const now = clock.now();
  const { secret } = splitEnrolmentToken(input.token);
  // Host names are case-insensitive: `WS-02` and `ws-02` are one endpoint, stored lower-case, shown as the
  // agent reported it.
  const hostname = input.hostname.toLowerCase();
  const outcome = await db.transaction(
    async (tx): Promise<Refusal | { endpointId: string; cert: IssuedCert }> => {
      const [token] = await tx
        .select()
        .from(enrolmentTokens)
        .where(eq(enrolmentTokens.tokenHash, hashEnrolmentSecret(secret)))
        .for('update');
      if (!token) return { refused: 'token_unknown' };
      const tokenId = token.id;
      if (token.usedAt) return { refused: 'token_used', tokenId };
      if (token.expiresAt.getTime() <= now.getTime()) return { refused: 'token_expired', tokenId };
      const [existing] = await tx
        .select()
        .from(endpoints)
        .where(eq(endpoints.hostname, hostname))
        .for('update');
      const target = token.reenrolEndpointId;
      if (!target && existing) {
        return {
          refused: 'hostname_taken',
          tokenId,
          endpointId: existing.id,
          message:
            `an endpoint named "${existing.hostname}" is already enrolled, and this token enrols new endpoints ` +
            `only. To re-enrol ${existing.hostname}, an admin creates a token for it: endpoint reenroll-token ` +
            `${existing.hostname}`,
        };
      }
      if (target && existing?.id !== target) {
        const [named] = await tx
          .select({ hostname: endpoints.hostname })
          .from(endpoints)
          .where(eq(endpoints.id, target));
        return {
          refused: 'hostname_mismatch',
          tokenId,
          endpointId: target,
          message:
            `this token re-enrols "${named?.hostname}" only, and the agent asked to enrol as "${input.hostname}"; ` +
            `run the agent with --hostname ${named?.hostname}`,
        };
      }
      const endpointId = existing?.id ?? randomUUID();
      const cert = await issue(pki, input.csr, endpointId, now);
      if (!cert) return { refused: 'bad_csr', tokenId, endpointId: existing?.id };
      const certFields = {
        reportedHostname: input.hostname,
        os: input.os,
        osVersion: input.osVersion,
        agentVersion: input.agentVersion,
        certFingerprint: cert.fingerprint,
        certSerial: cert.serial,
        certNotAfter: cert.notAfter,
      };
      if (existing) {
        // Re-enrolment: a new certificate, and nothing else of the endpoint's standing changes.
        await tx.update(endpoints).set(certFields).where(eq(endpoints.id, existing.id));
        await notifyCertificateReplaced(tx, existing.id, cert.fingerprint);
      } else {
        const created = await tx
          .insert(endpoints)
          .values({ id: endpointId, hostname, segmentId: token.segmentId, ...certFields })
          .onConflictDoNothing()
          .returning({ id: endpoints.id });
        // Another enrolment took the name between our read and this insert.
        if (created.length !== 1) return { refused: 'hostname_taken', tokenId };
      }
      const used = await tx
        .update(enrolmentTokens)
        .set({ usedAt: now, endpointId })
        .where(and(eq(enrolmentTokens.id, token.id), isNull(enrolmentTokens.usedAt)))
        .returning({ id: enrolmentTokens.id });
      if (used.length !== 1) throw new Error('the enrolment token changed under its row lock');
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
            via: '/enroll',
            stillRevoked: existing?.revokedAt != null,
            certSerial: cert.serial,
            certFingerprint: cert.fingerprint,
            sourceIp: sourceIp ?? null,
          },
        },
        tx,
      );
      return { endpointId, cert };
    },
  );
  if ('refused' in outcome) return refuse(deps, outcome, input.hostname, sourceIp);
  return answer(pki, outcome.endpointId, outcome.cert);
}

/**
 * Re-enrols the endpoint whose current client certificate the caller presented (the TLS handshake proved
 * it holds that key): a new certificate for the CSR's key, same endpoint, name and segment. A revoked
 * endpoint, a certificate that is no longer the endpoint's current one, or another host name is refused.
 */
export async function reenrolWithCertificate(
  deps: Deps,
  input: ReenrolRequest,
  caller: { fingerprint: string },
  sourceIp: string | undefined,
) {
  const { db, audit, clock, pki } = deps;
  const now = clock.now();
  const outcome = await db.transaction(
    async (tx): Promise<Refusal | { endpointId: string; cert: IssuedCert }> => {
      const [ep] = await tx
        .select()
        .from(endpoints)
        .where(eq(endpoints.certFingerprint, caller.fingerprint))
        .for('update');
      if (!ep) return { refused: 'certificate_unknown' };
      if (ep.revokedAt) return { refused: 'revoked', endpointId: ep.id };
      if (ep.hostname !== input.hostname.toLowerCase()) {
        return {
          refused: 'hostname_mismatch',
          endpointId: ep.id,
          message: `this certificate belongs to "${ep.hostname}", and the request asks for "${input.hostname}"`,
        };
      }
      const cert = await issue(pki, input.csr, ep.id, now);
      if (!cert) return { refused: 'bad_csr', endpointId: ep.id };
      await tx
        .update(endpoints)
        .set({
          reportedHostname: input.hostname,
          os: input.os,
          osVersion: input.osVersion,
          agentVersion: input.agentVersion,
          certFingerprint: cert.fingerprint,
          certSerial: cert.serial,
          certNotAfter: cert.notAfter,
        })
        .where(eq(endpoints.id, ep.id));
      await notifyCertificateReplaced(tx, ep.id, cert.fingerprint);
      await audit.append(
        {
          actorType: 'agent',
          actorId: ep.id,
          action: 'endpoint.enrolled',
          outcome: 'ok',
          endpointId: ep.id,
          details: {
            hostname: input.hostname,
            os: input.os,
            reEnrolled: true,
            via: '/reenroll',
            previousCertSerial: ep.certSerial,
            certSerial: cert.serial,
            certFingerprint: cert.fingerprint,
            sourceIp: sourceIp ?? null,
          },
        },
        tx,
      );
      return { endpointId: ep.id, cert };
    },
  );
  if ('refused' in outcome) return refuse(deps, outcome, input.hostname, sourceIp);
  return answer(pki, outcome.endpointId, outcome.cert);
}
