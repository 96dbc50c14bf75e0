// GET/POST /enrol/:token — TOTP enrolment from a single-use link (sent by the admin CLI or the bot). The page
// shows the pending secret as a QR code and as text, and one correct code activates it and uses up the link.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import QRCode from 'qrcode';
import { z } from 'zod';
import { isAppError } from '../bot/errors.ts';
import type { ChallengeView } from '../bot/stepup/stepup-types.ts';
import { trustedMarkup } from './html.ts';
import { type LinkRateLimit, QUIET, sendPage } from './page-reply.ts';
import { attemptSource, linkErrorPage, tokenParams } from './stepup-routes.ts';
import { enrolDonePage, enrolPage, noticePage } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';

const enrolForm = z.object({
  _csrf: z.string().max(512).optional(),
  code: z
    .string()
    .max(20)
    .transform((s) => s.replace(/\s+/g, '')),
});

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
      if (!form.success || !/^\d{6}$/.test(form.data.code)) {
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
      return sendPage(reply, 200, enrolDonePage(challenge.displayName));
    },
  );
}
