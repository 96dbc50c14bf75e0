// Approve and Deny buttons on a request card. The click is recorded in the inbox and acked first; the core then re-checks who clicked
// (role, not the requester, organisation) and decides under a row lock, so this file only says what was
// clicked, by whom, where.
import type { App } from '@slack/bolt';
import type { BotCore } from '../../../bot/bot-types.ts';
import { enterInbox } from '../../../bot/inbox/inbox-entry.ts';
import type { InteractionInbox } from '../../../bot/inbox/interaction-inbox.ts';
import type { Logger } from '../../../bot/ports.ts';
import { APPROVE_ACTION_ID, DENY_ACTION_ID } from '../blocks.ts';
import { actionContext, actionPayload } from '../slack-context.ts';
import type { WorkTracker } from './work-tracker.ts';

const DECISION_ACTIONS = new RegExp(`^(${APPROVE_ACTION_ID}|${DENY_ACTION_ID})$`);

export function registerDecisionListener(
  app: App,
  deps: { bot: BotCore; logger: Logger; work: WorkTracker; inbox?: InteractionInbox },
): void {
  app.action({ type: 'block_actions', action_id: DECISION_ACTIONS }, async ({ ack, body }) => {
    const parsed = actionPayload.safeParse(body);
    if (!parsed.success) {
      await ack();
      deps.logger.warn(
        { issues: parsed.error.issues.slice(0, 5) },
        'ignored a button click with an unexpected shape',
      );
      return;
    }
    const action = parsed.data.actions[0]!;
    const ctx = actionContext(parsed.data);
    if (!action.value) {
      await ack();
      await deps.work.run(ctx, () =>
        Promise.reject(new Error(`button ${action.action_id} carries no request id`)),
      );
      return;
    }
    const input = {
      requestId: action.value,
      decision: action.action_id === APPROVE_ACTION_ID ? ('approve' as const) : ('deny' as const),
    };
    // Recorded before the ack (one insert), so a crash after the ack cannot lose the click.
    const work = await enterInbox(deps, { kind: 'decision', ctx, input });
    await ack();
    if (work) await deps.work.run(ctx, work);
  });
}
