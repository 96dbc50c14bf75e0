// Broker processes (broker/main.ts) as separate OS processes: a SIGKILL mid-dispatch and a restart, and two
// brokers sharing one PostgreSQL. With PGlite only one process may open the database, so the test reads and
// writes it only while no broker runs.
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq, inArray } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { systemClock } from '../bot/ports.ts';
import { createOutboxDispatcher } from '../broker/outbox/dispatcher.ts';
import { loadOrCreatePki } from '../broker/pki/pki.ts';
import { type Database, openDatabase } from '../db/client.ts';
import { deliveries } from '../db/schema.ts';
import {
  type AgentProcess,
  type BrokerProcess,
  dispatch,
  endpointByHost,
  freePort,
  newToken,
  scriptDelivery,
  spawnAgent,
  spawnBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { createPostgresDatabase, type Driver, drivers } from './helpers/db.ts';
import { testChainKey } from './helpers/keys.ts';

const SIDE_EFFECT = [
  'import os, time, uuid',
  'import active_response as ar',
  'time.sleep(0.1)',
  'open(os.path.join(ar.params()["dir"], str(uuid.uuid4())), "w").close()',
].join('\n');

function harness() {
  const procs: (BrokerProcess | AgentProcess)[] = [];
  const cleanups: (() => Promise<void> | void)[] = [];
  /** The database the broker processes use: a fresh PostgreSQL database, or PGlite files under dataDir. */
  async function setup(driver: Driver) {
    const data = tempDir('ar-brokerproc-');
    cleanups.push(data.remove);
    let url: string | undefined;
    if (driver === 'postgres') {
      const fresh = await createPostgresDatabase();
      url = fresh.url;
      cleanups.push(fresh.drop);
    }
    /** Runs fn against the database; for PGlite the caller must have stopped every broker first. */
    async function withDb<T>(fn: (db: Database) => Promise<T>): Promise<T> {
      const db = await openDatabase({ url, dataDir: url ? undefined : data.dir });
      try {
        return await fn(db);
      } finally {
        await db.close();
      }
    }
    return { dataDir: data.dir, url, withDb };
  }
  return { procs, cleanups, setup };
}

describe.each(drivers)('broker processes on %s', (driver) => {
  const { procs, cleanups, setup } = harness();
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill();
    for (const c of cleanups.splice(0)) await c();
  });

  const recorded = (brokers: BrokerProcess[]) =>
    new Set(
      brokers.flatMap((b) =>
        b.lines.filter((l) => l.msg === 'delivery result recorded').map((l) => l.deliveryId),
      ),
    );

  it('runs every delivery exactly once when a broker is killed mid-dispatch and restarted', async () => {
    const { dataDir, url, withDb } = await setup(driver);
    const port = await freePort();
    // The platform CA exists before the first broker starts, as it would after an install; the token pins it.
    const { caPem } = await loadOrCreatePki({ dir: join(dataDir, 'pki'), serverNames: ['localhost'] });
    const token = await withDb((db) => newToken(db, systemClock, caPem));
    const b1 = await spawnBroker({ dataDir, port, brokerId: 'b1', databaseUrl: url });
    procs.push(b1);
    const stateDir = tempDir('ar-agent-').dir;
    let agent = spawnAgent({ stateDir, broker: `wss://localhost:${port}`, token, hostname: 'kill-01' });
    procs.push(agent);
    await agent.waitForLog((l) => l.msg === 'connected', 'the agent to connect');
    await agent.stop();
    await b1.stop();

    const marks = join(dataDir, 'marks');
    mkdirSync(marks);
    const N = 12;
    const ids = await withDb(async (db) => {
      const ep = await endpointByHost(db, 'kill-01');
      const dispatcher = createOutboxDispatcher({ db: db.db, notify: db.notify });
      const rows = await dispatch(
        db,
        dispatcher,
        systemClock,
        Array.from({ length: N }, () => ({
          endpointId: ep!.id,
          ...scriptDelivery('mark', SIDE_EFFECT, { dir: marks }),
        })),
      );
      return rows.map((r) => r.id);
    });

    const b2 = await spawnBroker({ dataDir, port, brokerId: 'b1', databaseUrl: url });
    procs.push(b2);
    agent = spawnAgent({ stateDir });
    procs.push(agent);
    await waitFor(() => readdirSync(marks).length >= 3, 'a few deliveries to run');
    await b2.kill();
    const b3 = await spawnBroker({ dataDir, port, brokerId: 'b1', databaseUrl: url });
    procs.push(b3);
    await waitFor(() => recorded([b2, b3]).size === N, 'every result to be recorded', 60_000);
    await b3.stop();
    await agent.stop();

    expect(readdirSync(marks)).toHaveLength(N);
    expect(readdirSync(join(stateDir, 'journal'))).toHaveLength(N);
    const states = await withDb((db) =>
      db.db.select({ state: deliveries.state }).from(deliveries).where(inArray(deliveries.id, ids)),
    );
    expect(states.map((s) => s.state)).toEqual(Array(N).fill('succeeded'));
  }, 180_000);
});

