// What happens when a person completes a step-up: the approval, confirmation, role change, session or cancel
// the link was for is carried out in the same transaction that consumes the link and opens the window, and
// chat hears about it after the commit. Who the person is (their roles, their organisation) is read inside
// that transaction too: a link carries out only what its owner may still do when they use it.
import type { BotDeps } from '../bot-service.ts';
import type { StepUpOutcome, StepUpPageView } from '../bot-types.ts';
import type { RequestView } from '../ports.ts';
import { describeAction } from '../render/summary.ts';
import {
  type CancelSubject,
  contextFromLocation,
  decodeSubject,
  type ResumeSubject,
  type RoleChangeSubject,
  type SessionSubject,
} from '../stepup/stepup-binding.ts';
import type { ChallengeView, StepUpAttempt } from '../stepup/stepup-types.ts';
import type { ActionHandlers } from './action-handlers.ts';
import { recordSessionThread } from './session-thread.ts';

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
      const { body } = decodeSubject<SessionSubject>(ch.subject);
      return `Start an Active Response session with ${body.hostname}${body.reason ? ` (${body.reason})` : ''}`;
    }
    case 'cancel': {
      const { body } = decodeSubject<CancelSubject>(ch.subject);
      const what = body.deliveryId ? `delivery ${body.deliveryId} of ` : '';
      return request
        ? `Cancel ${what}${request.ref}: ${describeAction(request)}, already dispatched`
        : `Cancel ${body.target}`;
    }
    case 'resume': {
      const { body } = decodeSubject<ResumeSubject>(ch.subject);
      return request
        ? `Resume the halted action group ${request.ref}: ${describeAction(request)}`
        : `Resume ${body.ref}`;
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

  const done = await deps.stepup.complete(attempt, async (challenge, window, tx) => {
    // The person as they are now, read in this transaction (`complete` holds their user row locked): a role
    // taken away since the link was sent is gone here too, and each step below re-checks it.
    const actor = await deps.users.getUser(challenge.userId, tx);
    switch (challenge.purpose) {
      case 'approve': {
        const decision = attempt.decision ?? 'approve';
        const res = await deps.requests.decide(
          {
            requestId: challenge.requestId!,
            approver: actor,
            decision,
            reason: decision === 'deny' ? attempt.reason : undefined,
            digest: challenge.subject,
            stepUpWindowId: window.id,
          },
          tx,
        );
        request = res.request;
        // The thread's messages commit with the decision (and the consumed link).
        if (res.changed) await actions.recordDecision(tx, res.request, actor, decision, attempt.reason);
        const done = decision === 'approve' ? 'approved' : 'denied';
        message = res.changed
          ? `${decision === 'approve' ? 'Approved' : 'Denied'} ${res.request.ref}. Return to the chat to follow it.`
          : `You had already ${done} ${res.request.ref}.`;
        after = async () => {
          if (decision === 'approve' && res.changed)
            await actions.announceThenWake(res.request, res.dispatchedEndpointIds);
          else {
            if (res.dispatchedEndpointIds?.length)
              await deps.dispatcher.wake(res.dispatchedEndpointIds, {
                requestId: res.request.id,
                deliveries: res.request.targets.length,
              });
            if (res.changed) await actions.announceDecision(res.request);
          }
        };
        return;
      }
      case 'confirm': {
        deps.policy.requireRequester(actor);
        const res = await deps.requests.confirmRequester(
          challenge.requestId!,
          challenge.userId,
          challenge.subject,
          tx,
        );
        request = res.request;
        // The card's post is written with the confirmation: it appears even if this process dies next.
        await actions.recordPublish(tx, res.request);
        message = `Confirmed ${res.request.ref}. The request card is now in the channel.`;
        after = async () => {
          if (res.dispatchedEndpointIds?.length)
            await deps.dispatcher.wake(res.dispatchedEndpointIds, {
              requestId: res.request.id,
              deliveries: res.request.targets.length,
            });
          await actions.publish(res.request);
        };
        return;
      }
      case 'grant': {
        const { kind, body } = decodeSubject<RoleChangeSubject>(challenge.subject);
        // The role service checks, under its locks, that the actor is still an admin.
        const change = { actorId: actor.id, userId: body.userId, role: body.role as never };
        if (kind === 'revoke') await deps.users.revokeRole(change, tx);
        else await deps.users.grantRole(change, tx);
        message = `${kind === 'revoke' ? 'Revoked' : 'Granted'} ${body.role} ${kind === 'revoke' ? 'from' : 'to'} ${body.username}.`;
        after = () => deps.chat.reply(contextFromLocation(body.at), message);
        return;
      }
      case 'session': {
        const { body } = decodeSubject<SessionSubject>(challenge.subject);
        deps.policy.requireRequester(actor);
        const session = await deps.sessions.open(
          {
            userId: actor.id,
            hostname: body.hostname,
            stepUpWindowId: window.id,
            reason: body.reason,
            caseId: body.caseId,
            chat: { platform: body.at.platform, channelId: body.at.channelId, threadId: body.at.threadId },
          },
          tx,
        );
        message = `Session with ${session.hostname} started. Return to the chat: its thread takes commands for ${session.hostname}; type session stop ${session.hostname} when done.`;
        await recordSessionThread(
          deps,
          tx,
          contextFromLocation(body.at),
          session.id,
          session.hostname,
          challenge.displayName,
        );
        after = () => deps.outbox.flush();
        return;
      }
      case 'cancel': {
        const { body } = decodeSubject<CancelSubject>(challenge.subject);
        const res = await deps.requests.cancel(
          body.deliveryId ?? body.requestId,
          actor,
          { stepUpWindowId: window.id, inTx: (t, done) => actions.recordCancel(t, actor, done) },
          tx,
        );
        request = res.request;
        message = `Cancelled ${body.target}: ${res.cancelledDeliveries} queued ${res.cancelledDeliveries === 1 ? 'delivery' : 'deliveries'} withdrawn.`;
        after = () => actions.announceCancel(contextFromLocation(body.at), body.target, res);
        return;
      }
      case 'resume': {
        const { body } = decodeSubject<ResumeSubject>(challenge.subject);
        const res = await deps.waves.resume(body.requestId, actor, window.id, tx);
        message = `Resumed ${res.ref}. Return to the chat to follow it.`;
        after = () => deps.waves.announce(body.requestId, res.outcome);
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
  return {
    challenge: done.challenge,
    window: done.window,
    windowExpiresAt: done.window.expiresAt,
    message,
    request,
  };
}
