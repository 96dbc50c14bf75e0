// Wires the Teams adapter: a real `@microsoft/teams.apps` App whose HTTP server is the platform's one Fastify
// server (POST /api/messages), its tokens from our client-credentials provider, the listeners, and the
// ChatPort the core posts through. The composition root registers the returned `chat` with the chat router
// under 'teams'.
//
// Every SDK option that the SDK would otherwise read from the environment is passed explicitly, so
// CLIENT_ID, CLIENT_SECRET, TENANT_ID, CLOUD, SERVICE_URL, LOG_LEVEL or DANGEROUSLY_ALLOW_UNAUTHENTICATED_
// REQUESTS in the environment change nothing: inbound Bot Framework tokens are always validated.
import { App } from '@microsoft/teams.apps';
import type { FastifyInstance } from 'fastify';
import type { AuditAnchorSink } from '../../bot/audit/audit-checkpoint.ts';
import type { BotCore } from '../../bot/bot-types.ts';
import type { InteractionInbox } from '../../bot/inbox/interaction-inbox.ts';
import type { ChatPort, Logger, RequestView } from '../../bot/ports.ts';
import { createApproverDirectory, type LinkedApprover } from './approver-directory.ts';
import { createTeamsConnector, type SdkHttpClient } from './connector.ts';
import { createFastifyAdapter } from './fastify-adapter.ts';
import { registerCardActionListener } from './listeners/card-action-listener.ts';
import { createTeamsInboxHandler } from './listeners/inbox-items.ts';
import { registerMessageListener } from './listeners/message-listener.ts';
import { createWorkTracker } from './listeners/work-tracker.ts';
import { createOutboundGate, type OutboundGate, systemTimers, type TimerPort } from './outbound-gate.ts';
import { createNoteSealer, deriveNoteKey } from './private-notes.ts';
import { createTeamsAuditSink } from './teams-audit-sink.ts';
import { createTeamsChat } from './teams-chat.ts';
import { resolveTeamsCloud, type TeamsCloudConfig } from './teams-cloud.ts';
import { createTeamsIdentity, type IdentityRefusalHook } from './teams-identity.ts';
import { toTeamsLogger } from './teams-logger.ts';
import { createTokenProvider, type TokenProvider } from './token-provider.ts';

export const MESSAGING_ENDPOINT = '/api/messages';

export interface TeamsConfig {
  /** The bot's Entra application (client) id. */
  clientId: string;
  clientSecret: string;
  /** The Entra tenant the (single-tenant) bot is registered in. */
  tenantId: string;
  cloud: TeamsCloudConfig;
}

export interface TeamsDeps {
  bot: BotCore;
  /**
   * The durable inbox: commands and clicks are recorded in it before Teams gets its answer and processed
   * from it, and what an earlier process answered and never finished is processed once this one is up. It
   * must hand work to the same `bot`. Without it they are handled from memory only.
   */
  inbox?: InteractionInbox;
  config: TeamsConfig;
  logger: Logger;
  /** The request as the core shows it (platform.requests.getView): refreshes and click answers render it. */
  views: (requestId: string) => Promise<RequestView>;
  /** Linked Teams identities of users holding the approver role (who a card offers Approve and Deny). */
  approvers: () => Promise<LinkedApprover[]>;
  /** The platform secret; private notes are sealed under a key derived from it. */
  secretKey: Buffer;
  /** Records an identity the adapter refused before the core saw it (no Entra account, lookup failed). */
  onIdentityRefused?: IdentityRefusalHook;
  /** Card-edit spacing, rate-limit waits and retry backoff; defaults to the system's. */
  timers?: TimerPort;
  /** Jitter source for retries (0 ≤ x < 1). */
  random?: () => number;
  /** Commands worked on at once after their answer (default 2; use 1 with PGlite). */
  maxConcurrentWork?: number;
  /** How long a click's answer waits for the core's first word (default 1,000 ms). */
  answerWithinMs?: number;
  /** Minimum time between card edits in one conversation (default 1,000 ms). */
  updateIntervalMs?: number;
}

export interface TeamsAdapter {
  chat: ChatPort;
  /** Posts signed audit checkpoints to a channel (TEAMS_AUDIT_CONVERSATION). */
  auditSink(conversationId: string): AuditAnchorSink;
  tokens: TokenProvider;
  gate: OutboundGate;
  /** Card edits waiting for their slot. */
  pendingUpdates(): number;
  /** Resolves when no command or click is being worked on. */
  idle(): Promise<void>;
  /** Waits for work in flight and sends pending card edits. The route stays (Fastify cannot remove it). */
  close(): Promise<void>;
}