// PGlite is one process's database by design, so scale-out is a PostgreSQL-only story.
describe.skipIf(!process.env.DATABASE_URL)(
  'two broker processes on one PostgreSQL (skipped: DATABASE_URL is not set; CI sets it)',
  () => {
    const { procs, cleanups, setup } = harness();
    afterEach(async () => {
      for (const p of procs.splice(0)) await p.kill();
      for (const c of cleanups.splice(0)) await c();
    });

    it('wakes the broker that holds the agent when another process dispatches', async () => {
      const { dataDir, url } = await setup('postgres');
      const [portA, portB] = [await freePort(), await freePort()];
      const a = await spawnBroker({ dataDir, port: portA, brokerId: 'broker-a', databaseUrl: url });
      procs.push(a);
      const b = await spawnBroker({ dataDir, port: portB, brokerId: 'broker-b', databaseUrl: url });
      procs.push(b);
      const db = await openDatabase({ url });
      cleanups.unshift(() => db.close());
      const caPem = readFileSync(join(dataDir, 'pki', 'ca.pem'), 'utf8');
      const onA = spawnAgent({
        stateDir: tempDir('ar-agent-').dir,
        broker: `wss://localhost:${portA}`,
        token: await newToken(db, systemClock, caPem),
        hostname: 'on-a',
        args: ['--dry-run'],
      });
      const onB = spawnAgent({
        stateDir: tempDir('ar-agent-').dir,
        broker: `wss://localhost:${portB}`,
        token: await newToken(db, systemClock, caPem),
        hostname: 'on-b',
        args: ['--dry-run'],
      });
      procs.push(onA, onB);
      await onA.waitForLog((l) => l.msg === 'connected', 'agent on A');
      await onB.waitForLog((l) => l.msg === 'connected', 'agent on B');
      const epA = (await endpointByHost(db, 'on-a'))!;
      const epB = (await endpointByHost(db, 'on-b'))!;
      expect([epA.brokerId, epB.brokerId]).toEqual(['broker-a', 'broker-b']);

      const dispatcher = createOutboxDispatcher({ db: db.db, notify: db.notify });
      const rows = await dispatch(db, dispatcher, systemClock, [
        { endpointId: epA.id, action: 'isolate' },
        { endpointId: epB.id, action: 'isolate' },
      ]);
      const done = await waitFor(async () => {
        const r = await db.db
          .select()
          .from(deliveries)
          .where(
            inArray(
              deliveries.id,
              rows.map((x) => x.id),
            ),
          );
        return r.every((x) => x.state === 'succeeded') ? r : undefined;
      }, 'both deliveries to succeed');
      const byEndpoint = new Map(done.map((d) => [d.endpointId, d.brokerId]));
      expect(byEndpoint.get(epA.id)).toBe('broker-a');
      expect(byEndpoint.get(epB.id)).toBe('broker-b');
      const audit = createAuditService({ db: db.db, clock: systemClock, chainKey: testChainKey });
      expect((await audit.verify()).ok).toBe(true);
      const [row] = await db.db.select().from(deliveries).where(eq(deliveries.id, rows[1]!.id));
      expect(row!.attempts).toBe(1);
    });
  },
);
