// Queries behind the user service. Each takes the database or an open transaction, so a caller can make
// a change and read the result back inside one transaction.
import { and, asc, eq, inArray, isNull } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import {
  chatIdentities,
  organizations,
  orgTenants,
  type Platform,
  type Role,
  roleGrants,
  users,
} from '../../db/schema.ts';
import type { ResolvedUser } from './user-types.ts';

export type UserRow = typeof users.$inferSelect;
export type OrgRow = typeof organizations.$inferSelect;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(s: string): boolean {
  return UUID_RE.test(s);
}

export async function findUserRow(db: DbOrTx, idOrUsername: string): Promise<UserRow | undefined> {
  const where = isUuid(idOrUsername) ? eq(users.id, idOrUsername) : eq(users.username, idOrUsername);
  const [row] = await db.select().from(users).where(where).limit(1);
  return row;
}

/** Locks the user row until the transaction ends: the step-up and grant paths re-check state under it. */
export async function lockUserRow(tx: DbOrTx, userId: string): Promise<UserRow | undefined> {
  const [row] = await tx.select().from(users).where(eq(users.id, userId)).for('update');
  return row;
}

export async function findOrgByName(db: DbOrTx, name: string): Promise<OrgRow | undefined> {
  const [row] = await db.select().from(organizations).where(eq(organizations.name, name)).limit(1);
  return row;
}

export async function findOrgById(db: DbOrTx, id: string): Promise<OrgRow | undefined> {
  const [row] = await db.select().from(organizations).where(eq(organizations.id, id)).limit(1);
  return row;
}

export async function findTenantOrg(
  db: DbOrTx,
  platform: Platform,
  tenantId: string,
): Promise<OrgRow | undefined> {
  const [row] = await db
    .select({ org: organizations })
    .from(orgTenants)
    .innerJoin(organizations, eq(organizations.id, orgTenants.orgId))
    .where(and(eq(orgTenants.platform, platform), eq(orgTenants.tenantId, tenantId)))
    .limit(1);
  return row?.org;
}

export async function findIdentity(db: DbOrTx, platform: Platform, tenantId: string, chatUserId: string) {
  const [row] = await db
    .select()
    .from(chatIdentities)
    .where(
      and(
        eq(chatIdentities.platform, platform),
        eq(chatIdentities.tenantId, tenantId),
        eq(chatIdentities.chatUserId, chatUserId),
      ),
    )
    .limit(1);
  return row;
}

export async function activeRoles(db: DbOrTx, userIds: string[]): Promise<Map<string, Role[]>> {
  const out = new Map<string, Role[]>();
  if (!userIds.length) return out;
  const rows = await db
    .select({ userId: roleGrants.userId, role: roleGrants.role })
    .from(roleGrants)
    .where(and(inArray(roleGrants.userId, userIds), isNull(roleGrants.revokedAt)))
    .orderBy(asc(roleGrants.role));
  for (const r of rows) out.set(r.userId, [...(out.get(r.userId) ?? []), r.role]);
  return out;
}

function toResolved(u: UserRow, org: OrgRow, roles: Role[]): ResolvedUser {
  return {
    id: u.id,
    username: u.username,
    displayName: u.displayName,
    orgId: org.id,
    orgName: org.name,
    external: org.external,
    roles,
    mfaEnrolled: u.totpEnrolledAt != null,
    disabled: u.disabled,
  };
}

export async function resolveUsers(db: DbOrTx, userIds?: string[]): Promise<ResolvedUser[]> {
  const rows = await db
    .select({ user: users, org: organizations })
    .from(users)
    .innerJoin(organizations, eq(organizations.id, users.orgId))
    .where(userIds ? inArray(users.id, userIds) : undefined)
    .orderBy(asc(users.username));
  const roles = await activeRoles(
    db,
    rows.map((r) => r.user.id),
  );
  return rows.map((r) => toResolved(r.user, r.org, roles.get(r.user.id) ?? []));
}

export async function resolveUser(db: DbOrTx, userId: string): Promise<ResolvedUser | undefined> {
  if (!isUuid(userId)) return undefined;
  const [u] = await resolveUsers(db, [userId]);
  return u;
}

/**
 * The chat identities on `platform` of enabled users who hold `role`: who may be offered a decision in chat
 * (a Teams card shows Approve and Deny only to these people; a click is still checked in full).
 */
export async function chatIdentitiesWithRole(db: DbOrTx, platform: Platform, role: Role) {
  return db
    .select({ userId: users.id, tenantId: chatIdentities.tenantId, chatUserId: chatIdentities.chatUserId })
    .from(chatIdentities)
    .innerJoin(users, eq(users.id, chatIdentities.userId))
    .innerJoin(
      roleGrants,
      and(eq(roleGrants.userId, users.id), eq(roleGrants.role, role), isNull(roleGrants.revokedAt)),
    )
    .where(and(eq(chatIdentities.platform, platform), eq(users.disabled, false)))
    .orderBy(asc(chatIdentities.chatUserId));
}
