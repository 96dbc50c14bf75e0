// Activities as Teams sends them to a bot (messages with an @mention, Action.Execute invokes), and the
// HTTP request Bot Framework makes for one: a JSON body and a genuinely signed RS256 bearer token. Used with
// the stand-in in fake-teams.ts, whose key signs them.
import { randomUUID } from 'node:crypto';
import { BOT_FRAMEWORK_ISSUER, signJwt, type TestKey } from './fake-teams.ts';

export interface Person {
  /** The bot-specific `29:` id. */
  id: string;
  aadObjectId: string;
  name: string;
}

export interface Conversation {
  /** Base conversation id (a channel `19:…@thread.tacv2`, a group chat, or a personal `a:…`). */
  id: string;
  type: 'channel' | 'groupChat' | 'personal';
  /** The host tenant. */
  tenantId: string;
}

const BOT = (clientId: string) => ({ id: `28:${clientId}`, name: 'Active Response' });

export function messageActivity(opts: {
  clientId: string;
  serviceUrl: string;
  from: Person;
  conversation: Conversation;
  text: string;
  /** Channel thread root; omit for a new post (which is its own root). */
  threadId?: string;
  id?: string;
  mention?: boolean;
}): Record<string, unknown> {
  const id = opts.id ?? String(Date.now()) + Math.floor(Math.random() * 1000);
  const bot = BOT(opts.clientId);
  const mention = opts.mention ?? opts.conversation.type !== 'personal';
  const root = opts.conversation.type === 'channel' ? (opts.threadId ?? id) : undefined;
  return {
    type: 'message',
    id,
    timestamp: new Date().toISOString(),
    channelId: 'msteams',
    serviceUrl: opts.serviceUrl,
    from: { id: opts.from.id, name: opts.from.name, aadObjectId: opts.from.aadObjectId },
    recipient: bot,
    conversation: {
      id: root ? `${opts.conversation.id};messageid=${root}` : opts.conversation.id,
      conversationType: opts.conversation.type,
      tenantId: opts.conversation.tenantId,
      isGroup: opts.conversation.type !== 'personal',
    },
    channelData: { tenant: { id: opts.conversation.tenantId } },
    text: mention ? `<at>${bot.name}</at> ${opts.text}` : opts.text,
    textFormat: 'plain',
    entities: mention ? [{ type: 'mention', text: `<at>${bot.name}</at>`, mentioned: bot }] : [],
    ...(root && root !== id ? { replyToId: root } : {}),
  };
}

/** An `Action.Execute` click (or a refresh, with verb `ar.refresh`) on a card. */
export function cardAction(opts: {
  clientId: string;
  serviceUrl: string;
  from: Person;
  conversation: Conversation;
  verb: string;
  data: Record<string, unknown>;
  /** The id of the card's message. */
  replyToId?: string;
  threadId?: string;
  id?: string;
  trigger?: 'manual' | 'automatic';
}): Record<string, unknown> {
  const root = opts.conversation.type === 'channel' ? opts.threadId : undefined;
  return {
    type: 'invoke',
    name: 'adaptiveCard/action',
    id: opts.id ?? `f:${randomUUID()}`,
    timestamp: new Date().toISOString(),
    channelId: 'msteams',
    serviceUrl: opts.serviceUrl,
    from: { id: opts.from.id, name: opts.from.name, aadObjectId: opts.from.aadObjectId },
    recipient: BOT(opts.clientId),
    conversation: {
      id: root ? `${opts.conversation.id};messageid=${root}` : opts.conversation.id,
      conversationType: opts.conversation.type,
      tenantId: opts.conversation.tenantId,
    },
    channelData: { tenant: { id: opts.conversation.tenantId } },
    replyToId: opts.replyToId,
    value: {
      action: { type: 'Action.Execute', verb: opts.verb, data: opts.data },
      trigger: opts.trigger ?? 'manual',
    },
  };
}

/**
 * The HTTP request Bot Framework makes for `activity`: a JSON body and an RS256 bearer token whose
 * `serviceurl` claim names the activity's service URL. Each option breaks one thing, for refusal tests.
 */
export function signedActivity(
  key: TestKey,
  clientId: string,
  activity: Record<string, unknown>,
  opts: {
    aud?: string;
    iss?: string;
    expiresInS?: number;
    serviceUrl?: string | null;
    token?: string | null;
  } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    iss: opts.iss ?? BOT_FRAMEWORK_ISSUER,
    aud: opts.aud ?? clientId,
    iat: now - 10,
    nbf: now - 10,
    exp: now + (opts.expiresInS ?? 3600),
  };
  const serviceUrl = opts.serviceUrl === undefined ? activity.serviceUrl : opts.serviceUrl;
  if (serviceUrl !== null) claims.serviceurl = serviceUrl;
  const token = opts.token === undefined ? signJwt(key, claims) : opts.token;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  return { method: 'POST' as const, url: '/api/messages', headers, payload: JSON.stringify(activity) };
}
