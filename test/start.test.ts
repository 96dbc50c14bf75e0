// `npm start` on a fresh machine: the real entry point comes up on the embedded database, answers /healthz
// and /metrics, generates its secret key, keeps its files private, and shuts down cleanly on SIGTERM.
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function waitForHealth(url: string, child: ChildProcess, ms: number): Promise<Response> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}`);
    try {
      const res = await fetch(url);
      if (res.ok) return res;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`no answer from ${url} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('npm start', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ar-start-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('comes up on PGlite, answers /healthz and /metrics, and stops on SIGTERM', async () => {
    const [http, broker] = [await freePort(), await freePort()];
    const child = spawn(process.execPath, ['--import', 'tsx', 'main.ts'], {
      env: {
        ...process.env,
        DATA_DIR: dataDir,
        DATABASE_URL: '',
        HTTP_PORT: String(http),
        BROKER_PORT: String(broker),
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    try {
      const res = await waitForHealth(`http://127.0.0.1:${http}/healthz`, child, 45_000);
      expect(await res.json()).toEqual({ status: 'ok', checks: { database: 'ok' } });
      const metrics = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
      expect(metrics).toMatch(/process_cpu_user_seconds_total/);
      expect(metrics).toMatch(/# TYPE ar_audit_events_total counter/);
      expect(statSync(join(dataDir, 'secret.key')).mode & 0o777).toBe(0o600);
      expect(existsSync(join(dataDir, 'pglite'))).toBe(true);
      // Private: the directory 0700, every database file 0600, the admin socket 0600, the lock held.
      expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      const open = (readdirSync(join(dataDir, 'pglite'), { recursive: true }) as string[]).filter(
        (e) => statSync(join(dataDir, 'pglite', e)).mode & 0o077,
      );
      expect(open).toEqual([]);
      expect(statSync(join(dataDir, 'admin.sock')).mode & 0o777).toBe(0o600);
      expect(existsSync(join(dataDir, 'pglite.lock'))).toBe(true);
      // The generated key is never logged.
      expect(output).not.toMatch(/[0-9a-f]{64}/);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    expect(child.exitCode).toBe(0);
    expect(existsSync(join(dataDir, 'pglite.lock'))).toBe(false);
    expect(existsSync(join(dataDir, 'admin.sock'))).toBe(false);
  });

  it('refuses a DATA_DIR that others can write to, saying how to fix it', async () => {
    const open = join(dataDir, 'shared');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const child = spawn(process.execPath, ['--import', 'tsx', 'main.ts'], {
      env: { ...process.env, DATA_DIR: open, DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(1);
    expect(err).toContain(`chmod 700 ${open}`);
    expect(err).not.toMatch(/\n\s+at /); // a message, not a stack
    expect(existsSync(join(open, 'pglite'))).toBe(false);
  });

  it('refuses a malformed DATABASE_URL at start with a message naming it', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'main.ts'], {
      env: { ...process.env, DATA_DIR: dataDir, DATABASE_URL: 'mysql://root@localhost/x' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(2);
    expect(err).toMatch(/DATABASE_URL has scheme "mysql:"/);
  });
});
