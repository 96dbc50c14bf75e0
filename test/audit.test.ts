import { sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';

/** drizzle wraps the driver error; the database's own message is in `cause`. */
function refusedAsAppendOnly(e: unknown): boolean {
  return /append-only/.test(String((e as Error & { cause?: Error }).cause?.message));
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
    const audit = createAuditService({ db: tdb.db, clock });
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

  it('verifies an intact chain and reports the count', async () => {
    const audit = await seed(5);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 5 });
  });

  it('keeps one gap-free chain when many appends race', async () => {
    const audit = createAuditService({ db: tdb.db, clock });
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        audit.append({ actorType: 'system', action: 'race', outcome: 'ok', details: { i } }),
      ),
    );
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 20 });
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
    await expect(audit.verify()).resolves.toMatchObject({ ok: false, brokenAt: 4, count: 3 });
  });

  it('detects a deleted row', async () => {
    const audit = await seed(5);
    await tdb.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
    await tdb.db.execute(sql`delete from audit_log where seq = 3`);
    await expect(audit.verify()).resolves.toMatchObject({ ok: false, brokenAt: 3 });
  });
});
