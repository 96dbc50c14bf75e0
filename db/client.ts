// One factory, two drivers: PGlite (embedded, files under DATA_DIR) when no DATABASE_URL is given,
// PostgreSQL through postgres.js when it is. Both get the same drizzle schema and committed migrations.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
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
  /** Subscribe to a NOTIFY channel; returns an unsubscribe function. */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
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
}

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
  return opts.url ? openPostgres(opts.url, opts) : openPglite(opts);
}

async function openPglite(opts: OpenDatabaseOptions): Promise<Database> {
  let dir: string | undefined;
  if (opts.dataDir) {
    dir = join(opts.dataDir, 'pglite');
    mkdirSync(dir, { recursive: true });
  }
  const client = await PGlite.create(dir);
  if (opts.migrate !== false) {
    await migratePglite(drizzlePglite({ client }), { migrationsFolder: MIGRATIONS_FOLDER });
  }
  return wrapPglite(client);
}

/** The Database over an already open PGlite instance (for example one restored with `loadDataDir`). */
export function wrapPglite(client: PGlite): Database {
  const db = drizzlePglite({ client, schema }) as unknown as Db;
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
      if (!client.closed) await client.close();
    },
  };
}

async function openPostgres(url: string, opts: OpenDatabaseOptions): Promise<Database> {
  const common = { onnotice: () => {}, connection: { application_name: 'active-response' } };
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
    async listen(channel, onPayload) {
      const sub = await client.listen(channel, onPayload);
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
