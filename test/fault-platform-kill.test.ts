// The SIGKILL drill (issue: faults lose nothing, "a platform crash after an approval"): the platform runs as
// its own process (`main.ts`) on PostgreSQL, talking to a Slack stand-in, and kills itself at a named point
// between a click and its result (FAULT_CRASH_AT). After a restart every decision made is kept, every result
// reaches the thread once, and the card shows the final state: for an approval completed on the step-up page,
// for a Deny click, and for a read-only request that needs no decision. The agent is a real process, linked
// to a broker in this process on the same database, so it keeps running while the platform dies.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { generate } from 'otplib';
import { afterEach, describe, expect, it } from 'vitest';
import { FAULT_POINTS, type FaultPoint } from '../bot/ports.ts';
import { actionRequests, approvals, chatOutbox, deliveries } from '../db/schema.ts';
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
  signedRequest,
  slashCommand,
  startFakeSlack,
} from './helpers/fake-slack.ts';
import { TEST_SECRET_KEY } from './helpers/keys.ts';
import { buildTestPlatform, type Person } from './helpers/platform.ts';
import { type ServerProcess, startServer } from './helpers/server-process.ts';
import { formState } from './helpers/web-stepup.ts';

const SECRET = 'drill-signing-secret';
const TOKEN = 'xoxb-drill-token';
const HOME = 'T0HOME';
const CHANNEL = 'CINCIDENT';

