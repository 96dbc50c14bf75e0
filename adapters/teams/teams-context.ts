// Turns Teams activities into the core's ChatContext. Activities are validated with zod here (a signed
// activity can still be a shape we do not expect), and each gets one stable event key so a redelivered
// activity reaches the core as a duplicate.
//
// Where a message lives is encoded into ChatContext.channelId as `<kind>|<service URL>|<conversation id>`:
// the kind (channel, group chat, personal chat) decides whether replies thread, and the service URL is
// where that conversation's connector lives. Stored with a request, it lets any process update the card
// later, with the URL an activity signed by Bot Framework gave us (and the host allow-listed on every use).
import { stripMentionsText } from '@microsoft/teams.api';
import { z } from 'zod';
import type { ChatContext, ChatIdentity } from '../../bot/ports.ts';
import { baseConversationId, type ConversationTarget, threadedConversationId } from './connector.ts';
import { normaliseServiceUrl } from './teams-cloud.ts';

export type ConversationKind = 'channel' | 'groupChat' | 'personal';

export interface TeamsAddress {
  kind: ConversationKind;
  serviceUrl: string;
  /** The conversation id without any `;messageid=` thread suffix. */
  conversationId: string;
}

const KINDS = new Set<ConversationKind>(['channel', 'groupChat', 'personal']);

export function encodeAddress(a: TeamsAddress): string {
  return `${a.kind}|${a.serviceUrl}|${a.conversationId}`;
}

/** Throws when `channelId` is not a Teams address (a card from another adapter routed here by mistake). */
export function decodeAddress(channelId: string): TeamsAddress {
  const first = channelId.indexOf('|');
  const second = channelId.indexOf('|', first + 1);
  const kind = channelId.slice(0, first) as ConversationKind;
  const serviceUrl = normaliseServiceUrl(channelId.slice(first + 1, second));
  const conversationId = channelId.slice(second + 1);
  if (first < 0 || second < 0 || !KINDS.has(kind) || !serviceUrl || !conversationId) {
    throw new Error(`not a Teams conversation address: ${channelId.slice(0, 80)}`);
  }
  return { kind, serviceUrl, conversationId };
}

/** Where to post in `address`: in channels, inside the thread `rootId` when there is one; chats have none. */
export function targetOf(address: TeamsAddress, rootId?: string): ConversationTarget {
  return {
    serviceUrl: address.serviceUrl,
    conversationId:
      address.kind === 'channel'
        ? threadedConversationId(address.conversationId, rootId)
        : address.conversationId,
  };
}

const id = z.string().min(1).max(512);
const account = z.object({
  id,
  name: z.string().max(300).optional(),
  aadObjectId: z.string().max(100).optional(),
});

const common = {
  id,
  channelId: z.literal('msteams'),
  serviceUrl: z.string().min(1).max(500),
  from: account,
  recipient: account,
  conversation: z.object({
    id,
    conversationType: z.string().max(40).optional(),
    tenantId: z.string().max(100).optional(),
  }),
  channelData: z
    .object({
      tenant: z.object({ id: z.string().max(100) }).optional(),
      team: z.object({ id: z.string().max(512) }).optional(),
    })
    .passthrough()
    .optional(),
  replyToId: z.string().max(512).optional(),
};

export const messageActivity = z.object({
  ...common,
  type: z.literal('message'),
  text: z.string().max(16_000).optional(),
  entities: z.array(z.record(z.string(), z.unknown())).max(50).optional(),
});

export const cardActionActivity = z.object({
  ...common,
  type: z.literal('invoke'),
  name: z.literal('adaptiveCard/action'),
  value: z.object({
    action: z.object({
      type: z.string().max(40),
      verb: z.string().max(100).optional(),
      data: z.record(z.string(), z.unknown()).default({}),
    }),
    trigger: z.string().max(40).optional(),
  }),
});

