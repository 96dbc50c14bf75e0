// PostgreSQL roles (`db setup-roles`): the owner keeps the tables and the audit trigger, the application role
// may only INSERT and SELECT on audit_log. Connected as the application role, each way of getting rid of a
// record (UPDATE, DELETE, TRUNCATE, disabling or dropping the trigger, replacing its function) is refused by
// PostgreSQL's privileges, before the trigger even runs. PGlite has a single user, so this is PostgreSQL only.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { createUserService } from '../bot/users/user-service.ts';
import { type Database, openDatabase } from '../db/client.ts';
import { createTestClock } from './helpers/clock.ts';
import { createPostgresDatabase } from './helpers/db.ts';
import { TEST_SECRET_KEY, testChainKey } from './helpers/keys.ts';

const run = promisify(execFile);

describe.skipIf(!process.env.DATABASE_URL)(
  'PostgreSQL roles (skipped: DATABASE_URL is not set; CI sets it)',
  () => {
    const role = `ar_app_${randomBytes(4).toString('hex')}`;
    const password = `pw-${randomBytes(12).toString('hex')}`;
    let ownerUrl: string;
    let appUrl: string;
    let dataDir: string;
    let dropDatabase: () => Promise<void>;
    let app: Database | undefined;

    async function cli(env: Record<string, string>, ...args: string[]) {
      try {
        const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], {
          env: {
            ...process.env,
            DATA_DIR: dataDir,
            SECRET_KEY: TEST_SECRET_KEY.toString('hex'),
            LOG_LEVEL: 'silent',
            ...env,
          },
        });
        return { code: 0, stdout, stderr };
      } catch (e) {
        const err = e as { code: number; stdout: string; stderr: string };
        return { code: err.code, stdout: err.stdout, stderr: err.stderr };
      }
    }

    beforeAll(async () => {
      dataDir = mkdtempSync(join(tmpdir(), 'ar-roles-'));
      const fresh = await createPostgresDatabase();
      ownerUrl = fresh.url;
      dropDatabase = fresh.drop;
      const u = new URL(ownerUrl);
      u.username = role;
      u.password = password;
      appUrl = u.toString();
    });
    afterAll(async () => {
      await app?.close();
      await dropDatabase();
      // Roles belong to the cluster, not the database: drop it once its database (and grants) are gone.
      const admin = postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
      await admin.unsafe(`drop role if exists ${role}`);
      await admin.end();
      rmSync(dataDir, { recursive: true, force: true });
    });

    it('creates the application role with its password and grants, and says how to run with it', async () => {
      const file = join(dataDir, 'app-password');
      writeFileSync(file, `${password}\n`, { mode: 0o600 });
      const res = await cli(
        { DATABASE_URL: '', DATABASE_MIGRATION_URL: '' },
        'db',
        'setup-roles',
        '--app-role',
        role,
        '--password-file',
        file,
      );
      // No URL at all: roles need PostgreSQL.
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(/Roles exist only on PostgreSQL/);

      const ok = await cli(
        { DATABASE_URL: ownerUrl },
        'db',
        'setup-roles',
        '--app-role',
        role,
        '--password-file',
        file,
      );
      expect(ok.stderr).toBe('');
      expect(ok.code).toBe(0);
      expect(ok.stdout).toMatch(new RegExp(`Role ${role}: created, password set from the file`));
      expect(ok.stdout).toMatch(/except audit_log: SELECT, INSERT only/);
      const admin = postgres(ownerUrl, { max: 1, onnotice: () => {} });
      const [r] = await admin`select rolcanlogin, rolpassword is not null as has_password, rolsuper
                             from pg_authid where rolname = ${role}`;
      await admin.end();
      expect(r).toEqual({ rolcanlogin: true, has_password: true, rolsuper: false });

      // Idempotent: a second run (after an upgrade) changes nothing and succeeds.
      const again = await cli({ DATABASE_URL: ownerUrl }, 'db', 'setup-roles', '--app-role', role);
      expect(again.stdout).toMatch(new RegExp(`Role ${role}: already existed\\.`));
    });

    it('refuses to make the owner the application role', async () => {
      const res = await cli({ DATABASE_URL: ownerUrl }, 'db', 'setup-roles', '--app-role', 'postgres');
      expect(res.code).toBe(1);
      expect(res.stderr).toMatch(/"postgres" owns the tables; the application role must be a different role/);
    });

    it('lets the application role add and read audit records and work the other tables', async () => {
      // Migrations go through the owner's URL, everything else through the application role's.
      app = await openDatabase({ url: appUrl, migrationUrl: ownerUrl, maxConnections: 2 });
      const clock = createTestClock();
      const audit = createAuditService({ db: app.db, clock, chainKey: testChainKey });
      await audit.append({ actorType: 'system', action: 'roles.test', outcome: 'ok' });
      const users = createUserService({ db: app.db, audit, clock, secretKey: TEST_SECRET_KEY });
      await users.createUser({
        username: 'rolly',
        displayName: 'Rolly',
        password: 'a long enough password 1',
      });
      await expect(audit.verify()).resolves.toMatchObject({ ok: true });
      const [me] = (await app.db.execute(sql`select current_user as who`)) as unknown as { who: string }[];
      expect(me!.who).toBe(role);
    });

    it.each([
      ['UPDATE', `update audit_log set action = 'x' where seq = 1`, /permission denied for table audit_log/],
      ['DELETE', 'delete from audit_log where seq = 1', /permission denied for table audit_log/],
      ['TRUNCATE', 'truncate audit_log', /permission denied for table audit_log/],
      [
        'ALTER TABLE ... DISABLE TRIGGER',
        'alter table audit_log disable trigger audit_log_no_update_delete',
        /must be owner of table audit_log/,
      ],
      [
        'DROP TRIGGER',
        'drop trigger audit_log_no_update_delete on audit_log',
        /must be owner of (table|relation) audit_log/,
      ],
      [
        'replacing the trigger function',
        `create or replace function audit_log_refuse_change() returns trigger as $$ begin return new; end $$ language plpgsql`,
        // PostgreSQL 15+ refuses CREATE in schema public first; older versions refuse the replacement.
        /permission denied for schema public|must be owner of function audit_log_refuse_change/,
      ],
    ])('refuses %s to the application role', async (_what, statement, refusal) => {
      const asApp = postgres(appUrl, { max: 1, onnotice: () => {} });
      try {
        const err = await asApp.unsafe(statement).then(
          () => undefined,
          (e: Error) => e,
        );
        expect(err?.message).toMatch(refusal);
      } finally {
        await asApp.end();
      }
      const owner = postgres(ownerUrl, { max: 1, onnotice: () => {} });
      const [row] =
        await owner`select count(*)::int as n, bool_and(action <> 'x') as untouched from audit_log`;
      const [trigger] =
        await owner`select tgenabled from pg_trigger where tgname = 'audit_log_no_update_delete'`;
      await owner.end();
      expect(row).toMatchObject({ untouched: true });
      expect(row!.n).toBeGreaterThanOrEqual(2);
      expect(trigger).toEqual({ tgenabled: 'O' });
    });

    it('runs the admin CLI as the application role with migrations through DATABASE_MIGRATION_URL', async () => {
      const env = { DATABASE_URL: appUrl, DATABASE_MIGRATION_URL: ownerUrl };
      expect((await cli(env, 'segment', 'add', 'servers', '--enable')).code).toBe(0);
      const verify = await cli(env, 'audit', 'verify');
      expect(verify.stdout).toMatch(/^OK: \d+ records/);
      expect(verify.code).toBe(0);
    });
  },
);
