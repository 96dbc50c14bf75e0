// The durable inbox for Teams interactions, as test/slack-inbox.test.ts does it for Slack: a command or a click
// is recorded before Teams gets its HTTP answer, and processed from there. A process that answered a click and
// died before handling it leaves it in the inbox, and the next start handles it once; a redelivered activity
// is answered and does nothing more. The process that dies is an adapter whose core never gets to the work; the
// one that starts next is a fresh adapter on the same database and the same Teams stand-in.
import { eq, sql } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerTeams, type TeamsAdapter } from '../adapters/teams/teams-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import type { BotCore } from '../bot/bot-types.ts';
import { createInteractionInbox } from '../bot/inbox/interaction-inbox.ts';
import type { Logger } from '../bot/ports.ts';
import { actionRequests, approvals, chatInbox } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  cardAction,
  cardOf,
  type FakeTeams,
  messageActivity,
  type Person,
  signedActivity,
  startFakeTeams,
  textOf,
} from './helpers/fake-teams.ts';
import { buildTestPlatform, type Person as PlatformPerson, type TestPlatform } from './helpers/platform.ts';
import {
  CHANNEL,
  CLIENT_ID,
  CLIENT_SECRET,
  HOME_TENANT,
  notesIn,
  openNoteAs,
  people,
  seatAnaAndIan,
  silent,
  type TeamsHarness,
} from './helpers/teams-setup.ts';

