// The durable chat outbox, core side: what the core wants said in a thread (a card edit, a reply) becomes a
// `chat_outbox` row written in the transaction of the change it reports, so a crash can lose neither the
// change without its message nor the message without its change. The sender (chat-sender.ts) delivers rows
// after the commit. Answers to the person typing (private notices, help, errors) stay direct: nobody else
// is waiting for them, and they make no sense later.
import type { DbOrTx } from '../../db/client.ts';
import { chatOutbox } from '../../db/schema.ts';
import type { ChatMessageRef, ChatPort, RequestView } from '../ports.ts';

/** One message for the outbox: a card edit (rendered from the request as it is at send time) or a reply. */
export type OutboxMessage =
  | { kind: 'card_update'; ref: ChatMessageRef; requestId: string }
  | { kind: 'thread_reply'; ref: ChatMessageRef; text: string };

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

/** Rows of one lane go out in order: a thread's replies, or one card's edits. */
export function laneOf(m: OutboxMessage): string {
  const { platform, channelId, threadId, messageId } = m.ref;
  return m.kind === 'card_update'
    ? `card:${platform}:${channelId}:${messageId}`
    : `thread:${platform}:${channelId}:${threadId}`;
}

/**
 * Writes `messages` into the outbox within `tx` (or on their own when given the database). A card edit joins
 * the card's pending edit when there is one: that row renders the newest view anyway.
 */
export async function enqueueChat(tx: DbOrTx, messages: OutboxMessage[]): Promise<void> {
  for (const m of messages) {
    const lane = laneOf(m);
    await tx
      .insert(chatOutbox)
      .values({
        platform: m.ref.platform,
        kind: m.kind,
        target: m.ref,
        lane,
        coalesceKey: m.kind === 'card_update' ? lane : null,
        payload: m.kind === 'card_update' ? { requestId: m.requestId } : { text: m.text },
      })
      .onConflictDoNothing();
  }
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

/**
 * The ChatPort the core holds: card edits and thread replies go through the outbox (each durable once this
 * returns, delivered in order with its thread), the rest straight to `port`. For code that has no
 * transaction of its own to put its message in.
 */
export function outboxChatPort(port: ChatPort, deps: { db: DbOrTx; outbox: ChatOutbox }): ChatPort {
  return {
    ...port,
    async updateRequestCard(ref: ChatMessageRef, view: RequestView): Promise<void> {
      await deps.outbox.enqueue(deps.db, [{ kind: 'card_update', ref, requestId: view.id }]);
      await deps.outbox.flush();
    },
    async replyInThread(ref: ChatMessageRef, text: string): Promise<void> {
      await deps.outbox.enqueue(deps.db, [{ kind: 'thread_reply', ref, text }]);
      await deps.outbox.flush();
    },
  };
}
