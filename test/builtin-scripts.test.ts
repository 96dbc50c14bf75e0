// The built-in scripts: installed into the versioned library at start (once per version, audited once), and
// each one run by the real reference agent with the exact bytes the library ships, checked against what the
// test set up on this machine. The agent also keeps a script version's output cap, which travels with the
// delivery.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  BUILTIN_SCRIPTS,
  type BuiltinScript,
  builtinBody,
  installBuiltinScripts,
} from '../bot/scripts/builtin-scripts.ts';
import { createCliContext } from '../cli/cli-context.ts';
import { findCommand, runCliCommand } from '../cli/cli-runner.ts';
import type { CliIo } from '../cli/cli-types.ts';
import { files, scripts } from '../db/schema.ts';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  enrolAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { TEST_SECRET_KEY } from './helpers/keys.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const silent = { info() {}, warn() {}, error() {}, debug() {} };
const builtin = (name: string) => BUILTIN_SCRIPTS.find((b) => b.name === name)!;

describe.each(drivers)('installing the built-in scripts on %s', (driver) => {
  let tdb: TestDatabase;
  let t: TestPlatform;
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    t = await buildTestPlatform(tdb);
  }, 120_000);
  afterEach(async () => {
    await tdb.destroy();
  });

  const saved = async () => (await t.platform.audit.list({ actionPrefix: 'script.saved' })).length;

  it('installs each built-in once: a second start adds no version and no audit record', async () => {
    const first = await t.platform.installBuiltinScripts();
    expect(first.installed.map((i) => i.name).sort()).toEqual(BUILTIN_SCRIPTS.map((b) => b.name).sort());
    expect(await saved()).toBe(BUILTIN_SCRIPTS.length);
    const again = await t.platform.installBuiltinScripts();
    expect(again.installed).toEqual([]);
    expect(again.unchanged.sort()).toEqual(BUILTIN_SCRIPTS.map((b) => b.name).sort());
    expect(await tdb.db.select().from(scripts)).toHaveLength(BUILTIN_SCRIPTS.length);
    expect(await saved()).toBe(BUILTIN_SCRIPTS.length);
    const [record] = await t.platform.audit.list({ actionPrefix: 'script.saved' });
    expect(record).toMatchObject({ actorType: 'system', actorId: 'builtin', details: { builtin: true } });
    const rows = await t.platform.scripts.list();
    expect(rows.every((r) => r.builtin && r.body === builtinBody(builtin(r.name)))).toBe(true);
  });

  it('adds a new version when the shipped bytes change, which an approval for the old one does not cover', async () => {
    await t.platform.installBuiltinScripts();
    const analyst = await t.person('analyst', ['active_response']);
    await t.endpoint('web-01');
    const ask = async () => {
      const before = t.chat.transcript.length;
      await t.say('analyst', 'run isolation-control web-01 action=status --reason "check"');
      const linked = t.chat.transcript
        .slice(before)
        .some((m) => m.kind === 'private' && m.to === 'analyst' && /\/stepup\//.test(m.text));
      if (linked) {
        t.clock.advance(30_000);
        await t.stepUp(t.lastLinkFor('analyst'), analyst);
      }
      return t.chat.waitFor((m) => m.kind === 'card' && t.chat.transcript.indexOf(m) >= before);
    };
    const old = await ask();
    const iso = [builtin('isolation-control')];
    // What an upgrade of the platform ships: the same script with other bytes.
    const newer = (b: BuiltinScript) => `${builtinBody(b)}# upgraded\n`;
    const upgraded = await installBuiltinScripts(t.platform.scripts, silent, iso, newer);
    expect(upgraded.installed).toEqual([{ name: 'isolation-control', version: 2 }]);
    expect(await saved()).toBe(BUILTIN_SCRIPTS.length + 1);
    expect((await installBuiltinScripts(t.platform.scripts, silent, iso, newer)).installed).toEqual([]);
    expect(await saved()).toBe(BUILTIN_SCRIPTS.length + 1);
    expect((await t.platform.scripts.show('isolation-control', 1)).row.body).toBe(
      builtinBody(builtin('isolation-control')),
    );
    const fresh = await ask();
    expect(old.view!.params).toMatchObject({ script: { version: 1 } });
    expect(fresh.view!.params).toMatchObject({ script: { version: 2, sha256: sha(newer(iso[0]!)) } });
    expect(fresh.view!.digest).not.toBe(old.view!.digest);
    expect(fresh.view!.state).toBe('pending_approval');
  });

  it('leaves a built-in alone once an admin disabled it or added a version of their own', async () => {
    await t.platform.installBuiltinScripts();
    await t.platform.scripts.disable('process-list');
    await t.platform.scripts.add({ name: 'file-hash', body: 'print("mine")\n', readOnly: true });
    const r = await t.platform.installBuiltinScripts();
    expect(r.installed).toEqual([]);
    expect(r.skipped).toEqual([
      { name: 'process-list', why: 'disabled by an admin' },
      { name: 'file-hash', why: 'version 2 was added by an admin' },
    ]);
    expect((await t.platform.scripts.get('file-hash'))!.body).toBe('print("mine")\n');
    expect(await t.platform.scripts.get('process-list')).toBeUndefined();
  });

  it('refuses file-hash without a path before any approval, naming the parameter and the rule', async () => {
    await t.platform.installBuiltinScripts();
    await t.person('analyst', ['active_response']);
    await t.endpoint('web-01');
    await t.say('analyst', 'run file-hash web-01 --reason "triage"');
    await t.say('analyst', 'run file-hash web-01 path=relative/x --reason "triage"');
    const said = t.chat.transcript
      .filter((m) => m.kind === 'private' && m.to === 'analyst')
      .map((m) => m.text);
    expect(said.join('\n')).toContain('path: required, but not given (add path=<value>)');
    expect(said.join('\n')).toContain('path: must match the pattern');
    expect(t.chat.transcript.filter((m) => m.kind === 'card')).toHaveLength(0);
    expect(await t.platform.audit.list({ actionPrefix: 'request.created' })).toHaveLength(0);
  });

  it('lists the built-ins in chat and in the CLI listing with their parameters', async () => {
    await t.platform.installBuiltinScripts();
    await t.person('analyst', ['active_response']);
    await t.say('analyst', 'scripts');
    const text = t.chat.transcript.at(-1)!.text;
    expect(text).toMatch(/file-hash v1 \[built-in\][\s\S]*path=<string, required/);
    expect(text).toMatch(
      /isolation-control v1 \[built-in\][\s\S]*changes endpoints[\s\S]*action=<string, required, one of "isolate", "unisolate", "status">/,
    );
    expect(text).toMatch(/process-list v1 \[built-in\][\s\S]*read-only/);

    const out: string[] = [];
    const io: CliIo = {
      out: (l) => void out.push(l),
      err: (l) => void out.push(l),
      write: async (c) => void out.push(c),
      readLine: async () => undefined,
      resolvePath: (p) => p,
    };
    const cli = async (...argv: string[]) => {
      out.length = 0;
      const ctx = createCliContext({
        config: t.platform.config,
        database: tdb,
        secretKey: TEST_SECRET_KEY,
        io,
      });
      const found = findCommand(argv, io);
      expect(typeof found === 'number' ? found : await runCliCommand(found, ctx)).toBe(0);
      return out.join('\n');
    };
    expect(await cli('script', 'list')).toMatch(
      /^file-hash +v1 +read-only .* linux,windows built-in\n +parameters: path=<string, required, pattern/m,
    );
    const shown = await cli('script', 'show', 'triage-bundle');
    expect(shown).toContain('author        built-in (system)');
    expect(shown).toContain(builtinBody(builtin('triage-bundle')).trimEnd());
  });
});

