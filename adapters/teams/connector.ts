// The adapter's one way out to Teams: the SDK's ConversationClient, one per service URL, over the SDK's own
// HTTP client (which carries the bot token from the App's token manager, i.e. our token provider). Each call
// goes through the outbound gate (per-conversation limits, retries) and refuses a service URL whose host is
// not allow-listed, since the bot's token travels with every request. Deliberately thin: create, update,
// member lookup, so a durable sender (an outbox) can drive the same calls later.
import { ConversationClient, type TeamsChannelAccount } from '@microsoft/teams.api';
import type { Logger } from '../../bot/ports.ts';
import type { OutboundGate } from './outbound-gate.ts';
import { TeamsApiError } from './outbound-gate.ts';
import { normaliseServiceUrl, type TeamsCloud } from './teams-cloud.ts';

/** The SDK's HTTP client type, as the connector client takes it. */
export type SdkHttpClient = NonNullable<ConstructorParameters<typeof ConversationClient>[1]>;

/** Where a message goes: the conversation (threaded: `<id>;messageid=<root>`) on a service URL. */
export interface ConversationTarget {
  serviceUrl: string;
  conversationId: string;
}

/** What we send: an activity as the connector's REST API takes it. */
export type OutboundActivity = Parameters<ConversationClient['createActivity']>[1];

/** The conversation a (possibly threaded) conversation id belongs to: rate limits count per conversation. */
export function baseConversationId(conversationId: string): string {
  const i = conversationId.indexOf(';messageid=');
  return i === -1 ? conversationId : conversationId.slice(0, i);
}

export function threadedConversationId(conversationId: string, rootId: string | undefined): string {
  const base = baseConversationId(conversationId);
  return rootId ? `${base};messageid=${rootId}` : base;
}

export function createTeamsConnector(deps: {
  /** The SDK's HTTP client with the bot token attached (`app.api.http`). */
  http: SdkHttpClient;
  cloud: TeamsCloud;
  gate: OutboundGate;
  logger: Logger;
}) {
  const clients = new Map<string, ConversationClient>();

  function clientFor(serviceUrl: string): ConversationClient {
    const url = normaliseServiceUrl(serviceUrl);
    if (!url || !deps.cloud.allowsServiceUrl(url)) {
      // Never send the bot's token to a host we do not know; say which, so an admin can allow it.
      throw new TeamsApiError(
        `refused to call Teams at ${url ?? 'an invalid URL'}: its host is not an allowed service URL (TEAMS_SERVICE_URL_HOSTS)`,
        0,
        0,
      );
    }
    let c = clients.get(url);
    if (!c) {
      c = new ConversationClient(url, deps.http);
      clients.set(url, c);
    }
    return c;
  }

  return {
    /** Posts an activity; resolves with the new activity's id. */
    async create(target: ConversationTarget, activity: OutboundActivity): Promise<{ id: string }> {
      const client = clientFor(target.serviceUrl);
      const res = await deps.gate.run(baseConversationId(target.conversationId), 'post to Teams', () =>
        client.createActivity(target.conversationId, activity),
      );
      if (!res?.id)
        throw new TeamsApiError('post to Teams failed: the connector returned no activity id', 200, 1);
      return { id: res.id };
    },

    /** Replaces an activity (a card edit). */
    async update(target: ConversationTarget, activityId: string, activity: OutboundActivity): Promise<void> {
      const client = clientFor(target.serviceUrl);
      await deps.gate.run(baseConversationId(target.conversationId), 'update a Teams message', () =>
        client.updateActivity(target.conversationId, activityId, activity),
      );
    },

    /**
     * One member of a conversation, by their `29:` id or Entra object id; null when they are not a member.
     * Lookups are limited separately from sends (they have their own budget at Teams).
     */
    async member(target: ConversationTarget, memberId: string): Promise<TeamsChannelAccount | null> {
      const client = clientFor(target.serviceUrl);
      const conversation = baseConversationId(target.conversationId);
      try {
        return await deps.gate.run(`members:${conversation}`, 'look up a Teams member', () =>
          client.getMemberById(conversation, memberId),
        );
      } catch (err) {
        if (err instanceof TeamsApiError && err.status === 404) return null;
        throw err;
      }
    },
  };
}

export type TeamsConnector = ReturnType<typeof createTeamsConnector>;
