// The ChatPort for Teams: request cards as Adaptive Cards, edits in place (PUT; card edits paced and coalesced
// by the core's chat outbox, progress-message edits spaced per conversation here), thread replies, and
// private notices. A thin client of the SDK's connector calls (connector.ts).
//
// Private notices have no Teams equivalent of Slack's ephemeral messages. While a click is being answered,
// what the core says privately to the clicker is captured and returned in the click's own invoke response,
// which only the clicker sees. Otherwise it becomes a sealed note card that only its recipient's client
// opens (private-notes.ts); in a personal chat with the bot it is simply a message.
import { AsyncLocalStorage } from 'node:async_hooks';
import { MessageActivityInput } from '@microsoft/teams.api';
import type { ChatContext, ChatMessageRef, ChatPort, Logger, RequestView } from '../../bot/ports.ts';
import { createUpdateScheduler } from '../slack/update-scheduler.ts';
import type { ApproverDirectory } from './approver-directory.ts';
import { renderNoticeCard, renderRequestCard, renderSealedNoteCard } from './cards.ts';
import type { ConversationTarget, OutboundActivity, TeamsConnector } from './connector.ts';
import { systemTimers, type TimerPort } from './outbound-gate.ts';
import type { NoteSealer } from './private-notes.ts';
import { decodeAddress, targetOf } from './teams-context.ts';
import type { TeamsIdentity } from './teams-identity.ts';

/** How many requests' latest views are kept for answers that cannot wait for the database. */
const RECENT_VIEWS = 1000;

/** Teams refuses messages over about 28 KB; long listings are cut well before, visibly. */
const TEXT_MAX = 12_000;

function clipText(text: string): string {
  return text.length <= TEXT_MAX ? text : `${text.slice(0, TEXT_MAX - 30)}\n… (message shortened)`;
}

const STILL_LOADING = 'This request is still loading; the card shows it in a moment.';

export function textActivity(text: string): OutboundActivity {
  // Plain text: what the core says (host names, reasons people typed) must not render as Markdown.
  return new MessageActivityInput(clipText(text)).withTextFormat('plain');
}

export function cardActivity(card: object): OutboundActivity {
  return new MessageActivityInput().addCard('adaptive', card as never);
}

/** What the core said while one click was being handled: returned to the clicker in the invoke response. */
export interface ClickCapture {
  notices: string[];
  /** The request's view when the core updated its card because of this click (the decision went through). */
  view?: RequestView;
  /** Resolves at the first notice or card update. */
  readonly said: Promise<void>;
  /** Runs `work` so that what it says privately and the card updates it makes are captured. */
  run(work: () => Promise<void>): Promise<void>;
  /** Ends the capture: later notices go out as sealed notes. */
  close(): void;
}

