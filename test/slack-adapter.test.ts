// The Slack adapter on the real Bolt App against the local Slack stand-in: signature and freshness checks,
// ack-before-work, and how payloads become ChatContexts (test/slack-chat.test.ts covers the ChatPort side). The core
// here is a recorder (the contract is the BotCore port); test/slack-flow.test.ts runs the real core.
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerSlack, type SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import type { BotCore, DecisionInput } from '../bot/bot-types.ts';
import type { ChatContext, Logger } from '../bot/ports.ts';
import {
  appMention,
  buttonClick,
  type FakeSlack,
  sampleRequestView as sampleView,
  signedRequest,
  slashCommand,
  startFakeSlack,
} from './helpers/fake-slack.ts';

const SECRET = 'test-signing-secret';
const TOKEN = 'xoxb-test-token';
const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} };

function recordingBot() {
  const commands: { ctx: ChatContext; text: string }[] = [];
  const decisions: { ctx: ChatContext; input: DecisionInput }[] = [];
  let gate: Promise<void> = Promise.resolve();
  const bot: BotCore = {
    async handleCommand(ctx, text) {
      commands.push({ ctx, text });
      await gate;
    },
    async handleDecision(ctx, input) {
      decisions.push({ ctx, input });
      await gate;
    },
    describeStepUp: () => Promise.reject(new Error('not used')),
    completeStepUp: () => Promise.reject(new Error('not used')),
  };
  return {
    bot,
    commands,
    decisions,
    /** Makes the core "slow" until the returned function is called. */
    hold(): () => void {
      let release!: () => void;
      gate = new Promise((r) => {
        release = r;
      });
      return release;
    },
  };
}

