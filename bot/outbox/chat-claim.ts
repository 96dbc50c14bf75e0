// Which chat outbox rows a sender may send now, taken under a lease (chat-sender.ts sends them). One claimer
// at a time across processes (an advisory lock), so a lane's rows are handed out strictly in order: a row
// waits while an earlier row of its lane is being sent or backing off, and an edit waits for its message's
// edit slot.
import { and, asc, eq, inArray, lte, or, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import { chatOutbox, type Platform } from '../../db/schema.ts';

/** A constant key for pg_advisory_xact_lock: one claimer at a time keeps lanes in order across processes. */
const CLAIM_LOCK_KEY = 7_346_021;
const CLAIM_BATCH = 200;
/** Kinds paced per message: at most one edit of the same message per interval. */
const PACED = ['card_update', 'progress_update'] as const;

export type OutboxRow = typeof chatOutbox.$inferSelect;

const at = (ms: number) => new Date(ms);

/**
 * Takes the rows of `platforms` that may go at `now` (ms): due, and first in their lane among those not yet
 * sent; a card edited within its platform's `editIntervalMs`, or a progress message within
 * `progressIntervalMs`, waits. Claimed rows are `sending` for `leaseMs`, in id order.
 */
export async function claimDue(
  db: Db,
  o: {
    now: number;
    platforms: Platform[];
    editIntervalMs: Record<Platform, number>;
    progressIntervalMs: number;
    leaseMs: number;
  },
): Promise<OutboxRow[]> {
  const {
    now,
    platforms: live,
    editIntervalMs: intervals,
    progressIntervalMs: progressInterval,
    leaseMs,
  } = o;
  const nowAt = at(now);
  const paceCut = sql.join(
    live.map((p) => sql`when ${p} then ${at(now - intervals[p]).toISOString()}::timestamptz`),
    sql` `,
  );
  return db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${CLAIM_LOCK_KEY})`);
    const ids = await tx
      .select({ id: chatOutbox.id })
      .from(chatOutbox)
      .where(
        and(
          inArray(chatOutbox.platform, live),
          or(
            and(
              eq(chatOutbox.state, 'pending'),
              or(sql`${chatOutbox.nextAttemptAt} is null`, lte(chatOutbox.nextAttemptAt, nowAt)),
            ),
            and(eq(chatOutbox.state, 'sending'), lte(chatOutbox.leaseUntil, nowAt)),
          ),
          // An earlier row of the lane still open (being sent, or waiting out a backoff) goes first.
          sql`not exists (select 1 from chat_outbox p where p.lane = ${chatOutbox.lane} and p.id < ${chatOutbox.id}
            and ((p.state = 'sending' and p.lease_until > ${nowAt.toISOString()}::timestamptz)
              or (p.state = 'pending' and p.next_attempt_at > ${nowAt.toISOString()}::timestamptz)))`,
          // A card edited within its platform's interval, or a progress message within the progress
          // interval, waits for the next slot.
          sql`not (${chatOutbox.kind} in (${sql.join(
            PACED.map((k) => sql`${k}`),
            sql`, `,
          )}) and exists (select 1 from chat_outbox s
            where s.lane = ${chatOutbox.lane} and s.state = 'sent'
              and s.sent_at > (case when ${chatOutbox.kind} = 'progress_update'
                then ${at(now - progressInterval).toISOString()}::timestamptz
                else (case ${chatOutbox.platform} ${paceCut} end) end)))`,
        ),
      )
      .orderBy(asc(chatOutbox.id))
      .limit(CLAIM_BATCH);
    if (!ids.length) return [];
    const rows = await tx
      .update(chatOutbox)
      .set({ state: 'sending', leaseUntil: at(now + leaseMs) })
      .where(
        inArray(
          chatOutbox.id,
          ids.map((r) => r.id),
        ),
      )
      .returning();
    return rows.sort((a, b) => a.id - b.id);
  });
}
