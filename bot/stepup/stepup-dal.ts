// Queries behind the step-up service. Lock helpers use `select ... for update` so a decision re-checks
// the row it is about to change; the caller owns the transaction.
import { and, count, desc, eq, gt, inArray } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { auditLog, type StepUpPurpose, stepUpChallenges, stepUpWindows, users } from '../../db/schema.ts';
import type { ChallengeView, StepUpWindow } from './stepup-types.ts';

export type ChallengeRow = typeof stepUpChallenges.$inferSelect;
export type UserRow = typeof users.$inferSelect;

/** Audit actions that count as one step-up or enrolment attempt for the per-user rate limit. */
export const ATTEMPT_ACTIONS = [
  'stepup.attempt',
  'totp.enrol_password',
  'totp.enrol_attempt',
  'totp.enrolled',
];

export async function findChallenge(db: DbOrTx, tokenHash: string, lock = false) {
  const q = db.select().from(stepUpChallenges).where(eq(stepUpChallenges.tokenHash, tokenHash)).limit(1);
  const [row] = lock ? await q.for('update') : await q;
  return row;
}

export async function findUser(db: DbOrTx, userId: string, lock = false): Promise<UserRow | undefined> {
  const q = db.select().from(users).where(eq(users.id, userId)).limit(1);
  const [row] = lock ? await q.for('update') : await q;
  return row;
}

export function toChallengeView(ch: ChallengeRow, user: UserRow): ChallengeView {
  return {
    id: ch.id,
    userId: ch.userId,
    username: user.username,
    displayName: user.displayName,
    purpose: ch.purpose,
    subject: ch.subject,
    requestId: ch.requestId,
    expiresAt: ch.expiresAt,
  };
}

export function toWindow(w: typeof stepUpWindows.$inferSelect): StepUpWindow {
  return { id: w.id, userId: w.userId, purpose: w.purpose, subject: w.subject, expiresAt: w.expiresAt };
}

/**
 * Attempts by this user since `since`, read from the audit log: it is durable and shared by every process,
 * so the limit holds across restarts and bot copies.
 */
export async function countAttemptsSince(db: DbOrTx, userId: string, since: Date): Promise<number> {
  const [row] = await db
    .select({ n: count() })
    .from(auditLog)
    .where(
      and(eq(auditLog.actorId, userId), inArray(auditLog.action, ATTEMPT_ACTIONS), gt(auditLog.at, since)),
    );
  return Number(row?.n ?? 0);
}

/**
 * The user's newest live window opened for one of `purposes` (and bound to `subject` when given), or null.
 * There is deliberately no "any live window": a window only ever unlocks what it was opened for.
 */
export async function latestLiveWindow(
  db: DbOrTx,
  userId: string,
  now: Date,
  purposes: readonly StepUpPurpose[],
  subject?: string,
) {
  if (!purposes.length) return null;
  const [row] = await db
    .select()
    .from(stepUpWindows)
    .where(
      and(
        eq(stepUpWindows.userId, userId),
        gt(stepUpWindows.expiresAt, now),
        inArray(stepUpWindows.purpose, [...purposes]),
        subject === undefined ? undefined : eq(stepUpWindows.subject, subject),
      ),
    )
    .orderBy(desc(stepUpWindows.expiresAt))
    .limit(1);
  return row ? toWindow(row) : null;
}