describe('Slack adapter (HTTP mode, Bolt against a local Slack)', () => {
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  let rec: ReturnType<typeof recordingBot>;

  beforeEach(async () => {
    slack = await startFakeSlack({ botToken: TOKEN });
    http = buildHttpApp();
    rec = recordingBot();
    adapter = await registerSlack(http, {
      bot: rec.bot,
      logger: silent,
      config: { signingSecret: SECRET, botToken: TOKEN, apiUrl: slack.apiUrl, command: '/ar' },
    });
    await http.ready();
  });
  afterEach(async () => {
    await adapter.close();
    await http.close();
    await slack.close();
  });

  const command = (text: string, extra: Partial<Parameters<typeof slashCommand>[0]> = {}) =>
    slashCommand({ text, user: 'UANA', team: 'T0HOME', channel: 'CINC', ...extra });

  it('verifies the bot token with one auth.test at startup', () => {
    expect(slack.callsOf('auth.test')).toHaveLength(1);
    expect(adapter.botUserId).toBe('UBOT');
  });

  it('refuses to start with a token Slack does not accept, saying why', async () => {
    const other = buildHttpApp();
    await expect(
      registerSlack(other, {
        bot: rec.bot,
        logger: silent,
        config: { signingSecret: SECRET, botToken: 'xoxb-revoked', apiUrl: slack.apiUrl, command: '/ar' },
      }),
    ).rejects.toThrow(/invalid_auth/);
    await other.close();
  });

  it('refuses a bad signature with 401 and runs nothing', async () => {
    const req = signedRequest('wrong-secret', command('isolate web-01 --reason x'));
    const res = await http.inject(req);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toMatchObject({ error: 'slack.unauthenticated', message: 'signature mismatch' });
    await adapter.idle();
    expect(rec.commands).toHaveLength(0);
  });

  it('refuses a body altered after signing', async () => {
    const req = signedRequest(SECRET, command('status'));
    const res = await http.inject({ ...req, payload: req.payload.replace('status', 'isolate+web-01') });
    expect(res.statusCode).toBe(401);
    expect(rec.commands).toHaveLength(0);
  });

  it('refuses a correctly signed request whose timestamp is older than 5 minutes', async () => {
    const old = Math.floor(Date.now() / 1000) - 6 * 60;
    const res = await http.inject(signedRequest(SECRET, command('status'), { timestampSec: old }));
    expect(res.statusCode).toBe(401);
    expect(res.json().message).toMatch(/older than 5 minutes/);
    await adapter.idle();
    expect(rec.commands).toHaveLength(0);
  });

  it('refuses a request with no signature headers', async () => {
    const res = await http.inject({
      method: 'POST',
      url: '/slack/events',
      payload: { type: 'event_callback' },
    });
    expect(res.statusCode).toBe(401);
  });

  it('answers the URL verification challenge', async () => {
    const res = await http.inject(
      signedRequest(SECRET, { json: { type: 'url_verification', challenge: 'c-123' } }),
    );
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ challenge: 'c-123' });
  });

  it('acks a slash command before the core has finished, then hands it the text and who typed it', async () => {
    const release = rec.hold();
    const res = await http.inject(
      signedRequest(SECRET, command('isolate web-01 --reason "C2 &amp; beacon"')),
    );
    // The HTTP answer is back while the core is still holding: the ack did not wait for the work.
    expect(res.statusCode).toBe(200);
    expect(rec.commands).toHaveLength(1);
    release();
    await adapter.idle();
    const { ctx, text } = rec.commands[0]!;
    expect(text).toBe('isolate web-01 --reason "C2 & beacon"');
    expect(ctx.identity).toMatchObject({ platform: 'slack', tenantId: 'T0HOME', chatUserId: 'UANA' });
    expect(ctx.channelId).toBe('CINC');
    expect(ctx.eventId).toMatch(/^command:trig-/);
  });

  it('acks every command of a burst while the core works through them a few at a time', async () => {
    const release = rec.hold();
    const acks = await Promise.all(
      Array.from({ length: 10 }, (_, i) => http.inject(signedRequest(SECRET, command(`status ${i}`)))),
    );
    expect(acks.map((r) => r.statusCode)).toEqual(Array(10).fill(200));
    // The core has only the default two in hand; the rest wait their turn instead of crowding the acks.
    expect(rec.commands).toHaveLength(2);
    release();
    await adapter.idle();
    expect(rec.commands.map((c) => c.text).sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => `status ${i}`).sort(),
    );
  });

  it('ignores a slash command it was not configured for', async () => {
    const res = await http.inject(signedRequest(SECRET, command('status', { command: '/other' })));
    expect(res.statusCode).toBe(200);
    await adapter.idle();
    expect(rec.commands).toHaveLength(0);
  });

  it("strips the bot's mention and identifies a Slack Connect user by their own team", async () => {
    const body = appMention({
      text: '<@UBOT> isolate web-01 --reason beacon',
      user: 'UMDR',
      team: 'T0HOME',
      userTeam: 'T0MDR',
      channel: 'CSHARED',
      eventId: 'Ev001',
      threadTs: '1700000000.000001',
    });
    const res = await http.inject(signedRequest(SECRET, body));
    expect(res.statusCode).toBe(200);
    await adapter.idle();
    expect(rec.commands).toHaveLength(1);
    expect(rec.commands[0]!.text).toBe('isolate web-01 --reason beacon');
    expect(rec.commands[0]!.ctx).toMatchObject({
      identity: { platform: 'slack', tenantId: 'T0MDR', chatUserId: 'UMDR' },
      channelId: 'CSHARED',
      threadId: '1700000000.000001',
      eventId: 'event:Ev001',
    });
  });

  it('gives a retried event the same key as the original, so the core can drop the retry', async () => {
    const body = appMention({
      text: '<@UBOT> status',
      user: 'UANA',
      team: 'T0HOME',
      channel: 'CINC',
      eventId: 'Ev002',
    });
    await http.inject(signedRequest(SECRET, body));
    const retry = await http.inject(signedRequest(SECRET, body, { retryNum: 1 }));
    expect(retry.statusCode).toBe(200);
    await adapter.idle();
    expect(rec.commands.map((c) => c.ctx.eventId)).toEqual(['event:Ev002', 'event:Ev002']);
  });

  it('turns an Approve click into a decision by the clicker, acked before the core runs', async () => {
    const release = rec.hold();
    const click = buttonClick({
      actionId: 'ar_approve',
      value: sampleView().id,
      user: 'UIC',
      userTeam: 'T0HOME',
      team: 'T0HOME',
      channel: 'CINC',
      messageTs: '1700000000.000200',
    });
    const res = await http.inject(signedRequest(SECRET, click));
    expect(res.statusCode).toBe(200);
    release();
    await adapter.idle();
    expect(rec.decisions).toHaveLength(1);
    expect(rec.decisions[0]!.input).toEqual({ requestId: sampleView().id, decision: 'approve' });
    expect(rec.decisions[0]!.ctx.identity).toMatchObject({ tenantId: 'T0HOME', chatUserId: 'UIC' });
    // A refusal about a click on a channel card is shown in the channel, not hidden in the card's thread.
    expect(rec.decisions[0]!.ctx.threadId).toBeUndefined();
    expect(rec.decisions[0]!.ctx.eventId).toMatch(/^action:1700000000\.000200:ar_approve:UIC:/);
  });

  it('turns a Deny click into a deny decision', async () => {
    const click = buttonClick({
      actionId: 'ar_deny',
      value: sampleView().id,
      user: 'UIC',
      userTeam: 'T0HOME',
      team: 'T0HOME',
      channel: 'CINC',
      messageTs: '1700000000.000200',
    });
    await http.inject(signedRequest(SECRET, click));
    await adapter.idle();
    expect(rec.decisions[0]!.input.decision).toBe('deny');
  });
});
