// What a step-up link carries out, and what the window it opens is bound to. A link's subject says what to
// do (a digest, a role change with where to answer in chat, ...); the window records its purpose and a
// short binding derived from that subject, and every check of a window names both. So a window opened to
// read the history never approves anything, and an approval window for one request never approves another.
import type { StepUpPurpose } from '../../db/schema.ts';
import { BadRequest } from '../errors.ts';
import type { ChatContext } from '../ports.ts';

/** Subjects of role, session and cancel challenges carry where to answer, so the page's completion can reply in chat. */
export interface ChatLocation {
  platform: ChatContext['identity']['platform'];
  tenantId: string;
  chatUserId: string;
  channelId: string;
  threadId?: string;
}

export function locationOf(ctx: ChatContext): ChatLocation {
  return {
    platform: ctx.identity.platform,
    tenantId: ctx.identity.tenantId,
    chatUserId: ctx.identity.chatUserId,
    channelId: ctx.channelId,
    threadId: ctx.threadId,
  };
}

export function contextFromLocation(loc: ChatLocation): ChatContext {
  return {
    identity: { platform: loc.platform, tenantId: loc.tenantId, chatUserId: loc.chatUserId },
    channelId: loc.channelId,
    threadId: loc.threadId,
  };
}

/**
 * Windows that show the requester has just confirmed who they are while acting (confirming a request,
 * opening a session): for the window's length they count for the requester's next high-risk requests and
 * sessions. Windows opened to read (history, download) or to decide (approve, grant, cancel) never do.
 */
export const REQUESTER_PURPOSES: readonly StepUpPurpose[] = ['confirm', 'session'];

export type SubjectKind = 'grant' | 'revoke' | 'session' | 'cancel' | 'resume';

export interface RoleChangeSubject {
  userId: string;
  username: string;
  role: string;
  at: ChatLocation;
}

export interface SessionSubject {
  hostname: string;
  reason?: string;
  caseId?: string;
  at: ChatLocation;
}

export interface CancelSubject {
  requestId: string;
  /** The delivery id when one delivery, not the whole request, is withdrawn. */
  deliveryId?: string;
  /** What the person typed, echoed back in chat. */
  target: string;
  at: ChatLocation;
}

/** Resuming a halted action group. */
export interface ResumeSubject {
  requestId: string;
  ref: string;
  at: ChatLocation;
}

export function encodeSubject(kind: SubjectKind, body: Record<string, unknown>): string {
  return `${kind}:${JSON.stringify(body)}`;
}

export function decodeSubject<T>(subject: string): { kind: string; body: T } {
  const i = subject.indexOf(':');
  try {
    return { kind: subject.slice(0, i), body: JSON.parse(subject.slice(i + 1)) as T };
  } catch {
    throw new BadRequest(
      'stepup.bad_subject',
      'This link does not describe anything this platform can carry out.',
    );
  }
}

/** The bindings checks compare a window's subject with; each is built the same way at both ends. */
export const bindTo = {
  /** An approval or the requester's confirmation: this request, at this digest. */
  request: (requestId: string, digest: string) => `${requestId}@${digest}`,
  /** One role change: granting or revoking this role for this user. */
  roleChange: (kind: 'grant' | 'revoke', userId: string, role: string) => `${kind}:${userId}:${role}`,
  /** Withdrawing a dispatched request, or one of its deliveries. */
  cancel: (requestId: string, deliveryId?: string) => (deliveryId ? `${requestId}/${deliveryId}` : requestId),
  session: (hostname: string) => hostname.toLowerCase(),
  /** Letting a halted action group go on. */
  resume: (requestId: string) => `resume:${requestId}`,
  /** A fetched evidence file, by id. */
  file: (fileId: string) => fileId,
};

/**
 * The subject of the window a completed challenge opens. Throws BadRequest 'stepup.bad_subject' for a
 * subject that does not decode (the step-up then rolls back).
 */
export function windowSubject(ch: {
  purpose: StepUpPurpose;
  subject: string;
  requestId: string | null;
}): string {
  switch (ch.purpose) {
    case 'approve':
    case 'confirm':
      return bindTo.request(ch.requestId ?? '', ch.subject);
    case 'grant': {
      const { kind, body } = decodeSubject<RoleChangeSubject>(ch.subject);
      return bindTo.roleChange(kind === 'revoke' ? 'revoke' : 'grant', body.userId, body.role);
    }
    case 'session':
      return bindTo.session(decodeSubject<SessionSubject>(ch.subject).body.hostname);
    case 'cancel': {
      const { body } = decodeSubject<CancelSubject>(ch.subject);
      return bindTo.cancel(body.requestId, body.deliveryId);
    }
    case 'resume':
      return bindTo.resume(decodeSubject<ResumeSubject>(ch.subject).body.requestId);
    default:
      // download: the file id; history: 'history'; upload: as given.
      return ch.subject;
  }
}
