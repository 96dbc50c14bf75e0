// Records an interaction in the durable inbox before its ack (bot/inbox/interaction-inbox.ts), so a process
// that dies after the ack leaves it for the next start instead of losing it.
import type { InboxItem, InteractionInbox } from '../../../bot/inbox/interaction-inbox.ts';
import type { Logger } from '../../../bot/ports.ts';

/**
 * Records `item` and returns the work to run after the ack, or undefined when the inbox already had it (a
 * retry of the same event: it is processed, or being processed, from its first arrival). Without an inbox,
 * or when the insert fails (the database is down), the work runs from memory as before.
 */
export async function enterInbox(
  inbox: InteractionInbox | undefined,
  item: InboxItem,
  direct: () => Promise<void>,
  logger: Logger,
): Promise<(() => Promise<void>) | undefined> {
  if (!inbox || !item.ctx.eventId) return direct;
  try {
    return (await inbox.record(item)) ? () => inbox.process(item) : undefined;
  } catch (err) {
    logger.error({ err, eventId: item.ctx.eventId }, 'could not record an interaction; handling it anyway');
    return direct;
  }
}
