// The inputs and the link rules of a step-up, as pure functions the service applies twice: once before the
// slow password hash, and again under the row locks before it decides.
import { z } from 'zod';
import { STEPUP_PURPOSES } from '../../db/schema.ts';
import { BadRequest, Conflict, describeZodIssues, Forbidden } from '../errors.ts';
import type { ChallengeRow, UserRow } from './stepup-dal.ts';
import type { Refusal } from './stepup-guard.ts';

/**
 * A subject may carry a session's reason (up to 2,000 characters, JSON-escaped) and where to answer in chat,
 * so the cap leaves room for the worst case of escaping rather than cutting what the person typed.
 */
export const MAX_SUBJECT_CHARS = 16_384;

export const createSchema = z.object({
  userId: z.string().uuid('must be a user id'),
  purpose: z.enum(STEPUP_PURPOSES),
  subject: z
    .string()
    .min(1, 'must not be empty')
    .max(MAX_SUBJECT_CHARS, `too long (max ${MAX_SUBJECT_CHARS})`),
  requestId: z.string().uuid('must be a request id').nullish(),
});
export const tokenSchema = z.string().min(1, 'is missing').max(200, 'is too long');
export const attemptSchema = z.object({
  token: tokenSchema,
  // Over-long factors are not rejected here: they are simply wrong, and count as a failed attempt.
  password: z.string(),
  totpCode: z.string(),
  sourceIp: z.string().max(100).optional(),
  userAgent: z
    .string()
    .optional()
    .transform((s) => s?.slice(0, 300)),
});

export function parse<T extends z.ZodType>(schema: T, input: unknown, code: string): z.output<T> {
  const res = schema.safeParse(input);
  if (!res.success)
    throw new BadRequest(code, `Invalid step-up input: ${describeZodIssues(res.error.issues)}.`);
  return res.data;
}

export const ASK_AGAIN = 'Ask the bot for a new link (repeat the command or click the button again).';

export function linkRefusal(ch: ChallengeRow, now: Date): Refusal | null {
  if (ch.usedAt) {
    return {
      reason: 'link_used',
      error: new Conflict('stepup.link_used', `This link was already used. ${ASK_AGAIN}`),
    };
  }
  if (ch.expiresAt <= now) {
    return {
      reason: 'link_expired',
      error: new Conflict('stepup.link_expired', `This link has expired. ${ASK_AGAIN}`),
    };
  }
  return null;
}

export function enrolmentRefusal(u: UserRow, ch: ChallengeRow): Refusal | null {
  if (ch.purpose === 'enrol_totp') {
    return {
      reason: 'wrong_purpose',
      error: new BadRequest(
        'stepup.wrong_purpose',
        'This is an enrolment link: open it to set up your authenticator.',
      ),
    };
  }
  if (!u.totpEnrolledAt) {
    return {
      reason: 'mfa_not_enrolled',
      error: new Forbidden(
        'stepup.mfa_not_enrolled',
        'You have not enrolled an authenticator app yet, so you cannot confirm. Ask the bot or an admin for an enrolment link.',
      ),
    };
  }
  return null;
}
