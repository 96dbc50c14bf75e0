// The embedded database on its own thread (db/pglite-thread.ts): drizzle gets PGlite's semantics through it
// (rows, types, errors with PostgreSQL's fields, transactions, savepoints, one connection), notifications
// cross, the event loop keeps turning while a statement runs, and a process holding it idle can exit.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { eq, sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { type Database, openDatabase, wrapPglite } from '../db/client.ts';
import { PgliteThread } from '../db/pglite-thread.ts';
import { organizations } from '../db/schema.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The first row of a raw `execute`. */
const first = (r: unknown) => (r as { rows: Record<string, unknown>[] }).rows[0] ?? {};

describe('PGlite on its own thread', () => {
  let database: Database;
  beforeAll(async () => {
    database = await openDatabase({ pgliteThread: 'worker' }); // in memory, migrated through the thread
  });
  afterAll(async () => {
    await database.close();
  });
  beforeEach(async () => {
    await database.db.execute(sql`drop table if exists counter`);
    await database.db.execute(sql`create table counter (id int primary key, n int not null)`);
    await database.db.execute(sql`insert into counter values (1, 0)`);
  });

  it('returns rows with their types and drizzle maps them', async () => {
    const r = await database.db.execute(
      sql`select 41 + 1 as answer, '\\x0102ff'::bytea as bytes, 'now'::timestamptz as at, null::text as nothing`,
    );
    const row = first(r);
    expect(row.answer).toBe(42);
    expect(Array.from(row.bytes as Uint8Array)).toEqual([1, 2, 255]);
    // drizzle asks for timestamps as PostgreSQL's text (its parsers cross as type OIDs) and parses them itself.
    expect(typeof row.at).toBe('string');
    expect(row.nothing).toBeNull();

    const [org] = await database.db
      .insert(organizations)
      .values({ name: 'Blue Team', allowedRoles: ['analyst', 'approver'] })
      .returning({ id: organizations.id, createdAt: organizations.createdAt });
    expect(org?.createdAt).toBeInstanceOf(Date);
    const found = await database.db
      .select()
      .from(organizations)
      .where(eq(organizations.id, org?.id ?? ''));
    expect(found[0]?.name).toBe('Blue Team');
    expect(found[0]?.allowedRoles).toEqual(['analyst', 'approver']);
  });

  it("gives PostgreSQL's error fields to the caller, so a unique violation is told apart", async () => {
    const err = await database.db
      .execute(sql`insert into counter values (1, 5)`)
      .then(() => undefined)
      .catch((e: Error & { cause?: { code?: string; constraint?: string; message?: string } }) => e);
    expect(err?.cause?.code).toBe('23505');
    expect(err?.cause?.constraint).toBe('counter_pkey');
    expect(err?.cause?.message).toMatch(/duplicate key/);
  });

  it('commits a transaction, rolls one back on a throw, and rolls back a failed savepoint alone', async () => {
    await database.db.transaction(async (tx) => {
      await tx.execute(sql`update counter set n = n + 1`);
      await tx
        .transaction(async (inner) => {
          await inner.execute(sql`update counter set n = n + 100`);
          throw new Error('inner fails');
        })
        .catch(() => {});
    });
    await expect(
      database.db.transaction(async (tx) => {
        await tx.execute(sql`update counter set n = n + 10`);
        throw new Error('outer fails');
      }),
    ).rejects.toThrow('outer fails');
    const r = await database.db.execute(sql`select n from counter`);
    expect(first(r).n).toBe(1);
  });

  it('runs one transaction at a time, as one connection does, and queries outside wait for it', async () => {
    const seen: number[] = [];
    const bump = () =>
      database.db.transaction(async (tx) => {
        const r = await tx.execute(sql`select n from counter`);
        const n = Number(first(r).n);
        await new Promise((resolve) => setTimeout(resolve, 5));
        await tx.execute(sql`update counter set n = ${n + 1}`);
      });
    const outside = async () => {
      const r = await database.db.execute(sql`select n from counter`);
      seen.push(Number(first(r).n));
    };
    await Promise.all([bump(), outside(), bump(), bump(), outside(), bump()]);
    const r = await database.db.execute(sql`select n from counter`);
    // Read-modify-write in parallel transactions loses no increment: none of them interleaved.
    expect(first(r).n).toBe(4);
    expect(seen).toHaveLength(2);
  });

  it('answers a statement inside a transaction without waiting for a turn of the event loop', async () => {
    // The transaction holds the one connection: its statements must not wait behind the loop's other work.
    const order: string[] = [];
    await database.db.transaction(async (tx) => {
      setImmediate(() => order.push('loop turned'));
      await tx.execute(sql`update counter set n = n + 1`);
      await tx.execute(sql`select n from counter`);
      order.push('statements answered');
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(order).toEqual(['statements answered', 'loop turned']);
  });

  it('delivers notifications to every listener of a channel until it unsubscribes', async () => {
    const a: string[] = [];
    const b: string[] = [];
    const offA = await database.listen('wake', (p) => a.push(p));
    const offB = await database.listen('wake', (p) => b.push(p));
    await database.notify('wake', 'one');
    await expect.poll(() => b).toEqual(['one']);
    await offA();
    await database.notify('wake', 'two');
    await expect.poll(() => b).toEqual(['one', 'two']);
    await offB();
    await database.notify('wake', 'three');
    await database.db.execute(sql`select 1`); // the notification, had it come, came before this answer
    expect(a).toEqual(['one']);
    expect(b).toEqual(['one', 'two']);
  });

  it('keeps the event loop turning while a long statement runs; in this thread PGlite holds it', async () => {
    const LONG = sql`select count(*) from generate_series(1, 1000000)`;
    const turnsDuring = async (db: Database) => {
      let turns = 0;
      const timer = setInterval(() => turns++, 1);
      await db.db.execute(LONG);
      clearInterval(timer);
      return turns;
    };
    expect(await turnsDuring(database)).toBeGreaterThan(0);
    const inThread = wrapPglite(await PGlite.create());
    try {
      expect(await turnsDuring(inThread)).toBe(0);
    } finally {
      await inThread.close();
    }
  });

  it('refuses work after close with a clear error', async () => {
    const thread = await PgliteThread.start({});
    await thread.close();
    expect(thread.closed).toBe(true);
    await expect(thread.query('select 1')).rejects.toThrow(/embedded database is closed/);
  });
});

describe('PGlite thread start-up and process lifetime', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ar-pglite-thread-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("rejects with PGlite's reason when the data directory cannot be opened", async () => {
    const file = join(dir, 'not-a-directory');
    writeFileSync(file, 'x');
    await expect(PgliteThread.start({ dataDir: file })).rejects.toThrow();
  });

  it('keeps its data on disk across a close and a reopen', async () => {
    const first = await openDatabase({ dataDir: dir, pgliteThread: 'worker' });
    await first.db.insert(organizations).values({ name: 'Blue Team' });
    await first.close();
    const again = await openDatabase({ dataDir: dir, pgliteThread: 'worker' });
    try {
      const rows = await again.db.select().from(organizations);
      expect(rows.map((o) => o.name)).toContain('Blue Team');
    } finally {
      await again.close();
    }
  });

  it('keeps a process alive while an answer is awaited, and lets it exit when idle without a close', async () => {
    // Inside the project, so that the script's imports resolve from its node_modules.
    const scripts = join(ROOT, 'test/artifacts');
    mkdirSync(scripts, { recursive: true });
    const script = join(scripts, `pglite-idle-${process.pid}.mts`);
    onTestFinished(() => rmSync(script, { force: true }));
    writeFileSync(
      script,
      `import { sql } from 'drizzle-orm';
       import { openDatabase } from ${JSON.stringify(join(ROOT, 'db/client.ts'))};
       const d = await openDatabase({ pgliteThread: 'worker' });
       const r = await d.db.execute(sql\`select pg_sleep(0.3), 7 as seven\`);
       console.log('answer', (r.rows[0] as { seven: number }).seven);`,
    );
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        ['--import', 'tsx', script],
        { cwd: ROOT, timeout: 60_000 },
        (_e, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr }),
      );
    });
    expect(out.stderr).toBe('');
    expect(out.stdout.trim()).toBe('answer 7');
    expect(out.code).toBe(0);
  });
});
