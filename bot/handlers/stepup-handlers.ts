// What happens when a person completes a step-up: the approval, confirmation, role change or session the
// link was for is carried out in the same transaction that consumes the link and opens the window, and chat
// hears about it after the commit.
import type { BotDeps } from '../bot-service.ts';
import type { StepUpOutcome, StepUpPageView } from '../bot-types.ts';
import { BadRequest } from '../errors.ts';
import type { ChatContext, RequestView } from '../ports.ts';
import { describeAction } from '../render/summary.ts';
import type { ChallengeView, StepUpAttempt } from '../stepup/stepup-types.ts';
import type { ActionHandlers } from './action-handlers.ts';
import { requestContextOf } from './chat-ref.ts';
import { announceSession } from './session-thread.ts';

/** Subjects of role and session challenges carry where to answer, so the page's completion can reply in chat. */
export interface ChatLocation {
  platform: ChatContext['identity']['platform'];
  tenantId: string;
  chatUserId: string;
  channelId: string;
  threadId?: string;
}

export function encodeSubject(kind: 'grant' | 'revoke' | 'session', body: Record<string, unknown>): string {
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

export function contextFromLocation(loc: ChatLocation): ChatContext {
  return {
    identity: { platform: loc.platform, tenantId: loc.tenantId, chatUserId: loc.chatUserId },
    channelId: loc.channelId,
    threadId: loc.threadId,
  };
}

function summarise(ch: ChallengeView, request?: RequestView): string {
  switch (ch.purpose) {
    case 'approve':
      return request ? `Approve ${request.ref}: ${describeAction(request)}` : 'Approve a request';
    case 'confirm':
      return request
        ? `Confirm your request ${request.ref}: ${describeAction(request)}`
        : 'Confirm your request';
    case 'grant': {
      const { kind, body } = decodeSubject<{ role: string; username: string }>(ch.subject);
      return `${kind === 'revoke' ? 'Revoke' : 'Grant'} the ${body.role} role ${kind === 'revoke' ? 'from' : 'to'} ${body.username}`;
    }
    case 'session': {
      const { body } = decodeSubject<{ hostname: string }>(ch.subject);
      return `Start an Active Response session with ${body.hostname}`;
    }
    case 'download':
      return 'Download a fetched evidence file';
    case 'history':
      return 'Open the Active Response session history';
    case 'upload':
      return 'Add a file to the library that put can push';
    default:
      return 'Confirm it is you';
  }
}

export async function describeChallenge(deps: BotDeps, token: string): Promise<StepUpPageView> {
  const challenge = await deps.stepup.inspectChallenge(token);
  const request = challenge.requestId ? await deps.requests.getView(challenge.requestId) : undefined;
  return { challenge, request, summary: summarise(challenge, request) };
}

export async function runConfirmedStepUp(
  deps: BotDeps,
  actions: ActionHandlers,
  attempt: StepUpAttempt,
): Promise<StepUpOutcome> {
  let after: (() => Promise<void>) | undefined;
  let message = 'Confirmed. You can return to the chat.';
  let request: RequestView | undefined;

  // Read what the callback needs before the transaction opens: on PGlite a query outside the open
  // transaction would wait for it forever. `complete` re-checks the link under a row lock.
  const pending = await deps.stepup.inspectChallenge(attempt.token).catch(() => null);
  const approver = pending?.purpose === 'approve' ? await deps.users.getUser(pending.userId) : undefined;

  const done = await deps.stepup.complete(attempt, async (challenge, window, tx) => {
    switch (challenge.purpose) {
      case 'approve': {
        if (!approver || approver.id !== challenge.userId)
          throw new BadRequest(
            'stepup.bad_subject',
            'This link changed while it was being used; ask for a new one.',
          );
        const decision = attempt.decision ?? 'approve';
        const res = await deps.requests.decide(
          {
            requestId: challenge.requestId!,
            approver,
            decision,
            reason: decision === 'deny' ? attempt.reason : undefined,
            digest: challenge.subject,
            stepUpWindowId: window.id,
          },
          tx,
        );
        request = res.request;
        const done = decision === 'approve' ? 'approved' : 'denied';
        message = res.changed
          ? `${decision === 'approve' ? 'Approved' : 'Denied'} ${res.request.ref}. Return to the chat to follow it.`
          : `You had already ${done} ${res.request.ref}.`;
        after = async () => {
          if (decision === 'approve' && res.changed)
            await actions.announceThenWake(res.request, approver, res.dispatchedEndpointIds);
          else {
            if (res.dispatchedEndpointIds?.length) await deps.dispatcher.wake(res.dispatchedEndpointIds);
            if (res.changed) await actions.announceDecision(res.request, approver, decision, attempt.reason);
          }
        };
        return;
      }
      case 'confirm': {
        const res = await deps.requests.confirmRequester(
          challenge.requestId!,
          challenge.userId,
          challenge.subject,
          tx,
        );
        request = res.request;
        message = `Confirmed ${res.request.ref}. The request card is now in the channel.`;
        after = async () => {
          if (res.dispatchedEndpointIds?.length) await deps.dispatcher.wake(res.dispatchedEndpointIds);
          const ctx = await requestContextOf(deps.db, res.request.id);
          if (ctx) await actions.publish(ctx, res.request);
        };
        return;
      }
      case 'grant': {
        const { kind, body } = decodeSubject<{
          userId: string;
          username: string;
          role: string;
          at: ChatLocation;
        }>(challenge.subject);
        const change = { actorId: challenge.userId, userId: body.userId, role: body.role as never };
        if (kind === 'revoke') await deps.users.revokeRole(change, tx);
        else await deps.users.grantRole(change, tx);
        message = `${kind === 'revoke' ? 'Revoked' : 'Granted'} ${body.role} ${kind === 'revoke' ? 'from' : 'to'} ${body.username}.`;
        after = () => deps.chat.reply(contextFromLocation(body.at), message);
        return;
      }
      case 'session': {
        const { body } = decodeSubject<{ hostname: string; at: ChatLocation }>(challenge.subject);
        const session = await deps.sessions.open(
          {
            userId: challenge.userId,
            hostname: body.hostname,
            stepUpWindowId: window.id,
            chat: { platform: body.at.platform, channelId: body.at.channelId, threadId: body.at.threadId },
          },
          tx,
        );
        message = `Session with ${session.hostname} started. Return to the chat: its thread takes commands for ${session.hostname}; type session stop ${session.hostname} when done.`;
        after = () =>
          announceSession(
            deps,
            contextFromLocation(body.at),
            session.id,
            session.hostname,
            challenge.displayName,
          );
        return;
      }
      default:
        // download and history: the page itself serves what the window unlocks.
        return;
    }
  });

  if (after) {
    try {
      await after();
    } catch (err) {
      deps.logger.error(
        { err, challengeId: done.challenge.id },
        'step-up completed but the chat update failed',
      );
    }
  }
  return { challenge: done.challenge, windowExpiresAt: done.window.expiresAt, message, request };
}
