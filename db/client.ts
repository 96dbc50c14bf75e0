// One factory, two drivers: PGlite (embedded, files under DATA_DIR) when no DATABASE_URL is given,
// PostgreSQL through postgres.js when it is. Both get the same drizzle schema and committed migrations.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { prepareDataDir, tightenTree } from './data-dir.ts';
import { acquireDataDirLock, type LockHolder } from './data-dir-lock.ts';
import { PgliteThread } from './pglite-thread.ts';
import * as schema from './schema.ts';

export type Schema = typeof schema;
export type Db = PgDatabase<PgQueryResultHKT, Schema>;
// biome-ignore lint/suspicious/noExplicitAny: the relational-config parameter differs per driver.
export type Tx = PgTransaction<PgQueryResultHKT, Schema, any>;
/** A repository method takes either the database or an open transaction. */
export type DbOrTx = Db | Tx;

export const MIGRATIONS_FOLDER = join(fileURLToPath(new URL('.', import.meta.url)), 'migrations');

/** Serialises migrations when several processes start against one PostgreSQL. */
const MIGRATION_LOCK_KEY = 7_261_001;

export interface Database {
  db: Db;
  driver: 'pglite' | 'postgres';
  /**
   * Subscribe to a NOTIFY channel; returns an unsubscribe function. Notifications sent while the listening
   * session is down are lost: `onResubscribed` runs each time the subscription is re-established after a
   * lost connection, so the caller can catch up on what it may have missed.
   */
  listen(
    channel: string,
    onPayload: (payload: string) => void,
    onResubscribed?: () => void,
  ): Promise<() => Promise<void>>;
  notify(channel: string, payload: string): Promise<void>;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** postgres:// URL; when absent PGlite is used. */
  url?: string;
  /**
   * The owner's URL (DATABASE_MIGRATION_URL): migrations run through it, everything else through `url`,
   * which can then be an application role that may not alter tables (README: "PostgreSQL roles").
   */
  migrationUrl?: string;
  /** PGlite data directory; absent means in-memory (tests). */
  dataDir?: string;
  /** Run committed migrations before returning (default true). */
  migrate?: boolean;
  /** Pool size for PostgreSQL (default 10). */
  maxConnections?: number;
  /** Who holds the embedded database's lock (server, cli, demo): what a process refused by it is told. */
  role?: string;
  /** Told when the lock of a process that is gone is taken over. */
  onStaleLock?: (holder: LockHolder) => void;
  /**
   * Where PGlite runs: on its own worker thread (default), so that its queries do not hold up the event loop
   * that serves TLS, agents and chat, or in this thread ('main').
   */
  pgliteThread?: 'worker' | 'main';
}

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
  return opts.url ? openPostgres(opts.url, opts) : openPglite(opts);
}

/**
 * PGlite under `dataDir/pglite` (in memory without a dataDir). The directory is checked (see prepareDataDir)
 * and locked for this process until close or exit; a second process gets DataDirLockedError.
 */
async function openPglite(opts: OpenDatabaseOptions): Promise<Database> {
  if (!opts.dataDir) return openPgliteClient(undefined, opts);
  prepareDataDir(opts.dataDir);
  const lock = acquireDataDirLock(opts.dataDir, opts.role ?? 'process', opts.onStaleLock);
  try {
    const dir = join(opts.dataDir, 'pglite');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const database = await openPgliteClient(dir, opts, lock.release);
    try {
      tightenTree(dir);
    } catch (e) {
      await database.close();
      throw e;
    }
    return database;
  } catch (e) {
    lock.release();
    throw e;
  }
}

/**
 * The embedded server's settings, written to its postgresql.conf at every start: 16 MB of shared buffers
 * instead of 128 MB (the data of one platform is small, and the files sit in the OS page cache anyway), so an
 * idle platform stays small.
 */
export const PGLITE_CONF = ['shared_buffers = 16MB', 'wal_buffers = 1MB'];

/**
 * Creates the PGlite data directory if it is new and applies the committed migrations, in a short-lived
 * child process. `initdb` and migrations leave hundreds of megabytes of WebAssembly and allocator memory
 * behind in the process that ran them (that memory is never given back, not even by a worker thread that
 * ends); in a child they go away when it exits, and the platform opens the ready directory with a fraction.
 */
