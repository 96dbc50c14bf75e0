// The broker's outbox repository on its own: what a claim, a batch of acknowledgements and a batch of results
// change, and that every change keeps its audit record in one chain that verifies.
import { randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { createOutboxRepo } from '../broker/outbox/outbox-repo.ts';
import { deliveries, endpoints, segments } from '../db/schema.ts';
import { insertRequest } from './helpers/agents.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { testChainKey } from './helpers/keys.ts';

describe.each(drivers)('the outbox repository (%s)', { timeout: 120_000 }, (driver) => {
  let tdb: TestDatabase;
  const clock = createTestClock();
  let audit: ReturnType<typeof createAuditService>;
  let repo: ReturnType<typeof createOutboxRepo>;
  let eps: string[];
  let requestId: string;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    repo = createOutboxRepo({ db: tdb.db, audit, clock, brokerId: 'b1' });
    const [seg] = await tdb.db
      .insert(segments)
      .values({ name: 's', activeResponseEnabled: true })
      .returning();
    eps = [randomUUID(), randomUUID(), randomUUID()];
    await tdb.db.insert(endpoints).values(
      eps.map((id, i) => ({
        id,
        hostname: `host-${i}`,
        os: 'linux' as const,
        segmentId: seg!.id,
        certFingerprint: id,
        certNotAfter: new Date(clock.now().getTime() + 86_400_000),
      })),
    );
    requestId = (await insertRequest(tdb.db, 'processes')).id;
  });
  afterEach(async () => {
    await tdb?.destroy();
  });

  async function enqueue(endpointId: string, ttlMs = 3_600_000) {
    const [d] = await tdb.db
      .insert(deliveries)
      .values({
        requestId,
        endpointId,
        action: 'processes',
        payload: { action: 'processes', params: {} },
        expiresAt: new Date(clock.now().getTime() + ttlMs),
      })
      .returning();
    return d!;
  }
  const actions = async () => (await audit.list({ limit: 1000 })).map((r) => r.action).reverse();

  it('sends each open delivery once per connection, counting attempts, and writes nothing for a wake-up with nothing new', async () => {
    const a = await enqueue(eps[0]!);
    const b = await enqueue(eps[0]!);
    const first = await repo.claim([eps[0]!], () => false);
    expect(first.toSend.map((r) => r.id)).toEqual([a.id, b.id]);
    expect(first.events.map((e) => e.state)).toEqual(['sent', 'sent']);
    // The same connection hears its own wake-up again: both are already on it.
    const again = await repo.claim([eps[0]!], (r) => [a.id, b.id].includes(r.id));
    expect(again).toEqual({ expired: [], toSend: [], events: [] });
    // A new connection gets them again, as second attempts, and no `sent` events.
    const reconnect = await repo.claim([eps[0]!], () => false);
    expect(reconnect.toSend.map((r) => r.id)).toEqual([a.id, b.id]);
    expect(reconnect.events).toEqual([]);
    expect((await repo.get(a.id))!.attempts).toBe(2);
    expect(await actions()).toEqual(['delivery.sent', 'delivery.sent']);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 2 });
  });

  it("acknowledges an agent's own deliveries only, also when another agent's ack for one shares the batch", async () => {
    const mine = await enqueue(eps[0]!);
    const theirs = await enqueue(eps[1]!);
    await repo.claim([eps[0]!, eps[1]!], () => false);
    const { decisions } = await repo.acknowledge([
      { id: theirs.id, endpointId: eps[0]! },
      { id: mine.id, endpointId: eps[0]! },
      { id: mine.id, endpointId: eps[0]! },
    ]);
    expect(decisions.map((d) => [d.id, d.go, d.reason])).toEqual([
      [theirs.id, false, 'unknown delivery'],
      [mine.id, true, undefined],
      [mine.id, true, undefined],
    ]);
    expect((await repo.get(theirs.id))!.state).toBe('sent');
    expect((await repo.get(mine.id))!.state).toBe('acknowledged');
    // A repeat on a later batch is answered again; the owner's own ack still works.
    const later = await repo.acknowledge([
      { id: mine.id, endpointId: eps[0]! },
      { id: theirs.id, endpointId: eps[1]! },
    ]);
    expect(later.decisions.map((d) => d.go)).toEqual([true, true]);
    expect(await actions()).toEqual(['delivery.sent', 'delivery.acknowledged', 'delivery.acknowledged']);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 3 });
  });

  it('says no to an ack that came after the time-to-live and expires the delivery with its record', async () => {
    const d = await enqueue(eps[0]!, 60_000);
    await repo.claim([eps[0]!], () => false);
    clock.advance(120_000);
    const { decisions, events } = await repo.acknowledge([{ id: d.id, endpointId: eps[0]! }]);
    expect(decisions[0]).toMatchObject({ go: false, reason: 'expired' });
    expect(events.map((e) => e.state)).toEqual(['expired']);
    expect((await repo.get(d.id))!.state).toBe('expired');
    expect(await actions()).toEqual(['delivery.sent', 'delivery.expired']);
  });

  it('records a result once when it arrives twice in one batch, and refuses one for a delivery never sent', async () => {
    const sent = await enqueue(eps[0]!);
    await repo.claim([eps[0]!], () => false);
    const queued = await enqueue(eps[1]!);
    const res = { id: sent.id, ok: true, result: { total: 0 } };
    const out = await repo.recordResults([
      { endpointId: eps[0]!, res },
      { endpointId: eps[0]!, res },
      { endpointId: eps[1]!, res: { id: queued.id, ok: true } },
      { endpointId: eps[1]!, res: { id: sent.id, ok: false, error: 'not mine' } },
    ]);
    expect(out.map((o) => o.status)).toEqual(['recorded', 'final', 'unknown', 'unknown']);
    const [row] = await tdb.db.select().from(deliveries).where(eq(deliveries.id, sent.id));
    expect(row).toMatchObject({ state: 'succeeded', result: { total: 0 }, error: null });
    expect((await repo.get(queued.id))!.state).toBe('queued');
    expect(await actions()).toEqual(['delivery.sent', 'delivery.result']);
  });

  it("commits a batch's effects with its results: each result's records after it, and an endpoint's last isolation result wins", async () => {
    const isolate = async (endpointId: string, action: 'isolate' | 'unisolate') => {
      const [d] = await tdb.db
        .insert(deliveries)
        .values({
          requestId,
          endpointId,
          action,
          payload: { action, params: {} },
          expiresAt: new Date(clock.now().getTime() + 3_600_000),
        })
        .returning();
      return d!;
    };
    const a1 = await isolate(eps[0]!, 'isolate');
    const a2 = await isolate(eps[0]!, 'unisolate');
    const b = await isolate(eps[1]!, 'isolate');
    const c = await isolate(eps[2]!, 'isolate');
    await repo.claim(eps, () => false);
    const flag = (row: typeof a1) => ({
      isolated: row.action === 'isolate',
      records: [
        {
          actorType: 'agent' as const,
          actorId: row.endpointId,
          action: `effect.${row.action}`,
          outcome: 'ok' as const,
          requestId: row.requestId,
          endpointId: row.endpointId,
        },
      ],
    });
    const out = await repo.recordResults([
      { endpointId: eps[0]!, res: { id: a1.id, ok: true }, effects: flag },
      { endpointId: eps[1]!, res: { id: b.id, ok: true }, effects: flag },
      { endpointId: eps[0]!, res: { id: a2.id, ok: true }, effects: flag },
      // A failed isolate changes no flag; its effects say so by leaving `isolated` out.
      { endpointId: eps[2]!, res: { id: c.id, ok: false, error: 'nft failed' }, effects: () => ({}) },
    ]);
    expect(out.map((o) => o.status)).toEqual(['recorded', 'recorded', 'recorded', 'recorded']);
    const flags = await tdb.db
      .select({ id: endpoints.id, isolated: endpoints.isolated, at: endpoints.isolationChangedAt })
      .from(endpoints);
    const byId = new Map(flags.map((f) => [f.id, f]));
    expect(byId.get(eps[0]!)).toMatchObject({ isolated: false, at: clock.now() });
    expect(byId.get(eps[1]!)).toMatchObject({ isolated: true, at: clock.now() });
    expect(byId.get(eps[2]!)).toMatchObject({ isolated: false, at: null });
    expect((await actions()).slice(1)).toEqual([
      'delivery.result',
      'effect.isolate',
      'delivery.result',
      'effect.isolate',
      'delivery.result',
      'effect.unisolate',
      'delivery.result',
    ]);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 8 });
  });

  it('keeps one chain that verifies while claims, acks and results race with other appends', async () => {
    const ds = [];
    for (let i = 0; i < 12; i++) ds.push(await enqueue(eps[i % 3]!));
    const noise = (n: number) =>
      Promise.all(
        Array.from({ length: n }, (_, i) =>
          audit.append({ actorType: 'system', action: 'noise', outcome: 'ok', details: { i } }),
        ),
      );
    const inTx = () =>
      tdb.db.transaction(async (tx) => {
        await audit.append({ actorType: 'system', action: 'noise.tx', outcome: 'ok' }, tx);
        await audit.append({ actorType: 'system', action: 'noise.tx', outcome: 'ok' }, tx);
      });
    await Promise.all([repo.claim(eps, () => false), noise(5), inTx()]);
    await Promise.all([
      repo.acknowledge(ds.slice(0, 6).map((d) => ({ id: d.id, endpointId: d.endpointId }))),
      repo.acknowledge(ds.slice(6).map((d) => ({ id: d.id, endpointId: d.endpointId }))),
      noise(5),
      inTx(),
    ]);
    await Promise.all([
      repo.recordResults(
        ds.slice(0, 6).map((d) => ({ endpointId: d.endpointId, res: { id: d.id, ok: true } })),
      ),
      repo.recordResults(ds.slice(6).map((d) => ({ endpointId: d.endpointId, res: { id: d.id, ok: true } }))),
      noise(5),
      inTx(),
    ]);
    const rows = await tdb.db.select({ state: deliveries.state }).from(deliveries);
    expect(rows.every((r) => r.state === 'succeeded')).toBe(true);
    const all = await actions();
    expect(all.filter((a) => a === 'delivery.result')).toHaveLength(12);
    expect(all.filter((a) => a === 'delivery.acknowledged')).toHaveLength(2);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: all.length });
  });
});
