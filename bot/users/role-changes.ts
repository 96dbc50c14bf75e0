// Granting and revoking roles. The data rules (a role must be allowed for the user's organisation) and the
// actor's authority are checked inside the transaction that applies the change, under row locks, so a change
// carried out later through a step-up link is judged by who the actor is then, not when the link was made.
import { and, eq, gt, isNull } from 'drizzle-orm';
import type { Db, DbOrTx } from '../../db/client.ts';
import { organizations, roleGrants, stepUpChallenges, stepUpWindows } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { Forbidden } from '../errors.ts';
import type { Clock } from '../ports.ts';
import { lockUserRow, resolveUser } from './user-dal.ts';
import { actor, parse, roleInput } from './user-inputs.ts';
import type { ResolvedUser } from './user-types.ts';

export function createRoleChanges(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  /** By id or username; throws NotFound 'user.not_found'. */
  resolve: (tx: DbOrTx, idOrUsername: string) => Promise<ResolvedUser>;
}) {
  const { db, audit, clock } = deps;

  /**
   * The actor of a role change must be an enabled admin at the moment the change is applied, not only when
   * the link was made: a grant link minted before a demotion is worth nothing after it. Read inside the
   * transaction that applies the change, after the rows are locked.
   */
  async function requireAdminActor(t: DbOrTx, actorId: string) {
    const who = await resolveUser(t, actorId);
    if (!who || who.disabled || !who.roles.includes('admin')) {
      throw new Forbidden(
        'role.actor_not_admin',
        `${who?.username ?? 'This user'} is not an admin (any more), so cannot change roles.`,
      );
    }
  }

  /**
   * Ends the user's open step-up links and live windows, so authority taken away is not used through a
   * link minted earlier. Runs before the user row is locked: a completion in flight holds its link's row
   * and then waits for the user row, so taking them in the other order could deadlock with it.
   */
  async function closeOpenStepUps(t: DbOrTx, userId: string, now: Date) {
    const links = await t
      .update(stepUpChallenges)
      .set({ expiresAt: now })
      .where(
        and(
          eq(stepUpChallenges.userId, userId),
          isNull(stepUpChallenges.usedAt),
          gt(stepUpChallenges.expiresAt, now),
        ),
      )
      .returning({ id: stepUpChallenges.id });
    const windows = await t
      .update(stepUpWindows)
      .set({ expiresAt: now })
      .where(and(eq(stepUpWindows.userId, userId), gt(stepUpWindows.expiresAt, now)))
      .returning({ id: stepUpWindows.id });
    return { closedLinks: links.length, closedWindows: windows.length };
  }

  async function changeRole(kind: 'grant' | 'revoke', input: unknown, tx?: DbOrTx) {
    const p = parse(roleInput, input, 'role change');
    const run = async (t: DbOrTx) => {
      const target = await deps.resolve(t, p.userId);
      const now = clock.now();
      let closed: { closedLinks: number; closedWindows: number } | undefined;
      if (kind === 'revoke') {
        if (!target.roles.includes(p.role)) {
          if (p.actorId) await requireAdminActor(t, p.actorId);
          return { changed: false, user: target };
        }
        closed = await closeOpenStepUps(t, target.id, now);
      }
      // Lock the actor and the user (in id order, so two admins changing each other cannot deadlock) so a
      // concurrent demotion, disable or org change cannot interleave with the checks below.
      for (const id of [...new Set([p.actorId, target.id].filter((x): x is string => Boolean(x)))].sort())
        await lockUserRow(t, id);
      if (p.actorId) await requireAdminActor(t, p.actorId);
      if (kind === 'grant') {
        const [org] = await t.select().from(organizations).where(eq(organizations.id, target.orgId));
        if (!org?.allowedRoles.includes(p.role)) {
          throw new Forbidden(
            'role.not_allowed_for_org',
            `${target.username} belongs to organisation "${target.orgName}", which may not hold the ${p.role} role` +
              ` (allowed: ${org?.allowedRoles.join(', ') || 'none'}).`,
          );
        }
        const rows = await t
          .insert(roleGrants)
          .values({ userId: target.id, role: p.role, grantedBy: p.actorId ?? null, grantedAt: now })
          .onConflictDoNothing()
          .returning({ id: roleGrants.id });
        if (!rows.length) return { changed: false, user: target };
      } else {
        const rows = await t
          .update(roleGrants)
          .set({ revokedAt: now, revokedBy: p.actorId ?? null })
          .where(
            and(eq(roleGrants.userId, target.id), eq(roleGrants.role, p.role), isNull(roleGrants.revokedAt)),
          )
          .returning({ id: roleGrants.id });
        if (!rows.length) return { changed: false, user: target };
      }
      await audit.append(
        {
          ...actor(p.actorId),
          action: kind === 'grant' ? 'role.granted' : 'role.revoked',
          outcome: 'ok',
          details: { userId: target.id, username: target.username, role: p.role, ...closed },
        },
        t,
      );
      return { changed: true, user: (await resolveUser(t, target.id))! };
    };
    if (tx) return run(tx);
    try {
      return await db.transaction(run);
    } catch (err) {
      // Refused role changes are audited too; with a caller tx (a step-up) the step-up's record covers it.
      if (err instanceof Forbidden) {
        await audit.append({
          ...actor(p.actorId),
          action: 'role.change_refused',
          outcome: 'refused',
          details: { kind, userId: p.userId, role: p.role, code: err.code },
        });
      }
      throw err;
    }
  }

  return { changeRole };
}