describe.each(drivers)('the built-in scripts on a real agent on %s', { timeout: 120_000 }, (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  let agent: AgentProcess;
  let endpointId: string;
  const work = tempDir('ar-builtin-');
  beforeAll(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
    ({ agent, endpointId } = await enrolAgent(tb, tdb, 'bi-01'));
  }, 120_000);
  afterAll(async () => {
    await agent?.kill();
    await tb?.stop();
    await tdb?.destroy();
    work.remove();
  });

  /** Runs the shipped bytes of a built-in as the request side would deliver them, and waits for the end. */
  const run = async (
    name: string,
    args: Record<string, string | number> = {},
    o: { outputCapBytes?: number; body?: string } = {},
  ) => {
    const b = builtin(name) ?? { timeoutSeconds: 60, outputCapBytes: undefined };
    const body = o.body ?? builtinBody(b as BuiltinScript);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      {
        endpointId,
        action: 'run',
        params: {
          script: { name, version: 1, sha256: sha(body) },
          args,
          timeoutSeconds: b.timeoutSeconds!,
          outputCapBytes: o.outputCapBytes ?? b.outputCapBytes,
        },
        scriptBody: body,
      },
    ]);
    const row = await waitFor(async () => {
      const r = await deliveryState(tdb, d!.id);
      return ['succeeded', 'failed'].includes(r.state) ? r : undefined;
    }, `${name} to finish`);
    return { row, result: row.result as { stdout: string; stderr: string; exitCode: number } };
  };

  it('process-list finds a process the test started, by a part of its name', async () => {
    const bin = join(work.dir, 'arbuiltindecoy');
    copyFileSync('/bin/sleep', bin);
    const decoy = spawn(bin, ['300'], { stdio: 'ignore' });
    try {
      const { row, result } = await run('process-list', { name: 'builtindec' });
      expect(row.state).toBe('succeeded');
      expect(result.stdout).toMatch(/^1 process whose name contains "builtindec"/);
      expect(result.stdout).toMatch(new RegExp(`^\\s*${decoy.pid}\\s+arbuiltindecoy\\s`, 'm'));
    } finally {
      decoy.kill();
    }
  });

  it('file-hash gives the SHA-256 and size node computes, and refuses a directory', async () => {
    const content = Buffer.from('evidence of something\n'.repeat(10_000));
    const path = join(work.dir, 'sample.bin');
    writeFileSync(path, content);
    const { row, result } = await run('file-hash', { path });
    expect(row.state).toBe('succeeded');
    expect(result.stdout).toContain(`sha256  ${sha(content)}`);
    expect(result.stdout).toContain(`size    ${content.length} bytes`);
    const dir = await run('file-hash', { path: work.dir });
    expect(dir.row.state).toBe('failed');
    expect(dir.result.exitCode).toBe(2);
    expect(dir.result.stderr).toContain(`refused: ${work.dir} is a directory`);
  });

  it('network-connections lists a TCP listener the test opened on 127.0.0.1', async () => {
    const server: Server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const all = await run('network-connections');
      expect(all.row.state).toBe('succeeded');
      expect(all.result.stdout).toMatch(
        new RegExp(`^tcp\\s+127\\.0\\.0\\.1:${port}\\s+0\\.0\\.0\\.0:0\\s+LISTEN`, 'm'),
      );
      const one = await run('network-connections', { port });
      expect(one.result.stdout).toMatch(/^1 socket on port/);
      // This process owns the listener, and the agent (same user) may read its descriptors.
      expect(one.result.stdout).toMatch(new RegExp(`LISTEN\\s+${process.pid} `));
    } finally {
      server.close();
    }
  });

  it('triage-bundle uploads a zip stored with its SHA-256 holding the expected entries', async () => {
    const { row, result } = await run('triage-bundle', { auth_lines: 50 });
    expect(row.state).toBe('succeeded');
    const out = JSON.parse(result.stdout) as {
      uploaded: { fileId: string; sha256: string; size: number };
      entries: string[];
    };
    const [file] = await tdb.db.select().from(files).where(eq(files.id, out.uploaded.fileId));
    expect(file).toMatchObject({ kind: 'fetched', deliveryId: row.id, sha256: out.uploaded.sha256 });
    expect(file!.name).toMatch(/^triage-.*\.zip$/);
    const chunks: Buffer[] = [];
    for await (const c of await tb.fileStore.open(file!.storageKey)) chunks.push(c as Buffer);
    const zip = Buffer.concat(chunks);
    expect(sha(zip)).toBe(file!.sha256);
    const zipPath = join(work.dir, 'bundle.zip');
    writeFileSync(zipPath, zip);
    const listed = spawnSync(
      'python3',
      ['-c', 'import sys,zipfile; print("\\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))', zipPath],
      { encoding: 'utf8' },
    );
    const names = listed.stdout.trim().split('\n');
    for (const n of [
      'hostname.txt',
      'os-release.txt',
      'uptime.txt',
      'processes.txt',
      'connections/tcp',
      'manifest.json',
    ])
      expect(names).toContain(n);
    expect(names.sort()).toEqual([...out.entries].sort());
  });

  it("keeps a script version's output cap, which travels with the delivery, and says it cut the rest", async () => {
    // The agent's own cap is 256 KiB; the version asks for 1 KiB.
    const body = 'import sys\nprint("x" * 5000)\nprint("y" * 3000, file=sys.stderr)\n';
    const { row, result } = await run('noisy', {}, { outputCapBytes: 1024, body });
    expect(row.state).toBe('succeeded');
    expect(result.stdout).toBe('x'.repeat(1024));
    expect(result.stderr).toBe('y'.repeat(1024));
    expect(row.result).toMatchObject({ stdoutTruncated: true, stderrTruncated: true });
    expect(row.result).toMatchObject({ stdoutTruncated: true });
  });
});
