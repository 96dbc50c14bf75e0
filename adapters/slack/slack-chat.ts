// The ChatPort for Slack: request cards as Block Kit messages, edits with chat.update, thread replies, and
// private notices as ephemeral messages. Card edits arrive from the chat outbox's sender, which paces them
// per card and coalesces them; progress-message edits are spaced per channel here. Slack's 429 becomes
// ChatRateLimited with its Retry-After, so the sender waits it out instead of this process sleeping in the
// client.
import type { App } from '@slack/bolt';
import { ChatRateLimited } from '../../bot/outbox/chat-outbox.ts';
import type { ChatContext, ChatMessageRef, ChatPort, Logger, RequestView } from '../../bot/ports.ts';
import { escapeMrkdwn, renderRequestBlocks, requestFallbackText } from './blocks.ts';
import { createUpdateScheduler, type TimerPort } from './update-scheduler.ts';

/** Slack truncates message text at 40,000 characters; we stop well before, with a visible marker. */
const TEXT_MAX = 3900;

function clipText(text: string): string {
  return text.length <= TEXT_MAX ? text : `${text.slice(0, TEXT_MAX - 20)}\n… (message shortened)`;
}

type WebClient = App['client'];

/** Runs a Web API call; a rate-limited one (the client is told to reject those) becomes ChatRateLimited. */
async function rateLimited<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const e = err as { code?: string; retryAfter?: number };
    if (e.code === 'slack_webapi_rate_limited_error') throw new ChatRateLimited((e.retryAfter ?? 1) * 1000);
    throw err;
  }
}

export function createSlackChat(deps: {
  client: WebClient;
  logger: Logger;
  timers?: TimerPort;
  /** Minimum time between progress-message edits in one channel; Slack's limit is about one per second. */
  updateIntervalMs?: number;
}) {
  const { client, logger } = deps;
  const scheduler = createUpdateScheduler({
    timers: deps.timers,
    intervalMs: deps.updateIntervalMs,
    onError: (err) => logger.error({ err }, 'could not update a Slack progress message'),
  });

  /** A plain-text message (escaped, clipped, no link previews), in the thread when one is given. */
  function postText(channel: string, threadTs: string | undefined, text: string) {
    return rateLimited(() =>
      client.chat.postMessage({
        channel,
        thread_ts: threadTs,
        text: clipText(escapeMrkdwn(text)),
        unfurl_links: false,
      }),
    );
  }

  const chat: ChatPort = {
    async postRequestCard(ctx: ChatContext, view: RequestView): Promise<ChatMessageRef> {
      const res = await rateLimited(() =>
        client.chat.postMessage({
          channel: ctx.channelId,
          thread_ts: ctx.threadId,
          text: escapeMrkdwn(requestFallbackText(view)),
          blocks: renderRequestBlocks(view),
          unfurl_links: false,
        }),
      );
      if (!res.ts) throw new Error('chat.postMessage returned no ts for the request card');
      const channelId = res.channel ?? ctx.channelId;
      // A card posted inside a thread keeps its events in that thread; otherwise it starts its own.
      return { platform: 'slack', channelId, messageId: res.ts, threadId: ctx.threadId ?? res.ts };
    },

    async updateRequestCard(ref: ChatMessageRef, view: RequestView): Promise<void> {
      // Sent at once: the caller (the chat outbox's sender) paces card edits and marks one sent only when
      // this resolves.
      await rateLimited(() =>
        client.chat.update({
          channel: ref.channelId,
          ts: ref.messageId,
          text: escapeMrkdwn(requestFallbackText(view)),
          blocks: renderRequestBlocks(view),
        }),
      );
    },

    async replyInThread(ref: ChatMessageRef, text: string): Promise<void> {
      await postText(ref.channelId, ref.threadId, text);
    },

    async postThreadMessage(ref: ChatMessageRef, text: string): Promise<ChatMessageRef> {
      const res = await postText(ref.channelId, ref.threadId, text);
      if (!res.ts) throw new Error('chat.postMessage returned no ts');
      return {
        platform: 'slack',
        channelId: res.channel ?? ref.channelId,
        messageId: res.ts,
        threadId: ref.threadId,
      };
    },

    updateThreadMessage(ref: ChatMessageRef, text: string): Promise<void> {
      // The same per-channel queue as card edits: Slack's edit limit is per channel, whatever the message.
      return scheduler.schedule(ref.channelId, ref.messageId, async () => {
        await rateLimited(() =>
          client.chat.update({
            channel: ref.channelId,
            ts: ref.messageId,
            text: clipText(escapeMrkdwn(text)),
          }),
        );
      });
    },

    async notifyPrivately(ctx: ChatContext, text: string): Promise<void> {
      if (!ctx.identity.chatUserId)
        throw new Error('a private Slack message needs the chat user id to send it to');
      await rateLimited(() =>
        client.chat.postEphemeral({
          channel: ctx.channelId,
          user: ctx.identity.chatUserId,
          thread_ts: ctx.threadId,
          text: clipText(escapeMrkdwn(text)),
        }),
      );
    },

    async reply(ctx: ChatContext, text: string): Promise<void> {
      await postText(ctx.channelId, ctx.threadId, text);
    },

    async startThread(ctx: ChatContext, text: string): Promise<ChatMessageRef> {
      // In a channel the message is the thread's root; typed inside a thread, the thread is already there.
      const res = await postText(ctx.channelId, ctx.threadId, text);
      if (!res.ts) throw new Error('chat.postMessage returned no ts');
      const channelId = res.channel ?? ctx.channelId;
      return { platform: 'slack', channelId, messageId: res.ts, threadId: ctx.threadId ?? res.ts };
    },
  };

  return {
    chat,
    /** Sends progress edits still waiting for their slot; call before shutting down. */
    flush: () => scheduler.drain(),
    pendingUpdates: () => scheduler.pendingCount(),
  };
}

export type SlackChat = ReturnType<typeof createSlackChat>;
