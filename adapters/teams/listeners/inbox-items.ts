// Teams commands and clicks go through the durable inbox (bot/inbox/), recorded before Teams gets its answer.
// Who is speaking is not final when an activity arrives: their home tenant and guest status come from a
// member lookup, which may wait out Teams' rate limits and must not hold up the answer. So an item is
// recorded with the speaker as the signed activity names them (the host tenant, their Entra object id) and
// what the lookup needs; the handler identifies them when the item is processed, by the listener or, after a
// crash, by `resume` on the next start.
import { z } from 'zod';
import { isAppError } from '../../../bot/errors.ts';
import { type InboxHandler, type InboxOrigin, toCore } from '../../../bot/inbox/interaction-inbox.ts';
import type { ChatContext, ChatPort, Logger } from '../../../bot/ports.ts';
import {
  type CardActionActivity,
  contextOf,
  decodeAddress,
  hostTenantOf,
  type MessageActivity,
  targetOf,
  teamOf,
} from '../teams-context.ts';
import type { TeamsIdentity } from '../teams-identity.ts';

type Activity = MessageActivity | CardActionActivity;

/**
 * The context an item is recorded with: the speaker as the activity names them, not yet identified. It is
 * also who hears about a failure before the speaker is identified (by their object id).
 */
export function provisionalContext(a: Activity, eventId: string): ChatContext {
  return contextOf(
    a,
    {
      platform: 'teams',
      tenantId: hostTenantOf(a) ?? '-',
      chatUserId: a.from.aadObjectId ?? '',
      displayName: a.from.name,
    },
    eventId,
  );
}

const originSchema = z.object({
  memberId: z.string().min(1).max(512),
  hostTenant: z.string().max(100).optional(),
  teamId: z.string().max(512).optional(),
});

/** What the member lookup needs that the context does not hold. */
export function originOf(a: Activity): InboxOrigin {
  const hostTenant = hostTenantOf(a);
  const teamId = teamOf(a);
  return {
    memberId: a.from.id,
    ...(hostTenant ? { hostTenant } : {}),
    ...(teamId ? { teamId } : {}),
  };
}

/**
 * Identifies the speaker of a recorded item, then hands it to the core. A refusal (no Entra account, an
 * anonymous participant, a failed lookup) is told to the speaker privately: inside a click's answer, that is
 * the answer.
 */
export function createTeamsInboxHandler(deps: {
  identity: TeamsIdentity;
  chat: ChatPort;
  logger: Logger;
}): InboxHandler {
  return async (item, core) => {
    const origin = originSchema.safeParse(item.origin);
    if (!origin.success) {
      deps.logger.warn(
        { eventId: item.ctx.eventId },
        'skipped a Teams interaction recorded without its origin',
      );
      return;
    }
    const { memberId, hostTenant, teamId } = origin.data;
    let identity: ChatContext['identity'];
    try {
      identity = await deps.identity.identify({
        target: targetOf(decodeAddress(item.ctx.channelId), item.ctx.threadId),
        hostTenant,
        teamId,
        from: {
          id: memberId,
          aadObjectId: item.ctx.identity.chatUserId || undefined,
          name: item.ctx.identity.displayName,
        },
      });
    } catch (err) {
      if (!isAppError(err)) throw err;
      await deps.chat.notifyPrivately(item.ctx, err.message);
      return;
    }
    await toCore({ ...item, ctx: { ...item.ctx, identity } }, core);
  };
}
