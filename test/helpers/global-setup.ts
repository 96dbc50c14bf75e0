// Runs once before the workers start. With REQUIRE_POSTGRES=1 (CI) the run fails when PostgreSQL is missing,
// instead of quietly testing only the embedded driver. With DATABASE_URL it migrates one template database
// that every PostgreSQL test database is then copied from (CREATE DATABASE ... TEMPLATE), so a test does not
// pay for the migrations.
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { openDatabase } from '../../db/client.ts';

export default async function setup() {
  const url = process.env.DATABASE_URL;
  if (process.env.REQUIRE_POSTGRES === '1' && !url)
    throw new Error('REQUIRE_POSTGRES=1 but DATABASE_URL is not set');
  if (!url) return;
  const admin = postgres(url, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    await admin`select 1`;
  } catch (e) {
    await admin.end();
    const message = `PostgreSQL at DATABASE_URL is unreachable: ${(e as Error).message}`;
    if (process.env.REQUIRE_POSTGRES === '1') throw new Error(`REQUIRE_POSTGRES=1 but ${message}`);
    console.warn(`${message}; its suites will fail`);
    return;
  }
  const template = `ar_tmpl_${randomBytes(5).toString('hex')}`;
  await admin.unsafe(`create database ${template}`);
  const templateUrl = new URL(url);
  templateUrl.pathname = `/${template}`;
  const db = await openDatabase({ url: templateUrl.toString(), maxConnections: 1 });
  await db.close();
  process.env.AR_TEST_PG_TEMPLATE = template;
  return async () => {
    await admin.unsafe(`drop database if exists ${template} with (force)`);
    await admin.end();
  };
}
