// A script runs as its own process, so it outlives its agent. These kill a real agent process (SIGKILL)
// mid-script and start it again on the same state directory: the delivery's result and the thread's words say
// what really happened to the script (its real exit code and output, or that its outcome is unknown), the
// script never runs twice, and the run leaves no files behind.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readStatus, runnerAlive } from '../agent/actions/script-files.ts';
import type { JournalEntry } from '../agent/journal.ts';
import { describeResult } from '../bot/render/results.ts';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  enrolAgent,
  scriptDelivery,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';

/** Prints, then waits for the test's word (a file), then prints again and exits with 3. */
const PATIENT = [
  'import os, sys, time',
  'import active_response as ar',
  'p = ar.params()',
  'open(p["runs"], "a").write("ran\\n")',
  'print("started", flush=True)',
  'while not os.path.exists(p["release"]):',
  '    time.sleep(0.05)',
  'print("done")',
  'sys.exit(3)',
].join('\n');

describe.each(drivers)('scripts across an agent crash on %s', (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  let work: ReturnType<typeof tempDir>;
  const agents: AgentProcess[] = [];
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
    work = tempDir('ar-restart-');
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.kill();
    await tb.stop();
    await tdb.destroy();
    work.remove();
  });

  /** Starts the script on a fresh agent, then SIGKILLs the agent while the script waits. */
  async function scriptThenCrash(hostname: string) {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, hostname);
    agents.push(agent);
    const release = join(work.dir, `${hostname}.release`);
    const runs = join(work.dir, `${hostname}.runs`);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, ...scriptDelivery('patient', PATIENT, { release, runs }) },
    ]);
    await waitFor(() => existsSync(runs), 'the script to start');
    await agent.kill();
    const entry: JournalEntry = JSON.parse(readFileSync(join(stateDir, 'journal', `${d!.id}.json`), 'utf8'));
    expect(entry.script?.pid).toBeGreaterThan(0);
    return { id: d!.id, stateDir, release, runs, rec: entry.script! };
  }

  const final = (id: string) =>
    waitFor(async () => {
      const r = await deliveryState(tdb, id);
      return ['succeeded', 'failed'].includes(r.state) ? r : undefined;
    }, 'the delivery to be reported');

  it("reports a script that finished while its agent was down with the script's real exit code and output", async () => {
    const s = await scriptThenCrash('crash-02');
    writeFileSync(s.release, '');
    await waitFor(() => !runnerAlive(s.rec), 'the script to finish without its agent');
    expect(readStatus(s.rec)).toMatchObject({ state: 'finished', exitCode: 3 });

    const again = spawnAgent({ stateDir: s.stateDir });
    agents.push(again);
    const row = await final(s.id);
    expect(row).toMatchObject({ state: 'failed', error: 'the script exited with 3' });
    expect(row.result).toMatchObject({ exitCode: 3, adopted: true, stdout: 'started\ndone\n' });
    const text = describeResult({
      host: 'crash-02',
      action: 'run',
      state: row.state,
      result: row.result,
      error: row.error,
    });
    expect(text).toMatch(
      /^crash-02: the agent restarted while the script ran; the script exited with code 3/,
    );
    expect(text).toContain('started\ndone');
    expect(readFileSync(s.runs, 'utf8')).toBe('ran\n');
    expect(again.count((l) => l.msg === 'running delivery')).toBe(0);
    await waitFor(() => readdirSync(join(s.stateDir, 'runs')).length === 0, 'the run files to be removed');
    expect(existsSync(s.rec.tempDir)).toBe(false);
  });

  it('says "outcome unknown" in the thread, not "failed", when the script and its runner left no trace of their end', async () => {
    const s = await scriptThenCrash('crash-03');
    // The runner and the script die with the agent (as in a power cut): nothing records how the script ended.
    const status = await waitFor(() => {
      const st = readStatus(s.rec);
      return st?.state === 'running' ? st : undefined;
    }, 'the runner to record the script');
    // The runner copies the script's output from a pipe into its file: wait for the first line to be there,
    // or a kill that comes first leaves nothing to report (a race of this test, not the agent).
    await waitFor(
      () => readFileSync(join(s.rec.runDir, 'stdout'), 'utf8').includes('started'),
      "the script's first line to be captured",
    );
    process.kill(s.rec.pid!, 'SIGKILL');
    process.kill(-status.scriptPid, 'SIGKILL');
    await waitFor(() => !runnerAlive(s.rec), 'the runner to be gone');

    const again = spawnAgent({ stateDir: s.stateDir });
    agents.push(again);
    const row = await final(s.id);
    expect(row.state).toBe('failed');
    expect(row.error).toMatch(/^outcome unknown: the agent restarted while the script ran/);
    expect(row.result).toMatchObject({
      outcome: 'unknown',
      adopted: true,
      exitCode: null,
      signal: null,
      stdout: 'started\n',
    });
    const text = describeResult({
      host: 'crash-03',
      action: 'run',
      state: row.state,
      result: row.result,
      error: row.error,
    });
    expect(text).toContain(
      'crash-03: outcome unknown — the agent restarted while the script ran and found no trace of how it ended; it was not run again.',
    );
    expect(text).not.toMatch(/failed/);
    expect(text).toContain('started');
    expect(readFileSync(s.runs, 'utf8')).toBe('ran\n');
    expect(again.count((l) => l.msg === 'running delivery')).toBe(0);
    await waitFor(() => readdirSync(join(s.stateDir, 'runs')).length === 0, 'the run files to be removed');
    expect(existsSync(s.rec.tempDir)).toBe(false);
  });
});
