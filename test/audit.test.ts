import { createHash, createHmac, randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { canonicalJson } from '../bot/canonical-json.ts';
import { auditLog } from '../db/schema.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { testChainKey } from './helpers/keys.ts';

/** drizzle wraps the driver error; the database's own message is in `cause`. */
function refusedAsAppendOnly(e: unknown): boolean {
  return /append-only/.test(String((e as Error & { cause?: Error }).cause?.message));
}

type Row = typeof auditLog.$inferSelect;

/** The canonical bytes the chain hashes, as an attacker reading the source would rebuild them. */
function canonical(r: Row): string {
  return canonicalJson({
    seq: r.seq,
    at: r.at.toISOString(),
    actorType: r.actorType,
    actorId: r.actorId,
    action: r.action,
    outcome: r.outcome,
    requestId: r.requestId,
    endpointId: r.endpointId,
    details: r.details,
    prevHash: r.prevHash,
  });
}

describe.each(drivers)('audit log on %s', (driver) => {
  let tdb: TestDatabase;
  const clock = createTestClock();
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
  });
  afterEach(async () => {
    await tdb.destroy();
  });

  async function seed(n: number) {
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    for (let i = 0; i < n; i++) {
      clock.advance(1000);
      await audit.append({
        actorType: 'user',
        actorId: `u${i}`,
        action: 'request.created',
        outcome: 'ok',
        details: { i, script: 'print("hi")\n', nested: { b: 1, a: [1, 'x', null] } },
      });
    }
    return audit;
  }

  /**
   * What someone with write access to the database but without the chain key can do: change record `from`
   * and recompute every hash after it with `hash`, so every link points at its predecessor again.
   */
  async function rewriteFrom(from: number, hash: (canonicalBytes: string) => string) {
    await tdb.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
    const rows = await tdb.db.select().from(auditLog).orderBy(auditLog.seq);
    let prev = rows[from - 2]?.hash ?? '0'.repeat(64);
    for (const r of rows.slice(from - 1)) {
      const changed: Row = {
        ...r,
        prevHash: prev,
        details: r.seq === from ? { ...(r.details as object), i: 999 } : r.details,
      };
      changed.hash = hash(canonical(changed));
      await tdb.db.execute(
        sql`update audit_log set details = ${JSON.stringify(changed.details)}::jsonb, prev_hash = ${changed.prevHash}, hash = ${changed.hash} where seq = ${r.seq}`,
      );
      prev = changed.hash;
    }
    await tdb.db.execute(sql`alter table audit_log enable trigger audit_log_no_update_delete`);
  }

  it('verifies an intact chain and reports the count', async () => {
    const audit = await seed(5);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 5 });
  });

  it('keys every record: the stored hash is the HMAC under the chain key, not a plain SHA-256', async () => {
    await seed(1);
    const [row] = await tdb.db.select().from(auditLog);
    expect(row!.hash).toBe(createHmac('sha256', testChainKey).update(canonical(row!)).digest('hex'));
    expect(row!.hash).not.toBe(createHash('sha256').update(canonical(row!)).digest('hex'));
  });

  it('cannot be built without a chain key', () => {
    expect(() => createAuditService({ db: tdb.db, clock, chainKey: Buffer.alloc(0) })).toThrow(/chain key/);
  });

  it('keeps one gap-free chain when many appends race', async () => {
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        audit.append({ actorType: 'system', action: 'race', outcome: 'ok', details: { i } }),
      ),
    );
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 20 });
  });

  it('chains many appends inside one transaction, interleaved with appends outside it, and keeps them with their transaction', async () => {
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    await audit.append({ actorType: 'system', action: 'before', outcome: 'ok' });
    // Appends from outside queue behind the transaction's lock and land after it.
    let outside: Promise<unknown> | undefined;
    await tdb.db.transaction(async (tx) => {
      for (let i = 0; i < 30; i++) {
        await audit.append({ actorType: 'system', action: 'in-tx', outcome: 'ok', details: { i } }, tx);
        if (i === 3)
          outside = Promise.all(
            Array.from({ length: 5 }, (_, k) =>
              audit.append({ actorType: 'system', action: 'outside', outcome: 'ok', details: { k } }),
            ),
          );
      }
    });
    await outside;
    const rows = await tdb.db.select().from(auditLog).orderBy(auditLog.seq);
    expect(rows.map((r) => r.action)).toEqual([
      'before',
      ...Array(30).fill('in-tx'),
      ...Array(5).fill('outside'),
    ]);
    expect(rows.filter((r) => r.action === 'in-tx').map((r) => (r.details as { i: number }).i)).toEqual(
      Array.from({ length: 30 }, (_, i) => i),
    );
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 36 });

    // A transaction that rolls back leaves none of its records, and the chain goes on from the last kept one.
    await expect(
      tdb.db.transaction(async (tx) => {
        for (let i = 0; i < 3; i++)
          await audit.append({ actorType: 'system', action: 'lost', outcome: 'ok' }, tx);
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    await audit.append({ actorType: 'system', action: 'after', outcome: 'ok' });
    await tdb.db.transaction(async (tx) => {
      await audit.append({ actorType: 'system', action: 'again', outcome: 'ok' }, tx);
      await audit.append({ actorType: 'system', action: 'again', outcome: 'ok' }, tx);
    });
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 39 });
  });

  it("links a transaction's next record to the real head when something else in the transaction moved it", async () => {
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    const other = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    await tdb.db.transaction(async (tx) => {
      await audit.append({ actorType: 'system', action: 'first', outcome: 'ok' }, tx);
      // Another writer in the same transaction (another service instance) appends behind this one's back.
      await other.append({ actorType: 'system', action: 'sideways', outcome: 'ok' }, tx);
      await audit.append({ actorType: 'system', action: 'second', outcome: 'ok' }, tx);
    });
    const rows = await tdb.db.select().from(auditLog).orderBy(auditLog.seq);
    expect(rows.map((r) => [r.seq, r.action])).toEqual([
      [1, 'first'],
      [2, 'sideways'],
      [3, 'second'],
    ]);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 3 });
  });

  it('links a batch after the real head when the head its statement saw is stale, and after the real one when it is not', async () => {
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    await audit.append({ actorType: 'system', action: 'first', outcome: 'ok' });
    const [seen] = await tdb.db.select({ head: audit.headSeen() }).from(sql`(select 1) as one`);
    // Written after that statement read the head: the head it saw is now stale.
    await audit.append({ actorType: 'system', action: 'meanwhile', outcome: 'ok' });
    await tdb.db.transaction(async (tx) => {
      await tx.execute(sql`select 1 where ${audit.lockFirst()}`);
      await audit.appendAll(
        [
          { actorType: 'system', action: 'batch', outcome: 'ok', details: { i: 0 } },
          { actorType: 'system', action: 'batch', outcome: 'ok', details: { i: 1 } },
        ],
        tx,
        seen!.head,
      );
    });
    await tdb.db.transaction(async (tx) => {
      const [now] = await tx
        .select({ head: audit.headSeen() })
        .from(sql`(select 1) as one`)
        .where(audit.lockFirst());
      await audit.appendAll([{ actorType: 'system', action: 'current', outcome: 'ok' }], tx, now!.head);
    });
    const rows = await tdb.db.select().from(auditLog).orderBy(auditLog.seq);
    expect(rows.map((r) => [r.seq, r.action])).toEqual([
      [1, 'first'],
      [2, 'meanwhile'],
      [3, 'batch'],
      [4, 'batch'],
      [5, 'current'],
    ]);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 5 });
  });

  it('refuses UPDATE, DELETE and TRUNCATE through the database itself', async () => {
    await seed(2);
    await expect(tdb.db.execute(sql`update audit_log set action = 'x' where seq = 1`)).rejects.toSatisfy(
      refusedAsAppendOnly,
    );
    await expect(tdb.db.execute(sql`delete from audit_log where seq = 2`)).rejects.toSatisfy(
      refusedAsAppendOnly,
    );
    await expect(tdb.db.execute(sql`truncate audit_log`)).rejects.toSatisfy(refusedAsAppendOnly);
  });

  it('detects a row changed by a superuser who disabled the trigger, naming the row', async () => {
    const audit = await seed(6);
    await tdb.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
    await tdb.db.execute(sql`update audit_log set details = '{"i": 99}'::jsonb where seq = 4`);
    await tdb.db.execute(sql`alter table audit_log enable trigger audit_log_no_update_delete`);
    await expect(audit.verify()).resolves.toMatchObject({
      ok: false,
      kind: 'rewritten',
      brokenAt: 4,
      count: 3,
    });
  });

  it('detects a deleted row', async () => {
    const audit = await seed(5);
    await tdb.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
    await tdb.db.execute(sql`delete from audit_log where seq = 3`);
    await expect(audit.verify()).resolves.toMatchObject({ ok: false, kind: 'missing', brokenAt: 3 });
  });

  it('refuses a rewrite re-hashed with plain SHA-256 after an edit, naming the edited row', async () => {
    const audit = await seed(8);
    await rewriteFrom(3, (bytes) => createHash('sha256').update(bytes).digest('hex'));
    const res = await audit.verify();
    expect(res).toMatchObject({ ok: false, kind: 'rewritten', brokenAt: 3, count: 2 });
    expect(res.ok || res.problem).toMatch(/record 3 was changed after it was written.*without the audit key/);
  });

  it('refuses a rewrite re-hashed with another key, naming the edited row', async () => {
    const audit = await seed(8);
    const wrongKey = randomBytes(32);
    await rewriteFrom(5, (bytes) => createHmac('sha256', wrongKey).update(bytes).digest('hex'));
    await expect(audit.verify()).resolves.toMatchObject({
      ok: false,
      kind: 'rewritten',
      brokenAt: 5,
      count: 4,
    });
  });

  it('refuses a chain replaced from the first record with plain hashes when nothing vouches for it', async () => {
    const audit = await seed(4);
    await rewriteFrom(1, (bytes) => createHash('sha256').update(bytes).digest('hex'));
    await expect(audit.verify()).resolves.toMatchObject({ ok: false, kind: 'unanchored', brokenAt: 1 });
  });
});
