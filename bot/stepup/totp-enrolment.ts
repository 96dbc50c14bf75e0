// TOTP enrolment: a secret is generated and stored sealed (AES-256-GCM, bound to the user id), shown once
// to be scanned, and becomes active only when the user proves it with one code. Until then
// `totp_enrolled_at` stays null and the user cannot step up. From an enrolment link, the account password
// comes first: a link forwarded, logged or shoulder-surfed must not be enough to see the secret.
import { and, eq, gt } from 'drizzle-orm';
import { z } from 'zod';
import type { Db, DbOrTx } from '../../db/client.ts';
import { stepUpChallenges, stepUpWindows, users } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { verifyPassword } from '../crypto/passwords.ts';
import { open, seal } from '../crypto/secret-box.ts';
import { hashToken } from '../crypto/tokens.ts';
import { type AppError, BadRequest, Conflict, describeZodIssues, Forbidden, NotFound } from '../errors.ts';
import type { Clock } from '../ports.ts';
import { type ChallengeRow, findChallenge, findUser, toChallengeView, type UserRow } from './stepup-dal.ts';
import { type AttemptGuard, formatUtc, type Refusal } from './stepup-guard.ts';
import type { ChallengeView } from './stepup-types.ts';
import { decodeTotpSecret, encodeTotpSecret, generateTotpSecret, otpauthUri, verifyTotp } from './totp.ts';

const userIdSchema = z.string().uuid('must be a user id');
const confirmSchema = z.object({
  userId: userIdSchema,
  code: z.string().max(64, 'too long'),
  token: z.string().min(1).max(200).optional(),
  sourceIp: z.string().max(100).optional(),
  userAgent: z.string().max(500).optional(),
});

const passwordSchema = z.object({
  token: z.string().min(1).max(200),
  // Over-long passwords are simply wrong (verifyPassword says no), and count as a failed attempt.
  password: z.string(),
  sourceIp: z.string().max(100).optional(),
  userAgent: z.string().max(500).optional(),
});

/** Why an enrolment link cannot be used now (wrong kind, used, expired, user already enrolled), or null. */
function enrolLinkRefusal(ch: ChallengeRow, u: UserRow, now: Date): Refusal | null {
  if (ch.purpose !== 'enrol_totp') {
    return {
      reason: 'wrong_purpose',
      error: new BadRequest(
        'stepup.wrong_purpose',
        'This is not an enrolment link. Open it on its own page.',
      ),
    };
  }
  if (ch.usedAt) {
    return {
      reason: 'link_used',
      error: new Conflict('stepup.link_used', 'This enrolment link was already used.'),
    };
  }
  if (ch.expiresAt <= now) {
    return {
      reason: 'link_expired',
      error: new Conflict(
        'stepup.link_expired',
        'This enrolment link has expired. Ask the bot for a new one.',
      ),
    };
  }
  if (u.totpEnrolledAt) {
    return {
      reason: 'already_enrolled',
      error: new Conflict(
        'totp.already_enrolled',
        'Your authenticator is already enrolled. If you lost it, ask a platform admin to reset it.',
      ),
    };
  }
  return null;
}

function notFound(userId: string) {
  return new NotFound('user.not_found', `No user with id "${userId}".`);
}