describe.each(drivers)(
  'Teams interactions go through the durable inbox (%s)',
  { timeout: 180_000 },
  (driver) => {
    let tdb: TestDatabase;
    let tp: TestPlatform;
    let teams: FakeTeams;
    let ana: PlatformPerson;
    let ian: PlatformPerson;
    let posts = 0;
    const mounted: { http: FastifyInstance; adapter: TeamsAdapter; dead: boolean }[] = [];

    /** A Teams adapter on its own web server, as one platform process; `bot` is the core it hands work to. */
    async function start(
      bot: BotCore,
      opts: { dead?: boolean; answerWithinMs?: number; logger?: Logger } = {},
    ) {
      const http = buildHttpApp();
      const logger = opts.logger ?? silent;
      const adapter = await registerTeams(http, {
        bot,
        inbox: createInteractionInbox({ db: tdb.db, bot, clock: tp.clock, logger }),
        logger,
        config: {
          clientId: CLIENT_ID,
          clientSecret: CLIENT_SECRET,
          tenantId: HOME_TENANT,
          cloud: teams.cloud,
        },
        views: (id) => tp.platform.requests.getView(id),
        approvers: () => tp.platform.users.chatIdentitiesWithRole('teams', 'approver'),
        secretKey: tp.platform.secretKey,
        maxConcurrentWork: driver === 'pglite' ? 1 : 2,
        // Each click's answer here waits for what the core says, however loaded the machine.
        answerWithinMs: opts.answerWithinMs ?? 15_000,
      });
      tp.platform.router.register('teams', adapter.chat);
      await http.ready();
      const dead = opts.dead ?? false;
      mounted.push({ http, adapter, dead });
      const h: TeamsHarness = {
        teams,
        http,
        adapter,
        async send(activity) {
          const res = await http.inject(signedActivity(teams.key, CLIENT_ID, activity));
          if (!dead) await adapter.idle();
          return res;
        },
      };
      return h;
    }

    beforeEach(async () => {
      tdb = await openTestDatabase(driver);
      tp = await buildTestPlatform(tdb);
      teams = await startFakeTeams({
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        tenantId: HOME_TENANT,
      });
      ({ ana, ian } = await seatAnaAndIan(tp, teams));
      await tp.endpoint('web-01');
    });

    afterEach(async () => {
      // A dead process's work never ends: its adapter is dropped, not closed.
      for (const m of mounted.splice(0)) {
        if (!m.dead) await m.adapter.close();
        await m.http.close();
      }
      await teams.close();
      await tdb.destroy();
    });

    const say = (from: Person, text: string) =>
      messageActivity({
        clientId: CLIENT_ID,
        serviceUrl: teams.serviceUrl,
        from,
        conversation: CHANNEL,
        text,
        id: String(1_800_000_000_000 + ++posts),
      });
    const clickOn = (
      from: Person,
      verb: 'ar.approve' | 'ar.deny',
      at: { requestId: string; cardId: string; thread: string },
      reason?: string,
    ) =>
      cardAction({
        clientId: CLIENT_ID,
        serviceUrl: teams.serviceUrl,
        from,
        conversation: CHANNEL,
        verb,
        data: { requestId: at.requestId, ...(reason ? { reason } : {}) },
        replyToId: at.cardId,
        threadId: at.thread,
      });
    const linkIn = (text: string) => {
      const url = text.match(/https?:\/\/[^"\s]+\/stepup\/[A-Za-z0-9_-]+/)?.[0];
      if (!url) throw new Error(`no step-up link in ${text.slice(0, 300)}`);
      return url;
    };
    const inboxRows = () => tdb.db.select().from(chatInbox);
    const inboxRow = async (key: string) =>
      (await tdb.db.select().from(chatInbox).where(eq(chatInbox.key, key)))[0];
    const threadTexts = (thread: string) =>
      teams
        .callsOf('create')
        .filter((c) => c.conversationId === `${CHANNEL.id};messageid=${thread}`)
        .map(textOf)
        .filter(Boolean);
    const approvalsOf = (requestId: string) =>
      tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId));

    /**
     * Ana asks for an isolation in a new channel post through `h`; she confirms through her private note when
     * the core asks. Returns where the card is, and the command's activity.
     */
    async function requestIsolation(h: TeamsHarness) {
      const notesBefore = notesIn(teams).length;
      const post = say(people.ana, 'isolate web-01 --reason "C2 beacon" --case IR-42');
      expect((await h.send(post)).statusCode).toBe(200);
      const note = notesIn(teams)[notesBefore];
      if (note) await tp.stepUp(linkIn(await openNoteAs(h, note, people.ana, CHANNEL)), ana);
      await h.adapter.idle();
      const [req] = await tdb.db.select().from(actionRequests);
      expect(req!.state).toBe('pending_approval');
      return { post, at: { requestId: req!.id, cardId: req!.chatMessageId!, thread: String(post.id) } };
    }

    it('records a command and a click before answering Teams, and marks both processed', async () => {
      const h = await start(tp.platform.bot);
      const { post, at } = await requestIsolation(h);
      expect(await inboxRow(`teams:activity:${post.id}`)).toMatchObject({ kind: 'command' });
      expect((await inboxRow(`teams:activity:${post.id}`))!.processedAt).not.toBeNull();

      // Ian denies with a reason: the answer he sees is the denied card, and the click's row is processed.
      const deny = clickOn(people.ian, 'ar.deny', at, 'false positive');
      const res = await h.send(deny);
      expect(res.statusCode).toBe(200);
      expect(JSON.stringify((res.json() as { value: unknown }).value)).toMatch(/denied/i);
      const row = await inboxRow(`teams:invoke:${deny.id}`);
      expect(row).toMatchObject({ kind: 'decision', payload: { input: { decision: 'deny' } } });
      expect(row!.processedAt).not.toBeNull();
      expect(threadTexts(at.thread).filter((t) => /Denied by ian: false positive/.test(t))).toHaveLength(1);
      expect((await inboxRows()).map((r) => r.processedAt !== null)).toEqual([true, true]);
    });

    it('records a command before its answer even when the core never gets to it, and the next start runs it once', async () => {
      const dying = await start(
        { ...tp.platform.bot, handleCommand: () => new Promise<void>(() => {}) },
        { dead: true },
      );
      const post = say(people.ana, 'processes web-01');
      expect((await dying.send(post)).statusCode).toBe(200);
      // Answered, so already recorded: nothing waits for a listener after the answer.
      expect(await inboxRow(`teams:activity:${post.id}`)).toMatchObject({
        kind: 'command',
        processedAt: null,
      });
      expect(await tdb.db.select().from(actionRequests)).toHaveLength(0);
      await dying.http.close();

      // The next process runs it from the inbox: one request, and Teams redelivering the message changes nothing.
      const next = await start(tp.platform.bot);
      await next.adapter.idle();
      expect((await next.send(post)).statusCode).toBe(200);
      const reqs = await tdb.db.select().from(actionRequests);
      expect(reqs).toHaveLength(1);
      expect(reqs[0]!.action).toBe('processes');
      expect((await inboxRows()).map((r) => r.processedAt !== null)).toEqual([true]);
    });

    it('handles a click answered by a process that died before handling it, once, when the next one starts', async () => {
      const first = await start(tp.platform.bot);
      const { at } = await requestIsolation(first);
      await first.adapter.close();
      await first.http.close();
      mounted.splice(0);

      // Ian's Approve reaches a process that answers it (after its budget: "still working") and dies
      // before its core touches it.
      const dying = await start(
        { ...tp.platform.bot, handleDecision: () => new Promise<void>(() => {}) },
        { dead: true, answerWithinMs: 200 },
      );
      const approve = clickOn(people.ian, 'ar.approve', at);
      const answered = await dying.send(approve);
      expect(answered.statusCode).toBe(200);
      expect(JSON.stringify(answered.json())).toMatch(/Still working on it/);
      const key = `teams:invoke:${approve.id}`;
      expect(await inboxRow(key)).toMatchObject({ kind: 'decision', processedAt: null });
      const notesBefore = notesIn(teams).length;
      await dying.http.close();

      // The next process handles it from the inbox: with no click waiting for an answer, Ian's step-up link
      // reaches him as a private note, once.
      const next = await start(tp.platform.bot);
      await next.adapter.idle();
      expect((await inboxRow(key))!.processedAt).not.toBeNull();
      const notes = notesIn(teams).slice(notesBefore);
      expect(notes).toHaveLength(1);
      const link = linkIn(await openNoteAs(next, notes[0]!, people.ian, CHANNEL));

      // Teams redelivering the same invoke is answered with the card as it stands, and nothing more.
      const callsBefore = teams.calls.filter((c) => c.kind !== 'member').length;
      const again = await next.send(approve);
      expect(again.statusCode).toBe(200);
      expect((again.json() as { type: string }).type).toBe('application/vnd.microsoft.card.adaptive');
      expect(teams.calls.filter((c) => c.kind !== 'member').slice(callsBefore)).toEqual([]);
      expect(notesIn(teams).slice(notesBefore)).toHaveLength(1);

      // Ian steps up: one approval, and the thread and the card show it.
      await tp.stepUp(link, ian);
      await next.adapter.idle();
      expect(await approvalsOf(at.requestId)).toHaveLength(1);
      const [after] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, at.requestId));
      expect(after!.state).toBe('dispatched');
      const edit = await teams.waitFor(
        (c) =>
          c.kind === 'update' && c.activityId === at.cardId && /dispatched/.test(JSON.stringify(cardOf(c))),
      );
      expect(JSON.stringify(cardOf(edit))).toContain('Approved by ian');
      expect(threadTexts(at.thread).filter((t) => /Approved by ian/.test(t))).toHaveLength(1);
    });

    it('processes an activity Teams delivers twice once: a command, and a click', async () => {
      let commands = 0;
      let decisions = 0;
      const bot = tp.platform.bot;
      const h = await start({
        ...bot,
        handleCommand(ctx, text) {
          commands++;
          return bot.handleCommand(ctx, text);
        },
        handleDecision(ctx, input) {
          decisions++;
          return bot.handleDecision(ctx, input);
        },
      });
      const { post, at } = await requestIsolation(h);
      const commandsAfterFirst = commands;
      expect((await h.send(post)).statusCode).toBe(200);
      const [x, y] = await Promise.all([h.send(post), h.send(post)]);
      expect([x.statusCode, y.statusCode]).toEqual([200, 200]);
      expect(commands).toBe(commandsAfterFirst);
      expect(await tdb.db.select().from(actionRequests)).toHaveLength(1);

      const deny = clickOn(people.ian, 'ar.deny', at, 'our scanner');
      const [first, second] = await Promise.all([h.send(deny), h.send(deny)]);
      const third = await h.send(deny);
      // Every copy is answered with a card; the copy that arrives after the decision shows it.
      for (const res of [first, second, third]) {
        expect(res.statusCode).toBe(200);
        expect((res.json() as { type: string }).type).toBe('application/vnd.microsoft.card.adaptive');
      }
      expect(JSON.stringify(third.json())).toMatch(/denied/i);
      expect(decisions).toBe(1);
      expect(await approvalsOf(at.requestId)).toHaveLength(1);
      expect(threadTexts(at.thread).filter((t) => /Denied by ian: our scanner/.test(t))).toHaveLength(1);
      expect((await inboxRows()).filter((r) => r.kind === 'decision')).toHaveLength(1);
    });

    it('handles a command from memory, and logs it, when the inbox cannot record it', async () => {
      const errors: string[] = [];
      const h = await start(tp.platform.bot, {
        logger: { ...silent, error: (_obj: unknown, msg?: string) => void errors.push(String(msg)) },
      });
      // The inbox's table is gone: the insert fails as it would with the database unreachable for it.
      await tdb.db.execute(sql`alter table chat_inbox rename to chat_inbox_away`);
      try {
        expect((await h.send(say(people.ana, 'processes web-01'))).statusCode).toBe(200);
        expect(errors).toContain('could not record an interaction; handling it anyway');
        const reqs = await tdb.db.select().from(actionRequests);
        expect(reqs.map((r) => r.action)).toEqual(['processes']);
      } finally {
        await tdb.db.execute(sql`alter table chat_inbox_away rename to chat_inbox`);
      }
    });
  },
);
