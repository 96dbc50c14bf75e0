// Mounts what people reach over HTTP on the one Fastify app: the step-up pages always, Slack when its
// tokens are configured. Returns a close function for what needs stopping (Socket Mode connections).
import type { FastifyInstance } from 'fastify';
import type { FileStore, Logger } from '../bot/ports.ts';
import type { Database } from '../db/client.ts';
import { registerStepUpPages } from '../web-stepup/stepup-plugin.ts';
import type { Config } from './config.ts';
import type { Platform } from './platform.ts';

export interface SurfaceDeps {
  http: FastifyInstance;
  platform: Platform;
  config: Config;
  logger: Logger;
  fileStore: FileStore;
  database: Database;
}

export async function attachSurfaces(deps: SurfaceDeps): Promise<{ close(): Promise<void> }> {
  const { http, platform, config } = deps;
  await registerStepUpPages(http, {
    bot: platform.bot,
    stepup: platform.stepup,
    users: platform.users,
    audit: platform.audit,
    fileStore: deps.fileStore,
    library: platform.library,
    db: platform.db,
    clock: platform.clock,
    config: {
      publicUrl: config.PUBLIC_URL,
      secureCookies: config.secureCookies,
      secretKey: platform.secretKey,
      maxLibraryFileBytes: config.MAX_FILE_BYTES,
    },
  });
  const closers: (() => Promise<void>)[] = [];
  if (config.slackEnabled) {
    const { registerSlack } = await import('../adapters/slack/slack-plugin.ts');
    const slack = await registerSlack(http, {
      bot: platform.bot,
      logger: deps.logger,
      db: platform.db,
      // Post-ack work contends for the single embedded connection; PostgreSQL takes more in parallel.
      maxConcurrentWork: deps.database.driver === 'pglite' ? 1 : 2,
      config: {
        signingSecret: config.SLACK_SIGNING_SECRET!,
        botToken: config.SLACK_BOT_TOKEN!,
        appToken: config.SLACK_APP_TOKEN,
        apiUrl: config.SLACK_API_URL,
        command: config.SLACK_COMMAND,
      },
    });
    platform.router.register('slack', slack.chat);
    if (config.SLACK_AUDIT_CHANNEL)
      platform.checkpointer.addSink(slack.auditSink(config.SLACK_AUDIT_CHANNEL));
    closers.push(() => slack.close());
  }
  return {
    async close() {
      for (const c of closers) await c();
    },
  };
}
