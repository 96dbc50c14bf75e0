// The outbox rows that create a message rather than say something in a known one: a request's card, an
// action group's progress message and its edits, a session's thread. Each posts, then records where the
// message lives (and, for a card, moves what waited for it into its thread) in one transaction. A process
// that dies between the post and that record leaves the row to be sent again: the message may then appear
// twice, but it is never missing. One that dies after the record finds it on the retry and posts nothing.
import { and, eq, isNull } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import { actionRequests, sessions } from '../../db/schema.ts';
import * as gdal from '../groups/group-dal.ts';
import type { ChatMessageRef, ChatPort, Clock, RequestView } from '../ports.ts';
import { setChatMessage } from '../requests/request-dal.ts';
import { type ChatPlace, enqueueChat, moveIntoThread } from './chat-outbox.ts';
import type { ChatPosts } from './chat-sender.ts';

export function createChatPosts(deps: {
  db: Db;
  /** The adapters (the chat router), called directly: this is the sender's side. */
  chat: Pick<ChatPort, 'postRequestCard' | 'postThreadMessage' | 'updateThreadMessage' | 'startThread'>;
  render(requestId: string): Promise<RequestView>;
  /** An action group's progress text as it stands, or null when the request has gone. */
  progressText(requestId: string): Promise<string | null>;
  clock: Clock;
}): ChatPosts {
  const { db, chat } = deps;

  return {
    async card(requestId) {
      // Where the request was asked for; a card already recorded (an earlier attempt) is not posted again.
      const [row] = await db
        .select({
          platform: actionRequests.chatPlatform,
          tenantId: actionRequests.chatTenantId,
          channelId: actionRequests.chatChannelId,
          threadId: actionRequests.chatThreadId,
          messageId: actionRequests.chatMessageId,
        })
        .from(actionRequests)
        .where(eq(actionRequests.id, requestId));
      if (!row?.platform || !row.channelId || row.messageId) return false;
      const ctx = {
        identity: { platform: row.platform, tenantId: row.tenantId ?? '', chatUserId: '' },
        channelId: row.channelId,
        threadId: row.threadId ?? undefined,
      };
      const ref = await chat.postRequestCard(ctx, await deps.render(requestId));
      await db.transaction(async (tx) => {
        await setChatMessage(tx, requestId, ref);
        await moveIntoThread(tx, requestId, ref);
      });
      return true;
    },

    async progress(requestId, cardRef: ChatMessageRef) {
      const group = await gdal.findGroup(db, requestId);
      if (!group || group.progressMessageId) return false;
      const text = await deps.progressText(requestId);
      if (text === null) return false;
      const posted = await chat.postThreadMessage(cardRef, text);
      await db.transaction(async (tx) => {
        if (await gdal.setProgressMessage(tx, requestId, posted, deps.clock.now())) {
          // Results that arrived while it was being posted show up in the first edit.
          await enqueueChat(tx, [{ kind: 'progress_update', platform: posted.platform, requestId }]);
        }
      });
      return true;
    },

    async progressEdit(requestId) {
      const group = await gdal.findGroup(db, requestId);
      const ref = group && gdal.progressRefOf(group);
      if (!ref) return false;
      const text = await deps.progressText(requestId);
      if (text === null) return false;
      await chat.updateThreadMessage(ref, text);
      return true;
    },

    async sessionThread(place: ChatPlace, sessionId, text) {
      const [session] = await db
        .select({ threadId: sessions.chatThreadId })
        .from(sessions)
        .where(eq(sessions.id, sessionId));
      if (!session || session.threadId) return false;
      const ref = await chat.startThread(
        {
          identity: { platform: place.platform, tenantId: place.tenantId, chatUserId: '' },
          channelId: place.channelId,
          threadId: place.threadId,
        },
        text,
      );
      await db
        .update(sessions)
        .set({ chatThreadId: ref.threadId })
        .where(and(eq(sessions.id, sessionId), isNull(sessions.chatThreadId)));
      return true;
    },
  };
}
