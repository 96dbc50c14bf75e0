// The Teams SDK's HTTP server adapter on the platform's one Fastify server: the SDK registers
// POST /api/messages through it when the App initialises (so this runs before the server listens; Fastify
// refuses routes added after). The SDK validates the Bot Framework JWT before any handler runs and answers
// 401 itself; this route adds what the SDK leaves out. Its service-URL check is skipped when an activity
// carries no serviceUrl, and the bot's token would later be sent to whatever URL an activity names, so an
// activity without a serviceUrl, or with one whose host is not allow-listed, is refused with 401 too.
import type { HttpRouteHandler, IHttpServerAdapter } from '@microsoft/teams.apps';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../bot/ports.ts';
import type { TeamsCloud } from './teams-cloud.ts';

/** Bot Framework activities are small; a card action with inputs stays far below this. */
const BODY_LIMIT = 256 * 1024;

function headersOf(raw: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) out[k] = v;
  return out;
}

export function createFastifyAdapter(
  fastify: FastifyInstance,
  deps: { cloud: TeamsCloud; logger: Logger },
): IHttpServerAdapter & { paths(): string[] } {
  const paths: string[] = [];
  return {
    registerRoute(method, path, handler: HttpRouteHandler) {
      if (method !== 'POST') throw new Error(`the Teams adapter serves POST only, not ${method}`);
      paths.push(path);
      fastify.post(path, { bodyLimit: BODY_LIMIT }, async (req, reply) => {
        const body = req.body as { serviceUrl?: unknown; type?: unknown } | undefined;
        const serviceUrl = body && typeof body === 'object' ? body.serviceUrl : undefined;
        if (typeof serviceUrl !== 'string' || !deps.cloud.allowsServiceUrl(serviceUrl)) {
          deps.logger.warn(
            { reason: typeof serviceUrl === 'string' ? 'service URL not allowed' : 'no service URL' },
            'refused a Teams activity',
          );
          return reply.status(401).send({ error: 'teams.unauthenticated', message: 'activity refused' });
        }
        const res = await handler({ body, headers: headersOf(req.headers) });
        if (res.status === 401)
          deps.logger.warn(
            { type: String(body?.type ?? '?').slice(0, 40) },
            'refused a Teams activity: token not valid',
          );
        reply.status(res.status);
        return res.body === undefined ? reply.send() : reply.send(res.body);
      });
    },
    paths: () => [...paths],
  };
}
