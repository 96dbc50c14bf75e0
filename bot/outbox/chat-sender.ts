// Delivers the chat outbox (chat-outbox.ts) through the adapters' ChatPort. One sender per platform
// process; with several, claims (chat-claim.ts) are taken one process at a time and held by a lease, so
// a row goes out once and a lane (a thread, a card, a request waiting for its card) strictly in order: a row
// waits while an earlier row of its lane is being sent or backing off. A row is marked sent only after the
// platform accepted it; a process that dies mid-send leaves it `sending` until its lease runs out, then
// another sender sends it again (at least once). Posts of new messages (a card, a progress message, a
// session thread) go through chat-posts.ts, which records where each lives. Card and progress edits are
// paced per message (at most one per `editIntervalMs`); a rate limit (Slack's 429)
// pauses the whole platform for its Retry-After; other failures back off exponentially up to a cap and
// then the row is `failed` with its error recorded and logged.
import { AsyncResource } from 'node:async_hooks';
import { and, eq, inArray, isNotNull, lt, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import { type ChatOutboxKind, chatOutbox, type Platform } from '../../db/schema.ts';
import type { ChatMessageRef, ChatPort, Logger, RequestView, Timers } from '../ports.ts';
import { claimDue, type OutboxRow } from './chat-claim.ts';
import {
  type ChatPlace,
  ChatRateLimited,
  isPendingCard,
  type RequestThread,
  requestThreadOf,
} from './chat-outbox.ts';

/** Lanes sent at once within a pass; each lane is sent in order. */
const LANE_CONCURRENCY = 8;

type Row = OutboxRow;

/**
 * The posts that create a message and record where it lives (chat-posts.ts). Each returns false when there
 * is nothing to say (already posted by an earlier attempt, or nothing to edit yet): the row is then dropped.
 */
export interface ChatPosts {
  card(requestId: string): Promise<boolean>;
  progress(requestId: string, cardRef: ChatMessageRef): Promise<boolean>;
  progressEdit(requestId: string): Promise<boolean>;
  sessionThread(place: ChatPlace, sessionId: string, text: string): Promise<boolean>;
}

export interface ChatSenderOptions {
  db: Db;
  /** The adapters, by platform (the chat router). */
  chat: ChatPort;
  /** The request's view as it is now, for a card edit. */
  render(requestId: string): Promise<RequestView>;
  /** New cards, progress messages and session threads (chat-posts.ts); without them such rows fail. */
  posts?: ChatPosts;
  timers: Timers;
  logger: Logger;
  /** Minimum time between two edits of one card, per platform (default 1000 ms; the console 0). */
  editIntervalMs?: Partial<Record<Platform, number>>;
  /**
   * Minimum time between two edits of an action group's progress message, on every platform (default
   * 1000 ms): what the group's thread promises, whatever the platform would take.
   */
  progressIntervalMs?: number;
  /** How long a claim keeps other senders off a row. */
  leaseMs?: number;
  /** Failures (not rate limits) before a row is given up as `failed`. */
  maxAttempts?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** How often a started sender looks for rows written by other processes. */
  pollMs?: number;
  /** How soon to look again while rows wait only for their card's edit slot. */
  tickMs?: number;
}

export function createChatSender(opts: ChatSenderOptions) {
  const { db, chat, timers, logger } = opts;
  const intervals: Record<Platform, number> = {
    slack: 1000,
    teams: 1000,
    console: 0,
    ...opts.editIntervalMs,
  };
  const progressInterval = opts.progressIntervalMs ?? 1000;
  const leaseMs = opts.leaseMs ?? 30_000;
  const maxAttempts = opts.maxAttempts ?? 8;
  const backoffBase = opts.backoffBaseMs ?? 1000;
  const backoffCap = opts.backoffCapMs ?? 5 * 60_000;
  const pollMs = opts.pollMs ?? 2000;
  const tickMs = opts.tickMs ?? 250;
  /** A platform that answered "rate limited" gets nothing until then (ms). */
  const pausedUntil = new Map<Platform, number>();
  // Passes run outside whatever async context kicked them (a Teams click captures what is said during it).
  const scope = new AsyncResource('chat-sender');

  let running: Promise<void> | null = null;
  let again = false;
  let stopped = false;
  let cancelSoon: (() => void) | undefined;
  let cancelPoll: (() => void) | undefined;

  const at = (ms: number) => new Date(ms);
  const paused = (p: Platform, now: number) => (pausedUntil.get(p) ?? 0) > now;

  /** Takes the rows that may go now (chat-claim.ts), on the platforms not waiting out a rate limit. */
  async function claim(now: number): Promise<Row[]> {
    const platforms = (Object.keys(intervals) as Platform[]).filter((p) => !paused(p, now));
    if (!platforms.length) return [];
    return claimDue(db, {
      now,
      platforms,
      editIntervalMs: intervals,
      progressIntervalMs: progressInterval,
      leaseMs,
    });
  }

  /** The card's thread for a row written while its request's card was still waiting to be posted. */
  async function threadOf(row: Row): Promise<ChatMessageRef> {
    const target = row.target as RequestThread;
    if (!isPendingCard(target)) return target;
    const now = await requestThreadOf(db, target.requestId);
    if (!now || isPendingCard(now)) throw new Error("the request's card is not posted yet");
    return now;
  }

  /** Says the row in its chat; false when there was nothing to say (the row is dropped, not marked sent). */
  async function deliver(row: Row): Promise<boolean> {
    const kind: ChatOutboxKind = row.kind;
    const payload = row.payload as { requestId?: string; text?: string; sessionId?: string };
    const posts = opts.posts;
    if (!posts && kind !== 'card_update' && kind !== 'thread_reply')
      throw new Error(`this sender has no poster for ${kind} messages`);
    switch (kind) {
      case 'card_post':
        return posts!.card(payload.requestId!);
      case 'card_update':
        await chat.updateRequestCard(await threadOf(row), await opts.render(payload.requestId!));
        return true;
      case 'thread_reply':
        await chat.replyInThread(await threadOf(row), payload.text!);
        return true;
      case 'progress_post':
        return posts!.progress(payload.requestId!, await threadOf(row));
      case 'progress_update':
        return posts!.progressEdit(payload.requestId!);
      case 'session_thread':
        return posts!.sessionThread(row.target as ChatPlace, payload.sessionId!, payload.text!);
    }
  }

  /**
   * Puts a claimed row back to `pending`. A card row that a newer edit of the same card joined in the
   * meantime is dropped instead: the newer row renders the newest view, and takes over the wait.
   */
  async function putBack(
    row: Row,
    set: { attempts?: number; nextAttemptAt?: Date | null; lastError?: string },
  ) {
    if (row.coalesceKey) {
      const newer = await db
        .update(chatOutbox)
        .set({ attempts: set.attempts ?? row.attempts, nextAttemptAt: set.nextAttemptAt ?? null })
        .where(and(eq(chatOutbox.coalesceKey, row.coalesceKey), eq(chatOutbox.state, 'pending')))
        .returning({ id: chatOutbox.id });
      if (newer.length) {
        await db.delete(chatOutbox).where(and(eq(chatOutbox.id, row.id), eq(chatOutbox.state, 'sending')));
        return;
      }
    }
    await db
      .update(chatOutbox)
      .set({ state: 'pending', leaseUntil: null, ...set })
      .where(and(eq(chatOutbox.id, row.id), eq(chatOutbox.state, 'sending')));
  }

  function describe(err: unknown): string {
    const message = err instanceof Error ? err.message : String(err);
    const code = (err as { code?: unknown })?.code;
    return (typeof code === 'string' && !message.includes(code) ? `${code}: ${message}` : message).slice(
      0,
      500,
    );
  }

  /** Sends one lane's claimed rows in order; stops at the first that fails and puts the rest back. */
  async function sendLane(rows: Row[]): Promise<number> {
    let sent = 0;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      if (stopped || paused(row.platform, timers.now())) {
        for (const r of rows.slice(i)) await putBack(r, {});
        return sent;
      }
      let said: boolean;
      try {
        said = await deliver(row);
      } catch (err) {
        const now = timers.now();
        if (err instanceof ChatRateLimited) {
          const until = now + Math.max(err.retryAfterMs, 0);
          pausedUntil.set(row.platform, Math.max(until, pausedUntil.get(row.platform) ?? 0));
          logger.warn(
            { platform: row.platform, retryAfterMs: err.retryAfterMs },
            'chat platform rate limited us',
          );
          await putBack(row, { nextAttemptAt: at(until), lastError: describe(err) });
        } else {
          const attempts = row.attempts + 1;
          const error = describe(err);
          if (attempts >= maxAttempts) {
            logger.error(
              { outboxId: row.id, kind: row.kind, platform: row.platform, attempts, error },
              'gave up sending a chat message',
            );
            await db
              .update(chatOutbox)
              .set({ state: 'failed', attempts, lastError: error, leaseUntil: null })
              .where(eq(chatOutbox.id, row.id));
          } else {
            const wait = Math.min(backoffCap, backoffBase * 2 ** (attempts - 1));
            logger.warn(
              { outboxId: row.id, kind: row.kind, platform: row.platform, attempts, error, retryInMs: wait },
              'could not send a chat message; will retry',
            );
            await putBack(row, { attempts, nextAttemptAt: at(now + wait), lastError: error });
          }
        }
        for (const r of rows.slice(i + 1)) await putBack(r, {});
        return sent;
      }
      if (!said) {
        await db.delete(chatOutbox).where(eq(chatOutbox.id, row.id));
        sent++;
        continue;
      }
      // Only now, after the platform accepted it.
      await db
        .update(chatOutbox)
        .set({ state: 'sent', sentAt: at(timers.now()), leaseUntil: null })
        .where(eq(chatOutbox.id, row.id));
      sent++;
    }
    return sent;
  }

  /** Claims and sends until nothing is due. */
  async function pass(): Promise<void> {
    for (;;) {
      if (stopped) return;
      const rows = await claim(timers.now());
      if (!rows.length) return;
      const lanes = new Map<string, Row[]>();
      for (const r of rows) {
        const lane = lanes.get(r.lane) ?? [];
        lane.push(r);
        lanes.set(r.lane, lane);
      }
      const queue = [...lanes.values()];
      let sent = 0;
      await Promise.all(
        Array.from({ length: Math.min(LANE_CONCURRENCY, queue.length) }, async () => {
          for (let lane = queue.shift(); lane; lane = queue.shift()) sent += await sendLane(lane);
        }),
      );
      if (!sent) return;
    }
  }

  /** Arms one timer for when the next waiting row may go (a backoff, a Retry-After, a card's edit slot). */
  async function armNext(): Promise<void> {
    if (stopped) return;
    const [next] = await db
      .select({
        open: sql<number>`count(*)::int`,
        asap: sql<number>`(count(*) filter (where ${chatOutbox.state} = 'pending' and ${chatOutbox.nextAttemptAt} is null))::int`,
        soonest: sql<string | null>`min(coalesce(${chatOutbox.nextAttemptAt}, ${chatOutbox.leaseUntil}))`,
      })
      .from(chatOutbox)
      .where(inArray(chatOutbox.state, ['pending', 'sending']));
    if (!next?.open) return;
    const now = timers.now();
    const soonest = next.soonest ? new Date(next.soonest).getTime() : now;
    // Rows due now that were not sent wait for their card's edit slot (or a rate limit): look again soon.
    const wait = next.asap || soonest <= now ? tickMs : soonest - now;
    cancelSoon?.();
    cancelSoon = timers.setTimer(() => {
      cancelSoon = undefined;
      void kick();
    }, wait);
  }

  async function loop(): Promise<void> {
    try {
      do {
        again = false;
        await pass();
        // A kick that came during the pass (or while arming) gets a pass of its own before this resolves.
        if (!again) await armNext();
      } while (again && !stopped);
    } catch (err) {
      logger.error({ err: describe(err) }, 'the chat outbox sender failed a pass; it tries again shortly');
      if (!stopped) {
        cancelSoon?.();
        cancelSoon = timers.setTimer(() => void kick(), Math.max(tickMs, 1000));
      }
    } finally {
      running = null;
    }
  }

  /** Runs a pass now (or right after the one running); resolves when it ends. Never rejects. */
  function kick(): Promise<void> {
    if (stopped) return Promise.resolve();
    if (running) {
      again = true;
      return running;
    }
    running = scope.runInAsyncScope(() => loop());
    return running;
  }

  function poll() {
    cancelPoll = timers.setTimer(() => {
      void kick();
      if (!stopped) poll();
    }, pollMs);
  }

  return {
    kick,

    /** Resumes what an earlier process left pending, then also looks every `pollMs` for other processes' rows. */
    start(): Promise<void> {
      stopped = false;
      cancelPoll?.();
      poll();
      return kick();
    },

    /** Stops sending; rows not sent stay in the outbox for the next start. Waits for the send in flight. */
    async stop(): Promise<void> {
      stopped = true;
      cancelSoon?.();
      cancelPoll?.();
      await running;
    },

    /** Rows not yet sent (pending or being sent), for metrics and tests. */
    async backlog(): Promise<number> {
      const [r] = await db
        .select({ n: sql<number>`count(*)::int` })
        .from(chatOutbox)
        .where(inArray(chatOutbox.state, ['pending', 'sending']));
      return r?.n ?? 0;
    },

    /** Forgets rows sent more than `ageMs` ago (they only pace card edits and show what went out). */
    async prune(ageMs: number): Promise<void> {
      const before = at(timers.now() - ageMs);
      await db
        .delete(chatOutbox)
        .where(
          and(eq(chatOutbox.state, 'sent'), isNotNull(chatOutbox.sentAt), lt(chatOutbox.sentAt, before)),
        );
    },
  };
}

export type ChatSender = ReturnType<typeof createChatSender>;
