// A full disk under a real agent: its state directory is a small tmpfs mounted for the test. An agent that
// cannot journal a delivery must not run it (a decoy process stays alive, a script leaves no marker) and must
// say why in a failed result; once space is freed the next delivery runs. With a single page free the start
// is journalled but the result is not: the action ran, so its real result is reported at once and written
// to the journal when space comes back, with no restart. A script whose output fills the disk still has its
// exit recorded (in a status file written in place), and the result says that output is missing.
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeResult } from '../bot/render/results.ts';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  endpointByHost,
  newToken,
  scriptDelivery,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { sh } from './helpers/netns.ts';

const PAGE = 4096;

/** Mounts a tmpfs of `size` on `dir`; returns why it could not, or undefined. */
function mountTmpfs(dir: string, size: string): string | undefined {
  const r = sh(['mount', '-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  return r.status === 0 ? undefined : (r.stderr || r.error?.message || 'mount failed').trim();
}

const probe = tempDir('ar-tmpfs-probe-');
const cannot = mountTmpfs(probe.dir, '64k');
if (!cannot) sh(['umount', probe.dir]);
probe.remove();
if (cannot) console.warn(`full-disk tests skipped: mounting a tmpfs needs CAP_SYS_ADMIN (${cannot})`);

/** Fills the filesystem of `dir` until exactly `leavePages` pages are free. */
function fill(dir: string, leavePages = 0) {
  const spacers = Array.from({ length: leavePages }, (_, i) => join(dir, `spacer-${i}`));
  for (const s of spacers) {
    const fd = openSync(s, 'w');
    writeSync(fd, Buffer.alloc(PAGE, 1));
    closeSync(fd);
  }
  const fd = openSync(join(dir, 'filler'), 'a');
  try {
    for (const chunk of [Buffer.alloc(64 * 1024, 1), Buffer.alloc(PAGE, 1)]) {
      try {
        for (;;) writeSync(fd, chunk);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
      }
    }
  } finally {
    closeSync(fd);
  }
  for (const s of spacers) rmSync(s);
  expect(statfsSync(dir).bavail).toBe(leavePages);
}
const freeAll = (dir: string) => rmSync(join(dir, 'filler'), { force: true });

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe.skipIf(cannot !== undefined).each(drivers)(
  'an agent whose state directory is full on %s',
  { timeout: 120_000 },
  (driver) => {
    let tdb: TestDatabase;
    let tb: TestBroker;
    let agent: AgentProcess;
    let endpointId: string;
    const state = tempDir('ar-full-state-');
    const work = tempDir('ar-full-work-');
    const sandbox = join(work.dir, 'sandbox');
    const decoys: ReturnType<typeof spawn>[] = [];
    let mounted = false;

    beforeAll(async () => {
      const why = mountTmpfs(state.dir, '1m');
      if (why) throw new Error(`mount: ${why}`);
      mounted = true;
      mkdirSync(sandbox);
      tdb = await openTestDatabase(driver);
      tb = await startTestBroker(tdb);
      const token = await newToken(tdb, tb.clock, tb.broker.pki.caPem);
      agent = spawnAgent({
        stateDir: state.dir,
        broker: tb.url,
        token,
        hostname: 'full-01',
        args: ['--sandbox', sandbox],
      });
      await agent.waitForLog((l) => l.msg === 'connected', 'the agent to connect');
      endpointId = (await endpointByHost(tdb, 'full-01'))!.id;
    }, 60_000);
    afterAll(async () => {
      for (const d of decoys) d.kill('SIGKILL');
      await agent?.kill();
      await tb?.stop();
      await tdb?.destroy();
      if (mounted) sh(['umount', state.dir]);
      state.remove();
      work.remove();
    });

    /** A harmless process in the sandbox, which the sandboxed agent may kill. */
    function decoy() {
      const child = spawn('sleep', ['600'], { cwd: sandbox, stdio: 'ignore' });
      decoys.push(child);
      return child.pid!;
    }

    const final = (id: string) =>
      waitFor(async () => {
        const r = await deliveryState(tdb, id);
        return ['succeeded', 'failed'].includes(r.state) ? r : undefined;
      }, 'the delivery to be reported');
    const journalled = (id: string) => existsSync(join(state.dir, 'journal', `${id}.json`));

    it('runs nothing it cannot journal, says why, and runs the next delivery once space is freed', async () => {
      fill(state.dir);
      const pid = decoy();
      const marker = join(work.dir, 'script-ran');
      const [kill, run] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
        { endpointId, action: 'kill', params: { pid } },
        {
          endpointId,
          ...scriptDelivery(
            'marker',
            'import active_response as ar\nopen(ar.params()["marker"], "w").write("ran")\n',
            {
              marker,
            },
          ),
        },
      ]);
      for (const d of [kill!, run!]) {
        const row = await final(d.id);
        expect(row.state).toBe('failed');
        expect(row.error).toMatch(
          /^not run: the agent could not write this delivery to its journal \(ENOSPC: no space left on device/,
        );
        expect(row.error).toContain(`Free space in ${join(state.dir, 'journal')}`);
        expect(journalled(d.id)).toBe(false);
      }
      expect(alive(pid)).toBe(true);
      expect(existsSync(marker)).toBe(false);
      expect(agent.count((l) => l.msg === 'running delivery')).toBe(0);

      freeAll(state.dir);
      const [again] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
        { endpointId, action: 'kill', params: { pid } },
      ]);
      const row = await final(again!.id);
      expect(row.state).toBe('succeeded');
      expect(row.result).toMatchObject({ killed: [{ pid }] });
      await waitFor(() => !alive(pid), 'the decoy to die');
      expect(journalled(again!.id)).toBe(true);
    });

    it('reports an action that ran with no room left for its result truthfully, and journals it once there is room', async () => {
      // One page: enough for "started", none for the result.
      fill(state.dir, 1);
      const pid = decoy();
      const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
        { endpointId, action: 'kill', params: { pid } },
      ]);
      const row = await final(d!.id);
      expect(row.state).toBe('succeeded');
      expect(row.result).toMatchObject({ killed: [{ pid }] });
      await agent.waitForLog(
        (l) =>
          l.msg === 'could not write a result to the journal; keeping it in memory and trying again' &&
          l.id === d!.id,
        'the agent to keep the result',
      );
      const entry = () =>
        JSON.parse(readFileSync(join(state.dir, 'journal', `${d!.id}.json`), 'utf8')) as { result?: object };
      expect(entry().result).toBeUndefined();

      freeAll(state.dir);
      await agent.waitForLog(
        (l) => l.msg === 'result written to the journal after all' && l.id === d!.id,
        'the result to reach the journal',
      );
      expect(entry().result).toMatchObject({ ok: true, result: { killed: [{ pid }] } });
    });

    it('finishes a script whose output filled the disk, reports its real exit and that output is missing', async () => {
      // Three pages: the journal entry, the run's preallocated status file, and one page of output.
      fill(state.dir, 3);
      const body = 'import sys\nsys.stdout.write("x" * 20000)\nsys.stdout.flush()\nprint("after")\n';
      const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
        { endpointId, ...scriptDelivery('chatty', body) },
      ]);
      const row = await final(d!.id);
      expect(row.state).toBe('succeeded');
      expect(row.result).toMatchObject({ exitCode: 0, outputLost: true });
      const stdout = (row.result as { stdout: string }).stdout;
      expect(stdout.length).toBeLessThan(20000);
      expect(stdout).toMatch(/^x+$/);
      expect(
        describeResult({
          host: 'full-01',
          action: 'run',
          state: row.state,
          result: row.result,
          error: row.error,
        }),
      ).toContain("Part of the output is missing: the agent's disk was full.");
      freeAll(state.dir);
      await waitFor(() => readdirSync(join(state.dir, 'runs')).length === 0, 'the run files to be removed');
    });
  },
);
