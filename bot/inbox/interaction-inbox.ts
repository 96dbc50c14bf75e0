// The durable inbox for chat interactions. Slack wants its ack within 3 s and the core's work takes longer,
// so work runs after the ack; a process that died between the two used to lose the click without a trace.
// Now the adapter records the interaction (one insert keyed on its event id) before it acks, and marks it
// processed once the core is done; on start, `resume` processes whatever an earlier process acked and never
// finished.
import { and, asc, eq, isNull, lte } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.ts';
import { chatInbox, processedEvents } from '../../db/schema.ts';
import type { BotCore, DecisionInput } from '../bot-types.ts';
import type { ChatContext, Clock, Logger } from '../ports.ts';

export type InboxItem =
  | { kind: 'command'; ctx: ChatContext; text: string }
  | { kind: 'decision'; ctx: ChatContext; input: DecisionInput };

const ctxSchema = z.object({
  identity: z.object({
    platform: z.enum(['slack', 'teams', 'console']),
    tenantId: z.string().max(200),
    chatUserId: z.string().max(200),
    displayName: z.string().max(500).optional(),
  }),
  channelId: z.string().max(200),
  threadId: z.string().max(200).optional(),
  eventId: z.string().max(300),
});
/** What a stored row must hold to be processed: the rows are ours, but a row is a boundary all the same. */
const itemSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('command'), ctx: ctxSchema, text: z.string().max(40_000) }),
  z.object({
    kind: z.literal('decision'),
    ctx: ctxSchema,
    input: z.object({
      requestId: z.string().max(100),
      decision: z.enum(['approve', 'deny']),
      reason: z.string().max(2000).optional(),
    }),
  }),
]);

/** How many unfinished interactions one `resume` takes on. */
const RESUME_BATCH = 500;

const keyOf = (ctx: ChatContext) => `${ctx.identity.platform}:${ctx.eventId}`.slice(0, 300);

export function createInteractionInbox(deps: { db: Db; bot: BotCore; clock: Clock; logger: Logger }) {
  const { db, bot, clock, logger } = deps;

  async function run(item: InboxItem) {
    if (item.kind === 'command') await bot.handleCommand(item.ctx, item.text);
    else await bot.handleDecision(item.ctx, item.input);
    await db
      .update(chatInbox)
      .set({ processedAt: clock.now() })
      .where(eq(chatInbox.key, keyOf(item.ctx)));
  }

  return {
    /**
     * Records an interaction before its ack. False when it is already recorded (a platform retry of the same
     * event): the caller acks it and does nothing more.
     */
    async record(item: InboxItem): Promise<boolean> {
      if (!item.ctx.eventId) throw new Error('an interaction needs its event id to be recorded');
      const rows = await db
        .insert(chatInbox)
        .values({ key: keyOf(item.ctx), kind: item.kind, payload: item, receivedAt: clock.now() })
        .onConflictDoNothing()
        .returning({ key: chatInbox.key });
      return rows.length === 1;
    },

    /** Hands a recorded interaction to the core, then marks it processed. */
    process: run,

    /**
     * Processes interactions recorded up to `before` (default now) and never marked processed: an earlier
     * process acked them and died. A click is processed again from the start: the core may have claimed its
     * event id before dying, so that claim is dropped first (a decision re-checks the request's state under
     * its row lock, so a click that did take effect changes nothing twice). A command keeps its claim: run
     * twice it would open a second request. Returns how many it took on.
     */
    async resume(before: Date = clock.now()): Promise<number> {
      const rows = await db
        .select()
        .from(chatInbox)
        .where(and(isNull(chatInbox.processedAt), lte(chatInbox.receivedAt, before)))
        .orderBy(asc(chatInbox.receivedAt))
        .limit(RESUME_BATCH);
      for (const row of rows) {
        const parsed = itemSchema.safeParse(row.payload);
        if (!parsed.success) {
          logger.warn({ key: row.key }, 'skipped an unreadable interaction in the inbox');
          await db.update(chatInbox).set({ processedAt: clock.now() }).where(eq(chatInbox.key, row.key));
          continue;
        }
        const item = parsed.data as InboxItem;
        if (item.kind === 'decision')
          await db.delete(processedEvents).where(eq(processedEvents.key, row.key));
        logger.info({ key: row.key, kind: item.kind }, 'processing an interaction an earlier process acked');
        await run(item).catch((err) => logger.error({ err, key: row.key }, 'resumed interaction failed'));
      }
      return rows.length;
    },
  };
}

export type InteractionInbox = ReturnType<typeof createInteractionInbox>;
