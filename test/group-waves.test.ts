// Staged waves of an action group on the real core and a real database: a halt at the failure threshold
// holds everything not yet sent, `resume` and `cancel` from the thread each need the right role and a
// step-up, and `--rate` paces releases by a hand-moved clock. Results go through the broker's own outbox
// repository and the delivery reporter; the broker's claim is what shows what would be sent. A halt's and a
// resume's thread notices are chat outbox rows committed with the change, so a sender that is down loses
// neither, and a halt that rolls back says nothing.
import { and, eq, type SQL, sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeliveryEvent } from '../bot/ports.ts';
import { createOutboxRepo } from '../broker/outbox/outbox-repo.ts';
import { actionGroups, chatOutbox, deliveries, type Os } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { createManualTimers, type ManualTimers } from './helpers/manual-timers.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';

describe.each(drivers)('action group waves (%s)', { timeout: 180_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let mt: ManualTimers;
  let ana: Person;
  let ian: Person;
  let repo: ReturnType<typeof createOutboxRepo>;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    mt = createManualTimers();
    tp = await buildTestPlatform(tdb, {}, { timers: mt.port });
    ana = await tp.person('ana', ['active_response']);
    ian = await tp.person('ian', ['approver']);
    await tp.person('eve', ['active_response']);
    for (let i = 1; i <= 20; i++) await tp.endpoint(`node-${String(i).padStart(2, '0')}`, 'linux' as Os);
    repo = createOutboxRepo({ db: tdb.db, audit: tp.platform.audit, clock: tp.clock, brokerId: 'b-test' });
    // Three people with real argon2 passwords: slow on a loaded machine.
  }, 180_000);

  afterEach(async () => {
    tp?.platform.waves.stop();
    await tdb?.destroy();
  });

  async function group() {
    const [g] = await tdb.db.select().from(actionGroups);
    const rows = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, g!.requestId));
    return { g: g!, rows, ref: (await tp.platform.requests.getView(g!.requestId)).ref };
  }

  /**
   * What the broker newly sends now if these endpoints are connected, marked sent as it would be (it also
   * repeats unacknowledged ones, which are left out here).
   */
  async function brokerSends(rows: { endpointId: string }[]) {
    const out = await repo.claim(
      rows.map((r) => r.endpointId),
      () => false,
    );
    for (const e of out.events) await tp.platform.reporter.deliveryChanged(e);
    return out.toSend.filter((r) => r.state === 'queued');
  }

  async function results(sent: { id: string; endpointId: string }[], failing: Set<string>) {
    const out = await repo.recordResults(
      sent.map((d) => ({
        endpointId: d.endpointId,
        res: { id: d.id, ok: !failing.has(d.id), result: { processes: [], total: 0 }, error: 'boom' },
      })),
    );
    for (const r of out)
      if (r.status === 'recorded') await tp.platform.reporter.deliveryChanged(r.event as DeliveryEvent);
  }

  /** Rows a raw query returns; PGlite answers `{ rows }`, postgres.js an array. */
  async function rowsOf<T>(query: SQL): Promise<T[]> {
    const out = await tdb.db.execute(query);
    return (Array.isArray(out) ? out : (out as unknown as { rows: T[] }).rows) as T[];
  }

  /**
   * The chat outbox rows whose text starts with `prefix`, each with the transaction that wrote it (`xmin`,
   * kept while the row is still pending: the sender's update to sent would replace it).
   */
  const noticeRows = (prefix: string) =>
    rowsOf<{ x: string; state: string; text: string }>(
      sql`select xmin::text as x, state, payload->>'text' as text from ${chatOutbox}
          where kind = 'thread_reply' and payload->>'text' like ${`${prefix}%`} order by id`,
    );
  /** The transactions that wrote the audit records of `action` (the log is append-only). */
  const auditTxs = async (action: string) =>
    (
      await rowsOf<{ x: string }>(
        sql`select xmin::text as x from audit_log where action = ${action} order by seq`,
      )
    ).map((r) => r.x);

  const thread = () => tp.chat.transcript.filter((m) => m.kind === 'thread').map((m) => m.text);
  const privateTo = (name: string) =>
    tp.chat.transcript.filter((m) => m.kind === 'private' && m.to === name).map((m) => m.text);

  it('halts at the failure threshold: nothing not yet sent goes out, and the thread says why', async () => {
    await tp.say('ana', 'processes segment:servers --halt-at 10%');
    const { rows, ref } = await group();
    expect(rows).toHaveLength(20);
    // Half the fleet is online: they get theirs; two of them fail, which is 10% of 20.
    const sent = await brokerSends(rows.slice(0, 10));
    expect(sent).toHaveLength(10);
    await results(sent, new Set([sent[0]!.id, sent[1]!.id]));
    const { g } = await group();
    expect(g.state).toBe('halted');
    expect(g.haltReason).toBe('2 endpoints of 20 failed (10%), at or above its halt threshold of 10%');
    expect(thread().join('\n')).toContain(`${ref} halted: 2 endpoints of 20 failed (10%)`);
    // The other ten come online: the broker sends them nothing.
    expect(await brokerSends(rows.slice(10))).toHaveLength(0);
    const held = await tdb.db
      .select()
      .from(deliveries)
      .where(and(eq(deliveries.held, true), eq(deliveries.state, 'queued')));
    expect(held).toHaveLength(10);
    expect((await tp.platform.audit.list({ actionPrefix: 'group.halted' })).length).toBe(1);
  });

  it('resumes a halted group only for an approver with a step-up, and cancels only for its parties with one', async () => {
    await tp.say('ana', 'processes segment:servers --halt-at 10%');
    const { rows, ref } = await group();
    const sent = await brokerSends(rows.slice(0, 10));
    await results(sent, new Set([sent[0]!.id, sent[1]!.id]));
    expect((await group()).g.state).toBe('halted');

    // The requester has no approver role; eve is neither a party nor an approver.
    await tp.say('ana', `resume ${ref}`);
    expect(privateTo('ana').at(-1)).toContain('another approver must decide');
    await tp.say('eve', `cancel ${ref}`);
    expect(privateTo('eve').at(-1)).toMatch(/cancel/i);
    expect((await group()).g.state).toBe('halted');

    // The approver gets a step-up link first; nothing moves until it is completed.
    await tp.say('ian', `resume ${ref}`);
    const link = tp.lastLinkFor('ian');
    expect((await group()).g.state).toBe('halted');
    expect(await brokerSends(rows.slice(10))).toHaveLength(0);
    const done = await tp.stepUp(link, ian);
    expect(done.message).toContain(`Resumed ${ref}`);
    expect((await group()).g.state).toBe('running');
    expect(thread().join('\n')).toContain(`${ref} resumed by ian: 10 held deliveries go on`);
    const rest = await brokerSends(rows.slice(10));
    expect(rest).toHaveLength(10);

    // A second halt (failures after the resume count afresh), then the requester cancels with a step-up.
    await results(rest.slice(0, 4), new Set(rest.slice(0, 2).map((d) => d.id)));
    expect((await group()).g.state).toBe('running');
    await tp.say('ana', `cancel ${ref}`);
    const cancelLink = tp.lastLinkFor('ana');
    await tp.stepUp(cancelLink, ana);
    expect((await group()).g.state).toBe('cancelled');
    expect((await tp.platform.audit.list({ actionPrefix: 'group.resumed' })).length).toBe(1);
  });

  it('writes the halt notice into the chat outbox in the halt transaction: a stopped sender sends it once started', async () => {
    await tp.platform.sender.stop();
    await tp.say('ana', 'processes segment:servers --halt-at 10%');
    const { rows, ref } = await group();
    const sent = await brokerSends(rows.slice(0, 10));
    await results(sent, new Set([sent[0]!.id, sent[1]!.id]));
    expect((await group()).g.state).toBe('halted');

    // Nothing reached the thread, but the notice is stored, written by the transaction that halted the group.
    expect(thread().join('\n')).not.toContain(`${ref} halted`);
    const notices = await noticeRows(`${ref} halted: 2 endpoints of 20 failed (10%)`);
    expect(notices).toHaveLength(1);
    expect(notices[0]!.state).toBe('pending');
    expect(notices[0]!.text).toContain(`10 deliveries not yet sent are held`);
    expect([notices[0]!.x]).toEqual(await auditTxs('group.halted'));

    // The sender comes back (the next process, say) and sends it.
    await tp.platform.sender.start();
    expect(thread().filter((t) => t.startsWith(`${ref} halted:`))).toEqual([notices[0]!.text]);
    expect((await noticeRows(`${ref} halted:`)).map((n) => n.state)).toEqual(['sent']);
  });

  it('writes each resume notice into the chat outbox in its resume transaction, from the step-up page and from chat', async () => {
    await tp.say('ana', 'processes segment:servers --halt-at 10%');
    const { rows, ref } = await group();
    const sent = await brokerSends(rows.slice(0, 10));
    await results(sent, new Set([sent[0]!.id, sent[1]!.id]));
    expect((await group()).g.state).toBe('halted');
    await tp.platform.sender.stop();

    // Resumed by completing the step-up: the page's own transaction carries the resume and its notice.
    await tp.say('ian', `resume ${ref}`);
    await tp.stepUp(tp.lastLinkFor('ian'), ian);
    expect((await group()).g.state).toBe('running');
    // Halted again: five of the rest go out and two fail, with five still to send.
    const rest = await brokerSends(rows.slice(10, 15));
    await results(rest, new Set([rest[0]!.id, rest[1]!.id]));
    expect((await group()).g.state).toBe('halted');
    // Resumed from chat, with the step-up window still live: the resume's own transaction.
    await tp.say('ian', `resume ${ref}`);
    expect((await group()).g.state).toBe('running');

    expect(thread().join('\n')).not.toContain('resumed by');
    const notices = await noticeRows(`${ref} resumed by ian:`);
    expect(notices.map((n) => n.text)).toEqual([
      `${ref} resumed by ian: 10 held deliveries go on.`,
      `${ref} resumed by ian: 5 held deliveries go on.`,
    ]);
    // Two resumes, two transactions, each with its audit record and its notice.
    const resumes = await auditTxs('group.resumed');
    expect(new Set(resumes).size).toBe(2);
    expect(notices.map((n) => n.x)).toEqual(resumes);

    await tp.platform.sender.start();
    expect(thread().filter((t) => t.includes('resumed by ian'))).toEqual(notices.map((n) => n.text));
  });

  it('writes the canary-passed notice into the chat outbox in the transaction that releases the rest', async () => {
    await tp.platform.sender.stop();
    await tp.say('ana', 'processes segment:servers --canary 2');
    const { rows, ref } = await group();
    const canary = await brokerSends(rows);
    expect(canary).toHaveLength(2);
    await results(canary, new Set());
    expect((await group()).g.state).toBe('running');

    const notices = await noticeRows(`${ref}: the canary wave succeeded`);
    expect(notices.map((n) => n.text)).toEqual([
      `${ref}: the canary wave succeeded on 2 endpoints; going on with the other 18.`,
    ]);
    expect(notices.map((n) => n.x)).toEqual(await auditTxs('group.canary_passed'));
    await tp.platform.sender.start();
    expect(thread()).toContain(notices[0]!.text);
  });

  it('leaves no halt notice when the halt transaction rolls back, and says it once the halt commits', async () => {
    // Any transaction that halts a group fails at its commit, after every statement ran.
    await tdb.db.execute(
      sql.raw(`create function halt_commit_fails() returns trigger language plpgsql as $$
        begin raise exception 'the commit failed'; end $$`),
    );
    await tdb.db.execute(
      sql.raw(`create constraint trigger halt_commit_fails after update on action_groups
        deferrable initially deferred for each row when (new.state = 'halted')
        execute function halt_commit_fails()`),
    );
    await tp.say('ana', 'processes segment:servers --halt-at 10%');
    const { rows, ref } = await group();
    const sent = await brokerSends(rows.slice(0, 10));
    await results(sent.slice(0, 2), new Set([sent[0]!.id, sent[1]!.id]));
    expect((await group()).g.state).toBe('running');
    expect(await noticeRows(`${ref} halted`)).toEqual([]);
    expect(await auditTxs('group.halted')).toEqual([]);
    expect(thread().join('\n')).not.toContain(`${ref} halted`);

    // Commits work again: the next failure halts the group, and the thread is told once.
    await tdb.db.execute(sql.raw('drop trigger halt_commit_fails on action_groups'));
    await results(sent.slice(2, 3), new Set([sent[2]!.id]));
    expect((await group()).g.state).toBe('halted');
    expect(thread().filter((t) => t.startsWith(`${ref} halted:`))).toEqual([
      expect.stringContaining(`${ref} halted: 3 endpoints of 20 failed (15%)`),
    ]);
    expect(await noticeRows(`${ref} halted`)).toEqual([expect.objectContaining({ state: 'sent' })]);
  });

  it('refuses wave options on a single endpoint and a canary that leaves nobody after it, storing nothing', async () => {
    await tp.say('ana', 'processes node-01 --canary 1');
    expect(privateTo('ana').at(-1)).toContain('--canary, --rate and --halt-at are for action groups');
    await tp.say('ana', 'processes node-01 node-02 node-03 --canary 3');
    expect(privateTo('ana').at(-1)).toContain(
      '--canary 3 leaves nothing after the canary: the group has 3 endpoints',
    );
    expect(await tdb.db.select().from(deliveries)).toHaveLength(0);
    expect(await tdb.db.select().from(actionGroups)).toHaveLength(0);
  });

  it('paces releases with --rate, by a hand-moved clock', async () => {
    await tp.say('ana', 'processes node-01 node-02 node-03 node-04 node-05 --rate 2/min');
    const { rows } = await group();
    const released = async () =>
      (await tdb.db.select().from(deliveries).where(eq(deliveries.held, false))).length;
    expect(await released()).toBe(1);
    expect(await brokerSends(rows)).toHaveLength(1);
    // 2 a minute: one every 30 s. Nothing moves until time does.
    tp.clock.advance(29_000);
    mt.advance(29_000);
    await tp.platform.waves.tick();
    expect(await released()).toBe(1);
    tp.clock.advance(1_000);
    mt.advance(1_000);
    await tp.platform.waves.tick();
    expect(await released()).toBe(2);
    tp.clock.advance(60_000);
    await tp.platform.waves.tick();
    expect(await released()).toBe(4);
    expect(await brokerSends(rows)).toHaveLength(3);
    tp.clock.advance(600_000);
    await tp.platform.waves.tick();
    expect(await released()).toBe(5);
  });
});
