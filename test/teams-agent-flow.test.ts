// The Teams flow end to end, with every part real except Microsoft: an @mention posted to /api/messages as
// Bot Framework would (signed, over HTTP), the requester's private note opened by her client, both step-ups
// done on the page in Chromium, the approver's Action.Execute click, the outbox, the broker's mTLS link to a
// real agent process (agent/main.ts with --dry-run, so this machine is never isolated), and the result
// coming back as thread replies and an in-place edit of the card.
import { eq } from 'drizzle-orm';
import type { Browser, BrowserContext } from 'playwright-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { actionRequests, deliveries } from '../db/schema.ts';
import { registerStepUpPages } from '../web-stepup/stepup-plugin.ts';
import {
  type AgentProcess,
  enrolAgent,
  startTestBroker,
  type TestBroker,
  waitFor,
} from './helpers/agents.ts';
import {
  artifactPath,
  hasChromium,
  launchChromium,
  NO_CHROMIUM_MESSAGE,
  phoneContext,
  submitWith,
} from './helpers/browser.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { cardAction, cardOf, messageActivity, signedActivity, textOf } from './helpers/fake-teams.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';
import {
  CHANNEL,
  CLIENT_ID,
  HOME_TENANT,
  join,
  notesIn,
  openNoteAs,
  people,
  startTeamsHarness,
  type TeamsHarness,
} from './helpers/teams-setup.ts';

if (!hasChromium) console.warn(NO_CHROMIUM_MESSAGE);

