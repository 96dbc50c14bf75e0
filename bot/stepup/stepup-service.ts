// Step-up: single-use links, password + TOTP confirmation, and the time-limited window it opens. The
// decision is made in one transaction holding the challenge and user rows (`for update`), so two
// concurrent completions of one link give exactly one success, and whatever the step-up was for
// (`onConfirmed`) commits atomically with it. Refusals commit their failure count and audit record in that
// same transaction; only an error thrown by `onConfirmed` rolls back, and is then recorded separately.
import { eq, sql } from 'drizzle-orm';
import { z } from 'zod';
import type { Db, DbOrTx } from '../../db/client.ts';
import { type StepUpPurpose, stepUpChallenges, stepUpWindows, users } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { verifyPassword } from '../crypto/passwords.ts';
import { deriveKey, open } from '../crypto/secret-box.ts';
import { hashToken, newToken } from '../crypto/tokens.ts';
import { type AppError, Conflict, Forbidden, isAppError, NotFound } from '../errors.ts';
import type { Clock } from '../ports.ts';
import { windowSubject } from './stepup-binding.ts';
import {
  type ChallengeRow,
  findChallenge,
  findUser,
  latestLiveWindow,
  toChallengeView,
  toWindow,
  type UserRow,
} from './stepup-dal.ts';
import { createAttemptGuard, formatUtc } from './stepup-guard.ts';
import {
  ASK_AGAIN,
  attemptSchema,
  createSchema,
  enrolmentRefusal,
  linkRefusal,
  parse,
  tokenSchema,
} from './stepup-rules.ts';
import type { ChallengeView, CreatedChallenge, StepUpAttempt, StepUpWindow } from './stepup-types.ts';
import { verifyTotp } from './totp.ts';
import { createTotpEnrolment } from './totp-enrolment.ts';

export interface StepUpDeps {
  db: Db;
  audit: AuditService;
  clock: Clock;
  /** The platform secret key (config); sub-keys for token hashes and TOTP secrets are derived from it. */
  secretKey: Buffer;
  /** Base URL of the step-up pages, without a trailing slash. */
  publicUrl: string;
  windowSeconds?: number;
  linkTtlSeconds?: number;
  lockoutThreshold?: number;
  lockoutSeconds?: number;
  maxAttemptsPerMinute?: number;
  /** Shown in authenticator apps next to the account. */
  issuer?: string;
}

/**
 * Runs after a successful step-up inside its transaction; throwing rolls the whole step-up back. Do all
 * database work through `tx` (on PGlite the bare db would wait for this transaction forever), and send
 * nothing to chat or agents here: do that after `complete` returns.
 */
export type OnConfirmed = (challenge: ChallengeView, window: StepUpWindow, tx: DbOrTx) => Promise<void>;

