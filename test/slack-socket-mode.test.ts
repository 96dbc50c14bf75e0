// Socket Mode: with an app-level token the adapter takes events over Bolt's WebSocket client (against the
// local Slack stand-in's apps.connections.open and WebSocket) instead of mounting the HTTP route.
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerSlack, type SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import type { BotCore } from '../bot/bot-types.ts';
import type { ChatContext } from '../bot/ports.ts';
import { type FakeSlack, slashCommand, startFakeSlack } from './helpers/fake-slack.ts';

const silent = { info() {}, warn() {}, error() {}, debug() {} };

describe('Slack adapter in Socket Mode', () => {
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  const commands: { ctx: ChatContext; text: string }[] = [];
  const bot: BotCore = {
    async handleCommand(ctx, text) {
      commands.push({ ctx, text });
    },
    async handleDecision() {},
    describeStepUp: () => Promise.reject(new Error('not used')),
    completeStepUp: () => Promise.reject(new Error('not used')),
  };

  beforeEach(async () => {
    commands.length = 0;
    slack = await startFakeSlack({ botToken: 'xoxb-sock', appToken: 'xapp-sock' });
    http = buildHttpApp();
    adapter = await registerSlack(http, {
      bot,
      logger: silent,
      config: {
        signingSecret: 'unused',
        botToken: 'xoxb-sock',
        appToken: 'xapp-sock',
        apiUrl: slack.apiUrl,
        command: '/ar',
      },
    });
    await http.ready();
  });
  afterEach(async () => {
    await adapter.close();
    await http.close();
    await slack.close();
  });

  it('connects through apps.connections.open and does not mount the HTTP route', async () => {
    expect(adapter.mode).toBe('socket');
    expect(slack.callsOf('apps.connections.open')).toHaveLength(1);
    expect(slack.socketCount()).toBe(1);
    const res = await http.inject({ method: 'POST', url: '/slack/events', payload: {} });
    expect(res.statusCode).toBe(404);
  });

  it('acks a slash command envelope and hands the command to the core', async () => {
    const { form } = slashCommand({
      text: 'status',
      user: 'UANA',
      team: 'T0HOME',
      channel: 'CINC',
      triggerId: 'trig-sock-1',
    });
    const ack = await slack.sendEnvelope('slash_commands', form);
    expect(ack.envelope_id).toBeDefined();
    await adapter.idle();
    expect(commands).toHaveLength(1);
    expect(commands[0]!.text).toBe('status');
    expect(commands[0]!.ctx).toMatchObject({
      identity: { platform: 'slack', tenantId: 'T0HOME', chatUserId: 'UANA' },
      eventId: 'command:trig-sock-1',
    });
  });
});
