// Users, organisations, chat identities and role grants. Who may call what (admin + a step-up for that
// change) is the router's job; this service enforces the data rules: a role must be allowed for the user's
// organisation, the actor of a role change must still be an admin when it is applied (role-changes.ts), a
// chat identity must be linked and its tenant mapped, and every change is audited.
import { and, eq, gt } from 'drizzle-orm';
import { z } from 'zod';
import type { Db, DbOrTx } from '../../db/client.ts';
import {
  chatIdentities,
  organizations,
  orgTenants,
  type Platform,
  ROLES,
  type Role,
  stepUpWindows,
  users,
} from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { hashPassword } from '../crypto/passwords.ts';
import { Conflict, Forbidden, NotFound } from '../errors.ts';
import type { ChatIdentity, Clock } from '../ports.ts';
import { createRoleChanges } from './role-changes.ts';
import {
  chatIdentitiesWithRole,
  findIdentity,
  findOrgByName,
  findTenantOrg,
  findUserRow,
  isUuid,
  resolveUser,
  resolveUsers,
} from './user-dal.ts';
import {
  actor,
  chatId,
  createOrgInput,
  createUserInput,
  identityKey,
  isUniqueViolation,
  linkInput,
  mapTenantInput,
  optionalActor,
  parse,
  platform,
  userRef,
} from './user-inputs.ts';
import type { ResolvedUser } from './user-types.ts';

export const HOME_ORG = 'home';

