// `@Active Response isolate web-01 --reason ...` in a channel or group chat, or just the command in a
// personal chat with the bot. The command is recorded in the durable inbox (one insert) before the HTTP
// answer goes back, so a crash after the answer does not lose it; the answer does not wait for anything
// more (Teams waits for it, and redelivers after about 15 s). The command is then queued, the speaker
// identified (a member lookup, cached) and the text handed to the core, which answers in the same thread. A
// redelivered activity carries the same id: the inbox already has it, and it is answered and dropped.
import type { App } from '@microsoft/teams.apps';
import type { BotCore } from '../../../bot/bot-types.ts';
import { enterInbox } from '../../../bot/inbox/inbox-entry.ts';
import type { InboxHandler, InteractionInbox } from '../../../bot/inbox/interaction-inbox.ts';
import type { Logger } from '../../../bot/ports.ts';
import { commandText, isCommand, messageActivity, messageEventId } from '../teams-context.ts';
import type { TeamsIdentity } from '../teams-identity.ts';
import { originOf, provisionalContext } from './inbox-items.ts';
import type { WorkTracker } from './work-tracker.ts';

export function registerMessageListener(
  app: App,
  deps: {
    bot: BotCore;
    identity: TeamsIdentity;
    logger: Logger;
    work: WorkTracker;
    inbox?: InteractionInbox;
    /** Identifies the speaker, then hands the command to the core (inbox-items.ts). */
    handler: InboxHandler;
  },
): void {
  app.on('message', async ({ activity }) => {
    const parsed = messageActivity.safeParse(activity);
    if (!parsed.success) {
      deps.logger.warn(
        { issues: parsed.error.issues.slice(0, 5) },
        'ignored a Teams message with an unexpected shape',
      );
      return;
    }
    const a = parsed.data;
    deps.identity.learn(a.from.aadObjectId, a.from.id);
    if (a.from.id === a.recipient.id || !isCommand(a)) return;
    const ctx = provisionalContext(a, messageEventId(a));
    const work = await enterInbox(
      deps,
      { kind: 'command', ctx, text: commandText(a), origin: originOf(a) },
      deps.handler,
    );
    if (work) void deps.work.run(() => ctx, work);
  });
}
