// The admin CLI as an operator runs it: a real process against the embedded database (and PostgreSQL when
// DATABASE_URL is set), including detection of an audit row rewritten in SQL by a superuser.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, openDatabase } from '../db/client.ts';
import { createPostgresDatabase, drivers } from './helpers/db.ts';

const run = promisify(execFile);

describe.each(drivers)('admin CLI on %s', (driver) => {
  let dataDir: string;
  let url: string | undefined;
  let drop: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'ar-cli-'));
    if (driver === 'postgres') {
      const fresh = await createPostgresDatabase();
      url = fresh.url;
      drop = fresh.drop;
    }
  });
  afterAll(async () => {
    rmSync(dataDir, { recursive: true, force: true });
    await drop?.();
  });

  async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const env = { ...process.env, DATA_DIR: dataDir, DATABASE_URL: url ?? '', LOG_LEVEL: 'silent' };
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

  /** Opens the same database the CLI uses, as a superuser would with psql. */
  async function superuser(): Promise<Database> {
    return openDatabase({ url, dataDir: url ? undefined : dataDir });
  }

  it('administers users, roles and segments, and each change lands in the audit chain', async () => {
    expect((await cli('segment', 'add', 'servers', '--enable')).stdout).toMatch(
      /Added segment servers \(Active Response enabled\)/,
    );
    const added = await cli('user', 'add', 'alice', '--name', 'Alice Analyst');
    expect(added.stdout).toMatch(/Password \(shown once\): \S{16,}/);
    expect((await cli('role', 'grant', 'alice', 'active_response')).stdout).toMatch(/Granted/);
    const verify = await cli('audit', 'verify');
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^OK: 4 records/);
  });

  it('refuses bad input with the right form and exit code 2, changing nothing', async () => {
    const before = await cli('audit', 'verify');
    const badRole = await cli('role', 'grant', 'alice', 'wizard');
    expect(badRole.code).toBe(2);
    expect(badRole.stderr).toMatch(/"wizard" is not a role/);
    expect(badRole.stderr).toMatch(/Usage: npm run cli -- role grant <username>/);
    const unknown = await cli('frobnicate');
    expect(unknown.code).toBe(2);
    expect((await cli('audit', 'verify')).stdout).toBe(before.stdout);
  });

  it('exports the log as JSON lines', async () => {
    const out = join(dataDir, 'audit.jsonl');
    expect((await cli('audit', 'export', '--format', 'jsonl', '--out', out)).code).toBe(0);
    const lines = readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.seq)).toEqual([1, 2, 3, 4]);
    expect(lines[0]).toMatchObject({ action: 'segment.created', prevHash: '0'.repeat(64) });
  });

  it('detects a row a superuser rewrote in SQL and names the row', async () => {
    const db = await superuser();
    try {
      await db.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
      await db.db.execute(
        sql`update audit_log set details = jsonb_set(details, '{segment}', '"other"') where seq = 1`,
      );
      await db.db.execute(sql`alter table audit_log enable trigger audit_log_no_update_delete`);
    } finally {
      await db.close();
    }
    const verify = await cli('audit', 'verify');
    expect(verify.code).toBe(3);
    expect(verify.stdout).toMatch(/BROKEN at record 1: record 1 was changed after it was written/);
  });
});
