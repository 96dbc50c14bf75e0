// New messages go through the durable chat outbox too: a request's card is posted from a row written in the
// transaction that made the request visible, and what the thread must hear before the card exists (who
// asked, an approval, results, the completion, a group's progress message) waits for it in the request's
// lane, then follows it into its thread in order. A session's thread is opened the same way. With the
// sender stopped, as in a process that died right after its commit, nothing is said, and nothing is lost:
// the next sender says it all, once.
import { and, eq, sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { enqueueChat } from '../bot/outbox/chat-outbox.ts';
import { createOutboxRepo } from '../broker/outbox/outbox-repo.ts';
import { actionGroups, actionRequests, auditLog, chatOutbox, deliveries, sessions } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { until } from './helpers/manual-timers.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';

describe.each(drivers)('new chat messages through the outbox (%s)', { timeout: 120_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let ana: Person;
  let ian: Person;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb);
    ana = await tp.person('ana', ['active_response']);
    ian = await tp.person('ian', ['active_response', 'approver']);
    await tp.endpoint('web-01');
    await tp.endpoint('web-02');
  });
  afterEach(async () => {
    await tp?.platform.sender.stop();
    await tdb?.destroy();
  });

  const cards = () => tp.chat.transcript.filter((m) => m.kind === 'card');
  const threadOf = (messageId: string) =>
    tp.chat.transcript.filter((m) => m.kind === 'thread' && m.threadId === messageId).map((m) => m.text);
  const outboxRows = () => tdb.db.select().from(chatOutbox).orderBy(chatOutbox.id);
  /** The transaction that wrote a row (PostgreSQL's xmin), to show two rows were committed together. */
  const xminOf = async (table: 'chat_outbox' | 'audit_log', where: string) => {
    const out = await tdb.db.execute<{ x: string }>(
      sql.raw(`select xmin::text as x from ${table} where ${where}`),
    );
    const rows = Array.isArray(out) ? out : (out as unknown as { rows: { x: string }[] }).rows;
    return rows[0]?.x;
  };

  /** The broker's side: the request's deliveries are sent and each returns a result. */
  async function results(requestId: string) {
    const repo = createOutboxRepo({ db: tdb.db, audit: tp.platform.audit, clock: tp.clock, brokerId: 'b1' });
    const ds = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, requestId));
    await repo.claim(
      ds.map((d) => d.endpointId),
      () => false,
    );
    const out = await repo.recordResults(
      ds.map((d) => ({
        endpointId: d.endpointId,
        res: { id: d.id, ok: true, result: { processes: [], total: 0 } },
      })),
    );
    for (const o of out) if (o.status === 'recorded') await tp.platform.reporter.deliveryChanged(o.event);
  }

  it('writes a card with the request that needs it, says nothing while the sender is down, then posts it and its thread in order', async () => {
    await tp.platform.sender.stop();
    await tp.say('ana', 'processes web-01');
    const [req] = await tdb.db.select().from(actionRequests);
    expect(req!.state).toBe('dispatched');
    expect(req!.chatMessageId).toBeNull();
    expect(cards()).toEqual([]);
    // The card's post and the reply that says who ran what were committed with the request itself.
    const rows = await outboxRows();
    expect(rows.map((r) => [r.kind, r.lane, r.state])).toEqual([
      ['card_post', `request:${req!.id}`, 'pending'],
      ['thread_reply', `request:${req!.id}`, 'pending'],
    ]);
    const created = await xminOf('audit_log', `action = 'request.created' and request_id = '${req!.id}'`);
    expect(await xminOf('chat_outbox', `kind = 'card_post'`)).toBe(created);
    expect(await xminOf('chat_outbox', `kind = 'thread_reply'`)).toBe(created);

    // The result comes back before the card exists: it is marked reported with its reply (and the
    // completion), which wait in the request's lane behind the card.
    await results(req!.id);
    const [d] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, req!.id));
    expect(d!.reportedAt).not.toBeNull();
    expect(cards()).toEqual([]);
    const waiting = (await outboxRows()).filter((r) => r.state === 'pending');
    expect(new Set(waiting.map((r) => r.lane))).toEqual(new Set([`request:${req!.id}`]));

    // The next sender posts the card (showing the newest state) and then the thread, in order, once.
    await tp.platform.sender.start();
    expect(cards()).toHaveLength(1);
    const card = cards()[0]!;
    expect(card.view!.state).toBe('completed');
    const [posted] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, req!.id));
    expect(posted!.chatMessageId).toBe(card.messageId);
    const thread = threadOf(card.messageId);
    expect(thread).toHaveLength(3);
    expect(thread[0]).toMatch(/^ana ran processes on web-01: read-only, no approval needed/);
    expect(thread[1]).toMatch(/^web-01: /);
    expect(thread[2]).toMatch(new RegExp(`^${req!.ref} completed: `));
    const after = await outboxRows();
    expect(after.every((r) => r.state === 'sent')).toBe(true);
    // Whatever moved into the card's thread now lives in its lane.
    expect(after.filter((r) => r.kind === 'thread_reply').map((r) => r.lane)).toEqual(
      Array(3).fill(`thread:console:${card.channelId}:${card.messageId}`),
    );
    await tp.platform.sender.kick();
    expect(cards()).toHaveLength(1);
    expect(threadOf(card.messageId)).toHaveLength(3);
  });

  it('tells an approval given before the card is posted in the card thread, after who asked', async () => {
    await tp.say('ana', 'isolate web-01 --reason "C2 beacon"');
    const [req] = await tdb.db.select().from(actionRequests);
    await tp.platform.sender.stop();
    // Ana's step-up makes the request visible: its card post is committed with the confirmation.
    await tp.stepUp(tp.lastLinkFor('ana'), ana);
    const confirmed = await xminOf(
      'audit_log',
      `action = 'request.pending_approval' and request_id = '${req!.id}'`,
    );
    expect(confirmed).toBeDefined();
    expect(await xminOf('chat_outbox', `kind = 'card_post'`)).toBe(confirmed);
    expect(cards()).toEqual([]);

    // Ian approves by command (no card to click yet) through his own step-up.
    await tp.say('ian', `approve ${req!.ref}`);
    await tp.stepUp(tp.lastLinkFor('ian'), ian);
    const [approved] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, req!.id));
    expect(approved!.state).toBe('dispatched');
    const approval = (await outboxRows()).find((r) =>
      /^Approved by ian/.test(String((r.payload as { text?: string }).text)),
    );
    expect(approval).toMatchObject({ lane: `request:${req!.id}`, state: 'pending' });

    await tp.platform.sender.start();
    const card = cards()[0]!;
    expect(card.view!.state).toBe('dispatched');
    const thread = threadOf(card.messageId);
    expect(thread[0]).toMatch(/^ana asked for isolate on web-01/);
    expect(thread[1]).toMatch(/^Approved by ian \(digest /);
    expect(thread).toHaveLength(2);
  });

  it('posts an action group dispatched at once with its progress message, after the card and who ran it', async () => {
    await tp.platform.sender.stop();
    await tp.say('ana', 'processes web-01 web-02');
    const [req] = await tdb.db.select().from(actionRequests);
    expect((await outboxRows()).map((r) => r.kind)).toEqual(['card_post', 'thread_reply', 'progress_post']);
    await tp.platform.sender.start();
    const card = cards()[0]!;
    const thread = threadOf(card.messageId);
    expect(thread[0]).toMatch(/^ana ran processes on web-01, web-02/);
    expect(thread[1]).toMatch(new RegExp(`^${req!.ref} progress \\[`));
    const [group] = await tdb.db.select().from(actionGroups).where(eq(actionGroups.requestId, req!.id));
    expect(group!.progressMessageId).not.toBeNull();
    expect(tp.chat.transcript.find((m) => m.messageId === group!.progressMessageId)?.text).toMatch(
      /0 of 2 done/,
    );

    // Results move the counts: the progress message is edited from the outbox, a second after its last
    // edit at the soonest, with the newest counts.
    await results(req!.id);
    const progress = () => tp.chat.transcript.find((m) => m.messageId === group!.progressMessageId)!;
    await until(async () => {
      await tp.platform.sender.kick();
      return /2 of 2 done/.test(progress().text);
    }, 'the progress edit with both results');
    const edits = (await outboxRows()).filter((r) => r.kind === 'progress_update');
    expect(edits.length).toBeGreaterThan(0);
    expect(edits.every((r) => r.state === 'sent' && r.lane === `progress:${req!.id}`)).toBe(true);
  });

  it('opens a session thread from a row committed with the session, once', async () => {
    await tp.say('ana', 'session start web-01 --reason "live triage"');
    await tp.platform.sender.stop();
    await tp.stepUp(tp.lastLinkFor('ana'), ana);
    const [s] = await tdb.db.select().from(sessions);
    expect(s!.chatThreadId).toBeNull();
    const started = await xminOf('audit_log', `action = 'session.started'`);
    expect(started).toBeDefined();
    expect(await xminOf('chat_outbox', `kind = 'session_thread'`)).toBe(started);
    expect(tp.chat.transcript.some((m) => /Active Response session with web-01/.test(m.text))).toBe(false);

    await tp.platform.sender.start();
    const opened = tp.chat.transcript.filter((m) =>
      /Active Response session with web-01 started by ana/.test(m.text),
    );
    expect(opened).toHaveLength(1);
    const [after] = await tdb.db.select().from(sessions).where(eq(sessions.id, s!.id));
    expect(after!.chatThreadId).toBe(opened[0]!.messageId);
  });

  it('posts nothing for a card post retried after the card was recorded (a process that died before marking it sent)', async () => {
    await tp.say('ana', 'processes web-01');
    const [req] = await tdb.db.select().from(actionRequests);
    expect(cards()).toHaveLength(1);
    await enqueueChat(tdb.db, [{ kind: 'card_post', requestId: req!.id, platform: 'console' }]);
    await tp.platform.sender.kick();
    expect(cards()).toHaveLength(1);
    expect(
      await tdb.db
        .select()
        .from(chatOutbox)
        .where(and(eq(chatOutbox.kind, 'card_post'), eq(chatOutbox.state, 'pending'))),
    ).toEqual([]);
    const audits = await tdb.db.select().from(auditLog).where(eq(auditLog.action, 'request.created'));
    expect(audits).toHaveLength(1);
  });
});
