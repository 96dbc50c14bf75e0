// Lost notifications leave nothing stuck (issue: faults lose nothing). A wake-up NOTIFY sent while a
// broker's LISTEN session is down, or a delivery event sent while the platform's is down, is lost by
// PostgreSQL; the broker sweeps for queued work, both catch up once their session is back, and a result is
// marked reported in the transaction that writes its post into the chat outbox, whose sender retries a post
// chat refused.
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDeliveryReporter } from '../bot/deliveries/delivery-reporter.ts';
import { createOutboxDispatcher } from '../broker/outbox/dispatcher.ts';
import { openDatabase } from '../db/client.ts';
import { chatOutbox, deliveries } from '../db/schema.ts';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  enrolAgent,
  silentLogger,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { type E2E, type E2EAgent, startE2E } from './helpers/e2e.ts';
import { openPgProxy, type PgProxy } from './helpers/pg-proxy.ts';

describe.each(drivers)('work and results after lost notifications, on %s', { timeout: 180_000 }, (driver) => {
  let tdb: TestDatabase | undefined;
  let tb: TestBroker | undefined;
  let e: E2E | undefined;
  const agents: AgentProcess[] = [];
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.kill();
    await tb?.stop();
    await tdb?.destroy();
    await e?.stop();
    tb = tdb = e = undefined;
  });

  it('sends a delivery whose wake-up never arrived on the next outbox sweep', async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb, { outboxSweepMs: 200 });
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'sweep-01', ['--dry-run']);
    agents.push(agent);
    // A dispatcher whose NOTIFY goes nowhere: the wake-up is lost, as during a database reconnect.
    const deaf = createOutboxDispatcher({ db: tdb.db, notify: async () => {} });
    const [row] = await dispatch(tdb, deaf, tb.clock, [{ endpointId, action: 'isolate' }]);
    await waitFor(
      async () => (await deliveryState(tdb!, row!.id)).state === 'succeeded',
      'the swept delivery to run',
    );
    expect(agent.count((l) => l.msg === 'running delivery' && l.id === row!.id)).toBe(1);
  });

  it('keeps a result whose post failed in the chat outbox and posts it once, with the completion, on retry', async () => {
    e = await startE2E(driver, { outboxSweepMs: 60_000 });
    const flaky = await e.agent('flaky-chat-01');
    const decoy = e.decoy(flaky);
    // The first result post fails, as a chat outage would make it.
    const console = e.t.chat.chat;
    let failed = 0;
    e.t.platform.router.register('console', {
      ...console,
      async replyInThread(ref, text) {
        if (/^flaky-chat-01:/.test(text) && failed++ === 0) throw new Error('chat is down');
        return console.replyInThread(ref, text);
      },
    });
    const done = e.act(`kill flaky-chat-01 ${decoy.pid} --reason "beaconing"`);
    await waitFor(() => failed > 0, 'the result post to fail', 90_000);
    const [row] = await e.tdb.db.select().from(deliveries);
    // Reported together with its message, which waits in the outbox for its retry.
    expect((await deliveryState(e.tdb, row!.id)).reportedAt).not.toBeNull();
    // The sender puts the refused row back with its error right after the call failed.
    const waiting = await waitFor(async () => {
      const [r] = await e!.tdb.db.select().from(chatOutbox).where(eq(chatOutbox.lastError, 'chat is down'));
      return r;
    }, 'the refused message back in the outbox with its error');
    expect(waiting).toMatchObject({ attempts: 1, kind: 'thread_reply' });

    // Two platform processes catch up at once: neither has anything left to report.
    const p = e.t.platform;
    const other = createDeliveryReporter({
      db: p.db,
      outbox: p.outbox,
      requests: p.requests,
      progress: p.progress,
      waves: p.waves,
      clock: e.t.clock,
      logger: silentLogger,
      publicUrl: 'http://ar.test',
    });
    expect(await Promise.all([p.catchUpDeliveries(), other.catchUp()])).toEqual([0, 0]);
    const r = await done;
    expect(r.thread.filter((l) => /^flaky-chat-01:/.test(l))).toHaveLength(1);
    expect(r.thread.filter((l) => /completed/.test(l))).toHaveLength(1);
    // In the thread's order: the completion waited behind the result it follows.
    const at = (re: RegExp) => r.thread.findIndex((l) => re.test(l));
    expect(at(/^flaky-chat-01:/)).toBeLessThan(at(/completed/));
    // Marked sent once the platform accepted it, just after the thread got it.
    const sent = await waitFor(async () => {
      const [r] = await e!.tdb.db.select().from(chatOutbox).where(eq(chatOutbox.id, waiting.id));
      return r?.state === 'sent' ? r : undefined;
    }, 'the retried message marked sent');
    expect(sent).toMatchObject({ state: 'sent', attempts: 1 });
  });
});

