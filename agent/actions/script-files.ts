// The files of one script run and what they say about it. `<state dir>/runs/<delivery id>/` holds the runner's
// status file and the script's output, so an agent that restarts finds them; a temporary directory holds the
// script, its helper socket and its working directory. Both are named in the journal before anything
// starts, and removed once the journal holds the result.
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import type { ActionOutcome, ScriptRecord } from '../journal.ts';

/** The status file is preallocated at this size, so the runner records the end without new disk space. */
const STATUS_BYTES = 4096;

const statusSchema = z.discriminatedUnion('state', [
  z.object({ state: z.literal('prepared') }),
  z.object({ state: z.literal('starting') }),
  z.object({ state: z.literal('running'), scriptPid: z.number().int() }),
  z.object({
    state: z.literal('finished'),
    exitCode: z.number().int().nullable(),
    signal: z.string().nullable(),
    timedOut: z.boolean(),
    timeoutMs: z.number(),
    durationMs: z.number(),
    stdoutTruncated: z.boolean(),
    stderrTruncated: z.boolean(),
    outputLost: z.boolean(),
  }),
  z.object({ state: z.literal('not_started'), error: z.string() }),
]);
export type RunStatus = z.infer<typeof statusSchema>;

/** The directory the runs of this agent keep their status and output in. */
export const runsDir = (stateDir: string) => join(stateDir, 'runs');

/** Names for a new run's files; nothing is created yet (the journal names them first). */
export function planRun(stateDir: string, deliveryId: string): ScriptRecord {
  return {
    runDir: join(runsDir(stateDir), deliveryId),
    tempDir: join(tmpdir(), `ar-run-${randomBytes(8).toString('hex')}`),
  };
}

/**
 * Creates the run's files: the preallocated status ("prepared"), empty output files, and the temporary
 * directory with the script in it. Throws when the disk will not take them.
 */
export function prepareRun(rec: ScriptRecord, scriptBody: string) {
  mkdirSync(rec.runDir, { recursive: true, mode: 0o700 });
  const fd = openSync(join(rec.runDir, 'status.json'), 'w', 0o600);
  try {
    const data = Buffer.alloc(STATUS_BYTES, ' ');
    data.write(JSON.stringify({ state: 'prepared' }));
    for (let at = 0; at < data.length; ) at += writeSync(fd, data, at, data.length - at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  for (const f of ['stdout', 'stderr']) closeSync(openSync(join(rec.runDir, f), 'w', 0o600));
  // Not recursive: the directory must be new (mode 0700), never one someone else made in a shared /tmp.
  mkdirSync(rec.tempDir, { mode: 0o700 });
  const script = join(rec.tempDir, 'script.py');
  const sfd = openSync(script, 'w', 0o600);
  try {
    const body = Buffer.from(scriptBody, 'utf8');
    for (let at = 0; at < body.length; ) at += writeSync(sfd, body, at, body.length - at);
  } finally {
    closeSync(sfd);
  }
  return { script, socket: helperSocketPath(rec) };
}

export const helperSocketPath = (rec: ScriptRecord) => join(rec.tempDir, 'helper.sock');

/** The status the runner last recorded, or undefined when the file is missing or unreadable. */
export function readStatus(rec: ScriptRecord): RunStatus | undefined {
  try {
    return statusSchema.parse(JSON.parse(readFileSync(join(rec.runDir, 'status.json'), 'utf8')));
  } catch {
    return undefined;
  }
}

function readOutput(rec: ScriptRecord, name: 'stdout' | 'stderr', maxBytes: number): string {
  try {
    return readFileSync(join(rec.runDir, name)).subarray(0, maxBytes).toString('utf8');
  } catch {
    return '';
  }
}

/** Removes both directories of a run; safe to call again, and for a run whose files were never made. */
export function removeRun(rec: ScriptRecord) {
  rmSync(rec.tempDir, { recursive: true, force: true });
  rmSync(rec.runDir, { recursive: true, force: true });
}

export interface Ending {
  /** The agent restarted while the script ran and collected its end afterwards. */
  adopted: boolean;
  /** Why the runner's status says nothing final, when it does not: the words after "outcome unknown: ". */
  unknownBecause: string;
  /** When the script was started, for the duration of an unknown outcome. */
  startedAt: string;
  maxOutputBytes: number;
}

/**
 * The outcome a run's files record: the script's exit and output; "not run" when the runner never started
 * it; or "outcome unknown" with whatever output it left, when the runner is gone without recording an end.
 */
export function outcomeOf(rec: ScriptRecord, how: Ending): ActionOutcome {
  const st = readStatus(rec);
  const adopted = how.adopted ? { adopted: true } : {};
  if (st?.state === 'prepared')
    return {
      ok: false,
      error: 'not run: the script was never started (its runner stopped before starting it)',
    };
  if (st?.state === 'not_started') return { ok: false, error: `not run: ${st.error}` };
  if (st?.state !== 'finished') {
    const started = Date.parse(how.startedAt);
    return {
      ok: false,
      error: `outcome unknown: ${how.unknownBecause}; it was not run again`,
      result: {
        exitCode: null,
        signal: null,
        timedOut: false,
        durationMs: Number.isFinite(started) ? Math.max(0, Date.now() - started) : 0,
        stdout: readOutput(rec, 'stdout', how.maxOutputBytes),
        stderr: readOutput(rec, 'stderr', how.maxOutputBytes),
        stdoutTruncated: false,
        stderrTruncated: false,
        outcome: 'unknown',
        ...adopted,
      },
    };
  }
  return {
    ok: st.exitCode === 0 && !st.timedOut,
    result: {
      exitCode: st.exitCode,
      signal: st.signal,
      timedOut: st.timedOut,
      durationMs: st.durationMs,
      stdout: readOutput(rec, 'stdout', how.maxOutputBytes),
      stderr: readOutput(rec, 'stderr', how.maxOutputBytes),
      stdoutTruncated: st.stdoutTruncated,
      stderrTruncated: st.stderrTruncated,
      ...(st.outputLost ? { outputLost: true } : {}),
      ...adopted,
    },
    error: st.timedOut
      ? `the script ran longer than ${Math.round(st.timeoutMs / 1000)} s and was killed`
      : st.exitCode !== 0
        ? `the script exited with ${st.exitCode ?? st.signal}`
        : undefined,
  };
}

/**
 * A process's start time as the OS reports it, to tell it from a later process that got the same pid.
 * Linux: field 22 of /proc/<pid>/stat (clock ticks since boot). Undefined elsewhere, or when it is gone.
 */
export function processStartTime(pid: number): string | undefined {
  return procStat(pid)?.startTime;
}

function procStat(pid: number): { state: string; startTime: string } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0]!, startTime: fields[19]! };
  } catch {
    return undefined;
  }
}

/** True while the recorded runner is still the process with that pid, and has not exited (a zombie). */
export function runnerAlive(rec: ScriptRecord): boolean {
  if (!rec.pid) return false;
  if (process.platform === 'linux') {
    const st = procStat(rec.pid);
    if (!st || st.state === 'Z' || st.state === 'X') return false;
    return rec.startTime === undefined || st.startTime === rec.startTime;
  }
  try {
    process.kill(rec.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
