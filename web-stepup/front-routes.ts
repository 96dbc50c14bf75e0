// GET / — a small page saying what this server is. People who open the bare URL (the start message points
// them here) get words instead of a JSON 404; unknown paths still answer the JSON 404 that clients expect.
import type { FastifyInstance } from 'fastify';
import { sendPage } from './page-reply.ts';
import { frontPage } from './views.ts';

export function registerFrontPage(app: FastifyInstance): void {
  const page = frontPage();
  app.get('/', async (_req, reply) => sendPage(reply, 200, page));
}
