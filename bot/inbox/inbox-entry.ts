// How a chat adapter enters an interaction in the durable inbox (interaction-inbox.ts): recorded before the
// platform is told it arrived (Slack's ack, Teams' HTTP answer), so a process that dies after that answer
// leaves it for the next start instead of losing it.
import type { BotCore } from '../bot-types.ts';
import type { Logger } from '../ports.ts';
import { type InboxHandler, type InboxItem, type InteractionInbox, toCore } from './interaction-inbox.ts';

/**
 * Records `item` and returns the work to run after the answer, or undefined when the inbox already had it (a
 * retry of the same event: it is processed, or being processed, from its first arrival). Without an inbox,
 * or when the insert fails (the database is down), the work runs from memory, logged. `handler` is how the
 * item reaches the core (see InboxHandler); the same one must be given to `resume`.
 */
export async function enterInbox(
  deps: { inbox?: InteractionInbox; bot: BotCore; logger: Logger },
  item: InboxItem,
  handler: InboxHandler = toCore,
): Promise<(() => Promise<void>) | undefined> {
  const { inbox } = deps;
  const direct = () => handler(item, deps.bot);
  if (!inbox || !item.ctx.eventId) return direct;
  try {
    return (await inbox.record(item)) ? () => inbox.process(item, handler) : undefined;
  } catch (err) {
    deps.logger.error(
      { err, eventId: item.ctx.eventId },
      'could not record an interaction; handling it anyway',
    );
    return direct;
  }
}
