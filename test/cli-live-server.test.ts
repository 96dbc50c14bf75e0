// The review's finding 9, replayed: with `npm start` running on the embedded database, admin CLI commands
// used to open the same PGlite directory from a second process; the server's next audit record then
// overwrote the CLI's and `audit verify` still said OK. Now the server holds the directory and the CLI sends
// its commands to it over DATA_DIR/admin.sock. Commands from the CLI and records the server writes itself
// (wrong passwords on an enrolment page) interleave, and every one of them is in the chain afterwards.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, runCli, type ServerProcess, startServer } from './helpers/server-process.ts';
import { formState, PASSWORD } from './helpers/web-stepup.ts';

describe('admin CLI while the server runs on the embedded database', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ar-live-'));
  const workDir = mkdtempSync(join(tmpdir(), 'ar-live-cwd-'));
  const env = { DATA_DIR: dataDir, DATABASE_URL: '' };
  let server: ServerProcess;
  const cli = (args: string[], opts?: { cwd?: string; stdin?: string }): Promise<CliResult> =>
    runCli(args, env, opts);

  beforeAll(async () => {
    server = await startServer(env);
    await server.ready();
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(workDir, { recursive: true, force: true });
  });

  /** A wrong password on bob's enrolment page: a refusal the server records itself. */
  async function wrongEnrolmentPassword(link: string) {
    const url = new URL(link);
    const page = await fetch(`${server.httpUrl}${url.pathname}`);
    const { token: csrf, cookies } = formState({
      body: await page.text(),
      cookies: page.headers.getSetCookie().map((c) => {
        const [pair] = c.split(';');
        const [name, ...value] = pair!.split('=');
        return { name: name!, value: value.join('=') };
      }),
    });
    const res = await fetch(`${server.httpUrl}${url.pathname}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        cookie: Object.entries(cookies)
          .map(([k, v]) => `${k}=${v}`)
          .join('; '),
      },
      body: new URLSearchParams({ _csrf: csrf!, step: 'password', password: 'not bob at all' }),
    });
    expect(res.status).toBe(403);
  }

  it("runs each command in the server, and every record, the server's own included, stays in the chain", async () => {
    expect(statSync(join(dataDir, 'admin.sock')).mode & 0o777).toBe(0o600);

    expect((await cli(['segment', 'add', 'servers', '--enable'])).stdout).toMatch(/Added segment servers/);
    const bob = await cli(['user', 'add', 'bob', '--name', 'Bob Approver']);
    expect(bob.code).toBe(0);
    expect(bob.stdout).toMatch(/Password \(shown once\): \S{16,}/);
    const link = /(http:\/\/\S+\/enrol\/\S+)/.exec(
      (await cli(['user', 'totp-enroll', 'bob', '--link'])).stdout,
    )?.[1];
    expect(link).toBeDefined();
    await wrongEnrolmentPassword(link!);
    expect((await cli(['role', 'grant', 'bob', 'approver'])).stdout).toMatch(/Granted approver to bob/);
    await wrongEnrolmentPassword(link!);
    // Standard input and paths relative to the CLI's own directory reach the command in the server.
    const carol = await cli(['user', 'add', 'carol', '--name', 'Carol', '--password-stdin'], {
      stdin: `${PASSWORD}\n`,
    });
    expect(carol.code).toBe(0);
    expect(carol.stdout).not.toMatch(/Password \(shown once\)/);
    writeFileSync(join(workDir, 'triage.py'), 'print("triage")\n');
    const script = await cli(['script', 'add', 'triage', 'triage.py', '--read-only', '--os', 'linux'], {
      cwd: workDir,
    });
    expect(script.stdout).toMatch(/Saved script triage/);
    // Several CLIs at once take turns.
    const together = await Promise.all(
      ['ann', 'ben', 'cat'].map((u) => cli(['user', 'add', u, '--name', u.toUpperCase()])),
    );
    expect(together.map((r) => r.code)).toEqual([0, 0, 0]);

    const verify = await cli(['audit', 'verify']);
    expect(verify.code).toBe(0);
    const count = Number(/^OK: (\d+) records/.exec(verify.stdout)?.[1]);
    const exported = await cli(['audit', 'export', '--format', 'jsonl', '--out', 'audit.jsonl'], {
      cwd: workDir,
    });
    expect(exported.stdout).toMatch(new RegExp(`Wrote ${count} records to audit.jsonl`));
    const actions = readFileSync(join(workDir, 'audit.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { seq: number; action: string });
    expect(actions.map((r) => r.seq)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    const seen = actions.map((r) => r.action);
    for (const action of [
      'segment.created',
      'user.created',
      'stepup.challenge_created',
      'role.granted',
      'script.saved',
    ])
      expect(seen).toContain(action);
    expect(seen.filter((a) => a === 'totp.enrol_password')).toHaveLength(2);
    expect(seen.filter((a) => a === 'user.created')).toHaveLength(5);

    // After the server stops, the CLI opens the database itself and finds exactly the same chain.
    expect(await server.stop()).toBe(0);
    const after = await cli(['audit', 'verify']);
    expect(after.stdout).toMatch(new RegExp(`^OK: ${count} records`));
    expect(server.output()).toMatch(/"command":"role grant","exit":0,"msg":"admin command from the CLI"/);
  });

  it('passes usage errors and their exit code through unchanged', async () => {
    const again = await startServer(env);
    server = again;
    await again.ready();
    const bad = await cli(['role', 'grant', 'bob', 'wizard']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/"wizard" is not a role/);
    expect(bad.stderr).toMatch(/Usage: npm run cli -- role grant <username>/);
    const missing = await cli(['role', 'grant', 'nobody', 'approver']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/No user "nobody"/);
  });
});