export function createStepUpService(deps: StepUpDeps) {
  const { db, audit, clock, secretKey } = deps;
  const publicUrl = deps.publicUrl.replace(/\/+$/, '');
  const windowSeconds = deps.windowSeconds ?? 600;
  const linkTtlSeconds = deps.linkTtlSeconds ?? 900;
  const lockoutThreshold = deps.lockoutThreshold ?? 5;
  const lockoutSeconds = deps.lockoutSeconds ?? 900;
  const totpKey = deriveKey(secretKey, 'totp-secret');
  const guard = createAttemptGuard({
    audit,
    lockoutThreshold,
    lockoutSeconds,
    maxAttemptsPerMinute: deps.maxAttemptsPerMinute ?? 10,
  });
  const enrolment = createTotpEnrolment({
    db,
    audit,
    clock,
    secretKey,
    totpKey,
    issuer: deps.issuer ?? 'Active Response',
    guard,
  });

  type Meta = { sourceIp?: string; userAgent?: string };

  /**
   * One `stepup.attempt` record. Never carries the password or the code. Without `tx` it gets its own
   * transaction (the audit chain's lock is transaction-scoped, so never pass the bare `db`).
   */
  function auditAttempt(
    tx: DbOrTx | undefined,
    who: { ch?: ChallengeRow; user?: UserRow },
    outcome: 'ok' | 'refused' | 'failed',
    reason: string,
    meta: Meta,
    extra: Record<string, unknown> = {},
  ) {
    return audit.append(
      {
        actorType: who.user ? 'user' : 'anonymous',
        actorId: who.user?.id ?? null,
        action: 'stepup.attempt',
        outcome,
        requestId: who.ch?.requestId ?? null,
        details: {
          reason,
          purpose: who.ch?.purpose ?? null,
          subject: who.ch?.subject ?? null,
          challengeId: who.ch?.id ?? null,
          username: who.user?.username ?? null,
          sourceIp: meta.sourceIp ?? null,
          userAgent: meta.userAgent ?? null,
          ...extra,
        },
      },
      tx,
    );
  }

  function failedError(lockedUntil: Date | null, left: number): AppError {
    const tail = lockedUntil
      ? ` Too many failed attempts: confirmation is now locked until ${formatUtc(lockedUntil)}.`
      : ` ${left} attempt${left === 1 ? '' : 's'} left before a ${Math.round(lockoutSeconds / 60)}-minute lock.`;
    return new Forbidden(
      'stepup.failed',
      `The password or the code was not accepted. Check both and try again with a fresh code.${tail}`,
    );
  }

  async function loadLinked(tokenHash: string) {
    const ch = await findChallenge(db, tokenHash);
    const user = ch && (await findUser(db, ch.userId));
    return ch && user ? { ch, user } : undefined;
  }

  return {
    ...enrolment,

    /** Creates a single-use link for `userId`. Only the token's keyed hash is stored; the URL is shown once. */
    async createChallenge(
      input: { userId: string; purpose: ChallengeRow['purpose']; subject: string; requestId?: string | null },
      tx?: DbOrTx,
    ): Promise<CreatedChallenge> {
      const p = parse(createSchema, input, 'stepup.invalid');
      const run = async (t: DbOrTx): Promise<CreatedChallenge> => {
        const u = await findUser(t, p.userId);
        if (!u) throw new NotFound('user.not_found', `No user with id "${p.userId}".`);
        if (u.disabled)
          throw new Forbidden('stepup.user_disabled', 'Your user is disabled. Ask a platform admin.');
        if (p.purpose === 'enrol_totp' && u.totpEnrolledAt) {
          throw new Conflict('totp.already_enrolled', `${u.username} already has an authenticator enrolled.`);
        }
        if (p.purpose !== 'enrol_totp' && !u.totpEnrolledAt) {
          throw new Forbidden(
            'stepup.mfa_not_enrolled',
            `${u.username} has not enrolled an authenticator app yet, so cannot confirm. Enrol first (ask for an enrolment link).`,
          );
        }
        const now = clock.now();
        const token = newToken();
        const expiresAt = new Date(now.getTime() + linkTtlSeconds * 1000);
        const [row] = await t
          .insert(stepUpChallenges)
          .values({
            tokenHash: hashToken(token, secretKey),
            userId: u.id,
            purpose: p.purpose,
            subject: p.subject,
            requestId: p.requestId ?? null,
            expiresAt,
            createdAt: now,
          })
          .returning({ id: stepUpChallenges.id });
        await audit.append(
          {
            actorType: 'user',
            actorId: u.id,
            action: 'stepup.challenge_created',
            outcome: 'ok',
            requestId: p.requestId ?? null,
            details: {
              challengeId: row!.id,
              purpose: p.purpose,
              subject: p.subject,
              expiresAt: expiresAt.toISOString(),
            },
          },
          t,
        );
        const page = p.purpose === 'enrol_totp' ? 'enrol' : 'stepup';
        return { challengeId: row!.id, token, url: `${publicUrl}/${page}/${token}`, expiresAt };
      };
      return tx ? run(tx) : db.transaction(run);
    },

    /** What a link is for, before the user types anything. NotFound / Conflict (used, expired) for a bad link. */
    async inspectChallenge(token: string): Promise<ChallengeView> {
      const found = await loadLinked(hashToken(parse(tokenSchema, token, 'stepup.invalid'), secretKey));
      if (!found) throw new NotFound('stepup.link_unknown', `This link is not valid. ${ASK_AGAIN}`);
      const refusal = linkRefusal(found.ch, clock.now());
      if (refusal) throw refusal.error;
      return toChallengeView(found.ch, found.user);
    },

    /**
     * Verifies password + TOTP for a link and opens a step-up window. `onConfirmed` runs inside the same
     * transaction. Throws NotFound/Conflict for a bad link, RateLimited when locked or too fast,
     * Forbidden 'stepup.failed' (never saying which factor) for wrong factors. Every attempt is audited.
     */
    async complete(
      attempt: StepUpAttempt,
      onConfirmed?: OnConfirmed,
    ): Promise<{ window: StepUpWindow; challenge: ChallengeView }> {
      const a = parse(attemptSchema, attempt, 'stepup.invalid');
      const meta: Meta = { sourceIp: a.sourceIp, userAgent: a.userAgent };
      const now = clock.now();
      const tokenHash = hashToken(a.token, secretKey);

      // Phase 1, no locks: cheap refusals before the slow password hash.
      const pre = await loadLinked(tokenHash);
      if (!pre) {
        await auditAttempt(undefined, {}, 'refused', 'link_unknown', meta);
        throw new NotFound('stepup.link_unknown', `This link is not valid. ${ASK_AGAIN}`);
      }
      const early =
        linkRefusal(pre.ch, now) ??
        enrolmentRefusal(pre.user, pre.ch) ??
        (await guard.refusal(db, pre.user, now));
      if (early) {
        await auditAttempt(undefined, pre, 'refused', early.reason, meta);
        throw early.error;
      }

      // Phase 2, still no locks: argon2 takes a while and must not hold rows others wait on. Both factors are
      // always checked so the time taken does not tell which one was wrong.
      let secret: Uint8Array | null = null;
      try {
        secret = open(pre.user.totpSecretEnc ?? '', totpKey, pre.user.id);
      } catch {
        secret = null; // unreadable secret: the attempt fails like a wrong code
      }
      const [passwordOk, totp] = await Promise.all([
        verifyPassword(pre.user.passwordHash, a.password),
        secret
          ? verifyTotp({
              secret,
              code: a.totpCode,
              epochSeconds: Math.floor(now.getTime() / 1000),
              afterTimeStep: pre.user.totpLastStep,
            })
          : Promise.resolve({ valid: false, timeStep: undefined }),
      ]);

      // Phase 3: decide under locks, re-checking everything phases 1 and 2 relied on.
      type Outcome = { error: AppError } | { window: StepUpWindow; challenge: ChallengeView };
      let result: Outcome;
      try {
        result = await db.transaction(async (tx): Promise<Outcome> => {
          const ch = (await findChallenge(tx, tokenHash, true))!;
          const u = (await findUser(tx, ch.userId, true))!;
          const refusal =
            linkRefusal(ch, now) ?? enrolmentRefusal(u, ch) ?? (await guard.refusal(tx, u, now));
          if (refusal) {
            await auditAttempt(tx, { ch, user: u }, 'refused', refusal.reason, meta);
            return { error: refusal.error };
          }
          const ok =
            passwordOk &&
            totp.valid &&
            // A password change or TOTP reset in between invalidates what phase 2 verified.
            u.passwordHash === pre.user.passwordHash &&
            u.totpSecretEnc === pre.user.totpSecretEnc &&
            totp.timeStep! > (u.totpLastStep ?? -1);
          if (!ok) {
            const { lockedUntil, left } = await guard.recordFailure(tx, u, now);
            await auditAttempt(tx, { ch, user: u }, 'refused', 'factors_wrong', meta);
            return { error: failedError(lockedUntil, left) };
          }
          await tx
            .update(users)
            .set({ failedAttempts: 0, lockedUntil: null, totpLastStep: totp.timeStep! })
            .where(eq(users.id, u.id));
          await tx.update(stepUpChallenges).set({ usedAt: now }).where(eq(stepUpChallenges.id, ch.id));
          const [w] = await tx
            .insert(stepUpWindows)
            .values({
              userId: u.id,
              challengeId: ch.id,
              purpose: ch.purpose,
              subject: windowSubject(ch),
              openedAt: now,
              expiresAt: new Date(now.getTime() + windowSeconds * 1000),
              sourceIp: meta.sourceIp ?? null,
              userAgent: meta.userAgent ?? null,
            })
            .returning();
          const window = toWindow(w!);
          const challenge = toChallengeView(ch, u);
          await auditAttempt(tx, { ch, user: u }, 'ok', 'ok', meta, { windowId: window.id });
          if (onConfirmed) await onConfirmed(challenge, window, tx);
          return { window, challenge };
        });
      } catch (e) {
        // `onConfirmed` (or the database) failed, so nothing above committed. Burn the code anyway (each
        // code once) and record that the factors were right but the confirmation did not go through: as a
        // refusal when the person no longer has the authority the link was for (a demoted admin's grant
        // link, say), else as a failure. A failure here must not hide the original error, which is what
        // the caller needs to see.
        await db
          .transaction(async (tx) => {
            if (passwordOk && totp.valid) {
              await tx
                .update(users)
                .set({ totpLastStep: sql`greatest(coalesce(${users.totpLastStep}, -1), ${totp.timeStep!})` })
                .where(eq(users.id, pre.user.id));
            }
            const refused = isAppError(e) && e.status === 403;
            await auditAttempt(
              tx,
              pre,
              refused ? 'refused' : 'failed',
              refused ? 'not_allowed' : 'confirm_failed',
              meta,
              {
                error: isAppError(e) ? e.code : 'internal',
              },
            );
          })
          .catch(() => undefined);
        throw e;
      }
      if ('error' in result) throw result.error;
      return result;
    },

    /**
     * The user's live window opened for one of `purposes`, bound to `subject` when given (build it with
     * stepup-binding's `bindTo`), or null. A window of any other purpose or subject does not count.
     */
    windowFor: (
      userId: string,
      purposes: StepUpPurpose | readonly StepUpPurpose[],
      subject?: string,
    ): Promise<StepUpWindow | null> =>
      latestLiveWindow(
        db,
        parse(z.string().uuid(), userId, 'stepup.invalid'),
        clock.now(),
        typeof purposes === 'string' ? [purposes] : purposes,
        subject,
      ),

    /** A window by id if it is still live, e.g. for a cookie tied to one window; else null. */
    async windowById(windowId: string): Promise<StepUpWindow | null> {
      if (!z.string().uuid().safeParse(windowId).success) return null;
      const [w] = await db.select().from(stepUpWindows).where(eq(stepUpWindows.id, windowId)).limit(1);
      return w && w.expiresAt > clock.now() ? toWindow(w) : null;
    },
  };
}

export type StepUpService = ReturnType<typeof createStepUpService>;
