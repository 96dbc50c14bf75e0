// An offline member of a group: the card's preview counts it as queued, the approved group runs at once on
// the connected agent, and the offline agent's delivery waits in the outbox until that agent (a real process)
// connects again, then runs and completes the request.
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RequestView } from '../bot/ports.ts';
import { deliveries, endpoints } from '../db/schema.ts';
import { type AgentProcess, spawnAgent, waitFor } from './helpers/agents.ts';
import { drivers } from './helpers/db.ts';
import { type E2E, type E2EAgent, startE2E } from './helpers/e2e.ts';

describe.each(drivers)('offline group members on %s', { timeout: 240_000 }, (driver) => {
  let e: E2E;
  let web: E2EAgent;
  let ws: E2EAgent;
  let again: AgentProcess | undefined;

  beforeAll(async () => {
    e = await startE2E(driver);
    web = await e.agent('web-01');
    ws = await e.agent('ws-02');
  }, 150_000);
  afterAll(async () => {
    await again?.kill();
    await e?.stop();
  });

  it('queues the offline member and runs it when its agent connects', async () => {
    await e.t.platform.scripts.upsert({ name: 'stamp', body: 'print("stamped")\n', description: 'writes' });
    await ws.process.stop();
    await waitFor(async () => {
      const [row] = await e.tdb.db
        .select({ brokerId: endpoints.brokerId })
        .from(endpoints)
        .where(eq(endpoints.id, ws.endpointId));
      return row?.brokerId === null;
    }, 'ws-02 to show offline');

    e.lapseWindows();
    const t = e.t;
    await t.say('analyst', 'run stamp web-01 ws-02 --reason "group run"');
    t.clock.advance(30_000);
    await t.stepUp(t.lastLinkFor('analyst'), e.analyst);
    const card = () =>
      t.chat.transcript.find((m) => m.kind === 'card' && m.view?.action === 'run') as
        | { view: RequestView; text: string }
        | undefined;
    expect(card()?.view.presence).toEqual({ online: 1, offline: 1 });
    expect(card()?.text).toContain('Preview: 1 run it now (online) · 1 offline, queued until they connect');

    const ref = card()!.view.ref;
    await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: ref, decision: 'approve' });
    t.clock.advance(30_000);
    await t.stepUp(t.lastLinkFor('commander'), e.commander);
    const id = card()!.view.id;
    const stateOf = async (endpointId: string) =>
      (
        await e.tdb.db
          .select({ state: deliveries.state })
          .from(deliveries)
          .where(and(eq(deliveries.requestId, id), eq(deliveries.endpointId, endpointId)))
      )[0]?.state;
    await waitFor(async () => (await stateOf(web.endpointId)) === 'succeeded', 'web-01 to run it', 60_000);
    expect(await stateOf(ws.endpointId)).toBe('queued');
    expect(card()!.view.state).toBe('dispatched');

    again = spawnAgent({ stateDir: ws.stateDir, args: ['--sandbox', ws.sandbox] });
    await waitFor(async () => (await stateOf(ws.endpointId)) === 'succeeded', 'ws-02 to run it', 90_000);
    await waitFor(() => card()!.view.state === 'completed', `${ref} to complete`, 30_000);
  });
});
