// `audit verify` as an operator runs it (a real CLI process) after the attacks it exists for: the newest
// records deleted after a checkpoint, and a record edited with every later hash recomputed without the key.
// Each failure names the first sequence number affected and exits 3. Records are written in-process with
// the same SECRET_KEY the CLI gets, as the server would write them.
import { execFile } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { checkpointSignatureValid } from '../bot/audit/audit-checkpoint.ts';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { canonicalJson } from '../bot/canonical-json.ts';
import { type Database, openDatabase } from '../db/client.ts';
import { auditLog } from '../db/schema.ts';
import { createTestClock } from './helpers/clock.ts';
import { createPostgresDatabase, drivers } from './helpers/db.ts';
import { TEST_SECRET_KEY, testChainKey } from './helpers/keys.ts';

const run = promisify(execFile);

describe.each(drivers)('audit verify from the CLI on %s', (driver) => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
  });

  /** A fresh installation: its DATA_DIR and, on PostgreSQL, its database; `records` appended to the log. */
  async function install(records: number) {
    const dataDir = mkdtempSync(join(tmpdir(), 'ar-audit-cli-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    let url: string | undefined;
    if (driver === 'postgres') {
      const fresh = await createPostgresDatabase();
      url = fresh.url;
      cleanups.push(fresh.drop);
    }
    /** The database as a superuser with psql would have it; closed again before the CLI runs (PGlite). */
    async function asSuperuser<T>(fn: (db: Database) => Promise<T>): Promise<T> {
      const db = await openDatabase({ url, dataDir: url ? undefined : dataDir });
      try {
        return await fn(db);
      } finally {
        await db.close();
      }
    }
    await asSuperuser(async (db) => {
      const audit = createAuditService({ db: db.db, clock: createTestClock(), chainKey: testChainKey });
      for (let i = 1; i <= records; i++)
        await audit.append({
          actorType: 'user',
          actorId: `u${i}`,
          action: 'role.granted',
          outcome: 'ok',
          details: { i },
        });
    });
    async function cli(...args: string[]) {
      const env = {
        ...process.env,
        DATA_DIR: dataDir,
        DATABASE_URL: url ?? '',
        SECRET_KEY: TEST_SECRET_KEY.toString('hex'),
        LOG_LEVEL: 'silent',
      };
      try {
        const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], {
          env,
        });
        return { code: 0, stdout, stderr };
      } catch (e) {
        const err = e as { code: number; stdout: string; stderr: string };
        return { code: err.code, stdout: err.stdout, stderr: err.stderr };
      }
    }
    return { dataDir, cli, asSuperuser, checkpointFile: join(dataDir, 'audit-checkpoints.jsonl') };
  }

  it('reports the newest records deleted after a checkpoint as TRUNCATED, naming the first missing seq', async () => {
    const inst = await install(6);
    const signed = await inst.cli('audit', 'checkpoint');
    expect(signed.stdout).toMatch(/Signed checkpoint for record 6/);

    // An auditor checks the checkpoint with nothing but the printed public key.
    const pem = (await inst.cli('audit', 'public-key')).stdout;
    expect(pem).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    const line = JSON.parse(readFileSync(inst.checkpointFile, 'utf8').trim());
    expect(checkpointSignatureValid(line, createPublicKey(pem))).toBe(true);

    await inst.asSuperuser(async (db) => {
      await db.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
      await db.db.execute(sql`delete from audit_log where seq >= 5`);
      await db.db.execute(sql`alter table audit_log enable trigger audit_log_no_update_delete`);
    });
    const verify = await inst.cli('audit', 'verify');
    expect(verify.code).toBe(3);
    expect(verify.stdout).toMatch(
      /^BROKEN at record 5: the newest record is 4 but the checkpoint signed at \S+ covers record 6: records 5 to 6 were deleted\. TRUNCATED: first missing seq 5\./,
    );
  });

  it('reports a record edited and every later hash recomputed without the key as REWRITTEN from that seq', async () => {
    const inst = await install(6);
    await inst.asSuperuser(async (db) => {
      await db.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
      const rows = await db.db.select().from(auditLog).orderBy(auditLog.seq);
      let prev = rows[1]!.hash;
      for (const r of rows.slice(2)) {
        const details = r.seq === 3 ? { i: 3, role: 'platform_admin' } : r.details;
        const body = canonicalJson({
          ...r,
          at: r.at.toISOString(),
          details,
          prevHash: prev,
          hash: undefined,
        });
        const hash = createHash('sha256').update(body).digest('hex');
        await db.db.execute(
          sql`update audit_log set details = ${JSON.stringify(details)}::jsonb, prev_hash = ${prev}, hash = ${hash} where seq = ${r.seq}`,
        );
        prev = hash;
      }
      await db.db.execute(sql`alter table audit_log enable trigger audit_log_no_update_delete`);
    });
    const verify = await inst.cli('audit', 'verify');
    expect(verify.code).toBe(3);
    expect(verify.stdout).toMatch(
      /^BROKEN at record 3: record 3 was changed after it was written: .* re-hashed without the audit key\. REWRITTEN from seq 3\. 2 records before it verify\./,
    );
  });

  it('reports a forged checkpoint line, and says OK with the last checkpoint when all is well', async () => {
    const inst = await install(3);
    await inst.cli('audit', 'checkpoint');
    const ok = await inst.cli('audit', 'verify');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^OK: 3 records, chain intact .*; last signed checkpoint: record 3 at /);

    const genuine = JSON.parse(readFileSync(inst.checkpointFile, 'utf8').trim());
    appendFileSync(inst.checkpointFile, `${JSON.stringify({ ...genuine, seq: 9 })}\n`);
    const verify = await inst.cli('audit', 'verify');
    expect(verify.code).toBe(3);
    expect(verify.stdout).toMatch(
      /^BROKEN at record 9: the checkpoint for record 9 on line 2 .* bad signature.*FORGED CHECKPOINT for seq 9/,
    );
  });
});
