// The step-up window as a browser cookie, for the pages a browser returns to after a step-up: file
// downloads and session history. The cookie names a step-up window row and its user, is signed (HMAC under
// a key derived from the platform secret key), and dies with the window: every request re-reads the window,
// so a window that expired or was closed in the database stops the cookie at once. The window keeps its
// purpose and subject, and each page checks them: a history window downloads nothing, and a download window
// opens its one file.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { StepUpWindow } from '../bot/stepup/stepup-types.ts';
import type { ResolvedUser } from '../bot/users/user-types.ts';
import type { StepUpPurpose } from '../db/schema.ts';
import type { StepUpPagesDeps } from './web-types.ts';

export const WINDOW_COOKIE = 'ar_stepup_window';

const cookieValue = z.tuple([z.uuid(), z.uuid()]);

export function setWindowCookie(reply: FastifyReply, window: StepUpWindow, now: Date, secure: boolean): void {
  const maxAge = Math.max(1, Math.floor((window.expiresAt.getTime() - now.getTime()) / 1000));
  reply.setCookie(WINDOW_COOKIE, `${window.id}.${window.userId}`, {
    signed: true,
    httpOnly: true,
    sameSite: 'strict',
    secure,
    path: '/',
    maxAge,
  });
}

export interface WindowSession {
  windowId: string;
  /** What the window was opened for, and what it is bound to (a file id for a download). */
  purpose: StepUpPurpose;
  subject: string;
  expiresAt: Date;
  user: ResolvedUser;
}

/** The live window the request's cookie names, or null (no cookie, bad signature, expired, disabled user). */
export async function readWindowCookie(
  req: FastifyRequest,
  deps: Pick<StepUpPagesDeps, 'stepup' | 'users'>,
): Promise<WindowSession | null> {
  const raw = req.cookies[WINDOW_COOKIE];
  if (!raw) return null;
  const unsigned = req.unsignCookie(raw);
  if (!unsigned.valid || !unsigned.value) return null;
  const parsed = cookieValue.safeParse(unsigned.value.split('.'));
  if (!parsed.success) return null;
  const [windowId, userId] = parsed.data;
  const window = await deps.stepup.windowById(windowId);
  if (!window || window.userId !== userId) return null;
  const user = await deps.users.getUser(userId);
  if (user.disabled) return null;
  return {
    windowId: window.id,
    purpose: window.purpose,
    subject: window.subject,
    expiresAt: window.expiresAt,
    user,
  };
}
