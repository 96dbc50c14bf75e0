// Where a request was asked for, read from the request row so any process can post its card later.
import { eq } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionRequests } from '../../db/schema.ts';
import type { ChatContext } from '../ports.ts';

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
