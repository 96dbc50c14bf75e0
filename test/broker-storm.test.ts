// A reconnect storm of 500 agents against two broker processes on one PostgreSQL, with one broker SIGKILLed
// while deliveries are in flight: its agents come back through the other broker. Every delivery must be
// acknowledged once and run once, none lost, and the audit chain both brokers wrote must verify.
import { join } from 'node:path';
import { inArray, like } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { systemClock } from '../bot/ports.ts';
import { createOutboxDispatcher } from '../broker/outbox/dispatcher.ts';
import { loadOrCreatePki } from '../broker/pki/pki.ts';
import { openDatabase } from '../db/client.ts';
import { auditLog, deliveries } from '../db/schema.ts';
import { type BrokerProcess, dispatch, freePort, spawnBroker, tempDir, waitFor } from './helpers/agents.ts';
import { createPostgresDatabase } from './helpers/db.ts';
import { testChainKey } from './helpers/keys.ts';
import { createSimFleet } from './helpers/sim-fleet.ts';

const AGENTS = 500;

/** Every delivery id named by the audit records of `action` (one record may cover a batch). */
function idsIn(records: { details: unknown }[]): string[] {
  return records.flatMap((r) => {
    const d = r.details as { deliveryId?: string; deliveries?: { id: string }[] };
    return d.deliveries ? d.deliveries.map((x) => x.id) : d.deliveryId ? [d.deliveryId] : [];
  });
}

describe.skipIf(!process.env.DATABASE_URL)(
  'a reconnect storm across two broker processes (skipped: DATABASE_URL is not set; CI sets it)',
  () => {
    const cleanups: (() => Promise<void> | void)[] = [];
    afterEach(async () => {
      for (const c of cleanups.splice(0)) await c();
    });

    it('acknowledges and runs each of 500 agents’ deliveries once when one broker is SIGKILLed mid-storm', async () => {
      const data = tempDir('ar-storm-');
      cleanups.push(data.remove);
      const fresh = await createPostgresDatabase();
      cleanups.push(fresh.drop);
      const db = await openDatabase({ url: fresh.url });
      cleanups.unshift(() => db.close());
      const pki = await loadOrCreatePki({ dir: join(data.dir, 'pki'), serverNames: ['localhost'] });
      const fleet = await createSimFleet(db, {
        n: AGENTS,
        issue: (csr, id, now) => pki.issueClientCert(csr, id, now),
        caPem: pki.caPem,
        resultDelayMs: 3000,
      });
      cleanups.unshift(() => {
        for (const ag of fleet.agents) ag.stop();
      });

      const [portA, portB] = [await freePort(), await freePort()];
      const brokers: BrokerProcess[] = [];
      cleanups.unshift(async () => {
        for (const b of brokers) await b.kill();
      });
      const a = await spawnBroker({
        dataDir: data.dir,
        port: portA,
        brokerId: 'storm-a',
        databaseUrl: fresh.url,
      });
      brokers.push(a);
      const b = await spawnBroker({
        dataDir: data.dir,
        port: portB,
        brokerId: 'storm-b',
        databaseUrl: fresh.url,
      });
      brokers.push(b);

      // Every endpoint offline with one queued delivery, then all of them connect at once: half to each
      // broker, and to B alone once A is gone (what a load balancer does).
      const dispatcher = createOutboxDispatcher({ db: db.db, notify: db.notify });
      const rows = await dispatch(
        db,
        dispatcher,
        systemClock,
        fleet.agents.map((ag) => ({ endpointId: ag.id, action: 'isolate' })),
      );
      const ids = rows.map((r) => r.id);
      let aAlive = true;
      fleet.agents.forEach((ag, i) => {
        ag.start(() => (i % 2 === 0 && aAlive ? portA : portB));
      });

      const succeeded = async () =>
        (
          await db.db
            .select({ id: deliveries.id })
            .from(deliveries)
            .where(inArray(deliveries.state, ['succeeded']))
        ).length;
      // Kill A once some results are in and plenty are still running on its agents.
      await waitFor(async () => (await succeeded()) >= AGENTS / 5, 'a fifth of the results', 120_000);
      aAlive = false;
      await a.kill();
      await waitFor(async () => (await succeeded()) === AGENTS, 'every result', 180_000);

      const states = await db.db
        .select({ state: deliveries.state, attempts: deliveries.attempts })
        .from(deliveries)
        .where(inArray(deliveries.id, ids));
      expect(states.filter((s) => s.state !== 'succeeded')).toEqual([]);
      // The kill landed mid-flight: some deliveries went out again through B.
      expect(states.some((s) => s.attempts > 1)).toBe(true);

      // Run once: exactly one execution per delivery across the fleet.
      expect(ids.filter((id) => fleet.stats.executed.get(id) !== 1)).toEqual([]);
      // Acknowledged once and its result recorded once, whichever broker recorded it.
      const records = await db.db.select().from(auditLog).where(like(auditLog.action, 'delivery.%'));
      const count = (action: string) => {
        const m = new Map<string, number>();
        for (const id of idsIn(records.filter((r) => r.action === action))) m.set(id, (m.get(id) ?? 0) + 1);
        return m;
      };
      const acked = count('delivery.acknowledged');
      const results = count('delivery.result');
      expect(ids.filter((id) => acked.get(id) !== 1)).toEqual([]);
      expect(ids.filter((id) => results.get(id) !== 1)).toEqual([]);

      const audit = createAuditService({ db: db.db, clock: systemClock, chainKey: testChainKey });
      const verified = await audit.verify();
      expect(verified.ok).toBe(true);
    }, 600_000);
  },
);
