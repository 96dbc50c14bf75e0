// GET /files/:id — fetched evidence as a password-protected zip, for the request's requester, its approvers
// and in-house admins, holding a live step-up window cookie opened to download this file. The bot's download
// link is a step-up link (purpose 'download', subject = file id) whose success sets that cookie and
// redirects here; without it the page explains how to get one.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { Forbidden } from '../bot/errors.ts';
import { canDownloadEvidence } from '../bot/policy/policy-rules.ts';
import { evidenceWithParties } from '../bot/requests/request-access.ts';
import { bindTo } from '../bot/stepup/stepup-binding.ts';
import type { StepUpPurpose } from '../db/schema.ts';
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
 * The live step-up session a page needs: a window cookie opened for `what.purpose` (and bound to
 * `what.subject` when given), or a page saying what is missing. A window opened for something else is
 * refused, and the refusal audited: stepping up to read the history does not open evidence files.
 */
export async function requireWindow(
  req: FastifyRequest,
  reply: FastifyReply,
  deps: StepUpPagesDeps,
  what: { action: string; help: string; purpose: StepUpPurpose; subject?: string },
): Promise<WindowSession | FastifyReply> {
  const session = await readWindowCookie(req, deps);
  if (!session) {
    return sendPage(
      reply,
      401,
      noticePage('Confirm who you are first', 'Your confirmation has expired or is missing.', what.help),
    );
  }
  if (session.purpose !== what.purpose || (what.subject !== undefined && session.subject !== what.subject)) {
    await deps.audit.append({
      actorType: 'user',
      actorId: session.user.id,
      action: what.action,
      outcome: 'refused',
      details: {
        reason: 'stepup.wrong_purpose',
        windowPurpose: session.purpose,
        stepUpWindowId: session.windowId,
        path: req.url.split('?')[0],
        ...attemptSource(req),
      },
    });
    return sendPage(
      reply,
      401,
      noticePage(
        'Confirm who you are for this',
        'Your current confirmation was for something else, and each confirmation opens only what it was for.',
        what.help,
      ),
    );
  }
  return session;
}

/**
 * `requireWindow` for an Active Response user (the history page; the role is re-read on every request).
 * A refusal of a known user is audited.
 */
export async function requireResponder(
  req: FastifyRequest,
  reply: FastifyReply,
  deps: StepUpPagesDeps,
  what: { action: string; help: string; purpose: StepUpPurpose; subject?: string },
): Promise<WindowSession | FastifyReply> {
  const session = await requireWindow(req, reply, deps, what);
  if (!('user' in session)) return session;
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
    const session = await requireWindow(req, reply, deps, {
      action: 'file.download',
      help: HOW_TO_GET_A_LINK,
      purpose: 'download',
      subject: bindTo.file(params.data.id),
    });
    if (!('user' in session)) return session;

    // Library files are pushed to endpoints, not handed out; only fetched evidence downloads here.
    const found = await evidenceWithParties(deps.db, params.data.id);
    if (!found) {
      return sendPage(
        reply,
        404,
        noticePage('No such file', `No fetched evidence has the id "${params.data.id}".`),
      );
    }
    const { file, parties } = found;
    // Decided per file, on every download: the request's requester and approvers, and in-house admins.
    try {
      canDownloadEvidence(session.user, parties);
    } catch (err) {
      if (!(err instanceof Forbidden)) throw err;
      await deps.audit.append({
        actorType: 'user',
        actorId: session.user.id,
        action: 'file.download',
        outcome: 'refused',
        requestId: file.requestId,
        endpointId: file.endpointId,
        details: {
          reason: err.code,
          fileId: file.id,
          stepUpWindowId: session.windowId,
          ...attemptSource(req),
        },
      });
      return sendPage(reply, 403, noticePage('Not allowed', err.message));
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
