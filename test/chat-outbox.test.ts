// The durable chat outbox (issue: faults lose nothing, "a durable chat outbox"). What the core says in a thread
// is a row first, written with the change it reports, and a sender delivers it: a burst through the real Bolt
// client against a Slack stand-in that answers 429 arrives whole, in order per thread, with card edits paced;
// a sender that stopped or died leaves its rows to the next one, which sends each once; a decision whose
// transaction fails leaves no message behind, and no message goes out for a decision that was not made.
import { eq, sql } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { createConsoleChat } from '../adapters/console/console-chat.ts';
import { enqueueChat, type OutboxMessage } from '../bot/outbox/chat-outbox.ts';
import { createChatSender } from '../bot/outbox/chat-sender.ts';
import type { ChatMessageRef, ChatPort, Logger } from '../bot/ports.ts';
import { actionRequests, approvals, chatOutbox } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { sampleRequestView } from './helpers/fake-slack.ts';
import { createManualTimers, until } from './helpers/manual-timers.ts';
import { buildTestPlatform } from './helpers/platform.ts';
import { mountSlack } from './helpers/slack-setup.ts';

const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} };

describe.each(drivers)('the durable chat outbox (%s)', { timeout: 300_000 }, (driver) => {
  let tdb: TestDatabase | undefined;
  const closers: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
    await tdb?.destroy();
    tdb = undefined;
  });

  it('delivers a burst of 500 chat events with Slack answering 429: complete, in order per thread, at most one card edit per second per card', async () => {
    tdb = await openTestDatabase(driver);
    const timers = createManualTimers();
    const tp = await buildTestPlatform(tdb, {}, { timers: timers.port });
    const { slack, http, adapter } = await mountSlack(tp, {
      signingSecret: 'outbox-signing-secret',
      botToken: 'xoxb-outbox-token',
      teamId: 'T0HOME',
      slackNow: timers.now,
    });
    closers.push(
      () => slack.close(),
      () => http.close(),
      () => adapter.close(),
    );

    const THREADS = 10;
    const cards: ChatMessageRef[] = Array.from({ length: THREADS }, (_, k) => ({
      platform: 'slack',
      channelId: 'CINCIDENT',
      messageId: `1700000100.00000${k}`,
      threadId: `1700000100.00000${k}`,
    }));
    // What each card shows when it is rendered: the newest count, whatever edits were coalesced on the way.
    const shown = new Map<string, number>();
    const sender = createChatSender({
      db: tdb.db,
      chat: tp.platform.router.chat,
      render: async (id) =>
        sampleRequestView({ id, state: 'dispatched', progress: { succeeded: shown.get(id) ?? 0 } }),
      timers: timers.port,
      logger: silent,
    });
    closers.push(() => sender.stop());

    // Slack is over its limit for the first three seconds: every chat call gets 429 and Retry-After: 2.
    slack.rateLimitFor(3000, 2);
    // 500 events in ten waves, 0.7 s apart, while the sender works: each a reply in its thread, and every
    // other event of a thread also an edit of its card.
    const finalCount = new Map<number, number>();
    for (let i = 0; i < 500; i++) {
      const k = i % THREADS;
      const messages: OutboxMessage[] = [{ kind: 'thread_reply', ref: cards[k]!, text: `event ${i}` }];
      if (Math.floor(i / THREADS) % 2 === 0) {
        shown.set(`card-${k}`, i);
        finalCount.set(k, i);
        messages.push({ kind: 'card_update', ref: cards[k]!, requestId: `card-${k}` });
      }
      await enqueueChat(tdb.db, messages);
      if (i % 50 === 49) {
        await sender.kick();
        timers.advance(700);
      }
    }
    // Time passes, a quarter second at a time, until the outbox is empty.
    for (let step = 0; (await sender.backlog()) > 0; step++) {
      if (step > 4000) throw new Error('the outbox never emptied');
      timers.advance(250);
      await sender.kick();
    }

    // The 429s happened, and nothing went to Slack until each Retry-After had passed.
    expect(slack.limited.length).toBeGreaterThan(0);
    const accepted = slack.calls.filter((c) => c.method.startsWith('chat.'));
    for (const refused of slack.limited) {
      expect(accepted.filter((c) => c.at > refused.at && c.at < refused.at + 2000)).toEqual([]);
    }
    // Complete, once each, and in order within each thread.
    const posts = slack.callsOf('chat.postMessage');
    expect(posts.map((c) => c.args.text).sort()).toEqual(
      Array.from({ length: 500 }, (_, i) => `event ${i}`).sort(),
    );
    for (const card of cards) {
      const inThread = posts.filter((c) => c.args.thread_ts === card.threadId).map((c) => c.args.text);
      const expected = Array.from({ length: 50 }, (_, n) => `event ${n * THREADS + cards.indexOf(card)}`);
      expect(inThread).toEqual(expected);
    }
    // Card edits: at most one per second per card, coalesced, and the last one shows the newest count.
    const edits = slack.callsOf('chat.update');
    // More edits than cards: the pacing below was put to the test, not just one edit per card.
    expect(edits.length).toBeGreaterThan(2 * THREADS);
    for (const [k, card] of cards.entries()) {
      const mine = edits.filter((c) => c.args.ts === card.messageId);
      expect(mine.length).toBeGreaterThan(0);
      expect(mine.length).toBeLessThan(25);
      for (let n = 1; n < mine.length; n++)
        expect(mine[n]!.at - mine[n - 1]!.at).toBeGreaterThanOrEqual(1000);
      expect(JSON.stringify(mine.at(-1)!.args.blocks)).toContain(`succeeded ${finalCount.get(k)}`);
    }
    const states = await tdb.db.select({ state: chatOutbox.state }).from(chatOutbox);
    expect(new Set(states.map((s) => s.state))).toEqual(new Set(['sent']));
  });

  it('sends what a stopped or killed sender left, once each and in order; a refused call is never marked sent', async () => {
    tdb = await openTestDatabase(driver);
    const db = tdb.db;
    const timers = createManualTimers();
    const chat = createConsoleChat();
    const ref: ChatMessageRef = { platform: 'console', channelId: 'C1', messageId: 'm0', threadId: 'm0' };
    const render = async (id: string) => sampleRequestView({ id });
    const thread = () => chat.transcript.filter((m) => m.kind === 'thread').map((m) => m.text);
    const rowsByText = async () =>
      new Map(
        (await db.select().from(chatOutbox)).map((r) => [(r.payload as { text: string }).text, r] as const),
      );

    // The platform refuses: the row keeps its error and its place, and is not marked sent.
    const refusing: ChatPort = {
      ...chat.chat,
      replyInThread: () => Promise.reject(new Error('chat platform unavailable')),
    };
    const first = createChatSender({ db, chat: refusing, render, timers: timers.port, logger: silent });
    await enqueueChat(db, [
      { kind: 'thread_reply', ref, text: 'one' },
      { kind: 'thread_reply', ref, text: 'two' },
    ]);
    await first.kick();
    let rows = await rowsByText();
    expect(rows.get('one')).toMatchObject({
      state: 'pending',
      attempts: 1,
      lastError: 'chat platform unavailable',
      sentAt: null,
    });
    expect(rows.get('two')).toMatchObject({ state: 'pending', attempts: 0 });
    await first.stop();

    // A process killed in the middle of a send: its platform call never returns, the row stays claimed.
    timers.advance(1000);
    const dying = createChatSender({
      db,
      chat: { ...chat.chat, replyInThread: () => new Promise<void>(() => {}) },
      render,
      timers: timers.port,
      logger: silent,
    });
    void dying.kick();
    await until(async () => (await rowsByText()).get('one')?.state === 'sending', 'the dying send to start');

    // The next process: its sender resumes at start, leaves the claimed row alone until the lease runs out,
    // and keeps the thread's order (two waits behind one).
    const next = createChatSender({ db, chat: chat.chat, render, timers: timers.port, logger: silent });
    closers.push(() => next.stop());
    await next.start();
    expect(thread()).toEqual([]);
    timers.advance(30_000);
    await next.kick();
    expect(thread()).toEqual(['one', 'two']);
    await next.kick();
    timers.advance(60_000);
    await next.kick();
    expect(thread()).toEqual(['one', 'two']);
    rows = await rowsByText();
    expect(rows.get('one')).toMatchObject({ state: 'sent', attempts: 1 });
    expect(rows.get('two')).toMatchObject({ state: 'sent', attempts: 0 });
  });

  it('keeps each thread in order and sends each message once with two senders (two processes) on one database', async () => {
    tdb = await openTestDatabase(driver);
    const db = tdb.db;
    const timers = createManualTimers();
    const said: { thread: string; text: string }[] = [];
    // A platform call that takes a while, longer for some messages than others, so the two senders overlap.
    const slowPort = (): ChatPort => ({
      ...createConsoleChat().chat,
      async replyInThread(ref, text) {
        await new Promise((r) => setTimeout(r, 5 + ((Number(text.split(' ')[1]) * 7) % 23)));
        said.push({ thread: ref.threadId, text });
      },
    });
    const render = async (id: string) => sampleRequestView({ id });
    const senders = [0, 1].map(() =>
      createChatSender({ db, chat: slowPort(), render, timers: timers.port, logger: silent }),
    );
    const refs: ChatMessageRef[] = Array.from({ length: 3 }, (_, k) => ({
      platform: 'console',
      channelId: 'C1',
      messageId: `t${k}`,
      threadId: `t${k}`,
    }));
    // Messages keep arriving while both senders work: a thread's next message is written while its earlier
    // ones are being sent by the other sender. (Several processes share PostgreSQL only; on the embedded
    // database the two senders' queries take turns, so the overlap is smaller there.)
    const passes: Promise<void>[] = [];
    for (let i = 0; i < 150; i++) {
      await enqueueChat(db, [{ kind: 'thread_reply', ref: refs[i % 3]!, text: `event ${i}` }]);
      passes.push(senders[i % 2]!.kick());
    }
    await Promise.all(passes);
    while ((await senders[0]!.backlog()) > 0) await Promise.all(senders.map((s) => s.kick()));

    expect(said.map((m) => m.text).sort()).toEqual(
      Array.from({ length: 150 }, (_, i) => `event ${i}`).sort(),
    );
    for (const [k, ref] of refs.entries()) {
      expect(said.filter((m) => m.thread === ref.threadId).map((m) => m.text)).toEqual(
        Array.from({ length: 50 }, (_, n) => `event ${n * 3 + k}`),
      );
    }
  });

  it('commits a decision with its thread messages: a decision whose transaction fails leaves no message', async () => {
    tdb = await openTestDatabase(driver);
    const t = await buildTestPlatform(tdb);
    const analyst = await t.person('analyst', ['active_response']);
    await t.person('commander', ['active_response', 'approver']);
    await t.endpoint('web-01', 'linux');
    await t.say('analyst', 'isolate web-01 --reason "C2 beacon"');
    await t.stepUp(t.lastLinkFor('analyst'), analyst);
    const card = () => t.chat.transcript.find((m) => m.kind === 'card')!;
    const ref = card().view!.ref;
    const denials = async () =>
      (await tdb!.db.select().from(chatOutbox)).filter((r) =>
        /Denied by/.test(String((r.payload as { text?: string }).text)),
      );

    // Any transaction that wrote to the chat outbox fails at its commit, after every statement ran.
    await tdb.db.execute(
      sql.raw(`create function outbox_commit_fails() returns trigger language plpgsql as $$
        begin raise exception 'the commit failed'; end $$`),
    );
    await tdb.db.execute(
      sql.raw(`create constraint trigger outbox_commit_fails after insert on chat_outbox
        deferrable initially deferred for each row execute function outbox_commit_fails()`),
    );
    await t.say('commander', `deny ${ref} --reason "wrong host"`);
    const [row] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.ref, ref));
    expect(row!.state).toBe('pending_approval');
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, row!.id))).toEqual([]);
    expect(await denials()).toEqual([]);
    expect(t.chat.transcript.some((m) => /Denied by/.test(m.text))).toBe(false);
    expect(
      t.chat.transcript.some(
        (m) => m.kind === 'private' && m.to === 'commander' && /went wrong/.test(m.text),
      ),
    ).toBe(true);

    // Once commits work again, the decision and its message go together.
    await tdb.db.execute(sql.raw('drop trigger outbox_commit_fails on chat_outbox'));
    await t.say('commander', `deny ${ref} --reason "wrong host"`);
    expect(card().view!.state).toBe('denied');
    expect(t.chat.transcript.filter((m) => /Denied by commander: wrong host/.test(m.text))).toHaveLength(1);
    expect(await denials()).toEqual([expect.objectContaining({ state: 'sent' })]);
  });
});
