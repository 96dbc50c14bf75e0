// Turns Slack payloads into the core's ChatContext. Slack's payloads are validated here (they are boundary
// input even after the signature check: a signed payload can still be a shape we do not expect), and each
// logical event gets one stable key so Slack's retries and double deliveries reach the core as duplicates.
import { z } from 'zod';
import type { ChatContext } from '../../bot/ports.ts';

const id = z.string().min(1).max(64);
const text = z.string().max(8000);

export const commandPayload = z.object({
  command: z.string().max(40),
  text: text.default(''),
  team_id: id,
  user_id: id,
  user_name: z.string().max(200).optional(),
  channel_id: id,
  trigger_id: z.string().min(1).max(200),
});

export const mentionPayload = z.object({
  event_id: z.string().min(1).max(200),
  team_id: id.optional(),
  authorizations: z.array(z.object({ team_id: id.nullish() })).optional(),
  event: z.object({
    type: z.literal('app_mention'),
    user: id,
    /** Slack Connect: the team of the person who wrote the message, which may not be ours. */
    user_team: id.optional(),
    text,
    channel: id,
    ts: z.string().max(40),
    thread_ts: z.string().max(40).optional(),
  }),
});

export const actionPayload = z.object({
  user: z.object({ id, team_id: id.optional(), name: z.string().max(200).optional() }),
  team: z.object({ id }).nullish(),
  channel: z.object({ id }),
  container: z
    .object({ message_ts: z.string().max(40).optional(), thread_ts: z.string().max(40).optional() })
    .optional(),
  actions: z
    .array(
      z.object({
        action_id: z.string().max(255),
        value: z.string().max(100).optional(),
        action_ts: z.string().max(40),
      }),
    )
    .min(1),
});

export function commandContext(p: z.infer<typeof commandPayload>): ChatContext {
  return {
    // A slash command carries the invoking user's team as team_id (there is no user_team field on commands).
    identity: { platform: 'slack', tenantId: p.team_id, chatUserId: p.user_id, displayName: p.user_name },
    channelId: p.channel_id,
    // trigger_id is unique per invocation and repeated on a redelivery of the same invocation.
    eventId: `command:${p.trigger_id}`,
  };
}

export function mentionContext(p: z.infer<typeof mentionPayload>): ChatContext {
  const tenantId = p.event.user_team ?? p.authorizations?.[0]?.team_id ?? p.team_id;
  if (!tenantId) throw new Error('app_mention payload carries no team id');
  return {
    identity: { platform: 'slack', tenantId, chatUserId: p.event.user },
    channelId: p.event.channel,
    threadId: p.event.thread_ts,
    // event_id is the same on every retry (X-Slack-Retry-Num) and for every app copy receiving the event.
    eventId: `event:${p.event_id}`,
  };
}

export function actionContext(p: z.infer<typeof actionPayload>): ChatContext {
  const action = p.actions[0]!;
  const tenantId = p.user.team_id ?? p.team?.id;
  if (!tenantId) throw new Error('block_actions payload carries no team id');
  const messageTs = p.container?.message_ts;
  return {
    identity: { platform: 'slack', tenantId, chatUserId: p.user.id, displayName: p.user.name },
    channelId: p.channel.id,
    // Only a card that itself sits in a thread has one; private notices about a click on a channel card must
    // show in the channel, not inside the card's thread where the clicker may never look.
    threadId: p.container?.thread_ts,
    // Interactivity has no event id; one click is one (message, button, user, action_ts). Two clicks are two
    // keys on purpose: the core's row lock, not this key, turns them into one decision.
    eventId: `action:${messageTs ?? '-'}:${action.action_id}:${p.user.id}:${action.action_ts}`,
  };
}

/** Removes the bot's own mention (`<@U123>` or `<@U123|name>`) so the core sees just the command. */
export function stripMention(raw: string, botUserId?: string): string {
  const mention = botUserId ? new RegExp(`<@${botUserId}(\\|[^>]*)?>`, 'g') : /^\s*<@[A-Z0-9]+(\|[^>]*)?>/;
  return unescapeSlackText(raw.replace(mention, ' ')).trim();
}

/** Slack sends `&`, `<` and `>` typed by a person as entities; the command grammar wants what they typed. */
export function unescapeSlackText(raw: string): string {
  return raw.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}
