// The whole Slack flow on the real core (app/platform.ts) and a real database: the real Bolt app receives
// genuinely signed requests on /slack/events and talks to the local Slack stand-in, which records every
// card, edit, thread reply and private message. From `/ar isolate` to card, approval click by another
// user, step-up, dispatch (outbox rows), plus the refusals and the duplicate-delivery cases.
import { and, eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerSlack, type SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import { actionRequests, approvals, auditLog, deliveries } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  appMention,
  buttonClick,
  type FakeSlack,
  type SlackCall,
  signedRequest,
  slashCommand,
} from './helpers/fake-slack.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';
import { mountSlack } from './helpers/slack-setup.ts';

const SECRET = 'flow-signing-secret';
const TOKEN = 'xoxb-flow-token';
const HOME = 'T0HOME';
const MDR = 'T0MDR';
const CHANNEL = 'CINCIDENT';
const silent = { info() {}, warn() {}, error() {}, debug() {} };

// Each test hashes and verifies real argon2 passwords several times; on a loaded two-core machine that alone
// can pass the default 60 s, so these tests get more room (no assertion depends on time).
describe.each(drivers)('Slack flow on the real core (%s)', { timeout: 180_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  let ana: Person;
  let ian: Person;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb);
    ({ slack, http, adapter } = await mountSlack(tp, {
      signingSecret: SECRET,
      botToken: TOKEN,
      teamId: HOME,
    }));
    await http.ready();

    const users = tp.platform.users;
    await users.mapTenant({ platform: 'slack', tenantId: HOME, orgName: 'home' });
    ana = await tp.person('ana', ['active_response']);
    ian = await tp.person('ian', ['approver']);
    await users.linkChatIdentity({ userId: ana.id, platform: 'slack', tenantId: HOME, chatUserId: 'UANA' });
    await users.linkChatIdentity({ userId: ian.id, platform: 'slack', tenantId: HOME, chatUserId: 'UIAN' });
    await tp.endpoint('web-01');
  });

  afterEach(async () => {
    await adapter.close();
    await http.close();
    await slack.close();
    await tdb.destroy();
  });

  /** Sends a signed request and waits until the adapter's post-ack work is done. */
  async function send(body: Parameters<typeof signedRequest>[1], opts?: Parameters<typeof signedRequest>[2]) {
    const res = await http.inject(signedRequest(SECRET, body, opts));
    expect(res.statusCode).toBe(200);
    await adapter.idle();
    return res;
  }

  const slash = (user: string, text: string) => slashCommand({ text, user, team: HOME, channel: CHANNEL });

  const click = (
    user: string,
    value: string,
    messageTs: string,
    opts: { actionId?: string; actionTs?: string; userTeam?: string } = {},
  ) =>
    buttonClick({
      actionId: opts.actionId ?? 'ar_approve',
      value,
      user,
      userTeam: opts.userTeam ?? HOME,
      team: HOME,
      channel: CHANNEL,
      messageTs,
      actionTs: opts.actionTs,
    });

  const ephemeralsTo = (user: string) =>
    slack.callsOf('chat.postEphemeral').filter((c) => c.args.user === user);
  const linkIn = (c: SlackCall | undefined) => {
    const url = String(c?.args.text ?? '').match(/https?:\/\/\S+\/stepup\/[A-Za-z0-9_-]+/)?.[0];
    if (!url) throw new Error(`no step-up link in ${JSON.stringify(c?.args.text)}`);
    return url;
  };
  const isCard = (c: SlackCall) => c.method === 'chat.postMessage' && Array.isArray(c.args.blocks);
  const buttonsOf = (c: SlackCall) =>
    (c.args.blocks as { type: string; elements?: { action_id: string; value: string }[] }[]).find(
      (b) => b.type === 'actions',
    )?.elements ?? [];
  const threadReplies = (ts: string) =>
    slack
      .callsOf('chat.postMessage')
      .filter((c) => c.args.thread_ts === ts)
      .map((c) => String(c.args.text));

  /**
   * Ana asks for an isolation; when the core asks her to confirm (no open step-up window), she does so
   * through the link it sent her privately. Returns the posted card.
   */
  async function requestIsolation(
    host = 'web-01',
  ): Promise<{ card: SlackCall; requestId: string; ts: string }> {
    const cardsBefore = slack.callsOf('chat.postMessage').filter(isCard).length;
    const linksBefore = ephemeralsTo('UANA').length;
    await send(slash('UANA', `isolate ${host} --reason "C2 beacon" --case IR-42`));
    if (ephemeralsTo('UANA').length > linksBefore) await tp.stepUp(linkIn(ephemeralsTo('UANA').at(-1)), ana);
    const card = slack.callsOf('chat.postMessage').filter(isCard)[cardsBefore];
    if (!card) throw new Error('no request card was posted');
    const requestId = buttonsOf(card)[0]!.value;
    return { card, requestId, ts: await cardTs(requestId) };
  }

  async function cardTs(requestId: string): Promise<string> {
    const [row] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, requestId));
    return row!.chatMessageId!;
  }

  it('runs /ar isolate to card, approval by another user with step-up, dispatch, thread replies and card edits', async () => {
    const { card, requestId, ts } = await requestIsolation();
    expect(buttonsOf(card).map((b) => b.action_id)).toEqual(['ar_approve', 'ar_deny']);
    const cardText = JSON.stringify(card.args.blocks);
    for (const shown of ['isolate', 'web-01', 'C2 beacon', 'IR-42', 'ana', 'pending approval'])
      expect(cardText).toContain(shown);
    expect(threadReplies(ts).join('\n')).toMatch(/ana asked for isolate on web-01/);

    // Ian clicks Approve: he has no step-up window yet, so he privately gets a single-use link.
    await send(click('UIAN', requestId, ts));
    const link = linkIn(ephemeralsTo('UIAN').at(-1));
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(0);

    await tp.stepUp(link, ian);
    const rows = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, requestId));
    expect(rows).toHaveLength(1);
    expect(rows[0]!.action).toBe('isolate');
    const [req] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, requestId));
    expect(req!.state).toBe('dispatched');

    const replies = threadReplies(ts).join('\n');
    expect(replies).toMatch(/Approved by ian/);
    expect(replies).toMatch(/Dispatched to 1 endpoint/);
    const edit = await slack.waitFor(
      (c) =>
        c.method === 'chat.update' && c.args.ts === ts && /dispatched/.test(JSON.stringify(c.args.blocks)),
    );
    expect((edit.args.blocks as { type: string }[]).some((b) => b.type === 'actions')).toBe(false);
    expect(JSON.stringify(edit.args.blocks)).toContain('Approved by ian');
  });

  it('refuses the requester approving her own request privately and changes nothing', async () => {
    const { requestId, ts } = await requestIsolation();
    const before = slack.calls.length;
    await send(click('UANA', requestId, ts));
    const refusal = ephemeralsTo('UANA').at(-1)!;
    expect(String(refusal.args.text)).toMatch(/own request|approver/i);
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(0);
    const after = slack.calls.slice(before).map((c) => c.method);
    expect(after).toEqual(['chat.postEphemeral']);
  });

  it('refuses a user of an unmapped Slack Connect organisation, privately and audited', async () => {
    await send(
      appMention({
        text: `<@${slack.botUserId}> isolate web-01 --reason "looks bad"`,
        user: 'UOUTSIDER',
        team: HOME,
        userTeam: 'T0STRANGER',
        channel: CHANNEL,
        eventId: 'EvStranger1',
      }),
    );
    const refusal = ephemeralsTo('UOUTSIDER').at(-1);
    expect(String(refusal?.args.text)).toMatch(/not connected to Active Response/);
    expect(await tdb.db.select().from(actionRequests)).toHaveLength(0);
    const audit = await tdb.db.select().from(auditLog).where(eq(auditLog.action, 'identity.refused'));
    expect(audit.length).toBeGreaterThan(0);
  });

  it('treats a mapped external organisation as external and refuses its click on an approval it cannot make', async () => {
    await tp.platform.users.createOrganization({
      name: 'mdr-co',
      external: true,
      allowedRoles: ['active_response'],
    });
    await tp.platform.users.mapTenant({ platform: 'slack', tenantId: MDR, orgName: 'mdr-co' });
    const mdr = await tp.platform.users.createUser({
      username: 'max',
      displayName: 'Max MDR',
      password: 'correct horse max battery',
      orgName: 'mdr-co',
    });
    await tp.platform.users.linkChatIdentity({
      userId: mdr.id,
      platform: 'slack',
      tenantId: MDR,
      chatUserId: 'UMAX',
    });

    const { requestId, ts } = await requestIsolation();
    await send(click('UMAX', requestId, ts, { userTeam: MDR }));
    expect(String(ephemeralsTo('UMAX').at(-1)?.args.text)).toMatch(/approver|not allowed|role/i);
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(0);
  });

  it('marks a mapped MDR user in a Slack Connect channel as external and asks for an in-house approver', async () => {
    await tp.platform.users.createOrganization({
      name: 'mdr-co',
      external: true,
      allowedRoles: ['active_response'],
    });
    await tp.platform.users.mapTenant({ platform: 'slack', tenantId: MDR, orgName: 'mdr-co' });
    const max = await tp.person('max', ['active_response'], { org: 'mdr-co' });
    await tp.platform.users.linkChatIdentity({
      userId: max.id,
      platform: 'slack',
      tenantId: MDR,
      chatUserId: 'UMAX',
    });

    await send(
      appMention({
        text: `<@${slack.botUserId}> isolate web-01 --reason "beacon seen by the MDR"`,
        user: 'UMAX',
        team: HOME,
        userTeam: MDR,
        channel: CHANNEL,
        eventId: 'EvMdr1',
      }),
    );
    await tp.stepUp(linkIn(ephemeralsTo('UMAX').at(-1)), max);
    const card = slack.callsOf('chat.postMessage').find(isCard);
    const text = JSON.stringify(card?.args.blocks);
    expect(text).toContain('max (external)');
    expect(text).toContain('in-house approver required');
  });

  it('runs a command once when Slack retries it', async () => {
    const body = appMention({
      text: `<@${slack.botUserId}> isolate web-01 --reason "C2 beacon"`,
      user: 'UANA',
      team: HOME,
      channel: CHANNEL,
      eventId: 'EvRetry1',
    });
    await send(body);
    await send(body, { retryNum: 1 });
    await send(body, { retryNum: 2 });
    expect(await tdb.db.select().from(actionRequests)).toHaveLength(1);
    expect(ephemeralsTo('UANA').filter((c) => /stepup/.test(String(c.args.text)))).toHaveLength(1);
  });

  it('runs a mention once when two copies of the app (two processes on one database) both receive it', async () => {
    // A second process: its own platform graph, Bolt app and web server, sharing only the database.
    const tp2 = await buildTestPlatform(tdb);
    const http2 = buildHttpApp();
    const adapter2 = await registerSlack(http2, {
      bot: tp2.platform.bot,
      logger: silent,
      config: { signingSecret: SECRET, botToken: TOKEN, apiUrl: slack.apiUrl, command: '/ar' },
    });
    tp2.platform.router.register('slack', adapter2.chat);
    await http2.ready();
    try {
      const body = appMention({
        text: `<@${slack.botUserId}> isolate web-01 --reason "C2 beacon"`,
        user: 'UANA',
        team: HOME,
        channel: CHANNEL,
        eventId: 'EvTwoCopies',
      });
      const [r1, r2] = await Promise.all([
        http.inject(signedRequest(SECRET, body)),
        http2.inject(signedRequest(SECRET, body)),
      ]);
      expect([r1.statusCode, r2.statusCode]).toEqual([200, 200]);
      await Promise.all([adapter.idle(), adapter2.idle()]);
      expect(await tdb.db.select().from(actionRequests)).toHaveLength(1);
    } finally {
      await adapter2.close();
      await http2.close();
    }
  });

  it('records one approval and one dispatch for a double click, a retried click and the links they sent', async () => {
    const { requestId, ts } = await requestIsolation();
    const a = click('UIAN', requestId, ts, { actionTs: '1700000100.000001' });
    const b = click('UIAN', requestId, ts, { actionTs: '1700000100.000002' });
    // Two clicks arriving together, then Slack redelivering the first one. Each click is answered with a
    // step-up link bound to this request; no click decides anything by itself.
    await Promise.all([http.inject(signedRequest(SECRET, a)), http.inject(signedRequest(SECRET, b))]);
    await send(a, { retryNum: 1 });
    await adapter.idle();
    const links = ephemeralsTo('UIAN').map((c) => linkIn(c));
    expect(links).toHaveLength(2);
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(0);

    // Ian follows both: the first approves and dispatches, the second finds nothing left to change.
    const first = await tp.stepUp(links[0]!, ian);
    tp.clock.advance(30_000);
    const second = await tp.stepUp(links[1]!, ian);
    expect(first.message).toMatch(/^Approved R-/);
    expect(second.message).toMatch(/You had already approved R-/);
    await send(click('UIAN', requestId, ts, { actionTs: '1700000100.000003' }));

    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(1);
    expect(await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, requestId))).toHaveLength(1);
    expect(threadReplies(ts).filter((t) => /Approved by ian/.test(t))).toHaveLength(1);
    // A click after that is told privately that there is nothing left to decide.
    expect(ephemeralsTo('UIAN').at(-1)?.args.text).toMatch(/already|nothing to decide/);
  });

  it('records a denial from the Deny button and removes the buttons', async () => {
    const { requestId, ts } = await requestIsolation();
    await send(click('UIAN', requestId, ts, { actionId: 'ar_deny' }));
    const [req] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, requestId));
    expect(req!.state).toBe('denied');
    expect(await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, requestId))).toHaveLength(0);
    expect(threadReplies(ts).join('\n')).toMatch(/Denied by ian/);
    const edit = await slack.waitFor(
      (c) => c.method === 'chat.update' && c.args.ts === ts && /denied/.test(JSON.stringify(c.args.blocks)),
    );
    expect((edit.args.blocks as { type: string }[]).some((b) => b.type === 'actions')).toBe(false);
    expect(
      await tdb.db
        .select()
        .from(approvals)
        .where(and(eq(approvals.requestId, requestId), eq(approvals.decision, 'deny'))),
    ).toHaveLength(1);
  });
});
