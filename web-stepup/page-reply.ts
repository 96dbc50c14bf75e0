// Small shared pieces of the route files: sending a rendered page, and the link rate limit's shape.
import type { FastifyReply, FastifyRequest } from 'fastify';

export function sendPage(reply: FastifyReply, status: number, page: string): FastifyReply {
  return reply.status(status).type('text/html; charset=utf-8').send(page);
}

/** The step-up and enrolment routes' rate limit (per IP and per link owner), as a preHandler hook. */
export type LinkRateLimit = (req: FastifyRequest, reply: FastifyReply) => Promise<void>;

/**
 * Log level of the routes whose path carries a link token. Fastify's request log ("incoming request") prints
 * the URL at info, and a token in a log file is a live link; at warn only errors (which carry the request
 * id, never the URL) are written. The audit log records every attempt instead.
 */
export const QUIET = 'warn' as const;
