// GET/POST /enrol/:token — TOTP enrolment from a single-use link (sent by the admin CLI or the bot). The link
// alone shows nothing secret: the page first asks for the account password (checked and audited by the
// step-up service, counting toward the lockout), and only then shows the pending secret as a QR code and as
// text; one correct code activates it and uses up the link. Passing the password step sets a short-lived
// signed cookie naming this link's challenge, so a reload shows the same secret without asking again.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import QRCode from 'qrcode';
import { z } from 'zod';
import { isAppError } from '../bot/errors.ts';
import type { ChallengeView } from '../bot/stepup/stepup-types.ts';
import { trustedMarkup } from './html.ts';
import { type LinkRateLimit, QUIET, sendPage } from './page-reply.ts';
import { attemptSource, linkErrorPage, tokenParams } from './stepup-routes.ts';
import { enrolDonePage, enrolPage, enrolPasswordPage, noticePage } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';

const UNLOCK_COOKIE = 'ar_enrol';
/** At most this long between the password and the code, whatever the link's own expiry. */
const UNLOCK_SECONDS = 15 * 60;

const enrolForm = z.discriminatedUnion('step', [
  z.object({
    step: z.literal('password'),
    _csrf: z.string().max(512).optional(),
    password: z.string().min(1).max(1024),
  }),
  z.object({
    step: z.literal('code'),
    _csrf: z.string().max(512).optional(),
    code: z
      .string()
      .max(20)
      .transform((s) => s.replace(/\s+/g, '')),
  }),
]);

export function registerEnrolRoutes(
  app: FastifyInstance,
  deps: StepUpPagesDeps,
  linkLimit: LinkRateLimit,
): void {
  /** The live enrolment challenge behind `token`, or a page explaining why there is none. */
  async function enrolmentChallenge(
    req: FastifyRequest,
    reply: FastifyReply,
  ): Promise<{ token: string; challenge: ChallengeView } | FastifyReply> {
    const params = tokenParams.safeParse(req.params);
    if (!params.success) {
      return sendPage(reply, 404, noticePage('This link is not valid', 'Ask for a new enrolment link.'));
    }
    try {
      const challenge = await deps.stepup.inspectChallenge(params.data.token);
      return { token: params.data.token, challenge };
    } catch (err) {
      return linkErrorPage(reply, err);
    }
  }

  /** Whether this browser passed the password step for this very link. */
  function unlocked(req: FastifyRequest, challenge: ChallengeView): boolean {
    const raw = req.cookies[UNLOCK_COOKIE];
    if (!raw) return false;
    const cookie = req.unsignCookie(raw);
    return cookie.valid && cookie.value === challenge.id;
  }

  function unlock(reply: FastifyReply, challenge: ChallengeView): void {
    const left = Math.floor((challenge.expiresAt.getTime() - deps.clock.now().getTime()) / 1000);
    reply.setCookie(UNLOCK_COOKIE, challenge.id, {
      signed: true,
      httpOnly: true,
      sameSite: 'strict',
      secure: deps.config.secureCookies,
      path: '/enrol/',
      maxAge: Math.max(1, Math.min(UNLOCK_SECONDS, left)),
    });
  }

  async function showPasswordForm(
    reply: FastifyReply,
    challenge: ChallengeView,
    status: number,
    error?: string,
  ): Promise<FastifyReply> {
    // Nothing to unlock for a user who has enrolled since the link was sent.
    if ((await deps.users.getUser(challenge.userId)).mfaEnrolled) {
      return sendPage(
        reply,
        409,
        noticePage(
          'Already set up',
          'Your authenticator is already enrolled. If you lost it, ask a platform admin.',
        ),
      );
    }
    const page = enrolPasswordPage({
      displayName: challenge.displayName,
      username: challenge.username,
      csrfToken: reply.generateCsrf(),
      error,
    });
    return sendPage(reply, status, page);
  }

  async function showEnrolment(
    reply: FastifyReply,
    challenge: ChallengeView,
    status: number,
    error?: string,
  ): Promise<FastifyReply> {
    let pending: { secret: string; otpauthUri: string };
    try {
      // The service returns the same pending secret on every call, so a reload keeps a scanned code valid.
      pending = await deps.stepup.startTotpEnrolment(challenge.userId);
    } catch (err) {
      if (isAppError(err) && err.code === 'totp.already_enrolled') {
        return sendPage(reply, 409, noticePage('Already set up', err.message));
      }
      return linkErrorPage(reply, err);
    }
    const svg = await QRCode.toString(pending.otpauthUri, {
      type: 'svg',
      errorCorrectionLevel: 'M',
      margin: 2,
    });
    const page = enrolPage({
      displayName: challenge.displayName,
      username: challenge.username,
      qrSvg: trustedMarkup(svg),
      secret: pending.secret,
      csrfToken: reply.generateCsrf(),
      error,
    });
    return sendPage(reply, status, page);
  }

  app.get('/enrol/:token', { logLevel: QUIET, preHandler: [linkLimit] }, async (req, reply) => {
    const found = await enrolmentChallenge(req, reply);
    if (!('challenge' in found)) return found;
    if (found.challenge.purpose !== 'enrol_totp') return reply.redirect(`/stepup/${found.token}`, 303);
    if (!unlocked(req, found.challenge)) return showPasswordForm(reply, found.challenge, 200);
    return showEnrolment(reply, found.challenge, 200);
  });

  app.post(
    '/enrol/:token',
    { logLevel: QUIET, preHandler: [linkLimit, app.csrfProtection] },
    async (req, reply) => {
      const found = await enrolmentChallenge(req, reply);
      if (!('challenge' in found)) return found;
      const { token, challenge } = found;
      if (challenge.purpose !== 'enrol_totp') return reply.redirect(`/stepup/${token}`, 303);
      const form = enrolForm.safeParse(req.body ?? {});

      if (!unlocked(req, challenge) || (form.success && form.data.step === 'password')) {
        if (!form.success || form.data.step !== 'password') {
          return showPasswordForm(reply, challenge, 400, 'Enter your password first.');
        }
        try {
          await deps.stepup.verifyEnrolmentPassword({
            token,
            password: form.data.password,
            ...attemptSource(req),
          });
        } catch (err) {
          if (isAppError(err) && err.code === 'totp.password_wrong') {
            return showPasswordForm(reply, challenge, 403, err.message);
          }
          return linkErrorPage(reply, err);
        }
        unlock(reply, challenge);
        // Post/redirect/get: a reload of the secret's page does not send the password again.
        return reply.redirect(`/enrol/${token}`, 303);
      }

      if (!form.success || form.data.step !== 'code' || !/^\d{6}$/.test(form.data.code)) {
        return showEnrolment(
          reply,
          challenge,
          400,
          'The code is the 6 digits your authenticator app shows now.',
        );
      }
      try {
        await deps.stepup.confirmTotpEnrolment(challenge.userId, form.data.code, {
          token,
          ...attemptSource(req),
        });
      } catch (err) {
        if (isAppError(err) && err.code === 'totp.code_wrong') {
          return showEnrolment(reply, challenge, 403, err.message);
        }
        return linkErrorPage(reply, err);
      }
      reply.clearCookie(UNLOCK_COOKIE, { path: '/enrol/' });
      return sendPage(reply, 200, enrolDonePage(challenge.displayName));
    },
  );
}
