// Mounts what people reach over HTTP on the one Fastify app: the step-up pages always, Slack and Teams when
// their credentials are configured. Returns a close function for what needs stopping (Socket Mode
// connections, card edits still waiting for their slot).
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
      inbox: platform.inbox,
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
  if (config.teamsEnabled) {
    const { registerTeams } = await import('../adapters/teams/teams-plugin.ts');
    const teams = await registerTeams(http, {
      bot: platform.bot,
      logger: deps.logger,
      inbox: platform.inbox,
      maxConcurrentWork: deps.database.driver === 'pglite' ? 1 : 2,
      config: {
        clientId: config.TEAMS_CLIENT_ID!,
        clientSecret: config.TEAMS_CLIENT_SECRET!,
        tenantId: config.TEAMS_TENANT_ID!,
        cloud: {
          name: config.TEAMS_CLOUD,
          loginEndpoint: config.TEAMS_LOGIN_ENDPOINT,
          openIdMetadataUrl: config.TEAMS_OPENID_METADATA_URL,
          tokenIssuer: config.TEAMS_TOKEN_ISSUER,
          serviceUrl: config.TEAMS_SERVICE_URL,
          serviceUrlHosts: config.TEAMS_SERVICE_URL_HOSTS,
        },
      },
      views: (id) => platform.requests.getView(id),
      approvers: () => platform.users.chatIdentitiesWithRole('teams', 'approver'),
      secretKey: platform.secretKey,
      // Refused before the core saw them (no Entra account, member lookup failed): audited the same way.
      onIdentityRefused: async ({ code, tenantId, aadObjectId }) => {
        await platform.audit.append({
          actorType: 'chat',
          actorId: `teams:${tenantId ?? '-'}:${aadObjectId ?? '-'}`,
          action: 'identity.refused',
          outcome: 'refused',
          details: { reason: code, platform: 'teams', tenantId: tenantId ?? null },
        });
      },
    });
    platform.router.register('teams', teams.chat);
    if (config.TEAMS_AUDIT_CONVERSATION)
      platform.checkpointer.addSink(teams.auditSink(config.TEAMS_AUDIT_CONVERSATION));
    closers.push(() => teams.close());
  }
  return {
    async close() {
      for (const c of closers) await c();
    },
  };
}
