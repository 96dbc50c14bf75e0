// GET/POST /library/upload — adds a file to the library that `put` pushes, for a person holding a live
// step-up window cookie (the bot's `upload` command sends a step-up link that sets it). The file streams
// into the store while it is hashed and counted, so the size cap holds without buffering; the person may
// give the SHA-256 they expect (from `sha256sum`), and a file whose bytes hash otherwise is refused and
// removed. The result page shows the SHA-256 the platform computed: the one approvers and the agent check.
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isAppError } from '../bot/errors.ts';
import { requireLibraryEditor } from '../bot/library/file-library.ts';
import { requireWindow } from './file-routes.ts';
import { sendPage } from './page-reply.ts';
import { attemptSource } from './stepup-routes.ts';
import { libraryUploadDonePage, libraryUploadPage, noticePage } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';
import type { WindowSession } from './window-cookie.ts';

const HOW_TO_GET_A_LINK =
  'Type "upload" to the bot in chat: it sends you a link to a step-up page, and after your password and code this page opens.';

/** Form fields before the file, each short; the file is the one part that may be large. */
const FIELD_BYTES = 1024;

export function registerLibraryRoutes(app: FastifyInstance, deps: StepUpPagesDeps): void {
  const maxBytes = deps.config.maxLibraryFileBytes;

  async function editor(req: FastifyRequest, reply: FastifyReply): Promise<WindowSession | FastifyReply> {
    // Only a step-up made for the upload page opens it (a history or download window does not).
    const session = await requireWindow(req, reply, deps, {
      action: 'library.file_added',
      help: HOW_TO_GET_A_LINK,
      purpose: 'upload',
    });
    if (!('user' in session)) return session;
    try {
      requireLibraryEditor(session.user);
    } catch (err) {
      if (!isAppError(err)) throw err;
      await deps.audit.append({
        actorType: 'user',
        actorId: session.user.id,
        action: 'library.file_added',
        outcome: 'refused',
        details: { reason: err.code, ...attemptSource(req) },
      });
      return sendPage(reply, 403, noticePage('Not allowed', err.message));
    }
    return session;
  }

  const form = (reply: FastifyReply, status: number, error?: string) =>
    sendPage(reply, status, libraryUploadPage({ csrfToken: reply.generateCsrf(), maxBytes, error }));

  app.register(async (scope) => {
    await scope.register(multipart, {
      // One byte over the cap, so the library's own count sees the file is too large and refuses it
      // whole, rather than the parser quietly cutting it at the cap.
      limits: { fileSize: maxBytes + 1, files: 1, fields: 4, fieldSize: FIELD_BYTES, parts: 5 },
    });

    scope.get('/library/upload', async (req, reply) => {
      const session = await editor(req, reply);
      if (!('user' in session)) return session;
      return form(reply, 200);
    });

    scope.post('/library/upload', async (req, reply) => {
      const session = await editor(req, reply);
      if (!('user' in session)) return session;
      if (!req.isMultipart()) return form(reply, 400, 'Choose a file with the form below.');
      const fields: Record<string, string> = {};
      let csrfChecked = false;
      for await (const part of req.parts()) {
        if (part.type === 'field') {
          fields[part.fieldname] = String(part.value ?? '');
          continue;
        }
        // The CSRF token must come before the file (it does in the page's form), so nothing is stored for a
        // forged form. The plugin's check runs synchronously: it either calls back or answers with an error.
        if (!csrfChecked) {
          (req as { body?: unknown }).body = { _csrf: fields._csrf };
          app.csrfProtection.call(app, req, reply, () => {
            csrfChecked = true;
          });
          if (!csrfChecked) {
            part.file.resume();
            return reply;
          }
        }
        if (!part.filename) {
          part.file.resume();
          return form(reply, 400, 'Choose a file to upload.');
        }
        try {
          const row = await deps.library.add({
            name: fields.name?.trim() || part.filename,
            source: part.file,
            actor: { type: 'user', id: session.user.id },
            expectedSha256: fields.sha256?.trim() || undefined,
          });
          return sendPage(
            reply,
            200,
            libraryUploadDonePage({
              name: row.name,
              size: row.size,
              sha256: row.sha256,
              expected: fields.sha256?.trim().toLowerCase() || undefined,
            }),
          );
        } catch (err) {
          part.file.resume();
          if (isAppError(err))
            return form(reply, err.code === 'library.too_large' ? 413 : err.status, err.message);
          const e = err as { code?: string };
          if (e.code === 'FST_REQ_FILE_TOO_LARGE') {
            return form(
              reply,
              413,
              `The file is larger than ${maxBytes} bytes (MAX_FILE_BYTES); nothing was stored.`,
            );
          }
          throw err;
        }
      }
      return form(reply, 400, 'Choose a file to upload.');
    });
  });
}
