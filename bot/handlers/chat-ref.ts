// Where a request's card lives, read from the request row so any process can update it later.
import { eq } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionRequests } from '../../db/schema.ts';
import type { ChatContext, ChatMessageRef } from '../ports.ts';

export async function cardRefOf(db: DbOrTx, requestId: string): Promise<ChatMessageRef | null> {
  const [row] = await db
    .select({
      platform: actionRequests.chatPlatform,
      channelId: actionRequests.chatChannelId,
      messageId: actionRequests.chatMessageId,
      threadId: actionRequests.chatThreadId,
    })
    .from(actionRequests)
    .where(eq(actionRequests.id, requestId));
  if (!row?.platform || !row.channelId || !row.messageId) return null;
  return {
    platform: row.platform,
    channelId: row.channelId,
    messageId: row.messageId,
    threadId: row.threadId ?? row.messageId,
  };
}

/** A chat context for posting a card later (after the requester's step-up), from what the request stored. */
export async function requestContextOf(db: DbOrTx, requestId: string): Promise<ChatContext | null> {
  const [row] = await db
    .select({
      platform: actionRequests.chatPlatform,
      tenantId: actionRequests.chatTenantId,
      channelId: actionRequests.chatChannelId,
      threadId: actionRequests.chatThreadId,
    })
    .from(actionRequests)
    .where(eq(actionRequests.id, requestId));
  if (!row?.platform || !row.channelId) return null;
  return {
    identity: { platform: row.platform, tenantId: row.tenantId ?? '', chatUserId: '' },
    channelId: row.channelId,
    threadId: row.threadId ?? undefined,
  };
}
