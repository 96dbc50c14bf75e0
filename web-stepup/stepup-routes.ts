// GET/POST /stepup/:token — the page a single-use link opens. It shows what is being confirmed, takes the
// password and the current TOTP code, and hands them to the core, which verifies them, opens the step-up
// window and carries out what the link was for (an approval, a confirmation, a grant, ...).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { isAppError } from '../bot/errors.ts';
import { type LinkRateLimit, QUIET, sendPage } from './page-reply.ts';
import { downloadStartPage, noticePage, stepUpDonePage, stepUpPage } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';
import { setWindowCookie } from './window-cookie.ts';

/** 128-bit base64url tokens are 22 characters; anything far from that is not one of ours. */
export const tokenParams = z.object({ token: z.string().regex(/^[A-Za-z0-9_-]{16,128}$/) });

const stepUpForm = z.object({
  _csrf: z.string().max(512).optional(),
  username: z.string().max(200).optional(),
  password: z.string().min(1).max(1024),
  // Authenticator apps show "123 456"; people type what they see.
  code: z
    .string()
    .max(20)
    .transform((s) => s.replace(/\s+/g, '')),
  /** An approval link's page offers Approve and Deny. */
  decision: z.enum(['approve', 'deny']).optional(),
  reason: z
    .string()
    .max(2000)
    .transform((s) => s.trim() || undefined)
    .optional(),
});

const LINK_TITLES: Record<string, string> = {
  'stepup.link_unknown': 'This link is not valid',
  'stepup.link_used': 'This link has already been used',
  'stepup.link_expired': 'This link has expired',
  'stepup.locked': 'Locked for now',
  'stepup.rate_limited': 'Too many attempts',
  'stepup.mfa_not_enrolled': 'Set up two-factor authentication first',
};

export function linkErrorPage(reply: FastifyReply, err: unknown): FastifyReply {
  if (!isAppError(err)) throw err;
  const title = LINK_TITLES[err.code] ?? 'That did not work';
  // A used or expired link is gone for good (410); a lockout or rate limit passes (429).
  const status = err.code === 'stepup.link_used' || err.code === 'stepup.link_expired' ? 410 : err.status;
  return sendPage(reply, status, noticePage(title, err.message));
}

function invalidLink(reply: FastifyReply): FastifyReply {
  return sendPage(
    reply,
    404,
    noticePage(
      'This link is not valid',
      'Check that the whole link was copied, or ask the bot for a new one.',
    ),
  );
}

export function attemptSource(req: FastifyRequest): { sourceIp: string; userAgent?: string } {
  const ua = req.headers['user-agent'];
  return { sourceIp: req.ip, userAgent: typeof ua === 'string' ? ua.slice(0, 300) : undefined };
}

export function registerStepUpRoutes(
  app: FastifyInstance,
  deps: StepUpPagesDeps,
  linkLimit: LinkRateLimit,
): void {
  async function showForm(reply: FastifyReply, token: string, status: number, error?: string) {
    let view: Awaited<ReturnType<typeof deps.bot.describeStepUp>>;
    try {
      view = await deps.bot.describeStepUp(token);
    } catch (err) {
      return linkErrorPage(reply, err);
    }
    // An enrolment link pasted into the step-up path: send it where it belongs.
    if (view.challenge.purpose === 'enrol_totp') return reply.redirect(`/enrol/${token}`, 303);
    const csrfToken = reply.generateCsrf();
    const listHref = view.request ? `/stepup/${token}/endpoints` : undefined;
    return sendPage(reply, status, stepUpPage(view, { csrfToken, error, listHref }));
  }

  app.get('/stepup/:token', { logLevel: QUIET, preHandler: [linkLimit] }, async (req, reply) => {
    const params = tokenParams.safeParse(req.params);
    if (!params.success) return invalidLink(reply);
    return showForm(reply, params.data.token, 200);
  });

  app.post(
    '/stepup/:token',
    { logLevel: QUIET, preHandler: [linkLimit, app.csrfProtection] },
    async (req, reply) => {
      const params = tokenParams.safeParse(req.params);
      if (!params.success) return invalidLink(reply);
      const token = params.data.token;
      const form = stepUpForm.safeParse(req.body ?? {});
      if (!form.success) return showForm(reply, token, 400, 'Enter your password and the 6-digit code.');
      if (!/^\d{6}$/.test(form.data.code)) {
        return showForm(reply, token, 400, 'The code is the 6 digits your authenticator app shows now.');
      }
      if (form.data.decision === 'deny' && !form.data.reason) {
        return showForm(
          reply,
          token,
          400,
          'Say why you deny it (the reason goes to the thread), then Deny again.',
        );
      }

      let outcome: Awaited<ReturnType<typeof deps.bot.completeStepUp>>;
      try {
        outcome = await deps.bot.completeStepUp({
          token,
          password: form.data.password,
          totpCode: form.data.code,
          decision: form.data.decision,
          reason: form.data.reason,
          ...attemptSource(req),
        });
      } catch (err) {
        // The service's message never says which factor was wrong (that would tell an attacker holding one
        // of them they got it right); it says how many attempts are left, or that the lock has started.
        if (isAppError(err) && err.code === 'stepup.failed') return showForm(reply, token, 403, err.message);
        return linkErrorPage(reply, err);
      }

      // Downloads and history are browser destinations: carry the fresh window over in a cookie and go there.
      const { purpose, subject } = outcome.challenge;
      if (purpose === 'download' || purpose === 'history' || purpose === 'upload') {
        // The window this step-up opened, bound to its purpose and subject: never another live one.
        setWindowCookie(reply, outcome.window, deps.clock.now(), deps.config.secureCookies);
        if (purpose === 'history') return reply.redirect('/history', 303);
        if (purpose === 'upload') return reply.redirect('/library/upload', 303);
        return sendPage(reply, 200, downloadStartPage(outcome, `/files/${encodeURIComponent(subject)}`));
      }
      return sendPage(reply, 200, stepUpDonePage(outcome));
    },
  );
}