export type MessageActivity = z.infer<typeof messageActivity>;
export type CardActionActivity = z.infer<typeof cardActionActivity>;
type AnyActivity = MessageActivity | CardActionActivity;

function kindOf(a: AnyActivity): ConversationKind {
  const t = a.conversation.conversationType;
  if (t === 'channel' || t === 'groupChat' || t === 'personal') return t;
  // Older payloads omit the type; the id's shape says it.
  if (a.conversation.id.startsWith('a:')) return 'personal';
  return /@thread\.(tacv2|skype)/.test(a.conversation.id) ? 'channel' : 'groupChat';
}

/** The team a channel belongs to (its General channel's conversation id), when in a channel. */
export function teamOf(a: AnyActivity): string | undefined {
  return a.channelData?.team?.id;
}

/** The tenant that hosts the conversation (a shared channel's owner, the chat's organisation). */
export function hostTenantOf(a: AnyActivity): string | undefined {
  return a.conversation.tenantId ?? a.channelData?.tenant?.id;
}

export function addressOf(a: AnyActivity): TeamsAddress {
  const serviceUrl = normaliseServiceUrl(a.serviceUrl);
  if (!serviceUrl) throw new Error('activity carries no usable serviceUrl');
  return { kind: kindOf(a), serviceUrl, conversationId: baseConversationId(a.conversation.id) };
}

/**
 * The thread an activity belongs to in a channel: the `;messageid=` of its conversation id, or the activity
 * itself when it is a new post (which is then the root of its own thread). Chats have no threads.
 */
export function threadOf(a: AnyActivity): string | undefined {
  if (kindOf(a) !== 'channel') return undefined;
  const m = /;messageid=([^;]+)/.exec(a.conversation.id);
  return m?.[1] ?? a.replyToId ?? a.id;
}

/** A context whose identity the caller fills in (it needs a member lookup; see teams-identity.ts). */
export function contextOf(a: AnyActivity, identity: ChatIdentity, eventId: string): ChatContext {
  return { identity, channelId: encodeAddress(addressOf(a)), threadId: threadOf(a), eventId };
}

export const messageEventId = (a: MessageActivity) => `activity:${a.id}`;
/** Each click is its own invoke (its own id); a redelivered invoke repeats the id. */
export const invokeEventId = (a: CardActionActivity) => `invoke:${a.id}`;

const ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: ' ',
  '#39': "'",
};

/**
 * The command typed after the bot's @mention: the bot's mention removed (Teams puts `<at>Name</at>` in the text),
 * HTML entities and non-breaking spaces Teams sends turned back into what was typed, and a dash that a
 * phone turned into an em dash before an option restored to `--`.
 */
export function commandText(a: MessageActivity): string {
  const sdkView = a as unknown as Parameters<typeof stripMentionsText>[0];
  const withoutMention: string = stripMentionsText(sdkView, { accountId: a.recipient.id }) ?? a.text ?? '';
  return (
    withoutMention
      // Anyone else @mentioned (grant <at>Ana</at> approver) stays as the name that was typed.
      .replace(/<at>([^<]*)<\/at>/g, '$1')
      .replace(/&(amp|lt|gt|quot|apos|nbsp|#39);/g, (m: string, e: string) => ENTITIES[e] ?? m)
      .replace(/\u00a0/g, ' ')
      .replace(/(^|\s)[—–](?=[a-z])/g, '$1--')
      .trim()
  );
}

/** True when the activity @mentions the bot (in channels and group chats the bot only acts when named). */
export function mentionsBot(a: MessageActivity): boolean {
  return (a.entities ?? []).some(
    (e) => e.type === 'mention' && (e.mentioned as { id?: unknown } | undefined)?.id === a.recipient.id,
  );
}

/** Whether a message should be handled as a command at all. */
export function isCommand(a: MessageActivity): boolean {
  if (!a.text?.trim()) return false;
  return kindOf(a) === 'personal' || mentionsBot(a);
}
