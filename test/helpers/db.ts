// Every repository and service test runs on PGlite, and again on PostgreSQL when DATABASE_URL is set.
// Each PostgreSQL test database is created fresh (migrations reference the public schema, so a fresh
// database, not a fresh schema, is the unit of isolation) and dropped afterwards.
import { randomBytes } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import postgres from 'postgres';
import { type Database, MIGRATIONS_FOLDER, openDatabase, wrapPglite } from '../../db/client.ts';
import { PgliteThread } from '../../db/pglite-thread.ts';

export type Driver = 'pglite' | 'postgres';

export const drivers: Driver[] = process.env.DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];

export interface TestDatabase extends Database {
  /** postgres:// URL of the fresh database (PostgreSQL only), for child processes. */
  url?: string;
  /** Closes and, for PostgreSQL, drops the database. */
  destroy(): Promise<void>;
}

function adminUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set');
  return url;
}

/** Creates a PostgreSQL database (a copy of the migrated template when there is one) and returns its URL. */
export async function createPostgresDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `ar_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  const template = process.env.AR_TEST_PG_TEMPLATE;
  await admin.unsafe(`create database ${name}${template ? ` template ${template}` : ''}`);
  await admin.end();
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const a = postgres(adminUrl(), { max: 1, onnotice: () => {} });
      await a.unsafe(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}

/**
 * Migrating a fresh PGlite takes seconds; each test worker migrates one once and every test starts from a
 * copy of its data directory instead.
 */
let migratedSnapshot: Promise<Blob> | undefined;
async function pgliteSnapshot(): Promise<Blob> {
  migratedSnapshot ??= (async () => {
    const client = await PGlite.create();
    await migrate(drizzle({ client }), { migrationsFolder: MIGRATIONS_FOLDER });
    const blob = await client.dumpDataDir('none');
    await client.close();
    return blob;
  })();
  return migratedSnapshot;
}

export async function openTestDatabase(driver: Driver): Promise<TestDatabase> {
  if (driver === 'pglite') {
    // On its own thread, as the platform runs it; AR_TEST_PGLITE_THREAD=main runs it in the test's thread.
    const loadDataDir = await pgliteSnapshot();
    const client =
      process.env.AR_TEST_PGLITE_THREAD === 'main'
        ? await PGlite.create({ loadDataDir })
        : await PgliteThread.start({ loadDataDir });
    const db = wrapPglite(client);
    return { ...db, destroy: () => db.close() };
  }
  const fresh = await createPostgresDatabase();
  const db = await openDatabase({ url: fresh.url, maxConnections: 5 });
  return {
    ...db,
    url: fresh.url,
    async destroy() {
      await db.close();
      await fresh.drop();
    },
  };
}
