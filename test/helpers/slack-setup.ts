// The Slack adapter mounted on a test platform as production mounts it: the real Bolt app on a Fastify server,
// talking to a fresh local Slack stand-in, registered with the platform's chat router. The caller adds any other
// routes (the step-up pages) and then calls `http.ready()`.
import type { FastifyInstance } from 'fastify';
import { registerSlack, type SlackAdapter } from '../../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../../app/http-app.ts';
import { type FakeSlack, startFakeSlack } from './fake-slack.ts';
import type { TestPlatform } from './platform.ts';

const silent = { info() {}, warn() {}, error() {}, debug() {} };

export async function mountSlack(
  tp: TestPlatform,
  opts: {
    signingSecret: string;
    botToken: string;
    teamId: string;
    timers?: Parameters<typeof registerSlack>[1]['timers'];
    /** The stand-in's clock (its calls' `at`, its rate-limit stretches). */
    slackNow?: () => number;
  },
): Promise<{ slack: FakeSlack; http: FastifyInstance; adapter: SlackAdapter }> {
  const slack = await startFakeSlack({ botToken: opts.botToken, teamId: opts.teamId, now: opts.slackNow });
  const http = buildHttpApp();
  const adapter = await registerSlack(http, {
    bot: tp.platform.bot,
    logger: silent,
    ...(opts.timers ? { timers: opts.timers } : {}),
    config: {
      signingSecret: opts.signingSecret,
      botToken: opts.botToken,
      apiUrl: slack.apiUrl,
      command: '/ar',
    },
  });
  tp.platform.router.register('slack', adapter.chat);
  return { slack, http, adapter };
}
