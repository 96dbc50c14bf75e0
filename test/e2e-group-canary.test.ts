// A canary wave end to end: three real agent processes, a script that exits 1, `--canary 1`. The canary's
// failure halts the group, the thread says why, and the broker never sends the other two endpoints
// anything, even when woken for them.
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actionGroups, deliveries, endpoints } from '../db/schema.ts';
import { waitFor } from './helpers/agents.ts';
import { drivers } from './helpers/db.ts';
import { type E2E, startE2E } from './helpers/e2e.ts';

describe.each(drivers)('a canary wave end to end on %s', { timeout: 240_000 }, (driver) => {
  let e: E2E;

  beforeAll(async () => {
    e = await startE2E(driver);
    for (const host of ['web-01', 'web-02', 'web-03']) await e.agent(host);
  }, 180_000);
  afterAll(async () => {
    await e?.stop();
  });

  it('halts the group when the canary fails, and sends nothing to the others', async () => {
    const { t } = e;
    await t.platform.scripts.upsert({
      name: 'fleet-fix',
      body: 'import sys\nprint("refusing to change this host")\nsys.exit(1)\n',
      paramsSchema: {},
      description: 'exits 1 everywhere',
    });
    e.lapseWindows();
    await t.say('analyst', 'run fleet-fix web-01 web-02 web-03 --canary 1 --reason "fleet fix"');
    t.clock.advance(30_000);
    await t.stepUp(t.lastLinkFor('analyst'), e.analyst);
    const card = await t.chat.waitFor((m) => m.kind === 'card');
    const ref = card.view!.ref;
    await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: ref, decision: 'approve' });
    t.clock.advance(30_000);
    await t.stepUp(t.lastLinkFor('commander'), e.commander);

    const halted = await t.chat.waitFor(
      (m) => m.kind === 'thread' && m.text.startsWith(`${ref} halted`),
      90_000,
    );
    // All three are online, so the canary is the first by name.
    expect(halted.text).toContain('the canary wave failed on web-01 (failed: exit code 1)');
    expect(halted.text).toContain(`resume ${ref}`);
    const [g] = await e.tdb.db.select().from(actionGroups);
    expect(g).toMatchObject({ state: 'halted', canary: 1 });

    const rows = await e.tdb.db
      .select({ host: endpoints.hostname, d: deliveries })
      .from(deliveries)
      .innerJoin(endpoints, eq(endpoints.id, deliveries.endpointId))
      .where(eq(deliveries.requestId, g!.requestId));
    const byHost = Object.fromEntries(rows.map((r) => [r.host, r.d]));
    expect(byHost['web-01']).toMatchObject({ state: 'failed', held: false });
    // Wake the broker for the others as a reconnect would: they stay held, never sent.
    const others = [byHost['web-02']!, byHost['web-03']!];
    await e.tb.broker.dispatcher.wake(others.map((d) => d.endpointId));
    await new Promise((r) => setTimeout(r, 1000));
    for (const d of others) {
      const [now] = await e.tdb.db.select().from(deliveries).where(eq(deliveries.id, d.id));
      expect(now).toMatchObject({ state: 'queued', held: true, attempts: 0, sentAt: null });
    }
    const sent = await t.platform.audit.list({ requestId: g!.requestId, actionPrefix: 'delivery.sent' });
    expect(sent.flatMap((r) => (r.details as { deliveries: unknown[] }).deliveries)).toHaveLength(1);
    // The request waits (dispatched, not completed) until someone resumes or cancels it.
    await waitFor(async () => (await t.platform.requests.getView(ref)).state === 'dispatched', 'state');
    const running = await e.tdb.db
      .select()
      .from(deliveries)
      .where(and(eq(deliveries.requestId, g!.requestId), eq(deliveries.held, false)));
    expect(running).toHaveLength(1);
  });
});
