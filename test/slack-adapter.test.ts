// The Slack adapter on the real Bolt App against the local Slack stand-in: signature and freshness checks,
// ack-before-work, how payloads become ChatContexts, and how ChatPort calls become Web API calls. The core
// here is a recorder (the contract is the BotCore port); test/slack-flow.test.ts runs the real core.
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerSlack, type SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import type { BotCore, DecisionInput } from '../bot/bot-types.ts';
import type { ChatContext, Logger, RequestView } from '../bot/ports.ts';
import {
  appMention,
  buttonClick,
  type FakeSlack,
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

function sampleView(over: Partial<RequestView> = {}): RequestView {
  return {
    id: '6f1c2d9e-0000-4000-8000-000000000001',
    ref: 'R-7K3QXM',
    action: 'isolate',
    params: {},
    targets: [
      { endpointId: 'e1', hostname: 'web-01' },
      { endpointId: 'e2', hostname: 'web-02' },
    ],
    exclusions: [{ hostname: 'db-01', reason: 'segment has Active Response disabled' }],
    reason: 'C2 beacon <script>',
    caseId: 'IR-42',
    requester: { id: 'u1', displayName: 'Ana Analyst', external: false },
    state: 'pending_approval',
    digest: 'abcdef0123456789abcdef',
    approvalsRequired: 1,
    inHouseApprovalRequired: false,
    approvals: [],
    createdAt: new Date('2026-11-28T09:00:00Z'),
    ...over,
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
    // The core has only the default four in hand; the rest wait their turn instead of crowding the acks.
    expect(rec.commands).toHaveLength(4);
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

  it('posts a request card with Approve and Deny buttons carrying the request id', async () => {
    const ctx: ChatContext = {
      identity: { platform: 'slack', tenantId: 'T0HOME', chatUserId: 'UANA' },
      channelId: 'CINC',
    };
    const ref = await adapter.chat.postRequestCard(ctx, sampleView());
    const post = slack.callsOf('chat.postMessage')[0]!;
    expect(ref).toMatchObject({ platform: 'slack', channelId: 'CINC', messageId: expect.any(String) });
    expect(ref.threadId).toBe(ref.messageId);
    const blocks = post.args.blocks as { type: string; elements?: { action_id: string; value: string }[] }[];
    const actions = blocks.find((b) => b.type === 'actions');
    expect(actions?.elements?.map((e) => [e.action_id, e.value])).toEqual([
      ['ar_approve', sampleView().id],
      ['ar_deny', sampleView().id],
    ]);
    const text = JSON.stringify(blocks);
    for (const shown of [
      'isolate',
      '2 endpoints: web-01, web-02',
      'db-01',
      'segment has Active Response disabled',
      'IR-42',
      'Ana Analyst',
      'abcdef012345',
      'pending approval',
    ]) {
      expect(text).toContain(shown);
    }
    // What a user typed cannot become Slack markup.
    expect(text).toContain('C2 beacon &lt;script&gt;');
  });

  it('updates the card in place without buttons once decided', async () => {
    const ref = {
      platform: 'slack' as const,
      channelId: 'CINC',
      messageId: '1700000000.000300',
      threadId: '1700000000.000300',
    };
    const decided = sampleView({
      state: 'dispatched',
      approvals: [{ approverName: 'Ian Commander', decision: 'approve', at: new Date() }],
    });
    await adapter.chat.updateRequestCard(ref, decided);
    const update = await slack.waitFor((c) => c.method === 'chat.update');
    expect(update.args).toMatchObject({ channel: 'CINC', ts: '1700000000.000300' });
    const blocks = update.args.blocks as { type: string }[];
    expect(blocks.some((b) => b.type === 'actions')).toBe(false);
    expect(JSON.stringify(blocks)).toContain('Approved by Ian Commander');
  });

  it('replies in the thread, privately as an ephemeral message, and visibly with postMessage', async () => {
    const ref = { platform: 'slack' as const, channelId: 'CINC', messageId: '1.1', threadId: '1.1' };
    const ctx: ChatContext = {
      identity: { platform: 'slack', tenantId: 'T0HOME', chatUserId: 'UANA' },
      channelId: 'CINC',
    };
    await adapter.chat.replyInThread(ref, 'Approved by Ian');
    await adapter.chat.notifyPrivately(ctx, 'You cannot approve your own request');
    await adapter.chat.reply(ctx, 'queue is empty');
    const [thread, visible] = slack.callsOf('chat.postMessage');
    expect(thread!.args).toMatchObject({ channel: 'CINC', thread_ts: '1.1', text: 'Approved by Ian' });
    expect(slack.callsOf('chat.postEphemeral')[0]!.args).toMatchObject({
      channel: 'CINC',
      user: 'UANA',
      text: 'You cannot approve your own request',
    });
    expect(visible!.args).toMatchObject({ channel: 'CINC', text: 'queue is empty' });
    expect(visible!.args.thread_ts).toBeUndefined();
  });
});

describe('Slack adapter: progress edits and internal errors', () => {
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  const logged: { obj: Record<string, unknown>; msg?: string }[] = [];
  const logger: Logger = {
    ...silent,
    error: (obj, msg) => void logged.push({ obj: obj as Record<string, unknown>, msg }),
  };
  // A hand-moved clock and timers: the card-edit interval passes only when the test says so.
  let now = 0;
  const due: { at: number; fn: () => void }[] = [];
  const timers = {
    now: () => now,
    setTimer(fn: () => void, ms: number) {
      const t = { at: now + ms, fn };
      due.push(t);
      return () => {
        due.splice(due.indexOf(t), 1);
      };
    },
  };
  const failingBot: BotCore = {
    handleCommand: () => Promise.reject(new Error('database connection reset')),
    handleDecision: () => Promise.reject(new Error('database connection reset')),
    describeStepUp: () => Promise.reject(new Error('not used')),
    completeStepUp: () => Promise.reject(new Error('not used')),
  };

  beforeEach(async () => {
    logged.length = 0;
    slack = await startFakeSlack({ botToken: TOKEN });
    http = buildHttpApp();
    adapter = await registerSlack(http, {
      bot: failingBot,
      logger,
      timers,
      config: { signingSecret: SECRET, botToken: TOKEN, apiUrl: slack.apiUrl, command: '/ar' },
    });
    await http.ready();
  });
  afterEach(async () => {
    await adapter.close();
    await http.close();
    await slack.close();
  });

  it('shows action-group progress as a few coalesced edits of one card, never one post per endpoint', async () => {
    const ref = {
      platform: 'slack' as const,
      channelId: 'CINC',
      messageId: '1700000000.000400',
      threadId: '1700000000.000400',
    };
    for (let done = 1; done <= 40; done++) {
      await adapter.chat.updateRequestCard(
        ref,
        sampleView({ state: 'dispatched', progress: { succeeded: done, queued: 40 - done } }),
      );
    }
    expect(slack.callsOf('chat.update')).toHaveLength(1);
    now += 1000;
    for (const t of due.splice(0)) t.fn();
    const last = await slack.waitFor(
      (c) => c.method === 'chat.update' && JSON.stringify(c.args.blocks).includes('succeeded 40'),
    );
    expect(slack.callsOf('chat.update')).toHaveLength(2);
    expect(JSON.stringify(last.args.blocks)).not.toContain('queued');
    expect(slack.callsOf('chat.postMessage')).toHaveLength(0);
  });

  it('answers an unexpected failure privately with a reference that matches the log line', async () => {
    await http.inject(
      signedRequest(SECRET, slashCommand({ text: 'status', user: 'UANA', team: 'T0HOME', channel: 'CINC' })),
    );
    await adapter.idle();
    const notice = String(slack.callsOf('chat.postEphemeral')[0]?.args.text);
    const ref = notice.match(/reference (ERR-[0-9a-f]{8})/)?.[1];
    expect(ref).toBeDefined();
    expect(notice).not.toContain('database connection reset');
    expect(logged.some((l) => l.obj.ref === ref)).toBe(true);
  });
});