export function createTeamsChat(deps: {
  connector: TeamsConnector;
  identity: TeamsIdentity;
  directory: ApproverDirectory;
  notes: NoteSealer;
  logger: Logger;
  timers?: TimerPort;
  /** Minimum time between edits of cards in one conversation (Teams allows 8 sends in 2 s). */
  updateIntervalMs?: number;
}) {
  const { connector, logger } = deps;
  const timers = deps.timers ?? systemTimers;
  const clicks = new AsyncLocalStorage<{ capture: ClickCapture & { open: boolean; signal(): void } }>();
  const scheduler = createUpdateScheduler({
    timers,
    intervalMs: deps.updateIntervalMs ?? 1000,
    onError: (err) => logger.error({ err: (err as Error).message }, 'could not update a Teams request card'),
  });

  /** The card as everyone sees it, with the approvers' ids for their own view. */
  async function sharedCard(target: ConversationTarget, view: RequestView) {
    const refreshUserIds =
      view.state === 'pending_approval' ? await deps.directory.refreshUserIds(target, undefined, view) : [];
    return renderRequestCard(view, { refreshUserIds });
  }

  // The latest view of each request this process rendered: a click answered when the database is slow
  // (the embedded one serves a burst of clicks one query at a time) shows this instead of waiting.
  const recent = new Map<string, RequestView>();
  function remember(view: RequestView) {
    recent.delete(view.id);
    recent.set(view.id, view);
    if (recent.size > RECENT_VIEWS) recent.delete(recent.keys().next().value as string);
  }

  function capturing() {
    const store = clicks.getStore();
    return store?.capture.open ? store.capture : undefined;
  }

  const chat: ChatPort = {
    async postRequestCard(ctx: ChatContext, view: RequestView): Promise<ChatMessageRef> {
      remember(view);
      const address = decodeAddress(ctx.channelId);
      const target = targetOf(address, ctx.threadId);
      const { id } = await connector.create(target, cardActivity(await sharedCard(target, view)));
      // In a channel the card goes into the command's thread (or starts one); chats have no threads.
      const threadId = address.kind === 'channel' ? (ctx.threadId ?? id) : id;
      return { platform: 'teams', channelId: ctx.channelId, messageId: id, threadId };
    },

    async updateRequestCard(ref: ChatMessageRef, view: RequestView): Promise<void> {
      remember(view);
      const cap = capturing();
      if (cap) {
        cap.view = view;
        cap.signal();
      }
      const address = decodeAddress(ref.channelId);
      // Edited where it was posted: inside its thread, or at the top of the channel when it is the root.
      const target = targetOf(address, ref.threadId === ref.messageId ? undefined : ref.threadId);
      // Sent at once: the chat outbox's sender paces and coalesces card edits, and marks one sent only when
      // this resolves (the connector itself waits out Teams' 429s).
      await connector.update(target, ref.messageId, cardActivity(await sharedCard(target, view)));
    },

    async replyInThread(ref: ChatMessageRef, text: string): Promise<void> {
      const address = decodeAddress(ref.channelId);
      await connector.create(targetOf(address, ref.threadId), textActivity(text));
    },

    async postThreadMessage(ref: ChatMessageRef, text: string): Promise<ChatMessageRef> {
      const address = decodeAddress(ref.channelId);
      const { id } = await connector.create(targetOf(address, ref.threadId), textActivity(text));
      return { platform: 'teams', channelId: ref.channelId, messageId: id, threadId: ref.threadId };
    },

    updateThreadMessage(ref: ChatMessageRef, text: string): Promise<void> {
      const address = decodeAddress(ref.channelId);
      const target = targetOf(address, ref.threadId === ref.messageId ? undefined : ref.threadId);
      // Spaced with the card edits of the conversation, so together they stay within Teams' send limits.
      return scheduler.schedule(address.conversationId, ref.messageId, async () => {
        await connector.update(target, ref.messageId, textActivity(text));
      });
    },

    async notifyPrivately(ctx: ChatContext, text: string): Promise<void> {
      const cap = capturing();
      if (cap) {
        cap.notices.push(text);
        cap.signal();
        return;
      }
      const address = decodeAddress(ctx.channelId);
      const target = targetOf(address, ctx.threadId);
      if (address.kind === 'personal') {
        await connector.create(target, textActivity(text));
        return;
      }
      const aad = ctx.identity.chatUserId;
      const mri = aad ? await deps.identity.mriOf(target, undefined, aad) : null;
      if (!mri) {
        logger.warn({ conversation: address.conversationId }, 'a private Teams note has no recipient here');
        return;
      }
      const card = renderSealedNoteCard({
        recipientName: ctx.identity.displayName,
        sealed: deps.notes.seal(aad, text),
        recipientMri: mri,
      });
      await connector.create(target, cardActivity(card));
    },

    async reply(ctx: ChatContext, text: string): Promise<void> {
      await connector.create(targetOf(decodeAddress(ctx.channelId), ctx.threadId), textActivity(text));
    },

    async startThread(ctx: ChatContext, text: string): Promise<ChatMessageRef> {
      // Typed inside a thread, the thread is already there; a new channel post starts one of its own.
      const address = decodeAddress(ctx.channelId);
      const { id } = await connector.create(targetOf(address, ctx.threadId), textActivity(text));
      const threadId = address.kind === 'channel' ? (ctx.threadId ?? id) : id;
      return { platform: 'teams', channelId: ctx.channelId, messageId: id, threadId };
    },
  };

  return {
    chat,

    /** Starts capturing what the core says to one clicker (see ClickCapture). */
    capture(): ClickCapture {
      let signal!: () => void;
      const said = new Promise<void>((resolve) => {
        signal = resolve;
      });
      const capture = {
        notices: [] as string[],
        view: undefined as RequestView | undefined,
        said,
        open: true,
        signal: () => signal(),
        run: (work: () => Promise<void>) => clicks.run({ capture }, work),
        close() {
          capture.open = false;
        },
      };
      return capture;
    },

    /** The card for one viewer: with buttons when they may decide, and a notice only they see. */
    async viewerCard(
      address: ReturnType<typeof decodeAddress>,
      rootId: string | undefined,
      view: RequestView,
      viewer: { aadObjectId?: string },
      notice?: string,
    ) {
      remember(view);
      const target = targetOf(address, rootId);
      const [refreshUserIds, decide] = await Promise.all([
        view.state === 'pending_approval'
          ? deps.directory.refreshUserIds(target, undefined, view)
          : Promise.resolve([]),
        deps.directory.mayDecide(viewer.aadObjectId, view),
      ]);
      return renderRequestCard(view, { refreshUserIds, decide, notice });
    },

    /**
     * The read-only card from the last view this process saw of `requestId` (by id or R-ref), or just the
     * notice; touches neither the database nor Teams.
     */
    lastKnownCard(requestId: string, notice?: string) {
      const view = recent.get(requestId) ?? [...recent.values()].find((v) => v.ref === requestId);
      return view ? renderRequestCard(view, { notice }) : renderNoticeCard(notice ?? STILL_LOADING);
    },

    /** Sends card edits still waiting for their slot; call before shutting down. */
    flush: () => scheduler.drain(),
    pendingUpdates: () => scheduler.pendingCount(),
  };
}

export type TeamsChat = ReturnType<typeof createTeamsChat>;
