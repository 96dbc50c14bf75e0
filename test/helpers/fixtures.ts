// Direct-insert fixtures for request, policy and approval tests: organisations, users with roles and TOTP
// enrolled, segments, endpoints, library scripts and files, step-up windows. Rows go in with drizzle; the
// password hash is a placeholder because these tests never verify passwords.
import { createHash, randomUUID } from 'node:crypto';
import { and, desc, eq, inArray } from 'drizzle-orm';
import type { ChatContext, Clock, DeliverySpec, Dispatcher } from '../../bot/ports.ts';
import type { ResolvedUser } from '../../bot/users/user-types.ts';
import type { Db, DbOrTx } from '../../db/client.ts';
import {
  deliveries,
  endpoints,
  files,
  type Os,
  organizations,
  type Role,
  roleGrants,
  type StepUpPurpose,
  scripts,
  segments,
  stepUpWindows,
  users,
} from '../../db/schema.ts';

export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export function createFixtures(db: Db, clock: Clock) {
  const orgIds = new Map<string, { id: string; external: boolean }>();

  async function org(name: string, external = false) {
    const known = orgIds.get(name);
    if (known) return { ...known, name };
    const [row] = await db
      .insert(organizations)
      .values({ name, external, allowedRoles: ['active_response', 'approver'] })
      .returning();
    orgIds.set(name, { id: row!.id, external });
    return row!;
  }

  return {
    org,

    /** A user with roles; TOTP enrolled unless `mfa: false`. External users belong to "MDR Partner". */
    async user(
      username: string,
      opts: { roles?: Role[]; external?: boolean; mfa?: boolean; disabled?: boolean } = {},
    ): Promise<ResolvedUser> {
      const o = opts.external ? await org('MDR Partner', true) : await org('Acme', false);
      const [u] = await db
        .insert(users)
        .values({
          username,
          displayName: username.replace(/^./, (c) => c.toUpperCase()),
          orgId: o.id,
          passwordHash: '$argon2id$placeholder',
          totpEnrolledAt: opts.mfa === false ? null : clock.now(),
          disabled: opts.disabled ?? false,
        })
        .returning();
      const roles = opts.roles ?? [];
      if (roles.length) await db.insert(roleGrants).values(roles.map((role) => ({ userId: u!.id, role })));
      return {
        id: u!.id,
        username,
        displayName: u!.displayName,
        orgId: o.id,
        orgName: opts.external ? 'MDR Partner' : 'Acme',
        external: Boolean(opts.external),
        roles,
        mfaEnrolled: opts.mfa !== false,
        disabled: opts.disabled ?? false,
      };
    },

    async segment(name: string, activeResponseEnabled = true) {
      const [row] = await db.insert(segments).values({ name, activeResponseEnabled }).returning();
      return row!;
    },

    async endpoint(
      hostname: string,
      segmentId: string,
      opts: { os?: Os; agentVersion?: string; revoked?: boolean } = {},
    ) {
      const [row] = await db
        .insert(endpoints)
        .values({
          hostname,
          segmentId,
          os: opts.os ?? 'linux',
          agentVersion: opts.agentVersion ?? '1.5.0',
          revokedAt: opts.revoked ? clock.now() : null,
        })
        .returning();
      return row!;
    },

    /** Many endpoints in one insert (hostnames `${prefix}-001` ...). */
    async endpoints(prefix: string, n: number, segmentId: string) {
      const values = Array.from({ length: n }, (_, i) => ({
        hostname: `${prefix}-${String(i + 1).padStart(3, '0')}`,
        segmentId,
        os: 'linux' as const,
        agentVersion: '1.5.0',
      }));
      return db.insert(endpoints).values(values).returning();
    },

    async script(
      name: string,
      body: string,
      opts: {
        readOnly?: boolean;
        params?: Record<string, unknown>;
        oses?: string[];
        minAgentVersion?: string;
      } = {},
    ) {
      const [row] = await db
        .insert(scripts)
        .values({
          name,
          body,
          sha256: sha256(body),
          readOnly: opts.readOnly ?? false,
          paramsSchema: opts.params ?? {},
          oses: opts.oses ?? ['windows', 'linux'],
          minAgentVersion: opts.minAgentVersion ?? '0.0.0',
        })
        .returning();
      return row!;
    },

    /** Changes a library script as an admin does: its next version, with the newest one's settings. */
    async editScript(name: string, body: string) {
      const [latest] = await db
        .select()
        .from(scripts)
        .where(eq(scripts.name, name))
        .orderBy(desc(scripts.version))
        .limit(1);
      const { id: _id, createdAt: _c, updatedAt: _u, ...rest } = latest!;
      const [row] = await db
        .insert(scripts)
        .values({ ...rest, body, sha256: sha256(body), version: latest!.version + 1 })
        .returning();
      return row!;
    },

    async libraryFile(name: string, content: string) {
      const [row] = await db
        .insert(files)
        .values({
          kind: 'library',
          name,
          size: content.length,
          sha256: sha256(content),
          storageKey: randomUUID(),
        })
        .returning();
      return row!;
    },

    /**
     * An open step-up window for the user (default 10 minutes from now on the test clock), opened for
     * `purpose` and bound to `subject` as a completed link would (stepup-binding.ts `bindTo`).
     */
    async stepUpWindow(
      userId: string,
      bound: { purpose: StepUpPurpose; subject: string },
      minutes = 10,
    ): Promise<string> {
      const now = clock.now();
      const [row] = await db
        .insert(stepUpWindows)
        .values({
          userId,
          purpose: bound.purpose,
          subject: bound.subject,
          openedAt: now,
          expiresAt: new Date(now.getTime() + minutes * 60_000),
        })
        .returning();
      return row!.id;
    },
  };
}

export type Fixtures = ReturnType<typeof createFixtures>;

export function chatContext(user = 'U1'): ChatContext {
  return { identity: { platform: 'console', tenantId: 'local', chatUserId: user }, channelId: 'C-ops' };
}

/**
 * A Dispatcher that writes real outbox rows into `deliveries` (the broker's own comes with the broker) and
 * records wake-ups, so tests count what was actually committed.
 */
export function createTableDispatcher() {
  const woken: string[][] = [];
  const dispatcher: Dispatcher & { woken: string[][] } = {
    woken,
    async enqueue(tx: DbOrTx, specs: DeliverySpec[]) {
      if (!specs.length) return [];
      return tx
        .insert(deliveries)
        .values(specs.map((s) => ({ ...s, state: 'queued' as const })))
        .returning({ id: deliveries.id, endpointId: deliveries.endpointId });
    },
    async wake(endpointIds: string[]) {
      woken.push(endpointIds);
    },
    async cancel(tx: DbOrTx, target: { requestId?: string; deliveryId?: string }) {
      const where = target.deliveryId
        ? eq(deliveries.id, target.deliveryId)
        : eq(deliveries.requestId, target.requestId ?? '');
      const rows = await tx
        .update(deliveries)
        .set({ state: 'cancelled' })
        .where(and(where, inArray(deliveries.state, ['queued', 'sent'])))
        .returning({ id: deliveries.id });
      return rows.length;
    },
  };
  return dispatcher;
}