export function createUserService(deps: { db: Db; audit: AuditService; clock: Clock; secretKey: Buffer }) {
  const { db, audit, clock } = deps;

  async function mustResolve(tx: DbOrTx, idOrUsername: string): Promise<ResolvedUser> {
    const ref = idOrUsername.trim();
    const row = await findUserRow(tx, isUuid(ref) ? ref : ref.toLowerCase());
    const u = row && (await resolveUser(tx, row.id));
    if (!u)
      throw new NotFound('user.not_found', `No user "${idOrUsername}". Check the spelling, or list users.`);
    return u;
  }

  async function ensureHomeOrganization(tx: DbOrTx = db) {
    const inserted = await tx
      .insert(organizations)
      .values({ name: HOME_ORG, external: false, allowedRoles: [...ROLES] })
      .onConflictDoNothing()
      .returning();
    if (inserted[0]) {
      await audit.append(
        {
          actorType: 'system',
          action: 'org.created',
          outcome: 'ok',
          details: { name: HOME_ORG, external: false },
        },
        tx,
      );
      return inserted[0];
    }
    return (await findOrgByName(tx, HOME_ORG))!;
  }

  /** Records a refused chat identity (in its own transaction) and returns the error for the caller to throw. */
  async function refuseIdentity(identity: ChatIdentity, code: string, message: string, extra = {}) {
    await audit.append({
      actorType: 'chat',
      actorId: identityKey(identity),
      action: 'identity.refused',
      outcome: 'refused',
      details: { reason: code, platform: identity.platform, tenantId: identity.tenantId, ...extra },
    });
    return new Forbidden(code, message);
  }

  const roles = createRoleChanges({ db, audit, clock, resolve: mustResolve });

  return {
    ensureHomeOrganization: () => ensureHomeOrganization(),

    async createOrganization(input: {
      name: string;
      external: boolean;
      allowedRoles: Role[];
      actorId?: string | null;
    }) {
      const p = parse(createOrgInput, input, 'organisation');
      return db.transaction(async (tx) => {
        const [row] = await tx
          .insert(organizations)
          .values({ name: p.name, external: p.external, allowedRoles: [...new Set(p.allowedRoles)] })
          .onConflictDoNothing()
          .returning();
        if (!row) throw new Conflict('org.exists', `An organisation named "${p.name}" already exists.`);
        await audit.append(
          {
            ...actor(p.actorId),
            action: 'org.created',
            outcome: 'ok',
            details: {
              orgId: row.id,
              name: row.name,
              external: row.external,
              allowedRoles: row.allowedRoles,
            },
          },
          tx,
        );
        return row;
      });
    },

    /** Connects a chat workspace/tenant to an organisation. Re-mapping to the same org is a no-op. */
    async mapTenant(input: { platform: string; tenantId: string; orgName: string; actorId?: string | null }) {
      const p = parse(mapTenantInput, input, 'tenant mapping');
      return db.transaction(async (tx) => {
        const org =
          p.orgName === HOME_ORG ? await ensureHomeOrganization(tx) : await findOrgByName(tx, p.orgName);
        if (!org) throw new NotFound('org.not_found', `No organisation "${p.orgName}". Create it first.`);
        const existing = await findTenantOrg(tx, p.platform, p.tenantId);
        if (existing) {
          if (existing.id === org.id) return { changed: false, orgId: org.id };
          throw new Conflict(
            'tenant.mapped_elsewhere',
            `${p.platform} tenant "${p.tenantId}" is already mapped to organisation "${existing.name}".`,
          );
        }
        await tx.insert(orgTenants).values({ platform: p.platform, tenantId: p.tenantId, orgId: org.id });
        await audit.append(
          {
            ...actor(p.actorId),
            action: 'tenant.mapped',
            outcome: 'ok',
            details: { platform: p.platform, tenantId: p.tenantId, orgId: org.id, orgName: org.name },
          },
          tx,
        );
        return { changed: true, orgId: org.id };
      });
    },

    async createUser(input: {
      username: string;
      displayName: string;
      email?: string | null;
      password: string;
      orgName?: string;
      actorId?: string | null;
    }): Promise<ResolvedUser> {
      const p = parse(createUserInput, input, 'user');
      // Hash before the transaction: argon2 is slow and must not hold a connection or lock.
      const passwordHash = await hashPassword(p.password);
      return db.transaction(async (tx) => {
        const org =
          !p.orgName || p.orgName === HOME_ORG
            ? await ensureHomeOrganization(tx)
            : await findOrgByName(tx, p.orgName);
        if (!org) throw new NotFound('org.not_found', `No organisation "${p.orgName}". Create it first.`);
        const [row] = await tx
          .insert(users)
          .values({
            username: p.username,
            displayName: p.displayName,
            email: p.email ?? null,
            orgId: org.id,
            passwordHash,
            createdAt: clock.now(),
          })
          .onConflictDoNothing()
          .returning({ id: users.id });
        if (!row) throw new Conflict('user.exists', `A user named "${p.username}" already exists.`);
        await audit.append(
          {
            ...actor(p.actorId),
            action: 'user.created',
            outcome: 'ok',
            details: { userId: row.id, username: p.username, displayName: p.displayName, org: org.name },
          },
          tx,
        );
        return (await resolveUser(tx, row.id))!;
      });
    },

    /**
     * By id (uuid) or username. Throws NotFound 'user.not_found'. Inside a transaction (e.g. a step-up's
     * onConfirmed) pass `tx`: on PGlite a query on the bare db waits for the open transaction forever.
     */
    getUser: (idOrUsername: string, tx?: DbOrTx) =>
      mustResolve(tx ?? db, parse(userRef, idOrUsername, 'user reference')),

    listUsers: () => resolveUsers(db),

    /** Chat identities on `platform` of enabled users holding `role` (who a chat card offers a decision). */
    chatIdentitiesWithRole: (p: Platform, role: Role) => chatIdentitiesWithRole(db, p, role),

    async linkChatIdentity(input: {
      userId: string;
      platform: string;
      tenantId: string;
      chatUserId: string;
      actorId?: string | null;
    }) {
      const p = parse(linkInput, input, 'chat identity');
      try {
        return await db.transaction(async (tx) => {
          const user = await mustResolve(tx, p.userId);
          const existing = await findIdentity(tx, p.platform, p.tenantId, p.chatUserId);
          if (existing) {
            if (existing.userId === user.id) return { changed: false, user };
            throw new Conflict(
              'identity.linked_elsewhere',
              `${identityKey(p)} is already linked to another user.`,
            );
          }
          const tenantOrg = await findTenantOrg(tx, p.platform, p.tenantId);
          if (tenantOrg && tenantOrg.id !== user.orgId) {
            throw new Forbidden(
              'identity.org_mismatch',
              `${p.platform} tenant "${p.tenantId}" belongs to organisation "${tenantOrg.name}", but ${user.username} is in "${user.orgName}".`,
            );
          }
          await tx.insert(chatIdentities).values({ ...p, userId: user.id });
          await audit.append(
            {
              ...actor(p.actorId),
              action: 'identity.linked',
              outcome: 'ok',
              details: { userId: user.id, username: user.username, identity: identityKey(p) },
            },
            tx,
          );
          return { changed: true, user };
        });
      } catch (e) {
        if (isUniqueViolation(e)) {
          throw new Conflict(
            'identity.linked_elsewhere',
            `${identityKey(p)} was linked by someone else just now.`,
          );
        }
        throw e;
      }
    },

    /**
     * The platform user behind a chat identity. Refuses (Forbidden, audited as `identity.refused`) an unmapped
     * tenant, an unlinked chat user, a disabled user, and a user whose organisation is not the tenant's.
     */
    async resolveChatIdentity(identity: ChatIdentity): Promise<ResolvedUser> {
      const p = parse(
        z.object({ platform, tenantId: chatId, chatUserId: chatId }),
        identity,
        'chat identity',
      );
      const key = identityKey(p);
      const tenantOrg = await findTenantOrg(db, p.platform, p.tenantId);
      if (!tenantOrg) {
        throw await refuseIdentity(
          identity,
          'identity.tenant_unmapped',
          `This ${p.platform} workspace/tenant ("${p.tenantId}") is not connected to Active Response. ` +
            'A platform admin must map it to an organisation first.',
        );
      }
      const link = await findIdentity(db, p.platform, p.tenantId, p.chatUserId);
      if (!link) {
        throw await refuseIdentity(
          identity,
          'identity.unknown',
          `Your chat account is not linked to an Active Response user. Ask a platform admin to link ${key}.`,
        );
      }
      const user = await resolveUser(db, link.userId);
      if (!user || user.disabled) {
        throw await refuseIdentity(
          identity,
          'identity.disabled',
          'Your Active Response user is disabled. Ask a platform admin if this is a mistake.',
          { userId: link.userId },
        );
      }
      if (user.orgId !== tenantOrg.id) {
        throw await refuseIdentity(
          identity,
          'identity.org_mismatch',
          `Your user belongs to organisation "${user.orgName}", but this workspace/tenant is mapped to "${tenantOrg.name}". Ask a platform admin.`,
          { userId: user.id },
        );
      }
      return user;
    },

    /** Idempotent: granting a role already held returns `{ changed: false }` and writes nothing. */
    grantRole: (input: { actorId?: string | null; userId: string; role: Role }, tx?: DbOrTx) =>
      roles.changeRole('grant', input, tx),

    /**
     * Idempotent: revoking a role not held returns `{ changed: false }` and writes nothing. A revoke ends the
     * user's open step-up links and windows. With `actorId`, the actor must be an enabled admin when the
     * change is applied (Forbidden 'role.actor_not_admin'), for grants too.
     */
    revokeRole: (input: { actorId?: string | null; userId: string; role: Role }, tx?: DbOrTx) =>
      roles.changeRole('revoke', input, tx),

    requireRole,

    async disableUser(input: { userId: string; actorId?: string | null }) {
      const p = parse(z.object({ userId: userRef, actorId: optionalActor }), input, 'user');
      return db.transaction(async (tx) => {
        const user = await mustResolve(tx, p.userId);
        if (user.disabled) return { changed: false, user };
        await tx.update(users).set({ disabled: true }).where(eq(users.id, user.id));
        // A disabled user keeps no live step-up window: close any that are open.
        const now = clock.now();
        await tx
          .update(stepUpWindows)
          .set({ expiresAt: now })
          .where(and(eq(stepUpWindows.userId, user.id), gt(stepUpWindows.expiresAt, now)));
        await audit.append(
          {
            ...actor(p.actorId),
            action: 'user.disabled',
            outcome: 'ok',
            details: { userId: user.id, username: user.username },
          },
          tx,
        );
        return { changed: true, user: (await resolveUser(tx, user.id))! };
      });
    },

    async setPassword(input: { userId: string; password: string; actorId?: string | null }) {
      const p = parse(
        z.object({ userId: userRef, password: z.string().max(4096, 'too long'), actorId: optionalActor }),
        input,
        'password change',
      );
      const passwordHash = await hashPassword(p.password);
      await db.transaction(async (tx) => {
        const user = await mustResolve(tx, p.userId);
        await tx.update(users).set({ passwordHash }).where(eq(users.id, user.id));
        await audit.append(
          {
            ...actor(p.actorId),
            action: 'user.password_set',
            outcome: 'ok',
            details: { userId: user.id, username: user.username },
          },
          tx,
        );
      });
    },
  };
}

export type UserService = ReturnType<typeof createUserService>;

/** Throws Forbidden 'policy.no_role' unless the user holds `role`. */
export function requireRole(user: ResolvedUser, role: Role): void {
  if (!user.roles.includes(role)) {
    throw new Forbidden(
      'policy.no_role',
      `${user.username} does not hold the ${role} role needed for this. Ask a platform admin to grant it.`,
    );
  }
}
