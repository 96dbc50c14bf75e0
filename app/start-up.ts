// The start-up steps main.ts (and the demo) share around the database: private files and a checked data
// directory, waiting for PostgreSQL, and the admin socket that lets the CLI work while the server runs.
import type { Logger } from '../bot/ports.ts';
import { serveAdminCli } from '../cli/admin-server.ts';
import type { Database } from '../db/client.ts';
import { prepareDataDir } from '../db/data-dir.ts';
import { describeDatabaseUrl, openDatabaseWhenReady } from '../db/open-when-ready.ts';
import type { Config } from './config.ts';
import type { Platform } from './platform.ts';

/**
 * Makes every file this process creates private (umask 077: PGlite would make its files 0666) and checks
 * DATA_DIR, creating it 0700. Throws DataDirError, which says how to fix it, when others can write to it.
 */
export function secureDataDir(config: Config, logger: Logger): void {
  process.umask(0o077);
  const { tightenedFrom } = prepareDataDir(config.DATA_DIR);
  if (tightenedFrom) {
    logger.warn(
      { dataDir: config.DATA_DIR, was: tightenedFrom },
      'DATA_DIR was readable by others; set it to 0700',
    );
  }
}

/**
 * Opens the database: the embedded one (locked for this process) or PostgreSQL, waiting for it with backoff
 * up to DB_START_TIMEOUT and logging each wait.
 */
export function startDatabase(config: Config, logger: Logger, role: string): Promise<Database> {
  const url = config.DATABASE_URL;
  return openDatabaseWhenReady(
    {
      url,
      migrationUrl: config.DATABASE_MIGRATION_URL,
      dataDir: config.DATA_DIR,
      role,
      onStaleLock: (h) =>
        logger.warn(
          { pid: h.pid, role: h.role, since: h.startedAt },
          'took over the embedded database lock left by a process that is gone',
        ),
    },
    {
      timeoutMs: config.DB_START_TIMEOUT * 1000,
      onRetry: ({ attempt, error, retryInMs }) =>
        logger.warn(
          { database: url && describeDatabaseUrl(url), attempt, error, retryInMs },
          `waiting for PostgreSQL (retrying in ${(retryInMs / 1000).toFixed(1)} s, giving up after ${config.DB_START_TIMEOUT} s)`,
        ),
    },
  );
}

/**
 * On the embedded database, serves the admin CLI on DATA_DIR/admin.sock (on PostgreSQL the CLI opens its own
 * connection). Returns its close function.
 */
export async function startAdminSocket(deps: {
  config: Config;
  database: Database;
  platform: Platform;
  logger: Logger;
}): Promise<() => Promise<void>> {
  if (deps.database.driver !== 'pglite') return async () => {};
  const { platform } = deps;
  const admin = await serveAdminCli({
    config: deps.config,
    database: deps.database,
    logger: deps.logger,
    secretKey: platform.secretKey,
    clock: platform.clock,
    audit: platform.audit,
    checkpointer: platform.checkpointer,
    users: platform.users,
    stepup: platform.stepup,
    fileStore: platform.fileStore,
  });
  return admin.close;
}

/** Errors an operator can act on print as their message alone; anything else keeps its stack. */
export function describeStartupError(err: unknown): unknown {
  const e = err as { code?: unknown; message?: string };
  const known = typeof e?.code === 'string' && /^(data_dir|database|admin_socket)\./.test(e.code);
  return known ? e.message : err;
}
