// Requests and decisions: create a request, post and update its card, record approvals and denials, cancel,
// and send the step-up link when a person needs to confirm who they are first. Approving and cancelling after
// dispatch each need a step-up bound to that very decision; no other window stands in for it.
import { and, eq } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { chatOutbox } from '../../db/schema.ts';
import type { BotDeps } from '../bot-service.ts';
import type { DecisionInput } from '../bot-types.ts';
import type { Command } from '../commands/command-types.ts';
import { Conflict, isAppError, StepUpRequired } from '../errors.ts';
import { isGroup } from '../groups/group-progress.ts';
import {
  isPendingCard,
  type OutboxMessage,
  type RequestThread,
  requestThreadOf,
  threadLane,
} from '../outbox/chat-outbox.ts';
import type { ChatContext, RequestView } from '../ports.ts';
import { describeAction, plural } from '../render/summary.ts';
import { bindTo, encodeSubject, locationOf, REQUESTER_PURPOSES } from '../stepup/stepup-binding.ts';
import type { ResolvedUser } from '../users/user-types.ts';

export function createActionHandlers(deps: BotDeps) {
  const { chat, requests, stepup, audit } = deps;

  /**
   * Writes a request's card post into the chat outbox within `tx`, the transaction that makes the request
   * visible to approvers (created, or confirmed by its requester's step-up), with the reply that says who
   * asked for what and, for a group dispatched at once, its progress message. They wait in the request's
   * lane until the card is posted, then go out in its thread.
   */
  async function recordPublish(tx: DbOrTx, view: RequestView): Promise<void> {
    const ref = await requestThreadOf(tx, view.id);
    // A card already posted is not posted again (a request is published once).
    if (!ref || !isPendingCard(ref)) return;
    const platform = ref.platform;
    const who = view.requester.displayName;
    const excluded = view.exclusions.length ? ` (${view.exclusions.length} excluded, see the card)` : '';
    const messages: OutboxMessage[] = [{ kind: 'card_post', requestId: view.id, platform }];
    if (view.state === 'pending_approval') {
      const n = view.approvalsRequired;
      const inHouse = view.inHouseApprovalRequired ? ', one of them in-house' : '';
      messages.push({
        kind: 'thread_reply',
        ref,
        text: `${who} asked for ${describeAction(view)}${excluded}. Needs ${plural(n, 'approval')}${inHouse}.`,
      });
    } else if (view.state === 'dispatched') {
      messages.push({
        kind: 'thread_reply',
        ref,
        text: `${who} ran ${describeAction(view)}${excluded}: read-only, no approval needed. Dispatched to ${plural(view.targets.length, 'endpoint')}.`,
      });
      if (isGroup(view)) messages.push({ kind: 'progress_post', ref, requestId: view.id });
    }
    await deps.outbox.enqueue(tx, messages);
  }

  /**
   * After the request committed with its card post (see recordPublish): sends it. When the platform refused
   * the card, the person who asked (`ctx`) hears privately that the request stands and its card will follow.
   */
  async function publish(view: RequestView, ctx?: ChatContext): Promise<void> {
    deps.faults?.reached('request-after-commit');
    await deps.outbox.flush();
    if (view.state === 'dispatched') deps.faults?.reached('after-dispatch');
    if (!ctx) return;
    const where = await requestThreadOf(deps.db, view.id);
    if (!where || !isPendingCard(where)) return;
    const [row] = await deps.db
      .select({ lastError: chatOutbox.lastError })
      .from(chatOutbox)
      .where(and(eq(chatOutbox.lane, threadLane(where)), eq(chatOutbox.kind, 'card_post')));
    const why = row?.lastError ? ` (${row.lastError})` : '';
    await chat.notifyPrivately(
      ctx,
      `${view.ref} is recorded (${view.state.replace('_', ' ')}), but its card could not be posted yet${why}. It will be posted as soon as the chat accepts it; status ${view.ref} shows the request meanwhile.`,
    );
  }

  /** What the thread hears about a decision: the card shows it, and a reply says who decided. */
  function decisionMessages(
    ref: RequestThread,
    view: RequestView,
    approver: ResolvedUser,
    decision: 'approve' | 'deny',
    reason?: string,
  ): OutboxMessage[] {
    const card: OutboxMessage = { kind: 'card_update', ref, requestId: view.id };
    if (decision === 'deny') {
      return [
        card,
        {
          kind: 'thread_reply',
          ref,
          text: `Denied by ${approver.displayName}${reason ? `: ${reason}` : ''}.`,
        },
      ];
    }
    const dispatched =
      view.state === 'dispatched'
        ? ` Dispatched to ${plural(view.targets.length, 'endpoint')}; offline endpoints receive it when they reconnect.`
        : '';
    return [
      card,
      {
        kind: 'thread_reply',
        ref,
        text: `Approved by ${approver.displayName} (digest ${view.digest}).${dispatched}`,
      },
    ];
  }

  /**
   * Writes the decision's card edit and reply into the chat outbox inside the decision's transaction `tx`:
   * a decision that commits is told in its thread even if this process dies right after; one that rolls
   * back leaves no message.
   */
  async function recordDecision(
    tx: DbOrTx,
    view: RequestView,
    approver: ResolvedUser,
    decision: 'approve' | 'deny',
    reason?: string,
  ): Promise<void> {
    const ref = await requestThreadOf(tx, view.id);
    if (ref) {
      const messages = decisionMessages(ref, view, approver, decision, reason);
      // A group that this approval dispatched gets its live progress message, after the approval's reply.
      if (view.state === 'dispatched' && isGroup(view))
        messages.push({ kind: 'progress_post', ref, requestId: view.id });
      await deps.outbox.enqueue(tx, messages);
    }
    deps.faults?.reached('decision-before-commit');
  }

  /** After the decision committed (with its messages, see recordDecision): sends them. */
  async function announceDecision(_view: RequestView) {
    deps.faults?.reached('decision-after-commit');
    await deps.outbox.flush();
  }

  /**
   * Tells the thread about an approval, then wakes the brokers: the thread reads "approved, dispatched"
   * before any result can arrive (results join the same thread's queue in the outbox, behind it). The
   * deliveries are committed either way; a failed post only delays them until the wake-up below.
   */
  async function announceThenWake(view: RequestView, endpointIds?: string[]) {
    try {
      await announceDecision(view);
    } finally {
      if (endpointIds?.length)
        await deps.dispatcher
          .wake(endpointIds, { requestId: view.id, deliveries: view.targets.length })
          .catch(() => undefined);
    }
    if (view.state === 'dispatched') deps.faults?.reached('after-dispatch');
  }

  /** Writes the cancel's card edit and thread reply into the chat outbox, in the cancel's transaction `tx`. */
  async function recordCancel(
    tx: DbOrTx,
    user: ResolvedUser,
    done: { requestId: string; cancelledDeliveries: number },
  ): Promise<void> {
    const ref = await requestThreadOf(tx, done.requestId);
    if (!ref) return;
    const withdrawn = plural(done.cancelledDeliveries, 'queued delivery', 'queued deliveries');
    await deps.outbox.enqueue(tx, [
      { kind: 'card_update', ref, requestId: done.requestId },
      { kind: 'thread_reply', ref, text: `Cancelled by ${user.displayName}: ${withdrawn} withdrawn.` },
    ]);
  }

  /** After the cancel committed (with its messages, see recordCancel): sends them, tells the person. */
  async function announceCancel(ctx: ChatContext, target: string, result: { cancelledDeliveries: number }) {
    await deps.outbox.flush();
    const withdrawn = plural(result.cancelledDeliveries, 'queued delivery', 'queued deliveries');
    await chat.reply(ctx, `Cancelled ${target}: ${withdrawn} withdrawn.`);
  }

  return {
    recordPublish,
    publish,
    recordDecision,
    announceDecision,
    announceThenWake,

    async request(ctx: ChatContext, user: ResolvedUser, cmd: Command): Promise<void> {
      const window = await stepup.windowFor(user.id, REQUESTER_PURPOSES);
      const res = await requests.createRequest(user, cmd, ctx, {
        requesterStepUpValid: Boolean(window),
        inTx: recordPublish,
      });
      const view = res.request;
      if (res.needsRequesterStepUp) {
        const link = await stepup.createChallenge({
          userId: user.id,
          purpose: 'confirm',
          subject: view.digest,
          requestId: view.id,
        });
        await chat.reply(
          ctx,
          `${view.ref}: ${describeAction(view)} is waiting for ${user.displayName} to confirm it's them.`,
        );
        await chat.notifyPrivately(
          ctx,
          `Confirm ${view.ref} (${describeAction(view)}) with your password and authenticator code: ${link.url}\nThe link is single-use and expires at ${link.expiresAt.toISOString()}.`,
        );
        return;
      }
      await publish(view, ctx);
    },

    async decide(ctx: ChatContext, user: ResolvedUser, input: DecisionInput): Promise<void> {
      const view = await requests.getView(input.requestId);
      if (view.state !== 'pending_approval') {
        // No link and no decision for a request that is no longer waiting; `decide` re-checks under a lock.
        throw new Conflict(
          'request.not_pending',
          `${view.ref} is already ${view.state.replace('_', ' ')}; there is nothing to decide.`,
        );
      }
      if (input.decision === 'approve') {
        // Refuse privately before any link is sent: the requester, non-approvers and the like get no link.
        deps.policy.canApprove(user, {
          requester: view.requester,
          approvalsRequired: view.approvalsRequired,
          inHouseApprovalRequired: view.inHouseApprovalRequired,
          approvals: [],
        });
        // Only a step-up for this request at this digest approves it: one opened to read the history, or to
        // approve another request, does not.
        const window = await stepup.windowFor(user.id, 'approve', bindTo.request(view.id, view.digest));
        if (!window) {
          const link = await stepup.createChallenge({
            userId: user.id,
            purpose: 'approve',
            subject: view.digest,
            requestId: view.id,
          });
          throw new StepUpRequired(
            `Approving ${view.ref} (${describeAction(view)}) needs a fresh step-up. The page shows every detail of the request; you can approve or deny there.`,
            link.url,
          );
        }
        const res = await requests.decide(
          {
            requestId: view.id,
            approver: user,
            decision: 'approve',
            digest: view.digest,
            stepUpWindowId: window.id,
          },
          undefined,
          { wake: false, inTx: (tx, now) => recordDecision(tx, now, user, 'approve') },
        );
        if (!res.changed) {
          await chat.notifyPrivately(ctx, `You already approved ${view.ref}; nothing changed.`);
          return;
        }
        await announceThenWake(res.request, res.dispatchedEndpointIds);
        return;
      }
      const res = await requests.decide(
        { requestId: view.id, approver: user, decision: 'deny', reason: input.reason },
        undefined,
        { inTx: (tx, now) => recordDecision(tx, now, user, 'deny', input.reason) },
      );
      if (!res.changed) {
        await chat.notifyPrivately(ctx, `${view.ref} was already decided; nothing changed.`);
        return;
      }
      await announceDecision(res.request);
    },

    recordCancel,
    announceCancel,

    /**
     * Resume a halted action group: an approver (not its requester), with a step-up bound to resuming this
     * group. Without a live one the person gets the link, and completing it resumes the group.
     */
    async resume(ctx: ChatContext, user: ResolvedUser, cmd: Extract<Command, { kind: 'resume' }>) {
      const view = await requests.getView(cmd.ref);
      deps.policy.canApprove(user, { ...view, approvalsRequired: 1, approvals: [] });
      const window = await stepup.windowFor(user.id, 'resume', bindTo.resume(view.id));
      if (!window) {
        const link = await stepup.createChallenge({
          userId: user.id,
          purpose: 'resume',
          subject: encodeSubject('resume', { requestId: view.id, ref: view.ref, at: locationOf(ctx) }),
          requestId: view.id,
        });
        throw new StepUpRequired(
          `Resuming ${view.ref} (${describeAction(view)}) sends its held deliveries, so it needs a fresh step-up.`,
          link.url,
        );
      }
      const res = await deps.waves.resume(view.id, user, window.id);
      await deps.waves.announce(view.id, res.outcome);
      await chat.reply(ctx, `Resumed ${res.ref}.`);
    },

    /**
     * Cancel: the requester, the request's approvers or an in-house admin, with MFA. Before dispatch it
     * happens at once; after dispatch the person gets a step-up link bound to this cancel, and completing it
     * carries the cancel out.
     */
    async cancel(
      ctx: ChatContext,
      user: ResolvedUser,
      cmd: Extract<Command, { kind: 'cancel' }>,
    ): Promise<void> {
      const plan = await requests.prepareCancel(cmd.target, user);
      const link = async () => {
        const created = await stepup.createChallenge({
          userId: user.id,
          purpose: 'cancel',
          subject: encodeSubject('cancel', {
            requestId: plan.requestId,
            deliveryId: plan.deliveryId,
            target: cmd.target,
            at: locationOf(ctx),
          }),
          requestId: plan.requestId,
        });
        return new StepUpRequired(
          `${plan.ref} is already dispatched, so cancelling ${cmd.target} needs a fresh step-up. The page shows what it withdraws.`,
          created.url,
        );
      };
      if (plan.stepUpRequired) throw await link();
      let result: Awaited<ReturnType<typeof requests.cancel>>;
      try {
        result = await requests.cancel(cmd.target, user, {
          inTx: (tx, done) => recordCancel(tx, user, done),
        });
      } catch (err) {
        // Dispatched between the check and the cancel: it needs the step-up after all.
        if (isAppError(err) && err.code === 'cancel.stepup_required') throw await link();
        throw err;
      }
      await audit.append({
        actorType: 'user',
        actorId: user.id,
        action: 'command.cancel',
        outcome: 'ok',
        requestId: result.request?.id ?? null,
        details: { target: cmd.target, cancelledDeliveries: result.cancelledDeliveries },
      });
      await announceCancel(ctx, cmd.target, result);
    },
  };
}

export type ActionHandlers = ReturnType<typeof createActionHandlers>;
