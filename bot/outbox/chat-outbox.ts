// The durable chat outbox, core side: what the core wants said in a chat (a new request card, a card edit, a
// thread reply, an action group's progress message and its edits, a session's thread) becomes a
// `chat_outbox` row written in the transaction of the change it reports, so a crash can lose neither the
// change without its message nor the message without its change. The sender (chat-sender.ts) delivers rows
// after the commit. Answers to the person typing (private notices, help, errors) stay direct: nobody else
// is waiting for them, and they make no sense later.
import { and, eq, inArray } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionRequests, chatOutbox, type Platform } from '../../db/schema.ts';
import type { ChatMessageRef } from '../ports.ts';

/**
 * Where a request's messages go while its card is not posted yet (it waits in the outbox): the request's own
 * lane, behind the card's post. Posting the card moves what waits there into the card's thread.
 */
export interface PendingCard {
  platform: Platform;
  requestId: string;
}

/** A request's card once posted, or the card still waiting to be posted. */
export type RequestThread = ChatMessageRef | PendingCard;

export const isPendingCard = (t: RequestThread): t is PendingCard => 'requestId' in t;

/** Where a new message with a thread of its own goes: the channel (and thread) the command came from. */
export interface ChatPlace {
  platform: Platform;
  tenantId: string;
  channelId: string;
  threadId?: string;
}

/** One message for the outbox. Cards and progress messages are rendered when sent, from the newest state. */
export type OutboxMessage =
  /** Posts the request's card where the request was asked for; what follows it waits in its lane. */
  | { kind: 'card_post'; requestId: string; platform: Platform }
  | { kind: 'card_update'; ref: RequestThread; requestId: string }
  | { kind: 'thread_reply'; ref: RequestThread; text: string }
  /** Posts an action group's progress message in its card's thread, once. */
  | { kind: 'progress_post'; ref: RequestThread; requestId: string }
  /** Edits an action group's progress message with the newest counts (paced like a card edit). */
  | { kind: 'progress_update'; platform: Platform; requestId: string }
  /** Opens a session's thread with `text` and records it on the session. */
  | { kind: 'session_thread'; place: ChatPlace; sessionId: string; text: string };

/**
 * A platform refused a call for its rate limit; the sender waits `retryAfterMs` (Slack's Retry-After) before
 * anything else goes to that platform. Adapters translate their SDK's error into this one.
 */
export class ChatRateLimited extends Error {
  readonly code = 'chat.rate_limited';
  constructor(readonly retryAfterMs: number) {
    super(`the chat platform asked us to wait ${Math.ceil(retryAfterMs / 1000)} s (rate limited)`);
  }
}

const requestLane = (requestId: string) => `request:${requestId}`;

/** The lane of a thread: its replies go out in order. */
export function threadLane(t: RequestThread): string {
  return isPendingCard(t) ? requestLane(t.requestId) : `thread:${t.platform}:${t.channelId}:${t.threadId}`;
}

/**
 * Rows of one lane go out in order: a thread's replies (with a group's progress post among them), one
 * card's edits, one progress message's edits, or a request's messages waiting for its card.
 */
export function laneOf(m: OutboxMessage): string {
  switch (m.kind) {
    case 'card_post':
      return requestLane(m.requestId);
    case 'card_update':
      return isPendingCard(m.ref)
        ? requestLane(m.ref.requestId)
        : `card:${m.ref.platform}:${m.ref.channelId}:${m.ref.messageId}`;
    case 'thread_reply':
    case 'progress_post':
      return threadLane(m.ref);
    case 'progress_update':
      return `progress:${m.requestId}`;
    case 'session_thread':
      return `session:${m.sessionId}`;
  }
}

/** The row of a message: where it goes, its lane, and what the sender needs to say it. */
function rowOf(m: OutboxMessage) {
  const lane = laneOf(m);
  // Edits fold into the pending edit of the same message.
  const coalesceKey = m.kind === 'card_update' || m.kind === 'progress_update' ? lane : null;
  if (m.kind === 'session_thread') {
    const payload = { sessionId: m.sessionId, text: m.text };
    return { platform: m.place.platform, target: m.place, lane, coalesceKey, payload };
  }
  if (m.kind === 'card_post' || m.kind === 'progress_update')
    return { platform: m.platform, target: {}, lane, coalesceKey, payload: { requestId: m.requestId } };
  const payload = m.kind === 'thread_reply' ? { text: m.text } : { requestId: m.requestId };
  return { platform: m.ref.platform, target: m.ref, lane, coalesceKey, payload };
}

/**
 * Writes `messages` into the outbox within `tx` (or on their own when given the database). A card edit (or
 * a progress edit) joins the pending edit of the same message when there is one: that row renders the
 * newest state anyway.
 */
export async function enqueueChat(tx: DbOrTx, messages: OutboxMessage[]): Promise<void> {
  for (const m of messages) {
    await tx
      .insert(chatOutbox)
      .values({ kind: m.kind, ...rowOf(m) })
      .onConflictDoNothing();
  }
}

/** Where the messages of request `requestId` go: its card's thread, or its lane while the card waits. */
export async function requestThreadOf(tx: DbOrTx, requestId: string): Promise<RequestThread | null> {
  const [row] = await tx
    .select({
      platform: actionRequests.chatPlatform,
      channelId: actionRequests.chatChannelId,
      messageId: actionRequests.chatMessageId,
      threadId: actionRequests.chatThreadId,
    })
    .from(actionRequests)
    .where(eq(actionRequests.id, requestId));
  if (!row?.platform || !row.channelId) return null;
  if (!row.messageId) return { platform: row.platform, requestId };
  return {
    platform: row.platform,
    channelId: row.channelId,
    messageId: row.messageId,
    threadId: row.threadId ?? row.messageId,
  };
}

/**
 * The request's card is posted at `ref` (within `tx`, with the card's place recorded): what waited in the
 * request's lane moves into the card's thread, in the order it was written, where the thread's later
 * messages queue behind it. Card edits still waiting are dropped: the card was rendered from the newest view.
 */
export async function moveIntoThread(tx: DbOrTx, requestId: string, ref: ChatMessageRef): Promise<void> {
  const lane = requestLane(requestId);
  await tx
    .delete(chatOutbox)
    .where(
      and(eq(chatOutbox.lane, lane), eq(chatOutbox.state, 'pending'), eq(chatOutbox.kind, 'card_update')),
    );
  // Rows being sent right behind the card move too: in the thread's lane they keep later messages of the
  // thread, written by any process, waiting behind them.
  await tx
    .update(chatOutbox)
    .set({ lane: threadLane(ref), target: ref })
    .where(
      and(
        eq(chatOutbox.lane, lane),
        inArray(chatOutbox.state, ['pending', 'sending']),
        inArray(chatOutbox.kind, ['thread_reply', 'progress_post']),
      ),
    );
}

export interface ChatOutbox {
  /** Writes messages in the caller's transaction; call `flush` after the commit. */
  enqueue(tx: DbOrTx, messages: OutboxMessage[]): Promise<void>;
  /**
   * Has the sender deliver what is due now; resolves when it has tried (a message the platform refused stays
   * in the outbox and is retried later). Never rejects.
   */
  flush(): Promise<void>;
}

export function createChatOutbox(deps: { kick: () => Promise<void> }): ChatOutbox {
  return { enqueue: enqueueChat, flush: deps.kick };
}
