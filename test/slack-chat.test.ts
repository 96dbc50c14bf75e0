// The Slack ChatPort through the real Bolt app's Web API client against the local Slack stand-in: cards
// with buttons, edits in place, thread replies, private notices, Slack's 429 as a rate-limit error, and internal
// errors answered privately with a reference that is on the matching log line.
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerSlack, type SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import type { BotCore } from '../bot/bot-types.ts';
import { ChatRateLimited } from '../bot/outbox/chat-outbox.ts';
import type { ChatContext, Logger } from '../bot/ports.ts';
import {
  type FakeSlack,
  sampleRequestView as sampleView,
  signedRequest,
  slashCommand,
  startFakeSlack,
} from './helpers/fake-slack.ts';

const SECRET = 'test-signing-secret';
const TOKEN = 'xoxb-test-token';
const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} };

describe('Slack ChatPort', () => {
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  const logged: { obj: Record<string, unknown>; msg?: string }[] = [];
  const logger: Logger = {
    ...silent,
    error: (obj, msg) => void logged.push({ obj: obj as Record<string, unknown>, msg }),
  };
  // A hand-moved clock and timers: the card-edit interval passes only when the test says so.
  const now = 0;
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

  it('edits a card at once and turns a 429 into a rate-limit error carrying Retry-After', async () => {
    const ref = {
      platform: 'slack' as const,
      channelId: 'CINC',
      messageId: '1700000000.000400',
      threadId: '1700000000.000400',
    };
    // Pacing and coalescing card edits is the chat outbox's job: the adapter sends what it is given.
    for (let done = 1; done <= 3; done++) {
      await adapter.chat.updateRequestCard(
        ref,
        sampleView({ state: 'dispatched', progress: { succeeded: done, queued: 3 - done } }),
      );
    }
    expect(slack.callsOf('chat.update')).toHaveLength(3);
    // Slack says "slow down": the client does not sleep on it, the caller learns how long to wait.
    slack.rateLimitFor(60_000, 7);
    const refused = await adapter.chat.updateRequestCard(ref, sampleView()).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(ChatRateLimited);
    expect((refused as ChatRateLimited).retryAfterMs).toBe(7000);
    await expect(adapter.chat.replyInThread(ref, 'later')).rejects.toBeInstanceOf(ChatRateLimited);
    expect(slack.callsOf('chat.update')).toHaveLength(3);
    expect(slack.limited.map((c) => c.method)).toEqual(['chat.update', 'chat.postMessage']);
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
