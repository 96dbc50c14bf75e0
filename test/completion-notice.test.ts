// The completion of a request is told once, after its result, even when the result is held by another
// platform process (one that claimed it to post it and then died): the pass that completes the request does
// not announce a completion whose result nobody has told yet; the catch-up that reports the result once the
// dead process's claim runs out tells both, in that order.
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOutboxRepo } from '../broker/outbox/outbox-repo.ts';
import { actionRequests, deliveries } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';

describe.each(drivers)('the completion notice (%s)', { timeout: 120_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb);
    await tp.person('ana', ['active_response']);
    await tp.endpoint('web-01');
  });
  afterEach(async () => {
    await tdb?.destroy();
  });

  it('waits for a result another process holds, then tells the result and the completion once, in order', async () => {
    await tp.say('ana', 'processes web-01');
    const card = tp.chat.transcript.find((m) => m.kind === 'card')!;
    const thread = () =>
      tp.chat.transcript
        .filter((m) => m.kind === 'thread' && m.threadId === card.messageId)
        .map((m) => m.text);
    const [req] = await tdb.db.select().from(actionRequests);
    expect(req!.state).toBe('dispatched');

    // The broker's side: the delivery is sent and its result stored.
    const repo = createOutboxRepo({
      db: tdb.db,
      audit: tp.platform.audit,
      clock: tp.clock,
      brokerId: 'broker-test',
    });
    const [d] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, req!.id));
    await repo.claim([d!.endpointId], () => false);
    const [out] = await repo.recordResults([
      { endpointId: d!.endpointId, res: { id: d!.id, ok: true, result: { processes: [], total: 0 } } },
    ]);
    expect(out?.status).toBe('recorded');
    if (out?.status !== 'recorded') return;

    // Another platform process claimed the result to post it, and died.
    await tdb.db.update(deliveries).set({ reportClaimedAt: tp.clock.now() }).where(eq(deliveries.id, d!.id));
    await tp.platform.reporter.deliveryChanged(out.event);
    await tp.platform.sender.kick();
    const [completed] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, req!.id));
    expect(completed!.state).toBe('completed');
    // Completed, but neither the result nor the completion is told while the result is held.
    expect(thread().filter((l) => /^web-01:/.test(l))).toHaveLength(0);
    expect(thread().filter((l) => /completed:/.test(l))).toHaveLength(0);

    // Once the dead process's claim runs out, a catch-up tells the result, then the completion.
    tp.clock.advance(31_000);
    expect(await tp.platform.catchUpDeliveries()).toBe(1);
    await tp.platform.sender.kick();
    const told = thread();
    expect(told.filter((l) => /^web-01:/.test(l))).toHaveLength(1);
    expect(told.filter((l) => /completed:/.test(l))).toHaveLength(1);
    expect(told.findIndex((l) => /^web-01:/.test(l))).toBeLessThan(
      told.findIndex((l) => /completed:/.test(l)),
    );

    // Nothing more on another catch-up or a repeated event.
    expect(await tp.platform.catchUpDeliveries()).toBe(0);
    await tp.platform.reporter.deliveryChanged(out.event);
    await tp.platform.sender.kick();
    expect(thread().filter((l) => /completed:/.test(l))).toHaveLength(1);
    expect(thread().filter((l) => /^web-01:/.test(l))).toHaveLength(1);
  });
});
