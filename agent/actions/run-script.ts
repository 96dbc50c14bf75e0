// `run`: a library script executed with python3 at the agent's privilege. The script talks back to the agent
// through the `active_response` helper module over a Unix socket (JSON lines) that exists only while that
// script runs, so a helper call is always tied to the delivery that started it.
//
// The script runs under a small runner (script_runner.py) in a session of its own, so it outlives the agent:
// an agent that crashes or restarts mid-script does not take the script with it, and finds it again. The
// order keeps the journal ahead of the script: the run's files are named in the journal, the runner starts
// and waits, its pid and start time go to the journal, and only then is it told to start the script. The
// runner writes the output and the way the script ended to the run's directory in the state directory, where
// a restarted agent collects them (`adoptScript`).
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { ActionOutcome, ScriptRecord } from '../journal.ts';
import {
  helperSocketPath,
  outcomeOf,
  planRun,
  prepareRun,
  processStartTime,
  readStatus,
  runnerAlive,
} from './script-files.ts';

export const PYTHON_DIR = fileURLToPath(new URL('../python', import.meta.url));
const RUNNER = fileURLToPath(new URL('./script_runner.py', import.meta.url));

/** How often an adopted script's status is looked at while it runs. */
const ADOPT_POLL_MS = 250;

export interface RunLimits {
  timeoutMs: number;
  maxOutputBytes: number;
  /** The script's working directory (a sandboxed agent's sandbox); default its fresh temporary directory. */
  workDir?: string;
}

export type HelperCall = (op: string, args: Record<string, unknown>) => Promise<Record<string, unknown>>;

/** Where a run is recorded: the journal entry of its delivery. Each call must be durable or throw. */
export interface RunJournal {
  stateDir: string;
  deliveryId: string;
  startedAt: string;
  record(rec: ScriptRecord): Promise<void>;
}

