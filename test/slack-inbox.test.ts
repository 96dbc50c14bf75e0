// The durable inbox for Slack interactions (issue: faults lose nothing, "a click lost silently"). A click is
// recorded before Slack gets its ack; a process that acked it and died before handling it leaves it in the
// inbox, and the next start handles it once. Here the process that dies is an adapter whose core never gets
// to the click; the one that starts next is a fresh adapter on the same database.
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerSlack, type SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import type { BotCore } from '../bot/bot-types.ts';
import { createInteractionInbox } from '../bot/inbox/interaction-inbox.ts';
import { actionRequests, approvals, chatInbox } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  appMention,
  buttonClick,
  type FakeSlack,
  type SlackCall,
  signedRequest,
  slashCommand,
  startFakeSlack,
} from './helpers/fake-slack.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';

const SECRET = 'inbox-signing-secret';
const TOKEN = 'xoxb-inbox-token';
const HOME = 'T0HOME';
const CHANNEL = 'CINCIDENT';
const silent = { info() {}, warn() {}, error() {}, debug() {} };

describe.each(drivers)(
  'Slack interactions survive a crash after the ack (%s)',
  { timeout: 180_000 },
  (driver) => {
    let tdb: TestDatabase;
    let tp: TestPlatform;
    let slack: FakeSlack;
    let ana: Person;
    let ian: Person;
    const mounted: { http: FastifyInstance; adapter: SlackAdapter; dead: boolean }[] = [];

    /** A Slack adapter on its own web server, as one platform process; `bot` is the core it hands work to. */
    async function start(bot: BotCore, dead = false) {
      const http = buildHttpApp();
      const adapter = await registerSlack(http, {
        bot,
        logger: silent,
        inbox: createInteractionInbox({ db: tdb.db, bot, clock: tp.clock, logger: silent }),
        config: { signingSecret: SECRET, botToken: TOKEN, apiUrl: slack.apiUrl, command: '/ar' },
      });
      tp.platform.router.register('slack', adapter.chat);
      await http.ready();
      const m = { http, adapter, dead };
      mounted.push(m);
      return m;
    }

    beforeEach(async () => {
      tdb = await openTestDatabase(driver);
      tp = await buildTestPlatform(tdb);
      slack = await startFakeSlack({ botToken: TOKEN, teamId: HOME });
      const users = tp.platform.users;
      await users.mapTenant({ platform: 'slack', tenantId: HOME, orgName: 'home' });
      ana = await tp.person('ana', ['active_response']);
      ian = await tp.person('ian', ['approver']);
      await users.linkChatIdentity({ userId: ana.id, platform: 'slack', tenantId: HOME, chatUserId: 'UANA' });
      await users.linkChatIdentity({ userId: ian.id, platform: 'slack', tenantId: HOME, chatUserId: 'UIAN' });
      await tp.endpoint('web-01');
    });

    afterEach(async () => {
      // A dead process's work never ends: its adapter is dropped, not closed.
      for (const m of mounted.splice(0)) {
        if (!m.dead) await m.adapter.close();
        await m.http.close();
      }
      await slack.close();
      await tdb.destroy();
    });

    const ephemeralsTo = (user: string) =>
      slack.callsOf('chat.postEphemeral').filter((c) => c.args.user === user);
    const linkIn = (c: SlackCall | undefined) => {
      const url = String(c?.args.text ?? '').match(/https?:\/\/\S+\/stepup\/[A-Za-z0-9_-]+/)?.[0];
      if (!url) throw new Error(`no step-up link in ${JSON.stringify(c?.args.text)}`);
      return url;
    };
    const inboxRows = () => tdb.db.select().from(chatInbox);

    it('handles a click acked by a process that died before handling it, once, when the next one starts', async () => {
      const first = await start(tp.platform.bot);
      const res = await first.http.inject(
        signedRequest(
          SECRET,
          slashCommand({
            text: 'isolate web-01 --reason "C2 beacon"',
            user: 'UANA',
            team: HOME,
            channel: CHANNEL,
          }),
        ),
      );
      expect(res.statusCode).toBe(200);
      await first.adapter.idle();
      if (ephemeralsTo('UANA').length) await tp.stepUp(linkIn(ephemeralsTo('UANA').at(-1)), ana);
      const [req] = await tdb.db.select().from(actionRequests);
      expect(req!.state).toBe('pending_approval');
      // The command went through the inbox and is marked processed.
      expect((await inboxRows()).map((r) => [r.kind, r.processedAt !== null])).toEqual([['command', true]]);

      // Ian's click reaches a process that acks it and dies before its core touches it.
      const dying = await start(
        { ...tp.platform.bot, handleDecision: () => new Promise<void>(() => {}) },
        true,
      );
      const clickBody = buttonClick({
        actionId: 'ar_approve',
        value: req!.id,
        user: 'UIAN',
        userTeam: HOME,
        team: HOME,
        channel: CHANNEL,
        messageTs: req!.chatMessageId!,
      });
      const acked = await dying.http.inject(signedRequest(SECRET, clickBody));
      expect(acked.statusCode).toBe(200);
      const clickRow = (await inboxRows()).find((r) => r.kind === 'decision');
      expect(clickRow?.processedAt).toBeNull();
      expect(ephemeralsTo('UIAN')).toHaveLength(0);
      await dying.http.close();

      // The next process handles it from the inbox: Ian is asked for his step-up, once.
      const next = await start(tp.platform.bot);
      await next.adapter.idle();
      expect(ephemeralsTo('UIAN')).toHaveLength(1);
      const [done] = await tdb.db.select().from(chatInbox).where(eq(chatInbox.key, clickRow!.key));
      expect(done!.processedAt).not.toBeNull();

      // Slack retrying the same click changes nothing.
      await next.http.inject(signedRequest(SECRET, clickBody));
      await next.adapter.idle();
      expect(ephemeralsTo('UIAN')).toHaveLength(1);

      await tp.stepUp(linkIn(ephemeralsTo('UIAN').at(-1)), ian);
      expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, req!.id))).toHaveLength(1);
      const [after] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, req!.id));
      expect(after!.state).toBe('dispatched');
    });

    it('handles an @-mention whose process died before handling it, once, when the next one starts', async () => {
      const dying = await start(
        { ...tp.platform.bot, handleCommand: () => new Promise<void>(() => {}) },
        true,
      );
      const mention = appMention({
        text: '<@UBOT> processes web-01',
        user: 'UANA',
        team: HOME,
        channel: CHANNEL,
        eventId: 'Ev0MENTION1',
      });
      expect((await dying.http.inject(signedRequest(SECRET, mention))).statusCode).toBe(200);
      // Bolt acks an event before its listener runs: wait for the listener's insert, then see it never handled.
      for (let i = 0; i < 200 && !(await inboxRows()).length; i++)
        await new Promise((r) => setTimeout(r, 50));
      const [row] = await inboxRows();
      expect(row).toMatchObject({ kind: 'command', processedAt: null });
      expect(await tdb.db.select().from(actionRequests)).toHaveLength(0);
      await dying.http.close();

      // The next process runs it from the inbox: one request, and Slack retrying the event changes nothing.
      const next = await start(tp.platform.bot);
      await next.adapter.idle();
      await next.http.inject(signedRequest(SECRET, mention));
      await next.adapter.idle();
      const reqs = await tdb.db.select().from(actionRequests);
      expect(reqs).toHaveLength(1);
      expect(reqs[0]!.action).toBe('processes');
      expect((await inboxRows()).map((r) => r.processedAt !== null)).toEqual([true]);
    });
  },
);
