// The durable inbox for chat interactions. Slack wants its ack within 3 s, Teams its HTTP answer within a few
// seconds, and the core's work takes longer, so work runs after the answer; a process that died between the
// two used to lose the click without a trace. Now the adapter records the interaction (one insert keyed on
// its event id) before it answers, and marks it processed once the core is done; on start, each adapter's
// `resume` processes what an earlier process answered and never finished.
import { and, asc, eq, isNull, like, lte } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.ts';
import { chatInbox, type Platform, processedEvents } from '../../db/schema.ts';
import type { BotCore, DecisionInput } from '../bot-types.ts';
import type { ChatContext, Clock, Logger } from '../ports.ts';

/**
 * What an adapter records besides the context, for its own handler (Teams: whom to look up, and in which
 * team). Plain strings; the adapter checks them when it reads them back.
 */
export type InboxOrigin = Record<string, string>;

export type InboxItem =
  | { kind: 'command'; ctx: ChatContext; text: string; origin?: InboxOrigin }
  | { kind: 'decision'; ctx: ChatContext; input: DecisionInput; origin?: InboxOrigin };

/**
 * How an item reaches the core. The default hands it over as recorded; an adapter that records an item before
 * its context is final passes its own (Teams identifies the speaker with a member lookup, which must not hold
 * up the answer): it finishes the context and calls `core`, or answers the person itself (a refusal).
 */
export type InboxHandler = (item: InboxItem, core: BotCore) => Promise<void>;

export const toCore: InboxHandler = (item, core) =>
  item.kind === 'command'
    ? core.handleCommand(item.ctx, item.text)
    : core.handleDecision(item.ctx, item.input);

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
const originSchema = z.record(z.string().max(40), z.string().max(1000)).optional();
/** What a stored row must hold to be processed: the rows are ours, but a row is a boundary all the same. */
const itemSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('command'),
    ctx: ctxSchema,
    text: z.string().max(40_000),
    origin: originSchema,
  }),
  z.object({
    kind: z.literal('decision'),
    ctx: ctxSchema,
    origin: originSchema,
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

  async function run(item: InboxItem, handler: InboxHandler = toCore) {
    await handler(item, bot);
    await db
      .update(chatInbox)
      .set({ processedAt: clock.now() })
      .where(eq(chatInbox.key, keyOf(item.ctx)));
  }

  return {
    /**
     * Records an interaction before its ack (or answer). False when it is already recorded (a platform retry
     * of the same event): the caller acks it and does nothing more.
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

    /** Hands a recorded interaction to the core (through `handler`, when given), then marks it processed. */
    process: run,

    /**
     * Processes `platform`'s interactions recorded up to `before` (default now) and never marked processed:
     * an earlier process acked them and died. Each adapter resumes its own platform's, through its own
     * handler, once it can answer there. A click is processed again from the start: the core may have claimed
     * its event id before dying, so that claim is dropped first (a decision re-checks the request's state
     * under its row lock, so a click that did take effect changes nothing twice). A command keeps its claim:
     * run twice it would open a second request. Returns how many it took on.
     */
    async resume(opts: { platform: Platform; before?: Date; handler?: InboxHandler }): Promise<number> {
      const rows = await db
        .select()
        .from(chatInbox)
        .where(
          and(
            isNull(chatInbox.processedAt),
            lte(chatInbox.receivedAt, opts.before ?? clock.now()),
            like(chatInbox.key, `${opts.platform}:%`),
          ),
        )
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
        await run(item, opts.handler).catch((err) =>
          logger.error({ err, key: row.key }, 'resumed interaction failed'),
        );
      }
      return rows.length;
    },
  };
}

export type InteractionInbox = ReturnType<typeof createInteractionInbox>;
