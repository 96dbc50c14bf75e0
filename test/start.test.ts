// `npm start` on a fresh machine: the real entry point comes up on the embedded database, answers /healthz,
// serves its front page, keeps /metrics on the loopback metrics listener (not the public web listener),
// generates its secret key, keeps its files private, says what to do next, and shuts down cleanly on SIGTERM.
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nextSteps, startBanner } from '../app/start-message.ts';
import { freePort } from './helpers/ports.ts';

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

/** Waits for a line of the child's output; the start line comes once every listener is up. */
async function waitForLine(read: () => string, pattern: RegExp, child: ChildProcess, ms: number) {
  const deadline = Date.now() + ms;
  for (;;) {
    const line = read()
      .split('\n')
      .find((l) => pattern.test(l));
    if (line) return line;
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`no line matching ${pattern} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('npm start', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ar-start-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('comes up on PGlite, answers /healthz, serves metrics on the metrics listener only, and stops on SIGTERM', async () => {
    const [http, broker, metricsPort] = [await freePort(), await freePort(), await freePort()];
    const child = spawn(process.execPath, ['--import', 'tsx', 'main.ts'], {
      env: {
        ...process.env,
        DATA_DIR: dataDir,
        DATABASE_URL: '',
        HTTP_PORT: String(http),
        BROKER_PORT: String(broker),
        METRICS_PORT: String(metricsPort),
        METRICS_TOKEN: '',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    try {
      const res = await waitForHealth(`http://127.0.0.1:${http}/healthz`, child, 45_000);
      expect(await res.json()).toEqual({ status: 'ok', checks: { database: 'ok' } });
      // The last log line says what to do next, in words.
      const up = await waitForLine(() => output, /platform up/, child, 15_000);
      expect(up).toContain(`Open http://localhost:${http}/ in a browser`);
      expect(up).toContain('npm run cli -- user add');
      expect(up).toContain('Connect Slack');
      const front = await fetch(`http://127.0.0.1:${http}/`);
      expect(front.headers.get('content-type')).toMatch(/text\/html/);
      expect(await front.text()).toContain('This server runs Active Response');
      // The public listener has no /metrics without METRICS_TOKEN; the metrics listener on loopback has.
      expect((await fetch(`http://127.0.0.1:${http}/metrics`)).status).toBe(404);
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(metrics).toMatch(/^process_cpu_user_seconds_total \d/m);
      expect(metrics).toMatch(/^ar_agents_connected 0$/m);
      expect(metrics).toMatch(/^ar_outbox_depth 0$/m);
      expect(metrics).toMatch(/^ar_requests\{state="pending_approval"\} 0$/m);
      expect(metrics).toMatch(/^# TYPE ar_audit_events_total counter$/m);
      expect(metrics).toMatch(/^# TYPE ar_http_request_duration_seconds histogram$/m);
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

  it('says the next steps in plain words, fitted to the database and to whether Slack is set up', () => {
    const embedded = startBanner({ publicUrl: 'http://localhost:8080', slackEnabled: false, embedded: true });
    expect(embedded).toContain('1. Open http://localhost:8080/ in a browser');
    expect(embedded).toContain(
      '2. Add a user with the CLI: stop this server (Ctrl-C), run npm run cli -- user add',
    );
    expect(embedded).toContain('3. Connect Slack: set SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN');
    const [, cli, slack] = nextSteps({
      publicUrl: 'https://ar.example.com',
      slackEnabled: true,
      embedded: false,
    });
    expect(cli).toBe('Add a user with the CLI: npm run cli -- user add <name>.');
    expect(slack).toContain('Slack is connected');
  });
});
