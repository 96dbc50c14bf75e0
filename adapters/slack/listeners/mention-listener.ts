// `@bot isolate web-01 --reason ...` in a channel: the mention is stripped and the rest is a command.
// Bolt acks Events API requests itself before listeners run, so the retry clock stops at once; the listener
// then records the command in the durable inbox first thing, so a crash while it is handled does not lose it
// (only one in the few milliseconds between Bolt's ack and that insert could be).
import type { App } from '@slack/bolt';
import type { BotCore } from '../../../bot/bot-types.ts';
import { enterInbox } from '../../../bot/inbox/inbox-entry.ts';
import type { InteractionInbox } from '../../../bot/inbox/interaction-inbox.ts';
import type { Logger } from '../../../bot/ports.ts';
import { mentionContext, mentionPayload, stripMention } from '../slack-context.ts';
import type { WorkTracker } from './work-tracker.ts';

export function registerMentionListener(
  app: App,
  deps: { bot: BotCore; logger: Logger; work: WorkTracker; inbox?: InteractionInbox },
): void {
  app.event('app_mention', async ({ body, context }) => {
    const parsed = mentionPayload.safeParse(body);
    if (!parsed.success) {
      deps.logger.warn(
        { issues: parsed.error.issues.slice(0, 5) },
        'ignored an app_mention with an unexpected shape',
      );
      return;
    }
    const ctx = mentionContext(parsed.data);
    const text = stripMention(parsed.data.event.text, context.botUserId);
    const work = await enterInbox(deps, { kind: 'command', ctx, text });
    if (work) await deps.work.run(ctx, work);
  });
}
