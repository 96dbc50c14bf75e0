// The Teams SDK's HTTP server adapter on the platform's one Fastify server: the SDK registers
// POST /api/messages through it when the App initialises (so this runs before the server listens; Fastify
// refuses routes added after). The SDK validates the Bot Framework JWT before any handler runs and answers
// 401 itself; this route adds what the SDK leaves out:
// - Its service-URL check is skipped when an activity carries no serviceUrl, and the bot's token is later
//   sent to whatever URL an activity names: an activity without one, or with a host that is not allowed,
//   is refused with 401 too.
// - A token signed with a key id the SDK has not seen makes it fetch Bot Framework's key set again. Tokens
//   that are not RS256 with a key id are refused here, and only a few distinct unknown key ids a minute are
//   passed on, so made-up tokens cannot turn this endpoint into a stream of key fetches. Key ids that validated
//   once always pass (Microsoft rotates keys rarely; a new one gets through the first time it is seen).
import type { HttpRouteHandler, IHttpServerAdapter } from '@microsoft/teams.apps';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../bot/ports.ts';
import type { TeamsCloud } from './teams-cloud.ts';

/** Bot Framework activities are small; a card action with inputs stays far below this. */
const BODY_LIMIT = 256 * 1024;
/** Distinct unknown signing-key ids passed on to the SDK per minute. */
const UNKNOWN_KIDS_PER_MINUTE = 10;

function headersOf(raw: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) out[k] = v;
  return out;
}

/** The key id of an RS256 bearer token; null when there is a token but it is not one; undefined: none. */
export function bearerKeyId(authorization: unknown): string | null | undefined {
  const value = Array.isArray(authorization) ? authorization[0] : authorization;
  if (typeof value !== 'string' || !value) return undefined;
  const token = value.startsWith('Bearer ') ? value.slice(7) : value;
  try {
    const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as {
      alg?: unknown;
      kid?: unknown;
    };
    return header.alg === 'RS256' && typeof header.kid === 'string' && header.kid.length <= 200
      ? header.kid
      : null;
  } catch {
    return null;
  }
}

export function createFastifyAdapter(
  fastify: FastifyInstance,
  deps: { cloud: TeamsCloud; logger: Logger; nowMs?: () => number },
): IHttpServerAdapter & { paths(): string[]; answering(): number } {
  const now = deps.nowMs ?? Date.now;
  const paths: string[] = [];
  const goodKids = new Set<string>();
  let window = { start: 0, unknown: new Set<string>() };
  let answering = 0;

  const refuse = (reply: { status(n: number): { send(b: unknown): unknown } }, reason: string) => {
    deps.logger.warn({ reason }, 'refused a Teams activity');
    return reply.status(401).send({ error: 'teams.unauthenticated', message: 'activity refused' });
  };

  return {
    registerRoute(method, path, handler: HttpRouteHandler) {
      if (method !== 'POST') throw new Error(`the Teams adapter serves POST only, not ${method}`);
      paths.push(path);
      fastify.post(path, { bodyLimit: BODY_LIMIT }, async (req, reply) => {
        const body = req.body as { serviceUrl?: unknown; type?: unknown } | undefined;
        const serviceUrl = body && typeof body === 'object' ? body.serviceUrl : undefined;
        if (typeof serviceUrl !== 'string') return refuse(reply, 'no service URL');
        if (!deps.cloud.allowsServiceUrl(serviceUrl)) return refuse(reply, 'service URL not allowed');
        const kid = bearerKeyId(req.headers.authorization);
        if (kid === null) return refuse(reply, 'not an RS256 token with a key id');
        if (kid !== undefined && !goodKids.has(kid)) {
          // Distinct key ids count, not requests: a burst signed with one new key (after a restart, or
          // Microsoft's rotation) passes; a stream of made-up ones does not.
          const t = now();
          if (t - window.start >= 60_000) window = { start: t, unknown: new Set() };
          if (!window.unknown.has(kid)) {
            if (window.unknown.size >= UNKNOWN_KIDS_PER_MINUTE)
              return refuse(reply, 'too many unknown signing keys');
            window.unknown.add(kid);
          }
        }
        answering++;
        let res: Awaited<ReturnType<HttpRouteHandler>>;
        try {
          res = await handler({ body, headers: headersOf(req.headers) });
        } finally {
          answering--;
        }
        if (res.status === 401)
          deps.logger.warn(
            { type: String(body?.type ?? '?').slice(0, 40) },
            'refused a Teams activity: token not valid',
          );
        else if (kid) goodKids.add(kid);
        reply.status(res.status);
        return res.body === undefined ? reply.send() : reply.send(res.body);
      });
    },
    paths: () => [...paths],
    answering: () => answering,
  };
}
