// `@Active Response isolate web-01 --reason ...` in a channel or group chat, or just the command in a
// personal chat with the bot. The HTTP answer goes back at once (Teams waits for it); the command is
// queued, the speaker identified (a member lookup, cached) and the text handed to the core, which answers
// in the same thread. A redelivered activity carries the same id, which the core records once.
import type { App } from '@microsoft/teams.apps';
import type { BotCore } from '../../../bot/bot-types.ts';
import { isAppError } from '../../../bot/errors.ts';
import type { ChatContext, ChatPort, Logger } from '../../../bot/ports.ts';
import {
  addressOf,
  commandText,
  contextOf,
  hostTenantOf,
  isCommand,
  messageActivity,
  messageEventId,
  targetOf,
  teamOf,
  threadOf,
} from '../teams-context.ts';
import type { TeamsIdentity } from '../teams-identity.ts';
import type { WorkTracker } from './work-tracker.ts';

export function registerMessageListener(
  app: App,
  deps: { bot: BotCore; chat: ChatPort; identity: TeamsIdentity; logger: Logger; work: WorkTracker },
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
    const text = commandText(a);
    const eventId = messageEventId(a);
    const hostTenant = hostTenantOf(a);
    // Who hears about an unexpected failure before the speaker is identified: the speaker, by object id.
    const provisional: ChatContext = contextOf(
      a,
      {
        platform: 'teams',
        tenantId: hostTenant ?? '-',
        chatUserId: a.from.aadObjectId ?? '',
        displayName: a.from.name,
      },
      eventId,
    );
    let ctx = provisional;
    void deps.work.run(
      () => ctx,
      async () => {
        try {
          const identity = await deps.identity.identify({
            target: targetOf(addressOf(a), threadOf(a)),
            hostTenant,
            teamId: teamOf(a),
            from: a.from,
          });
          ctx = { ...provisional, identity };
        } catch (err) {
          if (!isAppError(err)) throw err;
          await deps.chat.notifyPrivately(provisional, err.message);
          return;
        }
        await deps.bot.handleCommand(ctx, text);
      },
    );
  });
}
