// `npm run bench:audit`: audit appends from 8 concurrent writers, each awaiting its own append before the next
// (as request handlers do), on PGlite and on PostgreSQL when DATABASE_URL is set. Two paths are measured on
// the same fresh database: standalone appends (group-committed by the audit service) and appends inside a
// transaction of their own (the lock, head read and commit paid per record, as every append did before
// group commit), and appends made in batches of 100 inside one transaction, as the broker's claim, ack and
// result transactions make them. After each, the whole chain is verified with the key. Prints one JSON
// document.
//
//   npm run bench:audit [-- --quick]        (RECORDS=20000 by default, 4,000 with --quick)
import { randomBytes } from 'node:crypto';
import { auditChainKey } from '../bot/audit/audit-keys.ts';
import { type AuditService, createAuditService } from '../bot/audit/audit-service.ts';
import { systemClock } from '../bot/ports.ts';
import { type Driver, drivers, openTestDatabase } from '../test/helpers/db.ts';

const QUICK = process.argv.includes('--quick');
const RECORDS = Number(process.env.RECORDS ?? (QUICK ? 4000 : 20_000));
const WRITERS = 8;

type Path = 'group_commit' | 'per_record_transaction' | 'batch_transaction';
/** Records per transaction on the batch path. */
const BATCH = 100;

async function run(audit: AuditService, db: Parameters<typeof createAuditService>[0]['db'], path: Path) {
  const perWriter = Math.ceil(RECORDS / WRITERS);
  const append = (i: number, w: number) => {
    const entry = {
      actorType: 'system' as const,
      actorId: `writer-${w}`,
      action: 'bench.append',
      outcome: 'ok' as const,
      details: { i, path },
    };
    return path === 'group_commit' ? audit.append(entry) : db.transaction((tx) => audit.append(entry, tx));
  };
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: WRITERS }, async (_, w) => {
      if (path === 'batch_transaction') {
        for (let i = 0; i < perWriter; i += BATCH)
          await db.transaction(async (tx) => {
            for (let k = i; k < Math.min(i + BATCH, perWriter); k++)
              await audit.append(
                {
                  actorType: 'system',
                  actorId: `writer-${w}`,
                  action: 'bench.append',
                  outcome: 'ok',
                  details: { i: k, path },
                },
                tx,
              );
          });
        return;
      }
      for (let i = 0; i < perWriter; i++) await append(i, w);
    }),
  );
  const ms = performance.now() - t0;
  return {
    records: perWriter * WRITERS,
    ms: Math.round(ms),
    records_per_s: Math.round((perWriter * WRITERS) / (ms / 1000)),
  };
}

async function benchDriver(driver: Driver) {
  const database = await openTestDatabase(driver);
  try {
    const audit = createAuditService({
      db: database.db,
      clock: systemClock,
      chainKey: auditChainKey(randomBytes(32)),
    });
    // Untimed warm-up: JIT, prepared statements and the connection pool.
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        audit.append({ actorType: 'system', action: 'bench.warmup', outcome: 'ok', details: { i } }),
      ),
    );
    const out: Record<string, unknown> = { driver, writers: WRITERS };
    for (const path of ['group_commit', 'per_record_transaction', 'batch_transaction'] as Path[]) {
      const r = await run(audit, database.db, path);
      const t0 = performance.now();
      const verified = await audit.verify();
      out[path] = {
        ...r,
        chain_ok: verified.ok,
        chain_records: verified.ok ? verified.count : undefined,
        verify_ms: Math.round(performance.now() - t0),
      };
      process.stderr.write(`[bench:audit ${driver}] ${path}: ${JSON.stringify(out[path])}\n`);
    }
    return out;
  } finally {
    await database.destroy();
  }
}

const results = [];
for (const d of drivers) results.push(await benchDriver(d));
console.log(
  JSON.stringify(
    {
      records_per_path: RECORDS,
      target_records_per_s: 5000,
      note: 'each writer awaits its append before the next; chain verified with the key after each path',
      results,
    },
    null,
    2,
  ),
);
process.exit(0);