export function createTotpEnrolment(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  secretKey: Buffer;
  totpKey: Buffer;
  issuer: string;
  guard: AttemptGuard;
}) {
  const { db, audit, clock, secretKey, totpKey, issuer, guard } = deps;

  function parse<T extends z.ZodType>(schema: T, input: unknown): z.output<T> {
    const res = schema.safeParse(input);
    if (!res.success)
      throw new BadRequest('totp.invalid', `Invalid input: ${describeZodIssues(res.error.issues)}.`);
    return res.data;
  }

  type Meta = { sourceIp: string | null; userAgent: string | null };

  /** One `totp.enrol_password` record; never carries the password. */
  function auditPassword(
    tx: DbOrTx | undefined,
    who: { ch?: ChallengeRow; user?: UserRow },
    outcome: 'ok' | 'refused',
    reason: string,
    meta: Meta,
  ) {
    return audit.append(
      {
        actorType: who.user ? 'user' : 'anonymous',
        actorId: who.user?.id ?? null,
        action: 'totp.enrol_password',
        outcome,
        details: {
          reason,
          username: who.user?.username ?? null,
          challengeId: who.ch?.id ?? null,
          ...meta,
        },
      },
      tx,
    );
  }

  return {
    /**
     * The first step on an enrolment link: the account's password, checked before the page may show the
     * secret. Every attempt is audited (`totp.enrol_password`); a wrong password counts toward the lockout
     * like a failed step-up. Returns the link's challenge; throws NotFound/Conflict for a bad link,
     * RateLimited when locked, Forbidden 'totp.password_wrong' for a wrong password.
     */
    async verifyEnrolmentPassword(input: {
      token: string;
      password: string;
      sourceIp?: string;
      userAgent?: string;
    }): Promise<ChallengeView> {
      const p = parse(passwordSchema, input);
      const now = clock.now();
      const meta: Meta = { sourceIp: p.sourceIp ?? null, userAgent: p.userAgent ?? null };
      const tokenHash = hashToken(p.token, secretKey);

      // Cheap refusals first, without locks; the audit records get their own transactions.
      const ch = await findChallenge(db, tokenHash);
      const user = ch && (await findUser(db, ch.userId));
      if (!ch || !user) {
        await auditPassword(undefined, {}, 'refused', 'link_unknown', meta);
        throw new NotFound(
          'stepup.link_unknown',
          'This enrolment link is not valid. Ask the bot for a new one.',
        );
      }
      const early = enrolLinkRefusal(ch, user, now) ?? (await guard.refusal(db, user, now));
      if (early) {
        await auditPassword(undefined, { ch, user }, 'refused', early.reason, meta);
        throw early.error;
      }
      // argon2 takes a while: outside any transaction, so it holds no row others wait on.
      const passwordOk = await verifyPassword(user.passwordHash, p.password);

      const result = await db.transaction(async (tx): Promise<{ error: AppError } | ChallengeView> => {
        const c = (await findChallenge(tx, tokenHash, true))!;
        const u = (await findUser(tx, c.userId, true))!;
        const refusal = enrolLinkRefusal(c, u, now) ?? (await guard.refusal(tx, u, now));
        if (refusal) {
          await auditPassword(tx, { ch: c, user: u }, 'refused', refusal.reason, meta);
          return { error: refusal.error };
        }
        // A password changed in between invalidates what was verified above.
        if (!passwordOk || u.passwordHash !== user.passwordHash) {
          const { lockedUntil, left } = await guard.recordFailure(tx, u, now);
          await auditPassword(tx, { ch: c, user: u }, 'refused', 'password_wrong', meta);
          const tail = lockedUntil
            ? ` Too many failed attempts: locked until ${formatUtc(lockedUntil)}.`
            : ` ${left} attempt${left === 1 ? '' : 's'} left before a temporary lock.`;
          return { error: new Forbidden('totp.password_wrong', `That password was not accepted.${tail}`) };
        }
        await auditPassword(tx, { ch: c, user: u }, 'ok', 'ok', meta);
        return toChallengeView(c, u);
      });
      if ('error' in result) throw result.error;
      return result;
    },

    /**
     * Returns the pending secret (base32) and its otpauth URI, creating and storing a sealed secret when
     * none is pending. Calling it again before confirmation shows the same secret, so reloading the page
     * does not invalidate an already scanned QR code. Conflict 'totp.already_enrolled' once enrolled.
     */
    async startTotpEnrolment(userId: string): Promise<{ secret: string; otpauthUri: string }> {
      const id = parse(userIdSchema, userId);
      return db.transaction(async (tx) => {
        const u = await findUser(tx, id, true);
        if (!u) throw notFound(id);
        if (u.disabled)
          throw new Forbidden('stepup.user_disabled', 'Your user is disabled. Ask a platform admin.');
        if (u.totpEnrolledAt) {
          throw new Conflict(
            'totp.already_enrolled',
            'Your authenticator is already enrolled. If you lost it, ask a platform admin to reset it.',
          );
        }
        let secret: string | null = null;
        if (u.totpSecretEnc) {
          try {
            secret = encodeTotpSecret(open(u.totpSecretEnc, totpKey, u.id));
          } catch {
            secret = null; // unreadable (key rotated?): start over with a new secret
          }
        }
        if (!secret) {
          secret = generateTotpSecret();
          const sealed = seal(Buffer.from(decodeTotpSecret(secret)), totpKey, u.id);
          await tx.update(users).set({ totpSecretEnc: sealed, totpLastStep: null }).where(eq(users.id, u.id));
          await audit.append(
            {
              actorType: 'user',
              actorId: u.id,
              action: 'totp.enrolment_started',
              outcome: 'ok',
              details: { username: u.username },
            },
            tx,
          );
        }
        return { secret, otpauthUri: otpauthUri({ issuer, label: u.username, secret }) };
      });
    },

    /**
     * Activates the pending secret when `code` is right. A wrong code is Forbidden 'totp.code_wrong' and counts
     * toward the lockout. With `token` (the enrolment link), the link is consumed in the same transaction.
     */
    async confirmTotpEnrolment(
      userId: string,
      code: string,
      opts: { token?: string; sourceIp?: string; userAgent?: string } = {},
    ): Promise<{ enrolledAt: Date }> {
      const p = parse(confirmSchema, { userId, code, ...opts });
      const now = clock.now();
      const meta = { sourceIp: p.sourceIp ?? null, userAgent: p.userAgent ?? null };
      const result = await db.transaction(async (tx): Promise<{ error: AppError } | { enrolledAt: Date }> => {
        const u = await findUser(tx, p.userId, true);
        if (!u) return { error: notFound(p.userId) };
        const refuse = async (reason: string, error: AppError) => {
          await audit.append(
            {
              actorType: 'user',
              actorId: u.id,
              action: 'totp.enrol_attempt',
              outcome: 'refused',
              details: { username: u.username, reason, ...meta },
            },
            tx,
          );
          return { error };
        };
        if (u.totpEnrolledAt) {
          return refuse(
            'already_enrolled',
            new Conflict('totp.already_enrolled', 'Your authenticator is already enrolled.'),
          );
        }
        if (!u.totpSecretEnc) {
          return refuse(
            'not_started',
            new Conflict('totp.not_started', 'No enrolment is in progress. Open your enrolment link again.'),
          );
        }
        const refusal = await guard.refusal(tx, u, now);
        if (refusal) return refuse(refusal.reason, refusal.error);
        let challengeId: string | null = null;
        if (p.token) {
          const ch = await findChallenge(tx, hashToken(p.token, secretKey), true);
          if (!ch || ch.userId !== u.id || ch.purpose !== 'enrol_totp') {
            return refuse(
              'link_unknown',
              new NotFound(
                'stepup.link_unknown',
                'This enrolment link is not valid. Ask the bot for a new one.',
              ),
            );
          }
          if (ch.usedAt)
            return refuse(
              'link_used',
              new Conflict('stepup.link_used', 'This enrolment link was already used.'),
            );
          if (ch.expiresAt <= now) {
            return refuse(
              'link_expired',
              new Conflict(
                'stepup.link_expired',
                'This enrolment link has expired. Ask the bot for a new one.',
              ),
            );
          }
          challengeId = ch.id;
        }
        const secret = open(u.totpSecretEnc, totpKey, u.id);
        const res = await verifyTotp({
          secret,
          code: p.code,
          epochSeconds: Math.floor(now.getTime() / 1000),
        });
        if (!res.valid) {
          const { lockedUntil } = await guard.recordFailure(tx, u, now);
          const hint = lockedUntil
            ? ' Too many wrong codes: try again later.'
            : ' Check the time on your phone and try the current code.';
          return refuse('code_wrong', new Forbidden('totp.code_wrong', `That code was not accepted.${hint}`));
        }
        await tx
          .update(users)
          .set({ totpEnrolledAt: now, totpLastStep: res.timeStep!, failedAttempts: 0, lockedUntil: null })
          .where(eq(users.id, u.id));
        if (challengeId)
          await tx.update(stepUpChallenges).set({ usedAt: now }).where(eq(stepUpChallenges.id, challengeId));
        await audit.append(
          {
            actorType: 'user',
            actorId: u.id,
            action: 'totp.enrolled',
            outcome: 'ok',
            details: { username: u.username, ...meta },
          },
          tx,
        );
        return { enrolledAt: now };
      });
      if ('error' in result) throw result.error;
      return result;
    },

    /** Admin: forget the user's authenticator (lost phone). Closes their open windows; they must enrol again. */
    async resetTotp(userId: string, actorId: string | null): Promise<void> {
      const id = parse(userIdSchema, userId);
      const actor = actorId == null ? null : parse(userIdSchema, actorId);
      const now = clock.now();
      await db.transaction(async (tx) => {
        const u = await findUser(tx, id, true);
        if (!u) throw notFound(id);
        await tx
          .update(users)
          .set({
            totpSecretEnc: null,
            totpEnrolledAt: null,
            totpLastStep: null,
            failedAttempts: 0,
            lockedUntil: null,
          })
          .where(eq(users.id, u.id));
        await tx
          .update(stepUpWindows)
          .set({ expiresAt: now })
          .where(and(eq(stepUpWindows.userId, u.id), gt(stepUpWindows.expiresAt, now)));
        await audit.append(
          {
            actorType: actor ? 'user' : 'system',
            actorId: actor,
            action: 'totp.reset',
            outcome: 'ok',
            details: { userId: u.id, username: u.username },
          },
          tx,
        );
      });
    },
  };
}
