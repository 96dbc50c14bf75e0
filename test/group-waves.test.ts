// Staged waves of an action group on the real core and a real database: a halt at the failure threshold
// holds everything not yet sent, `resume` and `cancel` from the thread each need the right role and a
// step-up, and `--rate` paces releases by a hand-moved clock. Results go through the broker's own outbox
// repository and the delivery reporter; the broker's claim is what shows what would be sent.
import { and, eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeliveryEvent } from '../bot/ports.ts';
import { createOutboxRepo } from '../broker/outbox/outbox-repo.ts';
import { actionGroups, deliveries, type Os } from '../db/schema.ts';
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