/** Serves the helper module's requests on a Unix socket (one JSON object per line each way). */
async function serveHelper(path: string, helper: HelperCall): Promise<Server> {
  const server = createServer((sock: Socket) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.length > 1024 * 1024) return sock.destroy();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        let req: { id?: unknown; op?: unknown; args?: unknown };
        try {
          req = JSON.parse(line);
        } catch {
          sock.write(`${JSON.stringify({ ok: false, error: 'not JSON' })}\n`);
          continue;
        }
        const args = req.args && typeof req.args === 'object' ? (req.args as Record<string, unknown>) : {};
        helper(String(req.op), args).then(
          (r) => sock.write(`${JSON.stringify({ id: req.id, ok: true, result: r })}\n`),
          (e) => sock.write(`${JSON.stringify({ id: req.id, ok: false, error: (e as Error).message })}\n`),
        );
      }
    });
    sock.on('error', () => {});
  });
  // A socket file left by an agent that died is stale: nobody listens on it any more.
  rmSync(path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

const notRun = (why: string, e: unknown): ActionOutcome => ({
  ok: false,
  error: `not run: ${why}: ${(e as Error).message}`,
});

/** Starts the runner, which waits for "go" on its stdin before it starts the script. */
function startRunner(
  rec: ScriptRecord,
  files: { script: string; socket: string },
  params: Record<string, unknown>,
  name: string,
  limits: RunLimits,
) {
  const child = spawn(
    'python3',
    [RUNNER, rec.runDir, files.script, String(limits.timeoutMs / 1000), String(limits.maxOutputBytes)],
    {
      cwd: limits.workDir ?? rec.tempDir,
      // A session of its own: the script is not in the agent's process group, and outlives the agent.
      detached: true,
      stdio: ['pipe', 'ignore', 'pipe'],
      env: {
        ...process.env,
        PYTHONPATH: [PYTHON_DIR, process.env.PYTHONPATH].filter(Boolean).join(':'),
        PYTHONUNBUFFERED: '1',
        AR_HELPER_SOCKET: files.socket,
        AR_PARAMS: JSON.stringify(params),
        AR_SCRIPT_NAME: name,
      },
    },
  );
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => {
    if (stderr.length < 2000) stderr += b.toString('utf8');
  });
  const exited = new Promise<{ code: number | null; signal: string | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return { child, exited, stderr: () => stderr.trim() };
}

function tellRunner(child: ChildProcess, go: boolean) {
  child.stdin!.on('error', () => {});
  child.stdin!.end(go ? 'go\n' : '');
}

export async function runScript(
  script: { name: string; sha256: string; body: string },
  params: Record<string, unknown>,
  limits: RunLimits,
  helper: HelperCall,
  journal: RunJournal,
): Promise<ActionOutcome> {
  const actual = createHash('sha256').update(script.body, 'utf8').digest('hex');
  if (actual !== script.sha256) {
    throw new Error(
      `the script bytes do not match the approved SHA-256 (${script.sha256.slice(0, 12)}…); not run`,
    );
  }
  const rec = planRun(journal.stateDir, journal.deliveryId);
  try {
    await journal.record(rec);
  } catch (e) {
    return notRun('the agent could not record the script in its journal', e);
  }
  let server: Server | undefined;
  try {
    let files: { script: string; socket: string };
    try {
      files = prepareRun(rec, script.body);
      server = await serveHelper(files.socket, helper);
    } catch (e) {
      return notRun('the agent could not prepare the script', e);
    }
    const runner = startRunner(rec, files, params, script.name, limits);
    const pid = runner.child.pid;
    if (pid === undefined) {
      const how = await runner.exited;
      return notRun('python3 could not start', how.error ?? new Error('no process'));
    }
    try {
      await journal.record({ ...rec, pid, startTime: processStartTime(pid) });
    } catch (e) {
      tellRunner(runner.child, false);
      await runner.exited;
      return notRun("the agent could not record the script's process in its journal", e);
    }
    tellRunner(runner.child, true);
    const how = await runner.exited;
    const ended =
      how.error?.message ??
      `its runner stopped (${how.code ?? how.signal}) before recording how the script ended` +
        (runner.stderr() ? `: ${runner.stderr().slice(0, 500)}` : '');
    return outcomeOf(rec, {
      adopted: false,
      unknownBecause: ended,
      startedAt: journal.startedAt,
      maxOutputBytes: limits.maxOutputBytes,
    });
  } finally {
    server?.close();
    rmSync(rec.tempDir, { recursive: true, force: true });
  }
}

/**
 * The outcome of a script started before this agent (re)started: the script's end when its runner recorded
 * one, after waiting for a runner that still runs (serving its helper calls again meanwhile); "not run" when
 * the runner was never told to start it; "outcome unknown" when the runner is gone and recorded no end.
 */
export async function adoptScript(
  rec: ScriptRecord,
  o: {
    startedAt: string;
    maxOutputBytes: number;
    helper: HelperCall;
    log: (msg: string, extra?: object) => void;
  },
): Promise<ActionOutcome> {
  const ending = {
    adopted: true,
    unknownBecause:
      'the agent restarted while the script ran and found no trace of how it ended (its runner is gone ' +
      'and recorded no exit)',
    startedAt: o.startedAt,
    maxOutputBytes: o.maxOutputBytes,
  };
  if (!rec.pid) {
    return {
      ok: false,
      error: 'not run: the agent stopped before it started the script; it was not run again',
    };
  }
  const finished = () => readStatus(rec)?.state === 'finished';
  let server: Server | undefined;
  try {
    if (!finished() && runnerAlive(rec)) {
      o.log('adopting a script that kept running while the agent was down', { pid: rec.pid });
      server = await serveHelper(helperSocketPath(rec), o.helper).catch((e) => {
        o.log('the script helper cannot be served again; its helper calls will fail', {
          err: (e as Error).message,
        });
        return undefined;
      });
      while (!finished() && runnerAlive(rec)) await new Promise((r) => setTimeout(r, ADOPT_POLL_MS));
    }
    return outcomeOf(rec, ending);
  } finally {
    server?.close();
    rmSync(rec.tempDir, { recursive: true, force: true });
  }
}
