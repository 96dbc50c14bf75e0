// A line-oriented chat for the demo and the tests: it implements ChatPort by printing to a stream and
// keeping a transcript, so the whole flow can be exercised without Slack or Teams.
import type { ChatContext, ChatMessageRef, ChatPort, RequestView } from '../../bot/ports.ts';
import { renderRequestText } from './render-text.ts';

export interface ConsoleMessage {
  /** 'card' is a request card (updated in place: `updates` counts the edits). */
  kind: 'card' | 'thread' | 'private' | 'reply';
  messageId: string;
  channelId: string;
  threadId?: string;
  /** For private notices: the chat user who sees it. */
  to?: string;
  text: string;
  view?: RequestView;
  updates: number;
}

export interface ConsoleChat {
  chat: ChatPort;
  /** Everything said, in order. Cards hold their latest rendering. */
  transcript: ConsoleMessage[];
  /** Resolves when a message matching `pred` exists (checked on every new message), or rejects after `ms`. */
  waitFor(pred: (m: ConsoleMessage) => boolean, ms?: number): Promise<ConsoleMessage>;
}

export function createConsoleChat(opts: { write?: (line: string) => void } = {}): ConsoleChat {
  const write = opts.write ?? (() => {});
  const transcript: ConsoleMessage[] = [];
  const waiters = new Set<() => void>();
  let counter = 0;

  function push(m: Omit<ConsoleMessage, 'messageId' | 'updates'> & { messageId?: string }): ConsoleMessage {
    const msg: ConsoleMessage = { ...m, messageId: m.messageId ?? `m${++counter}`, updates: 0 };
    transcript.push(msg);
    notify();
    return msg;
  }
  function notify() {
    for (const w of [...waiters]) w();
  }

  const chat: ChatPort = {
    async postRequestCard(ctx: ChatContext, view: RequestView): Promise<ChatMessageRef> {
      const text = renderRequestText(view);
      const msg = push({ kind: 'card', channelId: ctx.channelId, threadId: ctx.threadId, text, view });
      write(`\n${indent(text, `[${ctx.channelId}] `)}`);
      return {
        platform: 'console',
        channelId: ctx.channelId,
        messageId: msg.messageId,
        threadId: msg.messageId,
      };
    },
    async updateRequestCard(ref: ChatMessageRef, view: RequestView): Promise<void> {
      const card = transcript.find((m) => m.kind === 'card' && m.messageId === ref.messageId);
      if (!card) return;
      const text = renderRequestText(view);
      const stateChanged = card.view?.state !== view.state;
      card.text = text;
      card.view = view;
      card.updates++;
      // Edits that change nothing a person reads (a retried or coalesced update) are kept quiet.
      if (stateChanged) write(`  (card ${view.ref} is now ${view.state.replace('_', ' ')})`);
      notify();
    },
    async replyInThread(ref: ChatMessageRef, text: string): Promise<void> {
      push({ kind: 'thread', channelId: ref.channelId, threadId: ref.threadId, text });
      write(indent(text, '  └ '));
    },
    async postThreadMessage(ref: ChatMessageRef, text: string): Promise<ChatMessageRef> {
      const msg = push({ kind: 'thread', channelId: ref.channelId, threadId: ref.threadId, text });
      write(indent(text, '  └ '));
      return { ...ref, messageId: msg.messageId };
    },
    async updateThreadMessage(ref: ChatMessageRef, text: string): Promise<void> {
      const msg = transcript.find((m) => m.kind === 'thread' && m.messageId === ref.messageId);
      if (!msg || msg.text === text) return;
      msg.text = text;
      msg.updates++;
      notify();
    },
    async notifyPrivately(ctx: ChatContext, text: string): Promise<void> {
      push({ kind: 'private', channelId: ctx.channelId, to: ctx.identity.chatUserId, text });
      write(indent(text, `  (only ${ctx.identity.chatUserId} sees) `));
    },
    async reply(ctx: ChatContext, text: string): Promise<void> {
      push({ kind: 'reply', channelId: ctx.channelId, threadId: ctx.threadId, text });
      write(indent(text, ctx.threadId ? `  [thread ${ctx.threadId}] ` : '  '));
    },
    async startThread(ctx: ChatContext, text: string): Promise<ChatMessageRef> {
      const msg = push({ kind: 'reply', channelId: ctx.channelId, threadId: ctx.threadId, text });
      const threadId = ctx.threadId ?? msg.messageId;
      write(
        indent(
          `${text}\n(thread ${threadId}: type /thread ${threadId} to write in it, /thread to leave)`,
          '  ',
        ),
      );
      return { platform: 'console', channelId: ctx.channelId, messageId: msg.messageId, threadId };
    },
  };

  return {
    chat,
    transcript,
    waitFor(pred, ms = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = transcript.find(pred);
          if (found) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no console message matched within ${ms} ms; transcript:\n${dump(transcript)}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
  };
}

function indent(text: string, prefix: string): string {
  return text
    .split('\n')
    .map((l, i) => (i === 0 ? prefix : ' '.repeat(prefix.length)) + l)
    .join('\n');
}

function dump(t: ConsoleMessage[]): string {
  return t.map((m) => `${m.kind}${m.to ? `→${m.to}` : ''}: ${m.text.split('\n')[0]}`).join('\n');
}
