// Scheduling an action group on 10,000 endpoints through the real core and the broker's outbox dispatcher:
// the deliveries are written in batches of 1,000 inside the dispatching transaction, each batch has one
// audit record naming every endpoint in it, the brokers are woken once per batch (and a batch wake-up names
// exactly the endpoints its audit record names), and the chat hears a handful of messages.
import { and, asc, eq, type SQL, sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DELIVERY_BATCH_SIZE } from '../bot/ports.ts';
import { endpointsOfWake, OUTBOX_CHANNEL } from '../broker/outbox/dispatcher.ts';
import { actionRequests, auditLog, deliveries, endpoints, segments } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';

const ENDPOINTS = 10_000;

describe.each(drivers)('scheduling a 10,000-endpoint group (%s)', { timeout: 600_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  const notified: { channel: string; payload: string }[] = [];

  beforeEach(async () => {
    notified.length = 0;
    tdb = await openTestDatabase(driver);
    // Every NOTIFY the platform sends is counted here, then sent for real.
    const notify = tdb.notify.bind(tdb);
    tdb.notify = async (channel, payload) => {
      notified.push({ channel, payload });
      await notify(channel, payload);
    };
    // Read-only work on up to 20,000 endpoints needs no approval: the group dispatches as it is asked.
    tp = await buildTestPlatform(tdb, { READ_ONLY_APPROVAL_ABOVE: '20000' });
    await tp.person('ana', ['active_response']);
  });

  afterEach(async () => {
    await tdb?.destroy();
  });

  /** The transaction ids (`x`) a query returns; PGlite answers `{ rows }`, postgres.js an array. */
  async function xminsOf(query: SQL): Promise<{ x: string }[]> {
    const out = await tdb.db.execute<{ x: string }>(query);
    return Array.isArray(out) ? out : (out as unknown as { rows: { x: string }[] }).rows;
  }

  async function seedFleet() {
    const [seg] = await tdb.db
      .insert(segments)
      .values({ name: 'fleet', activeResponseEnabled: true })
      .returning();
    const rows = Array.from({ length: ENDPOINTS }, (_, i) => ({
      hostname: `fleet-${String(i + 1).padStart(5, '0')}`,
      os: 'linux' as const,
      agentVersion: '2.0.0',
      segmentId: seg!.id,
    }));
    for (let i = 0; i < rows.length; i += 1000)
      await tdb.db.insert(endpoints).values(rows.slice(i, i + 1000));
  }

  it('writes deliveries in batches in one transaction, audits and wakes once per batch, and says little in chat', async () => {
    await seedFleet();
    await tp.say('ana', 'processes all --case IR-10K');
    const [req] = await tdb.db.select().from(actionRequests);
    expect(req!.state).toBe('dispatched');

    // One transaction wrote every delivery and moved the request: they share the inserting transaction id.
    const xminRows = await xminsOf(
      sql`select distinct xmin::text as x from deliveries where request_id = ${req!.id}`,
    );
    expect(xminRows).toHaveLength(1);
    // The batch audit records and the move to dispatched were written in that same transaction.
    const auditRows = await xminsOf(
      sql`select distinct xmin::text as x from audit_log where request_id = ${req!.id}
          and action in ('request.deliveries_queued', 'request.dispatched')`,
    );
    expect(auditRows.map((r) => r.x)).toEqual([xminRows[0]!.x]);

    const all = await tdb.db
      .select({ endpointId: deliveries.endpointId })
      .from(deliveries)
      .where(eq(deliveries.requestId, req!.id))
      .orderBy(asc(deliveries.seq));
    expect(all).toHaveLength(ENDPOINTS);
    const everyEndpoint = all.map((d) => d.endpointId);

    // One audit record per batch of 1,000, naming every endpoint of its batch, in the order they were written.
    const batches = await tdb.db
      .select({ details: auditLog.details })
      .from(auditLog)
      .where(and(eq(auditLog.requestId, req!.id), eq(auditLog.action, 'request.deliveries_queued')))
      .orderBy(asc(auditLog.seq));
    const expected = ENDPOINTS / DELIVERY_BATCH_SIZE;
    expect(batches).toHaveLength(expected);
    const named: string[] = [];
    batches.forEach((b, i) => {
      const d = b.details as { batch: number; of: number; deliveries: number; endpointIds: string[] };
      expect(d).toMatchObject({ batch: i + 1, of: expected, deliveries: DELIVERY_BATCH_SIZE });
      expect(d.endpointIds).toHaveLength(DELIVERY_BATCH_SIZE);
      named.push(...d.endpointIds);
    });
    expect(named).toEqual(everyEndpoint);
    // Ten batch records, the transitions and the creation: not a record per endpoint.
    const [{ n }] = (await tdb.db
      .select({ n: sql<number>`count(*)::int` })
      .from(auditLog)
      .where(eq(auditLog.requestId, req!.id))) as [{ n: number }];
    expect(n).toBeLessThan(20);

    // The brokers were woken once per batch, and each wake-up names exactly its batch's endpoints.
    const wakes = notified.filter((x) => x.channel === OUTBOX_CHANNEL);
    expect(wakes.map((w) => w.payload)).toEqual(
      Array.from({ length: expected }, (_, i) => `request:${req!.id}:${i}`),
    );
    for (const [i, w] of wakes.entries()) {
      const d = batches[i]!.details as { endpointIds: string[] };
      expect(await endpointsOfWake(tdb.db, w.payload)).toEqual(d.endpointIds);
    }

    // A handful of chat messages: the card, its dispatch note and the live progress message.
    const said = tp.chat.transcript.filter((m) => m.kind !== 'private');
    expect(said.length).toBeGreaterThan(0);
    expect(said.length).toBeLessThanOrEqual(4);
  });

  it('reads a malformed or foreign wake-up as naming nobody', async () => {
    expect(await endpointsOfWake(tdb.db, 'request:not-a-uuid:0')).toEqual([]);
    expect(
      await endpointsOfWake(tdb.db, `request:${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}:x`),
    ).toEqual([]);
    expect(
      await endpointsOfWake(tdb.db, `request:${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}:0`),
    ).toEqual([]);
    expect(await endpointsOfWake(tdb.db, 'a,b')).toEqual(['a', 'b']);
  });
});
