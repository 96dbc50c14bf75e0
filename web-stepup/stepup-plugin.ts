// Mounts the step-up site on the one Fastify app: step-up links, TOTP enrolment, evidence downloads, session
// history and the front page. Everything is registered inside its own encapsulated scope, so the form
// parser, CSP, CSRF and HTML error pages apply to these pages only and never to the Slack or Teams endpoints
// that share the app (Slack needs the raw body of its own form posts to check signatures).
import { readFileSync } from 'node:fs';
import cookie from '@fastify/cookie';
import csrf from '@fastify/csrf-protection';
import formbody from '@fastify/formbody';
import helmet from '@fastify/helmet';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { deriveKey } from '../bot/crypto/secret-box.ts';
import { isAppError } from '../bot/errors.ts';
import { registerEnrolRoutes } from './enrol-routes.ts';
import { registerFileRoutes } from './file-routes.ts';
import { registerFrontPage } from './front-routes.ts';
import { registerGroupResultRoutes } from './group-results-routes.ts';
import { registerGroupsListRoutes } from './groups-list-routes.ts';
import { registerHistoryRoutes } from './history-routes.ts';
import { registerLibraryRoutes } from './library-routes.ts';
import { type LinkRateLimit, sendPage } from './page-reply.ts';
import { registerRequestEndpointsRoute } from './request-endpoints-page.ts';
import { registerStepUpRoutes, tokenParams } from './stepup-routes.ts';
import { noticePage, STYLESHEET_PATH } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';

/**
 * Page requests (views and posts) per minute: per link owner for live links, per address for every other
 * link. These sit in front of the step-up service's own per-user attempt limit and lockout; they stop floods
 * and link guessing, and leave room for a person who reloads.
 */
const DEFAULT_PER_IP = 60;
const DEFAULT_PER_USER = 30;

const STYLESHEET = readFileSync(new URL('./stepup.css', import.meta.url), 'utf8');

export async function registerStepUpPages(app: FastifyInstance, deps: StepUpPagesDeps): Promise<void> {
  await app.register(async (scope) => {
    const secure = deps.config.secureCookies;
    await scope.register(cookie, { secret: deriveKey(deps.config.secretKey, 'web-cookie').toString('hex') });
    await scope.register(formbody, { bodyLimit: 16 * 1024 });
    await scope.register(helmet, {
      // No script at all: the pages are plain forms. The QR code is inline SVG markup, not an image URL.
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'none'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          formAction: ["'self'"],
          frameAncestors: ["'none'"],
          baseUri: ["'none'"],
          objectSrc: ["'none'"],
          ...(secure ? { upgradeInsecureRequests: [] } : {}),
        },
      },
      referrerPolicy: { policy: 'no-referrer' },
      // HSTS only means something over https; on a plain-http demo it would pin localhost for a year.
      strictTransportSecurity: secure ? { maxAge: 31_536_000, includeSubDomains: true } : false,
    });
    await scope.register(csrf, {
      cookieKey: '_csrf',
      cookieOpts: { path: '/', httpOnly: true, sameSite: 'strict', secure, signed: true },
      getToken: (req) => (req.body as { _csrf?: string } | undefined)?._csrf,
    });
    await scope.register(rateLimit, { global: false });

    // Links carry a secret in their path: no cache may keep the page, and no Referer may carry the URL away.
    scope.addHook('onSend', async (req, reply, payload) => {
      if (req.url !== STYLESHEET_PATH) {
        reply.header('cache-control', 'no-store');
        reply.header('pragma', 'no-cache');
      }
      reply.header('referrer-policy', 'no-referrer');
      reply.header('x-robots-tag', 'noindex, nofollow');
      return payload;
    });

    scope.setErrorHandler((err, req, reply) => renderError(err, req, reply));

    scope.get(STYLESHEET_PATH, async (_req, reply) =>
      reply.type('text/css; charset=utf-8').header('cache-control', 'public, max-age=3600').send(STYLESHEET),
    );

    // Two separate buckets, and a request counts in exactly one. A live link counts against its owner (one
    // person's page views and posts, across addresses and links). Anything else (unknown, malformed, used
    // or expired links) counts against the sender's address in a bucket of its own: behind a reverse proxy
    // many people share one address, and a flood of made-up links must never use up a real user's
    // allowance or lock anyone out. Lockout itself only ever comes from the step-up service counting wrong
    // passwords and codes for a user.
    const windowMs = deps.config.rateWindowMs ?? 60_000;
    const owners = new WeakMap<FastifyRequest, string>();
    const perOwner = scope.createRateLimit({
      max: deps.config.rateLimitPerUser ?? DEFAULT_PER_USER,
      timeWindow: windowMs,
      keyGenerator: (req) => `owner:${owners.get(req)}`,
    });
    const badLinksPerIp = scope.createRateLimit({
      max: deps.config.rateLimitPerIp ?? DEFAULT_PER_IP,
      timeWindow: windowMs,
      keyGenerator: (req) => `bad-link:${req.ip}`,
    });
    const linkLimit: LinkRateLimit = async (req, reply) => {
      const owner = await linkOwner(deps, req);
      if (owner) owners.set(req, owner);
      const res = await (owner ? perOwner : badLinksPerIp)(req);
      if (!res.isAllowed && res.isExceeded) {
        reply.header('retry-after', String(res.ttlInSeconds));
        throw Object.assign(new Error('rate limit exceeded'), { statusCode: 429 });
      }
    };

    registerStepUpRoutes(scope, deps, linkLimit);
    registerRequestEndpointsRoute(scope, deps, linkLimit);
    registerEnrolRoutes(scope, deps, linkLimit);
    registerFileRoutes(scope, deps);
    registerHistoryRoutes(scope, deps);
    registerGroupResultRoutes(scope, deps);
    registerGroupsListRoutes(scope, deps);
    registerLibraryRoutes(scope, deps);
    registerFrontPage(scope);
  });
}

/** The user a live link in the request's path belongs to, or undefined for any other token. */
async function linkOwner(deps: StepUpPagesDeps, req: FastifyRequest): Promise<string | undefined> {
  const params = tokenParams.safeParse(req.params);
  if (!params.success) return undefined;
  try {
    return (await deps.stepup.inspectChallenge(params.data.token)).userId;
  } catch {
    return undefined;
  }
}

/** One translation of errors into pages for the whole site. Never shows internals or secrets. */
function renderError(err: unknown, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (isAppError(err)) {
    req.log.info({ code: err.code }, 'step-up page refused');
    return sendPage(reply, err.status, noticePage('That did not work', err.message));
  }
  const e = err as { statusCode?: number; code?: string; message?: string };
  if (e.statusCode === 429) {
    return sendPage(
      reply,
      429,
      noticePage(
        'Too many attempts',
        'Too many requests from here in a short time. Wait a minute, then try again.',
      ),
    );
  }
  if (typeof e.code === 'string' && e.code.startsWith('FST_CSRF')) {
    req.log.info({ code: e.code }, 'form refused: CSRF token missing or invalid');
    return sendPage(
      reply,
      403,
      noticePage(
        'This form has expired',
        'The form was not sent from this page, or it is too old. Open the link from the chat again; nothing was confirmed.',
      ),
    );
  }
  if (e.statusCode && e.statusCode < 500) {
    return sendPage(reply, e.statusCode, noticePage('That did not work', 'The request was not understood.'));
  }
  req.log.error({ err }, 'step-up page failed');
  return sendPage(
    reply,
    500,
    noticePage(
      'Something went wrong',
      `Something went wrong on our side, reference ${req.id}. Try the link again.`,
    ),
  );
}
