// From the console chat to a real agent that is SIGKILLed while the approved script runs: the script finishes
// without its agent, the agent is started again on the same state directory, and the request's thread gives
// the script's real exit code and output, saying the agent restarted meanwhile. The script ran once.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runnerAlive } from '../agent/actions/script-files.ts';
import type { JournalEntry } from '../agent/journal.ts';
import { type AgentProcess, spawnAgent, waitFor } from './helpers/agents.ts';
import { drivers } from './helpers/db.ts';
import { type E2E, type E2EAgent, startE2E } from './helpers/e2e.ts';

/** Runs in the agent's sandbox: notes that it ran, then waits for the test's word before it ends with 3. */
const PATIENT = [
  'import os, sys, time',
  'open("runs.log", "a").write("ran\\n")',
  'print("started", flush=True)',
  'while not os.path.exists("release"):',
  '    time.sleep(0.05)',
  'print("done")',
  'sys.exit(3)',
].join('\n');

describe.each(drivers)(
  'a script that outlives its agent, from chat, on %s',
  { timeout: 180_000 },
  (driver) => {
    let e: E2E;
    let web: E2EAgent;
    const restarted: AgentProcess[] = [];

    beforeAll(async () => {
      e = await startE2E(driver);
      web = await e.agent('crash-web-01');
    }, 120_000);
    afterAll(async () => {
      for (const a of restarted) await a.kill();
      await e?.stop();
    });

    it('tells the thread the real exit code and output of a script that finished while its agent was down', async () => {
      await e.t.platform.scripts.upsert({
        name: 'patient',
        body: PATIENT,
        description: 'waits, then exits 3',
      });
      const asked = e.act('run patient crash-web-01 --reason "triage"');
      const runs = join(web.sandbox, 'runs.log');
      await waitFor(() => existsSync(runs), 'the approved script to start', 60_000);

      await web.process.kill();
      writeFileSync(join(web.sandbox, 'release'), '');
      const journal = join(web.stateDir, 'journal');
      const [file] = readdirSync(journal);
      const entry: JournalEntry = JSON.parse(readFileSync(join(journal, file!), 'utf8'));
      await waitFor(() => !runnerAlive(entry.script!), 'the script to finish without its agent');

      restarted.push(spawnAgent({ stateDir: web.stateDir, args: ['--sandbox', web.sandbox] }));
      const r = await asked;
      const text = r.thread.join('\n');
      expect(text).toContain(
        'crash-web-01: the agent restarted while the script ran; the script exited with code 3',
      );
      expect(text).toContain('started\ndone');
      expect(text).not.toMatch(/interrupted/);
      const executed = r.audit.find((a) => a.action === 'script.executed');
      expect(executed).toMatchObject({
        outcome: 'failed',
        details: { result: { exitCode: 3, adopted: true, stdout: 'started\ndone\n' } },
      });
      expect(readFileSync(runs, 'utf8')).toBe('ran\n');
    });
  },
);
