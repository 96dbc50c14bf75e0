// The slash command (`/ar isolate web-01 --reason ...`): ack at once, then hand the text to the core.
import type { App } from '@slack/bolt';
import type { BotCore } from '../../../bot/bot-types.ts';
import type { Logger } from '../../../bot/ports.ts';
import { commandContext, commandPayload, unescapeSlackText } from '../slack-context.ts';
import type { WorkTracker } from './work-tracker.ts';

export function registerCommandListener(
  app: App,
  deps: { command: string; bot: BotCore; logger: Logger; work: WorkTracker },
): void {
  app.command(deps.command, async ({ ack, body }) => {
    // Slack shows "operation timed out" after 3 s; nothing slow may happen before this line.
    await ack();
    const parsed = commandPayload.safeParse(body);
    if (!parsed.success) {
      deps.logger.warn(
        { issues: parsed.error.issues.slice(0, 5) },
        'ignored a slash command with an unexpected shape',
      );
      return;
    }
    const ctx = commandContext(parsed.data);
    await deps.work.run(ctx, () => deps.bot.handleCommand(ctx, unescapeSlackText(parsed.data.text)));
  });
}