async function initPgliteDir(dir: string, migrate: boolean): Promise<void> {
  if (!migrate && existsSync(join(dir, 'PG_VERSION'))) return;
  const job = {
    pglite: import.meta.resolve('@electric-sql/pglite'),
    drizzle: import.meta.resolve('drizzle-orm/pglite'),
    migrator: import.meta.resolve('drizzle-orm/pglite/migrator'),
    migrations: migrate ? MIGRATIONS_FOLDER : null,
    dir,
    conf: PGLITE_CONF,
  };
  const source = `
    const w = JSON.parse(process.argv[1]);
    (async () => {
      const { PGlite } = await import(w.pglite);
      const db = await PGlite.create({ dataDir: w.dir, postgresqlconf: w.conf });
      if (w.migrations) {
        const { drizzle } = await import(w.drizzle);
        const { migrate } = await import(w.migrator);
        await migrate(drizzle({ client: db }), { migrationsFolder: w.migrations });
      }
      await db.close();
    })().catch((err) => { console.error(String(err && err.stack || err)); process.exit(1); });`;
  await new Promise<void>((resolve, reject) => {
    execFile(
      process.execPath,
      ['-e', source, JSON.stringify(job)],
      { timeout: 300_000 },
      (err, _out, stderr) =>
        err
          ? reject(
              new Error(`creating the embedded database in ${dir} failed: ${stderr.trim() || err.message}`),
            )
          : resolve(),
    );
  });
}

async function openPgliteClient(
  dir: string | undefined,
  opts: OpenDatabaseOptions,
  onClose?: () => void,
): Promise<Database> {
  if (dir) await initPgliteDir(dir, opts.migrate !== false);
  const client =
    opts.pgliteThread === 'main'
      ? await PGlite.create({ dataDir: dir, postgresqlconf: PGLITE_CONF })
      : await PgliteThread.start({ dataDir: dir, conf: PGLITE_CONF });
  try {
    // On disk the child process migrated; in memory there is no other process to do it.
    if (!dir && opts.migrate !== false) {
      await migratePglite(drizzlePglite({ client: client as PGlite }), {
        migrationsFolder: MIGRATIONS_FOLDER,
      });
    }
  } catch (e) {
    await client.close().catch(() => {});
    throw e;
  }
  return wrapPglite(client, onClose);
}

/**
 * The Database over an already open PGlite, in this thread or on its own (for example one restored with
 * `loadDataDir`). `onClose` runs after the client closes (it releases the data directory's lock).
 */
export function wrapPglite(client: PGlite | PgliteThread, onClose?: () => void): Database {
  // drizzle's PGlite driver uses `query` and `transaction`, which PgliteThread provides with PGlite's semantics.
  const db = drizzlePglite({ client: client as PGlite, schema }) as unknown as Db;
  return {
    db,
    driver: 'pglite',
    async listen(channel, onPayload) {
      const unsubscribe = await client.listen(channel, onPayload);
      return async () => unsubscribe();
    },
    async notify(channel, payload) {
      await client.query('select pg_notify($1, $2)', [channel, payload]);
    },
    async close() {
      try {
        if (!client.closed) await client.close();
      } finally {
        onClose?.();
      }
    },
  };
}

async function openPostgres(url: string, opts: OpenDatabaseOptions): Promise<Database> {
  const common = {
    onnotice: () => {},
    connection: { application_name: 'active-response' },
    // postgres.js's default backoff grows to 20 s after an outage, so the LISTEN session stayed down for
    // seconds after the database came back and wake-ups were lost. Capped at 1 s: after an outage a session
    // is back within about a second of the database.
    backoff: (retries: number) => Math.min(0.01 * 2 ** retries, 1),
  };
  if (opts.migrate !== false) {
    const one = postgres(opts.migrationUrl ?? url, { ...common, max: 1 });
    try {
      await one`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
      await migratePostgres(drizzlePostgres({ client: one }), { migrationsFolder: MIGRATIONS_FOLDER });
      await one`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
    } finally {
      await one.end();
    }
  }
  const client = postgres(url, { ...common, max: opts.maxConnections ?? 10 });
  const db = drizzlePostgres({ client, schema }) as unknown as Db;
  return {
    db,
    driver: 'postgres',
    async listen(channel, onPayload, onResubscribed) {
      // postgres.js calls `onlisten` after the first LISTEN and again after each re-subscription.
      let subscribed = false;
      const sub = await client.listen(channel, onPayload, () => {
        if (subscribed) onResubscribed?.();
        subscribed = true;
      });
      return async () => sub.unlisten();
    },
    async notify(channel, payload) {
      await client`select pg_notify(${channel}, ${payload})`;
    },
    async close() {
      await client.end({ timeout: 5 });
    },
  };
}
