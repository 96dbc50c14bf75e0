// The Slack flow end to end with a real agent: /ar isolate in Slack, the requester's and the approver's
// step-ups, the outbox, the broker's mTLS link to a real agent process (agent/main.ts with --dry-run, so the
// test machine is never actually isolated), and the result coming back as a thread reply and a card edit.
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerSlack, type SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import { actionRequests, deliveries } from '../db/schema.ts';
import {
  type AgentProcess,
  enrolAgent,
  startTestBroker,
  type TestBroker,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  buttonClick,
  type FakeSlack,
  type SlackCall,
  signedRequest,
  slashCommand,
  startFakeSlack,
} from './helpers/fake-slack.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';

const SECRET = 'agent-flow-secret';
const TOKEN = 'xoxb-agent-flow';
const HOME = 'T0HOME';
const CHANNEL = 'CINCIDENT';
const silent = { info() {}, warn() {}, error() {}, debug() {} };

describe.each(drivers)('Slack flow with a real agent (%s)', { timeout: 240_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let tb: TestBroker;
  let agent: AgentProcess | undefined;
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  let unfollow: (() => Promise<void>) | undefined;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb);
    tb = await startTestBroker(tdb);
    slack = await startFakeSlack({ botToken: TOKEN, teamId: HOME });
    http = buildHttpApp();
    adapter = await registerSlack(http, {
      bot: tp.platform.bot,
      logger: silent,
      config: { signingSecret: SECRET, botToken: TOKEN, apiUrl: slack.apiUrl, command: '/ar' },
    });
    tp.platform.router.register('slack', adapter.chat);
    await http.ready();
    // Delivery progress reaches chat the way it does in production: the broker NOTIFYs, the platform listens.
    unfollow = await tp.platform.followDeliveries();
  });

  afterEach(async () => {
    await unfollow?.();
    await agent?.kill();
    await adapter.close();
    await http.close();
    await slack.close();
    await tb.stop();
    await tdb.destroy();
  });

  const ephemeralTo = (user: string) =>
    slack
      .callsOf('chat.postEphemeral')
      .filter((c) => c.args.user === user)
      .at(-1);
  const linkIn = (c: SlackCall | undefined) => {
    const url = String(c?.args.text ?? '').match(/https?:\/\/\S+\/stepup\/[A-Za-z0-9_-]+/)?.[0];
    if (!url) throw new Error(`no step-up link in ${JSON.stringify(c?.args.text)}`);
    return url;
  };

  it('isolates web-01 through Slack: card, approval, step-ups, agent result in the thread, card completed', async () => {
    const users = tp.platform.users;
    await users.mapTenant({ platform: 'slack', tenantId: HOME, orgName: 'home' });
    const ana = await tp.person('ana', ['active_response']);
    const ian = await tp.person('ian', ['approver']);
    await users.linkChatIdentity({ userId: ana.id, platform: 'slack', tenantId: HOME, chatUserId: 'UANA' });
    await users.linkChatIdentity({ userId: ian.id, platform: 'slack', tenantId: HOME, chatUserId: 'UIAN' });
    const enrolled = await enrolAgent(tb, tdb, 'web-01', ['--dry-run']);
    agent = enrolled.agent;

    const cmd = slashCommand({
      text: 'isolate web-01 --reason "C2 beacon" --case IR-42',
      user: 'UANA',
      team: HOME,
      channel: CHANNEL,
    });
    expect((await http.inject(signedRequest(SECRET, cmd))).statusCode).toBe(200);
    await adapter.idle();
    await tp.stepUp(linkIn(ephemeralTo('UANA')), ana);

    const card = slack.callsOf('chat.postMessage').find((c) => Array.isArray(c.args.blocks));
    const [request] = await tdb.db.select().from(actionRequests);
    expect(card).toBeDefined();
    const ts = request!.chatMessageId!;

    const click = buttonClick({
      actionId: 'ar_approve',
      value: request!.id,
      user: 'UIAN',
      userTeam: HOME,
      team: HOME,
      channel: CHANNEL,
      messageTs: ts,
    });
    expect((await http.inject(signedRequest(SECRET, click))).statusCode).toBe(200);
    await adapter.idle();
    await tp.stepUp(linkIn(ephemeralTo('UIAN')), ian);

    // The agent runs the isolation (dry run) and reports; the result comes back into the card's thread.
    const result = await slack.waitFor(
      (c) =>
        c.method === 'chat.postMessage' &&
        c.args.thread_ts === ts &&
        /web-01: isolated from the network/.test(String(c.args.text)),
      90_000,
    );
    expect(result.args.channel).toBe(CHANNEL);
    await slack.waitFor(
      (c) =>
        c.method === 'chat.postMessage' && c.args.thread_ts === ts && /completed/.test(String(c.args.text)),
      30_000,
    );
    const [delivery] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, request!.id));
    expect(delivery!.state).toBe('succeeded');
    await waitFor(async () => {
      const [row] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, request!.id));
      return row!.state === 'completed';
    }, 'the request to complete');
    // The card's last edit shows the finished state and no buttons.
    const edit = await slack.waitFor(
      (c) =>
        c.method === 'chat.update' && c.args.ts === ts && /completed/.test(JSON.stringify(c.args.blocks)),
      10_000,
    );
    expect((edit.args.blocks as { type: string }[]).some((b) => b.type === 'actions')).toBe(false);
  });
});
