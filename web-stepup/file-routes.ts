// GET /files/:id — fetched evidence as a password-protected zip, for an Active Response user holding a live
// step-up window cookie. The bot's download link is a step-up link (purpose 'download', subject = file id)
// whose success sets that cookie and redirects here; without it the page explains how to get one.
import { eq } from 'drizzle-orm';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { files } from '../db/schema.ts';
import { safeEntryName, zipEvidence } from './evidence-zip.ts';
import { sendPage } from './page-reply.ts';
import { attemptSource } from './stepup-routes.ts';
import { noticePage } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';
import { readWindowCookie, type WindowSession } from './window-cookie.ts';

const fileParams = z.object({ id: z.uuid() });

const HOW_TO_GET_A_LINK =
  'Use the download link the bot posted with the file in the chat thread, or ask the bot for a new one. ' +
  'The link opens a step-up page; after your password and code the download starts by itself.';

/**
 * The live step-up session of an Active Response user, or a page saying what is missing. Shared by the
 * download and history pages; a refusal of a known user is audited.
 */
export async function requireResponder(
  req: FastifyRequest,
  reply: FastifyReply,
  deps: StepUpPagesDeps,
  what: { action: string; help: string },
): Promise<WindowSession | FastifyReply> {
  const session = await readWindowCookie(req, deps);
  if (!session) {
    return sendPage(
      reply,
      401,
      noticePage('Confirm who you are first', 'Your confirmation has expired or is missing.', what.help),
    );
  }
  if (!session.user.roles.includes('active_response')) {
    await deps.audit.append({
      actorType: 'user',
      actorId: session.user.id,
      action: what.action,
      outcome: 'refused',
      details: { reason: 'policy.no_role', path: req.url.split('?')[0], ...attemptSource(req) },
    });
    return sendPage(
      reply,
      403,
      noticePage(
        'Not allowed',
        'This page is only for users with the Active Response role. Ask a platform admin.',
      ),
    );
  }
  return session;
}

export function registerFileRoutes(app: FastifyInstance, deps: StepUpPagesDeps): void {
  app.get('/files/:id', async (req, reply) => {
    const params = fileParams.safeParse(req.params);
    if (!params.success) {
      const typed = String((req.params as { id?: string }).id ?? '').slice(0, 60);
      return sendPage(
        reply,
        404,
        noticePage('No such file', `"${typed}" is not a file id. ${HOW_TO_GET_A_LINK}`),
      );
    }
    const session = await requireResponder(req, reply, deps, {
      action: 'file.download',
      help: HOW_TO_GET_A_LINK,
    });
    if (!('user' in session)) return session;

    const [file] = await deps.db.select().from(files).where(eq(files.id, params.data.id)).limit(1);
    // Library files are pushed to endpoints, not handed out; only fetched evidence downloads here.
    if (file?.kind !== 'fetched') {
      return sendPage(
        reply,
        404,
        noticePage('No such file', `No fetched evidence has the id "${params.data.id}".`),
      );
    }
    const source = await deps.fileStore.open(file.storageKey);
    await deps.audit.append({
      actorType: 'user',
      actorId: session.user.id,
      action: 'file.downloaded',
      outcome: 'ok',
      requestId: file.requestId,
      endpointId: file.endpointId,
      details: {
        fileId: file.id,
        name: file.name,
        sha256: file.sha256,
        size: file.size,
        stepUpWindowId: session.windowId,
        ...attemptSource(req),
      },
    });
    const entry = safeEntryName(file.name);
    const zipName = `${entry}.zip`;
    return reply
      .type('application/zip')
      .header(
        'content-disposition',
        `attachment; filename="${zipName.replace(/[^\x20-\x7e]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(zipName)}`,
      )
      .header('x-evidence-sha256', file.sha256)
      .send(zipEvidence(entry, source, file.createdAt));
  });
}
