// The rules every password/TOTP attempt passes through, shared by step-up and TOTP enrolment: disabled
// users, lockout, the per-user attempt rate, and counting failures toward the lockout. The caller holds the
// user row locked (`for update`) so two attempts cannot both read the same failure count.
import { eq } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { users } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { type AppError, Forbidden, RateLimited } from '../errors.ts';
import { countAttemptsSince, type UserRow } from './stepup-dal.ts';

export interface GuardConfig {
  lockoutThreshold: number;
  lockoutSeconds: number;
  maxAttemptsPerMinute: number;
}

export interface Refusal {
  /** Short reason code for the audit record, e.g. 'locked'. */
  reason: string;
  error: AppError;
}

/** "2026-11-28 09:15 UTC": precise enough for a person waiting out a lock. */
export function formatUtc(d: Date): string {
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

export function createAttemptGuard(deps: { audit: AuditService } & GuardConfig) {
  const { audit, lockoutThreshold, lockoutSeconds, maxAttemptsPerMinute } = deps;

  return {
    /** Why this user may not make an attempt now, or null. Reads with `db` (the caller's tx). */
    async refusal(db: DbOrTx, user: UserRow, now: Date): Promise<Refusal | null> {
      if (user.disabled) {
        return {
          reason: 'user_disabled',
          error: new Forbidden('stepup.user_disabled', 'Your user is disabled. Ask a platform admin.'),
        };
      }
      if (user.lockedUntil && user.lockedUntil > now) {
        return {
          reason: 'locked',
          error: new RateLimited(
            'stepup.locked',
            `Too many failed attempts: confirmation is locked until ${formatUtc(user.lockedUntil)}. Try again after that, or ask a platform admin.`,
            { lockedUntil: user.lockedUntil.toISOString() },
          ),
        };
      }
      const recent = await countAttemptsSince(db, user.id, new Date(now.getTime() - 60_000));
      if (recent >= maxAttemptsPerMinute) {
        return {
          reason: 'rate_limited',
          error: new RateLimited(
            'stepup.rate_limited',
            `Too many attempts in the last minute (limit ${maxAttemptsPerMinute}). Wait a minute and try again.`,
          ),
        };
      }
      return null;
    },

    /**
     * Counts one failed attempt; at the threshold the user is locked for lockoutSeconds (audited
     * `stepup.lockout`) and the counter starts again. Returns the lock end when this attempt caused it.
     */
    async recordFailure(
      tx: DbOrTx,
      user: UserRow,
      now: Date,
    ): Promise<{ lockedUntil: Date | null; left: number }> {
      const failed = user.failedAttempts + 1;
      if (failed < lockoutThreshold) {
        await tx.update(users).set({ failedAttempts: failed }).where(eq(users.id, user.id));
        return { lockedUntil: null, left: lockoutThreshold - failed };
      }
      const lockedUntil = new Date(now.getTime() + lockoutSeconds * 1000);
      await tx.update(users).set({ failedAttempts: 0, lockedUntil }).where(eq(users.id, user.id));
      await audit.append(
        {
          actorType: 'user',
          actorId: user.id,
          action: 'stepup.lockout',
          outcome: 'refused',
          details: {
            username: user.username,
            failedAttempts: failed,
            lockedUntil: lockedUntil.toISOString(),
          },
        },
        tx,
      );
      return { lockedUntil, left: 0 };
    },
  };
}

export type AttemptGuard = ReturnType<typeof createAttemptGuard>;