describe.skipIf(!drivers.includes('postgres'))(
  'database connections cut under a running platform, on postgres',
  { timeout: 180_000 },
  () => {
    let e: E2E;
    let web: E2EAgent;
    let brokerLink: PgProxy;
    let platformLink: PgProxy;
    const restarted: AgentProcess[] = [];

    beforeAll(async () => {
      // The broker and the platform each reach PostgreSQL through a proxy of their own, so a test can take
      // the database away from one of them while the other (and the test) still reach it. The sweep is
      // slowed right down: what is tested here is the catch-up when the LISTEN session comes back.
      e = await startE2E('postgres', {
        outboxSweepMs: 600_000,
        async connect(tdb) {
          brokerLink = await openPgProxy(tdb.url!);
          platformLink = await openPgProxy(tdb.url!);
          return {
            broker: await openDatabase({ url: brokerLink.url, migrate: false, maxConnections: 3 }),
            platform: await openDatabase({ url: platformLink.url, migrate: false, maxConnections: 3 }),
          };
        },
      });
      web = await e.agent('reconnect-web-01');
    }, 120_000);
    afterAll(async () => {
      for (const a of restarted) await a.kill();
      await e?.stop();
    });

    it("sends work approved while the broker's database connection was down, once it is back", async () => {
      const decoy = e.decoy(web);
      const r = await e.act(`kill reconnect-web-01 ${decoy.pid} --reason "beaconing"`, {
        // The approval commits while the broker cannot hear its wake-up: that NOTIFY is lost for certain.
        beforeApprove: () => brokerLink.cut(),
        afterApprove: () => brokerLink.restore(),
      });
      expect(r.view.state).toBe('completed');
      expect(r.thread.join('\n')).toContain(`reconnect-web-01: killed 1 process (${decoy.pid} sleep)`);
      expect(web.process.count((l) => l.msg === 'running delivery')).toBe(1);
    });

    it("reports a result stored while the platform's database connection was down, once it is back", async () => {
      await web.process.kill();
      await waitFor(() => !e.tb.broker.connected().includes(web.endpointId), 'the agent to be offline');
      const decoy = e.decoy(web);
      const r = await e.act(`kill reconnect-web-01 ${decoy.pid} --reason "beaconing"`, {
        async afterApprove() {
          // The delivery waits for the offline agent; the platform loses its connection, the agent comes back
          // and runs it, and the broker's delivery event goes out while the platform cannot hear it.
          await platformLink.cut();
          restarted.push(spawnAgent({ stateDir: web.stateDir, args: ['--sandbox', web.sandbox] }));
          await waitFor(async () => {
            const rows = await e.tdb.db.select().from(deliveries).where(eq(deliveries.state, 'succeeded'));
            return rows.length === 2;
          }, 'the result to be stored');
          await platformLink.restore();
        },
      });
      expect(r.view.state).toBe('completed');
      expect(r.thread.filter((l) => /^reconnect-web-01:/.test(l))).toEqual([
        `reconnect-web-01: killed 1 process (${decoy.pid} sleep).`,
      ]);
    });
  },
);
