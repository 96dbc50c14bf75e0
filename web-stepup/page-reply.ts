// Small shared pieces of the route files: sending a rendered page, and the link rate limit's shape.
import type { FastifyReply, FastifyRequest } from 'fastify';

export function sendPage(reply: FastifyReply, status: number, page: string): FastifyReply {
  return reply.status(status).type('text/html; charset=utf-8').send(page);
}

/** The step-up and enrolment routes' rate limit (per IP and per link owner), as a preHandler hook. */
export type LinkRateLimit = (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
