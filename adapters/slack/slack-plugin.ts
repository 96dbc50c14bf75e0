// Wires the Slack adapter: a real @slack/bolt App whose receiver is either the shared Fastify server
// (HTTP mode, POST /slack/events) or Bolt's Socket Mode client (when an app-level token is configured),
// the listeners, and the ChatPort the core posts through. The composition root registers the returned
// `chat` with the chat router under 'slack'.
import { App, type Receiver, SocketModeReceiver, webApi } from '@slack/bolt';
import type { FastifyInstance } from 'fastify';
import type { AuditAnchorSink } from '../../bot/audit/audit-checkpoint.ts';
import type { BotCore } from '../../bot/bot-types.ts';
import type { InteractionInbox } from '../../bot/inbox/interaction-inbox.ts';
import type { ChatPort, Logger } from '../../bot/ports.ts';
import type { Db } from '../../db/client.ts';
import { toBoltLogger } from './bolt-logger.ts';
import { FastifyReceiver } from './fastify-receiver.ts';
import { registerCommandListener } from './listeners/command-listener.ts';
import { registerDecisionListener } from './listeners/decision-listener.ts';
import { registerMentionListener } from './listeners/mention-listener.ts';
import { createWorkTracker } from './listeners/work-tracker.ts';
import { createSlackAuditSink } from './slack-audit-sink.ts';
import { createSlackChat } from './slack-chat.ts';
import type { TimerPort } from './update-scheduler.ts';

export interface SlackConfig {
  signingSecret: string;
  /** xoxb- bot token. */
  botToken: string;
  /** Web API base, e.g. http://127.0.0.1:9000/api/ for a local stand-in. Defaults to https://slack.com/api/. */
  apiUrl?: string;
  /** Slash command, e.g. /ar. */
  command: string;
  /** xapp- app-level token: when set, events arrive over Socket Mode instead of HTTP. */
  appToken?: string;
}

export interface SlackDeps {
  bot: BotCore;
  config: SlackConfig;
  logger: Logger;
  /**
   * Accepted for symmetry with other adapters; not used. Retries and duplicate deliveries are deduplicated
   * by the core on ctx.eventId (processed_events), so the adapter keeps no state of its own.
   */
  db?: Db;
  /**
   * The durable inbox: commands and clicks are recorded in it before their ack and processed from it, and
   * on start the adapter processes what an earlier process acked and never finished. Without it, work after
   * the ack lives in memory only.
   */
  inbox?: InteractionInbox;
  /** Card-edit scheduling (clock and timer); defaults to the system's. */
  timers?: TimerPort;
  /** Clock for the signature's timestamp check, in ms; defaults to Date.now. */
  nowMs?: () => number;
  /**
   * How many commands and clicks the core works on at once after their acks (default 2); the rest queue.
   * Use 1 with PGlite: its queries run on this event loop, and overlapping them only delays the next acks.
   */
  maxConcurrentWork?: number;
}

export interface SlackAdapter {
  chat: ChatPort;
  /** 'http' when mounted on Fastify, 'socket' in Socket Mode. */
  mode: 'http' | 'socket';
  /** Bot user id from auth.test, used to strip the bot's own mention. */
  botUserId?: string;
  /** Posts signed audit checkpoints to `channel` (SLACK_AUDIT_CHANNEL). */
  auditSink(channel: string): AuditAnchorSink;
  /** Resolves when no listener work is running. */
  idle(): Promise<void>;
  /** Stops taking events, waits for work in flight, sends pending card edits. */
  close(): Promise<void>;
}

/**
 * Registers the Slack adapter. In HTTP mode the route is added to `fastify`, so call this before the server
 * starts listening (before `fastify.ready()`). Rejects with Slack's error (e.g. `invalid_auth`) when the bot
 * token is wrong, before mounting anything.
 */
export async function registerSlack(fastify: FastifyInstance, deps: SlackDeps): Promise<SlackAdapter> {
  const { config, logger } = deps;
  const boltLogger = toBoltLogger(logger);
  const clientOptions = {
    slackApiUrl: config.apiUrl,
    // A few retries ride out blips. Slack's 429 is not waited out in the client: it is rejected, and the chat
    // outbox's sender (bot/outbox/chat-sender.ts) holds that platform's messages for the Retry-After.
    retryConfig: { retries: 2, factor: 2, minTimeout: 200, maxTimeout: 2000 },
    rejectRateLimitedCalls: true,
  };

  // One auth.test, before anything is mounted: a wrong token stops startup with Slack's own error, and Bolt
  // is handed the bot's ids so it never calls auth.test itself (not at start, not on an event's path).
  const auth = await new webApi.WebClient(config.botToken, {
    ...clientOptions,
    logger: boltLogger,
  }).auth.test();
  if (!auth.user_id || !auth.bot_id) {
    throw new Error(
      'Slack auth.test returned no bot user: SLACK_BOT_TOKEN must be the Bot User OAuth Token (xoxb-)',
    );
  }

  let receiver: Receiver;
  let mode: SlackAdapter['mode'];
  if (config.appToken) {
    mode = 'socket';
    receiver = new SocketModeReceiver({
      appToken: config.appToken,
      logger: boltLogger,
      installerOptions: { clientOptions },
    });
  } else {
    mode = 'http';
    const http = new FastifyReceiver({ signingSecret: config.signingSecret, logger, nowMs: deps.nowMs });
    http.mount(fastify);
    receiver = http;
  }

  const app = new App({
    token: config.botToken,
    botId: auth.bot_id,
    botUserId: auth.user_id,
    tokenVerificationEnabled: false,
    receiver,
    logger: boltLogger,
    clientOptions,
    // No in-memory conversation store: state lives in the database, and this process may be one of several.
    convoStore: false,
  });
  app.error(async (err) => {
    logger.error({ err, code: (err as { code?: string }).code }, 'unhandled error in a Slack listener');
  });

  const slackChat = createSlackChat({ client: app.client, logger, timers: deps.timers });
  const work = createWorkTracker({ chat: slackChat.chat, logger, maxConcurrent: deps.maxConcurrentWork });
  const inbox = deps.inbox;
  registerCommandListener(app, { command: config.command, bot: deps.bot, logger, work, inbox });
  registerMentionListener(app, { bot: deps.bot, logger, work, inbox });
  registerDecisionListener(app, { bot: deps.bot, logger, work, inbox });
  // What an earlier process acked and never finished (it died): processed once this one is up.
  if (inbox) void work.run(undefined, async () => void (await inbox.resume({ platform: 'slack' })));

  if (mode === 'socket') await app.start();
  logger.info({ mode, team: auth.team_id, botUserId: auth.user_id }, 'Slack adapter ready');

  return {
    chat: slackChat.chat,
    mode,
    botUserId: auth.user_id,
    auditSink: (channel) => createSlackAuditSink({ client: app.client, channel }),
    idle: () => work.idle(),
    async close() {
      await app.stop();
      await work.idle();
      await slackChat.flush();
    },
  };
}
