// Start-up against a PostgreSQL that is not there yet (the fault-tolerance review: the platform used to exit
// after about two seconds with a raw ECONNREFUSED stack). Now it waits with backoff and says so, comes up
// when the database appears, gives up after DB_START_TIMEOUT with a plain message, and /healthz names the
// dependency that is down. Needs PostgreSQL (DATABASE_URL); the "database" that is missing at first is a
// TCP proxy to it that opens later, or a database created after start.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from './helpers/db.ts';
import { openPgProxy } from './helpers/pg-proxy.ts';
import { freePort, startServer } from './helpers/server-process.ts';

const adminUrl = process.env.DATABASE_URL;
if (!adminUrl)
  console.warn('start-db-wait: DATABASE_URL is not set, so there is no PostgreSQL to wait for; skipped');

/** Resolves once `text()` matches `pattern`, polling; fails when the process has exited. */
async function waitFor(text: () => string, pattern: RegExp, exited: () => boolean): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (pattern.test(text())) return;
    if (exited()) throw new Error(`exited before printing ${pattern}:\n${text()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`never printed ${pattern}:\n${text()}`);
}

describe.skipIf(!adminUrl)('start-up while PostgreSQL is unreachable', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ar-dbwait-'));
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('waits for PostgreSQL with a log line, comes up when it answers, and /healthz names it when it goes', async () => {
    const db = await createPostgresDatabase();
    cleanups.push(db.drop);
    const real = new URL(db.url);
    // Down from the start: nothing listens on its port yet.
    const proxy = await openPgProxy(db.url, { down: true });
    cleanups.push(() => proxy.cut());
    const port = new URL(proxy.url).port;
    const server = await startServer({
      DATA_DIR: join(dataDir, 'a'),
      DATABASE_URL: proxy.url,
      DB_START_TIMEOUT: '2m',
    });
    cleanups.push(() => server.stop());
    await waitFor(server.output, /waiting for PostgreSQL/, () => server.child.exitCode !== null);
    expect(server.output()).toContain(`127.0.0.1:${port}${real.pathname}`);
    expect(server.output()).toContain('ECONNREFUSED');
    expect(server.output()).not.toContain(real.password || 'no-password-in-url');

    await proxy.restore();
    await server.ready();
    const up = await fetch(`${server.httpUrl}/healthz`);
    expect(await up.json()).toEqual({ status: 'ok', checks: { database: 'ok' } });

    await proxy.cut();
    const down = await fetch(`${server.httpUrl}/healthz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toEqual({
      status: 'unavailable',
      checks: { database: 'down' },
      down: ['database'],
    });

    await proxy.restore();
    await server.ready(); // postgres.js reconnects by itself
    expect(await server.stop()).toBe(0);
  });

  it('comes up when its database is created after it started', async () => {
    const name = `ar_late_${randomBytes(5).toString('hex')}`;
    const url = new URL(adminUrl!);
    url.pathname = `/${name}`;
    const admin = postgres(adminUrl!, { max: 1, onnotice: () => {} });
    cleanups.push(async () => {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    });
    const server = await startServer({ DATA_DIR: join(dataDir, 'b'), DATABASE_URL: url.toString() });
    cleanups.push(() => server.stop());
    await waitFor(server.output, /waiting for PostgreSQL/, () => server.child.exitCode !== null);
    expect(server.output()).toContain('3D000');
    await admin.unsafe(`create database ${name}`);
    await server.ready();
    expect(await server.stop()).toBe(0);
  });

  it('gives up after DB_START_TIMEOUT with a message that names the server, not a stack', async () => {
    const port = await freePort();
    const server = await startServer({
      DATA_DIR: join(dataDir, 'c'),
      DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nothing_here`,
      DB_START_TIMEOUT: '2s',
    });
    const code = await new Promise((r) => server.child.once('exit', r));
    expect(code).toBe(1);
    expect(server.output()).toMatch(
      new RegExp(`PostgreSQL at 127\\.0\\.0\\.1:${port}/nothing_here did not accept a connection within 2 s`),
    );
    expect(server.output()).toContain('DB_START_TIMEOUT');
    expect(server.output()).not.toMatch(/\n\s+at /);
  });
});