/**
 * Registers the Teams adapter on `fastify`. Call before the server listens. Obtains a bot token first, so a
 * wrong client id, secret or tenant stops the start with Entra's own error before anything is mounted.
 */
export async function registerTeams(fastify: FastifyInstance, deps: TeamsDeps): Promise<TeamsAdapter> {
  const { config, logger } = deps;
  const timers = deps.timers ?? systemTimers;
  const cloud = resolveTeamsCloud(config.cloud);
  const tokens = createTokenProvider({
    config: {
      loginEndpoint: cloud.env.loginEndpoint,
      tenantId: config.tenantId,
      clientId: config.clientId,
      clientSecret: config.clientSecret,
    },
    logger,
  });
  await tokens.token(cloud.env.botScope);

  const httpAdapter = createFastifyAdapter(fastify, { cloud, logger });
  const app = new App({
    clientId: config.clientId,
    // An empty secret (not undefined, which would let CLIENT_SECRET from the environment in) makes the SDK
    // take its tokens from `token`, i.e. from our provider, instead of MSAL.
    clientSecret: '',
    tenantId: config.tenantId,
    token: (scope) => tokens.token(scope),
    managedIdentityClientId: undefined,
    cloud: cloud.env,
    serviceUrl: cloud.defaultServiceUrl,
    dangerouslyAllowUnauthenticatedRequests: false,
    messagingEndpoint: MESSAGING_ENDPOINT,
    httpServerAdapter: httpAdapter,
    logger: toTeamsLogger(logger),
    // A connector that never answers must not hold a send (and its rate-limit slot) forever. The HTTP
    // client logs through ours too: left alone it makes a console logger that reads LOG_LEVEL itself.
    client: { timeout: 15_000, logger: toTeamsLogger(logger, 'teams/http') },
    activity: { mentions: { stripText: false } },
  });
  if (app.credentials?.clientId !== config.clientId || !('token' in (app.credentials ?? {}))) {
    throw new Error('the Teams SDK did not take the configured credentials');
  }

  const gate = createOutboundGate({ timers, random: deps.random, logger });
  const connector = createTeamsConnector({
    http: app.api.http as unknown as SdkHttpClient,
    cloud,
    gate,
    logger,
  });
  const identity = createTeamsIdentity({ connector, timers, logger, onRefused: deps.onIdentityRefused });
  const directory = createApproverDirectory({ list: deps.approvers, identity, timers });
  const notes = createNoteSealer(deriveNoteKey(deps.secretKey));
  const teamsChat = createTeamsChat({
    connector,
    identity,
    directory,
    notes,
    logger,
    timers,
    updateIntervalMs: deps.updateIntervalMs,
  });
  const work = createWorkTracker({
    chat: teamsChat.chat,
    logger,
    maxConcurrent: deps.maxConcurrentWork,
    answering: () => httpAdapter.answering(),
  });
  const { inbox } = deps;
  const handler = createTeamsInboxHandler({ identity, chat: teamsChat.chat, logger });
  registerMessageListener(app, { bot: deps.bot, identity, logger, work, inbox, handler });
  const clicks = createWorkTracker({ chat: teamsChat.chat, logger, maxConcurrent: deps.maxConcurrentWork });
  registerCardActionListener(app, {
    bot: deps.bot,
    chat: teamsChat,
    identity,
    notes,
    views: deps.views,
    clicks,
    inbox,
    handler,
    logger,
    timers,
    answerWithinMs: deps.answerWithinMs,
  });
  app.event('error', ({ error }) => {
    logger.error({ err: (error as Error)?.message }, 'unhandled error in a Teams handler');
  });

  await app.initialize();
  if (!httpAdapter.paths().includes(MESSAGING_ENDPOINT)) {
    throw new Error(`the Teams SDK did not register ${MESSAGING_ENDPOINT}`);
  }
  logger.info(
    { clientId: config.clientId, cloud: config.cloud.name, endpoint: MESSAGING_ENDPOINT },
    'Teams adapter ready',
  );
  // What an earlier process answered and never finished (it died): processed once this one can answer.
  if (inbox)
    void work.run(
      () => undefined,
      async () => void (await inbox.resume({ platform: 'teams', handler })),
    );

  return {
    chat: teamsChat.chat,
    auditSink: (conversationId) =>
      createTeamsAuditSink({ connector, serviceUrl: cloud.defaultServiceUrl, conversationId }),
    tokens,
    gate,
    pendingUpdates: () => teamsChat.pendingUpdates(),
    async idle() {
      await Promise.all([work.idle(), clicks.idle()]);
    },
    async close() {
      await Promise.all([work.idle(), clicks.idle()]);
      await teamsChat.flush();
    },
  };
}