describe.skipIf(!hasChromium).each(drivers)(
  'Teams flow with a real agent and Chromium (%s)',
  { timeout: 240_000 },
  (driver) => {
    let tdb: TestDatabase;
    let tp: TestPlatform;
    let tb: TestBroker;
    let h: TeamsHarness;
    let agent: AgentProcess | undefined;
    let browser: Browser;
    let context: BrowserContext;
    let base: string;
    let unfollow: (() => Promise<void>) | undefined;

    beforeEach(async () => {
      tdb = await openTestDatabase(driver);
      tp = await buildTestPlatform(tdb);
      tb = await startTestBroker(tdb);
      h = await startTeamsHarness(
        tp,
        {
          maxConcurrentWork: driver === 'pglite' ? 1 : 2,
          // What the core says must reach each click's own answer here, however loaded the machine; the
          // answer budget itself is tested in teams-chat.
          answerWithinMs: 15_000,
        },
        (http) =>
          registerStepUpPages(http, {
            bot: tp.platform.bot,
            stepup: tp.platform.stepup,
            users: tp.platform.users,
            audit: tp.platform.audit,
            fileStore: tp.platform.fileStore,
            library: tp.platform.library,
            db: tp.platform.db,
            clock: tp.clock,
            config: {
              publicUrl: 'http://ar.test',
              secureCookies: false,
              secretKey: tp.platform.secretKey,
              maxLibraryFileBytes: 1024 * 1024,
            },
          }),
      );
      base = await h.http.listen({ host: '127.0.0.1', port: 0 });
      // Delivery progress reaches chat the way it does in production: the broker NOTIFYs, the platform listens.
      unfollow = await tp.platform.followDeliveries();
      browser = await launchChromium();
      context = await phoneContext(browser);
    });

    afterEach(async () => {
      await context?.close();
      await browser?.close();
      await unfollow?.();
      await agent?.kill();
      await h.adapter.close();
      await h.http.close();
      await h.teams.close();
      await tb.stop();
      await tdb.destroy();
    });

    /** What Bot Framework does: the signed activity, over HTTP, to the public messaging endpoint. */
    async function post(activity: Record<string, unknown>) {
      const req = signedActivity(h.teams.key, CLIENT_ID, activity);
      const res = await fetch(`${base}${req.url}`, {
        method: 'POST',
        headers: req.headers,
        body: req.payload,
      });
      const body = await res.text();
      await h.adapter.idle();
      return { status: res.status, body };
    }

    /** Opens a step-up link on this server in Chromium and confirms with the person's password and code. */
    async function stepUpInBrowser(link: string, person: Person, shot: string) {
      const page = await context.newPage();
      await page.goto(`${base}/stepup/${link.split('/').pop()}`);
      await page.getByLabel('Password').fill(person.password);
      await page.getByLabel('Authenticator code').fill(await tp.code(person));
      await page.screenshot({ path: artifactPath(shot), fullPage: true });
      // An approval page offers Approve (and Deny); the requester's confirmation page has Confirm.
      await submitWith(page, page.getByRole('button', { name: /^(Confirm|Approve)$/ }));
      const heading = await page.locator('h1').textContent();
      const text = await page.locator('main').textContent();
      await page.close();
      return { heading, text: text ?? '' };
    }

    const stepUpLink = (json: string) => {
      const url = json.match(/"url":"(https?:\/\/[^"]+\/stepup\/[A-Za-z0-9_-]+)"/)?.[1];
      if (!url) throw new Error(`no step-up link in ${json.slice(0, 300)}`);
      return url;
    };

    it('isolates web-01 from Teams: @mention, card in the thread, Action.Execute approval, step-ups in Chromium, agent result, card completed', async () => {
      const users = tp.platform.users;
      await users.mapTenant({ platform: 'teams', tenantId: HOME_TENANT, orgName: 'home' });
      const ana = await tp.person('ana', ['active_response']);
      const ian = await tp.person('ian', ['approver']);
      await users.linkChatIdentity({
        userId: ana.id,
        platform: 'teams',
        tenantId: HOME_TENANT,
        chatUserId: people.ana.aadObjectId,
      });
      await users.linkChatIdentity({
        userId: ian.id,
        platform: 'teams',
        tenantId: HOME_TENANT,
        chatUserId: people.ian.aadObjectId,
      });
      join(h.teams, CHANNEL, people.ana);
      join(h.teams, CHANNEL, people.ian);
      agent = (await enrolAgent(tb, tdb, 'web-01', ['--dry-run'])).agent;

      // Ana @mentions the bot in a new channel post.
      const mention = messageActivity({
        clientId: CLIENT_ID,
        serviceUrl: h.teams.serviceUrl,
        from: people.ana,
        conversation: CHANNEL,
        text: 'isolate web-01 --reason "C2 beacon" --case IR-42',
        id: '1800000000100',
      });
      expect((await post(mention)).status).toBe(200);
      const thread = `${CHANNEL.id};messageid=1800000000100`;

      // She has no step-up window: her private note carries the link; she confirms on the page.
      const note = notesIn(h.teams)[0]!;
      expect(note.conversationId).toBe(thread);
      const confirmed = await stepUpInBrowser(
        stepUpLink(await openNoteAs(h, note, people.ana, CHANNEL)),
        ana,
        'teams-stepup-confirm.png',
      );
      expect(confirmed.heading).toBe('Done');
      await h.adapter.idle();

      // The card is in her post's thread; Ian's client asks for his view and gets Approve and Deny.
      const card = await h.teams.waitFor(
        (c) => c.kind === 'create' && c.conversationId === thread && /digest/.test(JSON.stringify(cardOf(c))),
      );
      const [request] = await tdb.db.select().from(actionRequests);
      expect(request!.chatMessageId).toBe(card.activityId);
      const at = { replyToId: card.activityId, threadId: '1800000000100' };
      const invoke = (verb: string, from = people.ian) =>
        cardAction({
          clientId: CLIENT_ID,
          serviceUrl: h.teams.serviceUrl,
          from,
          conversation: CHANNEL,
          verb,
          data: { requestId: request!.id },
          ...at,
        });
      const refreshed = await post(invoke('ar.refresh'));
      expect(JSON.parse(refreshed.body).value.actions.map((a: { title: string }) => a.title)).toEqual([
        'Approve',
        'Deny',
      ]);

      // Ian clicks Approve: the answer to his click is his own card, with the step-up page to open.
      const clicked = await post(invoke('ar.approve'));
      expect(clicked.status).toBe(200);
      const approved = await stepUpInBrowser(stepUpLink(clicked.body), ian, 'teams-stepup-approve.png');
      expect(approved.heading).toBe('Done');
      expect(approved.text).toContain(`Approved ${request!.ref}`);

      // The agent isolates (dry run) and reports; the result comes back into the card's thread.
      const result = await h.teams.waitFor(
        (c) =>
          c.kind === 'create' &&
          c.conversationId === thread &&
          /web-01: isolated from the network/.test(textOf(c)),
        90_000,
      );
      expect(result.body?.textFormat).toBe('plain');
      await h.teams.waitFor(
        (c) => c.kind === 'create' && c.conversationId === thread && /completed/.test(textOf(c)),
        30_000,
      );
      const [delivery] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, request!.id));
      expect(delivery!.state).toBe('succeeded');
      await waitFor(async () => {
        const [row] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, request!.id));
        return row!.state === 'completed';
      }, 'the request to complete');

      // Every event is a reply in the thread, and the card was edited in place to its final state.
      const replies = h.teams
        .callsOf('create')
        .filter((c) => c.conversationId === thread)
        .map(textOf)
        .join('\n');
      for (const event of [/ana asked for isolate on web-01/, /Approved by ian/, /Dispatched to 1 endpoint/])
        expect(replies).toMatch(event);
      const edit = await h.teams.waitFor(
        (c) =>
          c.kind === 'update' &&
          c.activityId === card.activityId &&
          /completed/.test(JSON.stringify(cardOf(c))),
        10_000,
      );
      expect(edit.conversationId).toBe(thread);
      expect((cardOf(edit) as { actions?: unknown[] }).actions ?? []).toEqual([]);
      expect(h.teams.callsOf('create').filter((c) => /digest/.test(JSON.stringify(cardOf(c))))).toHaveLength(
        1,
      );
    });
  },
);
