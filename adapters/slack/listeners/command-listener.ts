// The slash command (`/ar isolate web-01 --reason ...`): ack at once, then hand the text to the core.
import type { App } from '@slack/bolt';
import type { BotCore } from '../../../bot/bot-types.ts';
import { enterInbox } from '../../../bot/inbox/inbox-entry.ts';
import type { InteractionInbox } from '../../../bot/inbox/interaction-inbox.ts';
import type { Logger } from '../../../bot/ports.ts';
import { commandContext, commandPayload, unescapeSlackText } from '../slack-context.ts';
import type { WorkTracker } from './work-tracker.ts';

export function registerCommandListener(
  app: App,
  deps: { command: string; bot: BotCore; logger: Logger; work: WorkTracker; inbox?: InteractionInbox },
): void {
  app.command(deps.command, async ({ ack, body }) => {
    // Slack shows "operation timed out" after 3 s: before the ack only the parse and one insert.
    const parsed = commandPayload.safeParse(body);
    if (!parsed.success) {
      await ack();
      deps.logger.warn(
        { issues: parsed.error.issues.slice(0, 5) },
        'ignored a slash command with an unexpected shape',
      );
      return;
    }
    const ctx = commandContext(parsed.data);
    const text = unescapeSlackText(parsed.data.text);
    const work = await enterInbox(deps, { kind: 'command', ctx, text });
    await ack();
    if (work) await deps.work.run(ctx, work);
  });
}
