// PostgreSQL roles for a hardened install. The owner role (DATABASE_MIGRATION_URL) owns every table and the
// audit log's trigger function and runs the migrations; the application role (DATABASE_URL) gets plain
// data access and, on audit_log, only INSERT and SELECT. Only a table's owner (or a superuser) may ALTER it,
// so the application role can neither disable nor drop the append-only trigger, and without UPDATE, DELETE
// or TRUNCATE it cannot rewrite the log even with the trigger gone. A compromised application can add
// records; it cannot take any back.
import postgres from 'postgres';

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export class RoleSetupError extends Error {
  override name = 'RoleSetupError';
}

export interface RoleSetupResult {
  appRole: string;
  owner: string;
  database: string;
  created: boolean;
  passwordSet: boolean;
  tables: number;
}

/**
 * Creates the application role when missing (LOGIN, with `password` when given) and grants it: CONNECT on
 * the database, USAGE on schema public, SELECT/INSERT/UPDATE/DELETE on every table except audit_log
 * (SELECT, INSERT only), USAGE/SELECT on the sequences, and the same by default on tables and sequences
 * the owner creates later (future migrations). Idempotent: re-running re-asserts audit_log's limits.
 * Run it connected as the owner, after the migrations. Refuses an application role that is the owner, a
 * superuser or a member of the owner role, since each of those could disable the trigger.
 */
export async function setupAppRole(
  ownerUrl: string,
  opts: { appRole: string; password?: string },
): Promise<RoleSetupResult> {
  const { appRole, password } = opts;
  if (!ROLE_NAME.test(appRole))
    throw new RoleSetupError(
      `"${appRole}" is not a role name this command accepts: use lowercase letters, digits and _ (e.g. ar_app)`,
    );
  const sql = postgres(ownerUrl, { max: 1, onnotice: () => {} });
  try {
    return await sql.begin(async (tx) => {
      const [me] = await tx<{ owner: string; database: string }[]>`
        select current_user as owner, current_database() as database`;
      const { owner, database } = me!;
      const [table] = await tx<{ tableowner: string }[]>`
        select tableowner from pg_tables where schemaname = 'public' and tablename = 'audit_log'`;
      if (!table) throw new RoleSetupError('audit_log does not exist here: run the migrations first');
      if (appRole === owner || appRole === table.tableowner)
        throw new RoleSetupError(
          `"${appRole}" owns the tables; the application role must be a different role (e.g. ar_app)`,
        );
      const [existing] = await tx<{ rolsuper: boolean; member: boolean }[]>`
        select rolsuper, pg_has_role(rolname, ${table.tableowner}, 'MEMBER') as member
        from pg_roles where rolname = ${appRole}`;
      if (existing?.rolsuper)
        throw new RoleSetupError(
          `"${appRole}" is a superuser and could disable the audit trigger; pick another role`,
        );
      if (existing?.member)
        throw new RoleSetupError(
          `"${appRole}" is a member of the owner role "${table.tableowner}" and could alter the audit log; pick another role`,
        );

      // Role and database names cannot be bind parameters; format() quotes them (%I) and the password (%L)
      // on the server, so nothing typed here is ever spliced into SQL by hand.
      const runf = async (template: string, ...args: string[]) => {
        const [row] = await tx<
          { stmt: string }[]
        >`select format(${template}, variadic ${args}::text[]) as stmt`;
        await tx.unsafe(row!.stmt);
      };

      if (!existing) {
        await (password !== undefined
          ? runf('CREATE ROLE %I LOGIN PASSWORD %L', appRole, password)
          : runf('CREATE ROLE %I LOGIN', appRole));
      } else if (password !== undefined) {
        await runf('ALTER ROLE %I LOGIN PASSWORD %L', appRole, password);
      }
      await runf('GRANT CONNECT ON DATABASE %I TO %I', database, appRole);
      await runf('GRANT USAGE ON SCHEMA public TO %I', appRole);
      await runf('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %I', appRole);
      await runf('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', appRole);
      // The audit log: add and read, nothing else (no UPDATE, DELETE, TRUNCATE, TRIGGER or REFERENCES).
      await runf('REVOKE ALL ON TABLE public.audit_log FROM %I', appRole);
      await runf('GRANT SELECT, INSERT ON TABLE public.audit_log TO %I', appRole);
      // Tables a later migration adds (created by this owner) are usable without re-running this; an
      // append-only table added later must restrict itself in its migration, as audit_log is restricted here.
      await runf(
        'ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
        table.tableowner,
        appRole,
      );
      await runf(
        'ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO %I',
        table.tableowner,
        appRole,
      );
      const [n] = await tx<{ n: number }[]>`
        select count(*)::int as n from pg_tables where schemaname = 'public'`;
      return {
        appRole,
        owner: table.tableowner,
        database,
        created: !existing,
        passwordSet: password !== undefined,
        tables: n!.n,
      };
    });
  } finally {
    await sql.end();
  }
}

/**
 * On PostgreSQL, says why the role the application connects as could rewrite the audit log (it owns the
 * table, is a superuser or member of the owner, or holds UPDATE, DELETE or TRUNCATE on it), or undefined
 * when it can only add and read. The server logs this as a warning at start.
 */
export async function auditLogExposure(url: string): Promise<string | undefined> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [r] = await sql<{ role: string; superuser: boolean; owner: boolean; writes: boolean }[]>`
      select current_user as role,
             (select rolsuper from pg_roles where rolname = current_user) as superuser,
             pg_has_role(c.relowner, 'MEMBER') as owner,
             has_table_privilege(c.oid, 'UPDATE, DELETE, TRUNCATE') as writes
      from pg_class c where c.oid = 'public.audit_log'::regclass`;
    if (!r) return undefined;
    const why = r.superuser
      ? 'is a superuser'
      : r.owner
        ? 'owns the audit_log table (or is a member of its owner)'
        : r.writes
          ? 'holds UPDATE, DELETE or TRUNCATE on audit_log'
          : undefined;
    return (
      why &&
      `the application connects as "${r.role}", which ${why}, so it could disable the trigger or rewrite the log; see "PostgreSQL roles" in the README (db setup-roles)`
    );
  } finally {
    await sql.end();
  }
}