describe.skipIf(!drivers.includes('postgres'))(
  'the platform killed between a click and its result, on postgres',
  { timeout: 300_000 },
  () => {
    let tdb: TestDatabase | undefined;
    let tb: TestBroker | undefined;
    let slack: FakeSlack | undefined;
    let agent: AgentProcess | undefined;
    const servers: ServerProcess[] = [];

    afterEach(async () => {
      for (const s of servers.splice(0)) await s.stop().catch(() => undefined);
      await agent?.kill();
      await tb?.stop();
      await slack?.close();
      await tdb?.destroy();
      tdb = tb = slack = agent = undefined;
    });

    /** The database, Slack, Ana and Ian linked to Slack users, and web-01's agent. */
    async function setUp() {
      tdb = await openTestDatabase('postgres');
      // Its sweep sends work whose wake-up died with the platform.
      tb = await startTestBroker(tdb, { outboxSweepMs: 500 });
      slack = await startFakeSlack({ botToken: TOKEN, teamId: HOME });
      const tp = await buildTestPlatform(tdb, {}, { startAt: new Date() });
      const users = tp.platform.users;
      await users.mapTenant({ platform: 'slack', tenantId: HOME, orgName: 'home' });
      const ana = await tp.person('ana', ['active_response']);
      const ian = await tp.person('ian', ['approver']);
      await users.linkChatIdentity({ userId: ana.id, platform: 'slack', tenantId: HOME, chatUserId: 'UANA' });
      await users.linkChatIdentity({ userId: ian.id, platform: 'slack', tenantId: HOME, chatUserId: 'UIAN' });
      ({ agent } = await enrolAgent(tb, tdb, 'web-01', ['--dry-run']));
      return { ana, ian };
    }

    /** `npm start` against this database and Slack, killing itself at `crashAt` when given. */
    async function platform(crashAt?: FaultPoint) {
      const dataDir = mkdtempSync(join(tmpdir(), 'ar-drill-'));
      const server = await startServer({
        DATABASE_URL: tdb!.url!,
        DATA_DIR: dataDir,
        SECRET_KEY: TEST_SECRET_KEY.toString('hex'),
        PUBLIC_URL: 'http://ar.test',
        SLACK_SIGNING_SECRET: SECRET,
        SLACK_BOT_TOKEN: TOKEN,
        SLACK_API_URL: slack!.apiUrl,
        OUTBOX_SWEEP: '1s',
        ...(crashAt ? { FAULT_CRASH_AT: crashAt } : {}),
      });
      servers.push(server);
      const died = new Promise<string | null>((r) => server.child.once('exit', (_code, signal) => r(signal)));
      await server.ready();
      return { server, died };
    }

    async function send(server: ServerProcess, body: ReturnType<typeof signedRequest>) {
      const res = await fetch(`${server.httpUrl}${body.url}`, {
        method: 'POST',
        headers: body.headers,
        body: body.payload,
      });
      expect(res.status).toBe(200);
    }

    const command = (text: string) =>
      signedRequest(SECRET, slashCommand({ text, user: 'UANA', team: HOME, channel: CHANNEL }));

    async function cardOfNewest() {
      const [row] = await waitFor(
        async () => {
          const rows = await tdb!.db.select().from(actionRequests);
          return rows.find((r) => r.chatMessageId) ? rows : undefined;
        },
        'the card to be posted',
        60_000,
      );
      return row!;
    }

    const threadOf = (ts: string) =>
      slack!
        .callsOf('chat.postMessage')
        .filter((c) => c.args.thread_ts === ts)
        .map((c) => String(c.args.text));
    const lastEditOf = (ts: string) =>
      JSON.stringify(
        slack!
          .callsOf('chat.update')
          .filter((c) => c.args.ts === ts)
          .at(-1)?.args.blocks ?? '',
      );

    /** Ian's click on the card at `ts`, signed as Slack sends it. */
    const ianClicks = (actionId: string, requestId: string, ts: string) =>
      signedRequest(
        SECRET,
        buttonClick({
          actionId,
          value: requestId,
          user: 'UIAN',
          userTeam: HOME,
          team: HOME,
          channel: CHANNEL,
          messageTs: ts,
        }),
      );

    for (const point of ['decision-before-commit', 'decision-after-commit'] as const) {
      it(`keeps a denial made before a kill at ${point}, told once in the thread`, async () => {
        await setUp();
        const first = await platform(point);
        // fetch needs an approval but no step-up by the requester: the card goes up at once.
        await send(first.server, command('fetch web-01 /etc/hostname --reason "drill"'));
        const request = await cardOfNewest();
        const ts = request.chatMessageId!;
        await waitFor(() => threadOf(ts).some((l) => /asked for/.test(l)), 'the request in the thread');
        await send(first.server, ianClicks('ar_deny', request.id, ts));
        expect(await first.died).toBe('SIGKILL');
        const state = async () =>
          (await tdb!.db.select().from(actionRequests).where(eq(actionRequests.id, request.id)))[0]!.state;
        const denialRows = async () =>
          (await tdb!.db.select().from(chatOutbox)).filter((r) =>
            /Denied by/.test(String((r.payload as { text?: string }).text)),
          );
        expect(threadOf(ts).some((l) => /Denied by/.test(l))).toBe(false);
        if (point === 'decision-before-commit') {
          // Not committed, so not made: the request still waits, and no message about it exists.
          expect(await state()).toBe('pending_approval');
          expect(await denialRows()).toEqual([]);
        } else {
          // Made, with its message waiting in the outbox: the process died before sending it.
          expect(await state()).toBe('denied');
          expect(await denialRows()).toEqual([expect.objectContaining({ state: 'pending' })]);
        }

        const second = await platform();
        // Before the commit the click was already recorded (before Slack's ack): the new process handles it.
        await waitFor(async () => (await state()) === 'denied', 'the denial', 60_000);
        await waitFor(
          () => threadOf(ts).some((l) => /Denied by ian/.test(l)),
          'the denial in the thread',
          60_000,
        );
        await waitFor(() => lastEditOf(ts).includes('denied'), 'the card to show the denial', 60_000);
        // One decision, told once.
        const decided = await tdb!.db.select().from(approvals).where(eq(approvals.requestId, request.id));
        expect(decided).toHaveLength(1);
        await second.server.stop();
        expect(threadOf(ts).filter((l) => /Denied by/.test(l))).toHaveLength(1);
      });
    }

    /**
     * Completes the step-up link last sent privately to `user` on the platform's own page: password and the
     * authenticator code (`stepsAhead` 30 s steps on, so a retry never reuses a code). Resolves to the HTTP
     * status, or null when the platform died answering.
     */
    async function stepUpOnPage(server: ServerProcess, user: string, who: Person, stepsAhead = 0) {
      const text = String(
        slack!
          .callsOf('chat.postEphemeral')
          .filter((c) => c.args.user === user)
          .at(-1)?.args.text,
      );
      const path = text.match(/\/stepup\/[A-Za-z0-9_-]+/)?.[0];
      if (!path) throw new Error(`no step-up link was sent to ${user}: ${text}`);
      try {
        const page = await fetch(`${server.httpUrl}${path}`);
        const { token: csrf, cookies } = formState({
          body: await page.text(),
          cookies: page.headers.getSetCookie().map((c) => {
            const [pair] = c.split(';');
            const [name, ...value] = pair!.split('=');
            return { name: name!, value: value.join('=') };
          }),
        });
        const code = await generate({
          secret: who.totpSecret,
          epoch: Math.floor(Date.now() / 1000) + 30 * stepsAhead,
        });
        const res = await fetch(`${server.httpUrl}${path}`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            cookie: Object.entries(cookies)
              .map(([k, v]) => `${k}=${v}`)
              .join('; '),
          },
          body: new URLSearchParams({ _csrf: csrf!, password: who.password, code }),
        });
        return res.status;
      } catch {
        return null;
      }
    }

    // Every point between an approval click and its result (the request's own commit comes before it).
    for (const point of FAULT_POINTS.filter((p) => p !== 'request-after-commit')) {
      it(`keeps an approval and reports its result once after a kill at ${point}; the card ends completed`, async () => {
        const { ana, ian } = await setUp();
        const first = await platform(point);
        await send(first.server, command('isolate web-01 --reason "drill"'));
        await waitFor(
          () => slack!.callsOf('chat.postEphemeral').some((c) => c.args.user === 'UANA'),
          "ana's link",
        );
        expect(await stepUpOnPage(first.server, 'UANA', ana)).toBe(200);
        const request = await cardOfNewest();
        const ts = request.chatMessageId!;
        await send(first.server, ianClicks('ar_approve', request.id, ts));
        await waitFor(
          () => slack!.callsOf('chat.postEphemeral').some((c) => c.args.user === 'UIAN'),
          "ian's link",
        );
        // The approval happens as Ian completes his step-up; the platform dies somewhere after that.
        await stepUpOnPage(first.server, 'UIAN', ian);
        expect(await first.died).toBe('SIGKILL');
        const state = async () =>
          (await tdb!.db.select().from(actionRequests).where(eq(actionRequests.id, request.id)))[0]!.state;
        if (point === 'decision-before-commit') {
          // Nothing of the approval was committed: Ian completes his link again on the new process.
          expect(await state()).toBe('pending_approval');
          const second = await platform();
          expect(await stepUpOnPage(second.server, 'UIAN', ian, 1)).toBe(200);
        } else {
          expect(['dispatched', 'completed']).toContain(await state());
          await platform();
        }
        const server = servers.at(-1)!;
        await waitFor(() => threadOf(ts).some((l) => /completed/.test(l)), 'the completion notice', 90_000);
        await waitFor(() => lastEditOf(ts).includes('completed'), 'the card to show completion', 60_000);
        await server.stop();
        const thread = threadOf(ts);
        expect(thread.filter((l) => /Approved by ian/.test(l))).toHaveLength(1);
        expect(thread.filter((l) => /^web-01:/.test(l))).toHaveLength(1);
        expect(thread.filter((l) => /completed/.test(l))).toHaveLength(1);
        const decided = await tdb!.db.select().from(approvals).where(eq(approvals.requestId, request.id));
        expect(decided).toHaveLength(1);
        expect(await state()).toBe('completed');
      });
    }

    for (const point of ['after-dispatch', 'result-stored'] as const) {
      it(`reports a result once after a kill at ${point}, and the card ends completed`, async () => {
        await setUp();
        const first = await platform(point);
        // Read-only: dispatched at once, no decision needed.
        await send(first.server, command('processes web-01'));
        expect(await first.died).toBe('SIGKILL');
        const request = await cardOfNewest();
        const ts = request.chatMessageId!;
        if (point === 'result-stored') {
          // The broker stored the result; the platform died on hearing of it, before telling the thread.
          const [d] = await tdb!.db.select().from(deliveries).where(eq(deliveries.requestId, request.id));
          expect(d).toMatchObject({ state: 'succeeded', reportedAt: null });
        }
        expect(threadOf(ts).some((l) => /^web-01:/.test(l))).toBe(false);

        const second = await platform();
        await waitFor(() => threadOf(ts).some((l) => /completed/.test(l)), 'the completion notice', 90_000);
        await waitFor(() => lastEditOf(ts).includes('completed'), 'the card to show completion', 60_000);
        await second.server.stop();
        const thread = threadOf(ts);
        expect(thread.filter((l) => /^web-01:/.test(l))).toHaveLength(1);
        expect(thread.filter((l) => /completed/.test(l))).toHaveLength(1);
        const [row] = await tdb!.db.select().from(actionRequests).where(eq(actionRequests.id, request.id));
        expect(row!.state).toBe('completed');
      });
    }

    it('posts the card of a request committed right before a kill, once, with its whole thread, after a restart', async () => {
      const { ana } = await setUp();
      const first = await platform('request-after-commit');
      // Read-only: committed and dispatched with its card post, then the platform dies before posting it.
      await send(first.server, command('processes web-01'));
      expect(await first.died).toBe('SIGKILL');
      const [lost] = await tdb!.db.select().from(actionRequests);
      expect(lost).toMatchObject({ state: 'dispatched', chatMessageId: null });
      // Request cards (with their digest), not the plain replies to a command.
      const cards = () =>
        slack!
          .callsOf('chat.postMessage')
          .filter((c) => !c.args.thread_ts && /digest/i.test(JSON.stringify(c.args.blocks ?? '')));
      expect(cards()).toEqual([]);

      const second = await platform();
      const request = await cardOfNewest();
      const ts = request.chatMessageId!;
      await waitFor(() => threadOf(ts).some((l) => /completed/.test(l)), 'the completion notice', 90_000);
      await waitFor(() => lastEditOf(ts).includes('completed'), 'the card to show completion', 60_000);
      await second.server.stop();
      expect(cards()).toHaveLength(1);
      const thread = threadOf(ts);
      expect(thread.filter((l) => /^ana ran processes on web-01/.test(l))).toHaveLength(1);
      expect(thread.filter((l) => /^web-01:/.test(l))).toHaveLength(1);
      expect(thread.filter((l) => /completed/.test(l))).toHaveLength(1);
      expect(thread.findIndex((l) => /^ana ran/.test(l))).toBe(0);

      // A request confirmed on the step-up page right before a kill: its card follows on the next start.
      const third = await platform('request-after-commit');
      await send(third.server, command('isolate web-01 --reason "drill"'));
      await waitFor(
        () => slack!.callsOf('chat.postEphemeral').some((c) => c.args.user === 'UANA'),
        "ana's link",
      );
      await stepUpOnPage(third.server, 'UANA', ana);
      expect(await third.died).toBe('SIGKILL');
      const [confirmed] = (await tdb!.db.select().from(actionRequests)).filter((r) => r.action === 'isolate');
      expect(confirmed).toMatchObject({ state: 'pending_approval', chatMessageId: null });
      const fourth = await platform();
      const posted = await waitFor(async () => {
        const [row] = await tdb!.db.select().from(actionRequests).where(eq(actionRequests.id, confirmed!.id));
        return row?.chatMessageId ? row : undefined;
      }, 'the confirmed card to be posted');
      await waitFor(
        () => threadOf(posted.chatMessageId!).some((l) => /asked for isolate/.test(l)),
        'who asked',
      );
      await fourth.server.stop();
      expect(cards()).toHaveLength(2);
      expect(threadOf(posted.chatMessageId!).filter((l) => /asked for isolate/.test(l))).toHaveLength(1);
      const open = await tdb!.db.select().from(chatOutbox);
      expect(open.filter((r) => r.state !== 'sent')).toEqual([]);
    });
  },
);
