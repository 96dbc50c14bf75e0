// The journal of deliveries this agent has started, one small file per delivery id. `start` is fsync'd
// before the action runs, so after any crash the agent knows it may have run it and never runs it again
// (at-most-once); `finish` keeps the result so a redelivery gets the same answer again. Entries are never
// pruned: the id of every delivery this agent ever started stays here, so a delivery replayed any time later
// (a fake broker with a captured one) is answered from the journal and never run again. A script's entry
// also names its process and files (`script`), so an agent that restarts while the script runs can find it.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileDurable } from './agent-state.ts';

/**
 * Where a `run` delivery's script lives: written before the script's runner starts, and again with the
 * runner's pid and start time before the runner is told to start the script.
 */
export const scriptRecordSchema = z.object({
  /** `<state dir>/runs/<delivery id>`: the runner's status file and the script's output. */
  runDir: z.string(),
  /** The script file, the helper socket and the script's working directory; removed when it ends. */
  tempDir: z.string(),
  /** The runner process; absent when the agent stopped before it started one. */
  pid: z.number().int().positive().optional(),
  /** The runner's start time as the OS tells it (Linux: clock ticks since boot), so a reused pid is not it. */
  startTime: z.string().optional(),
});
export type ScriptRecord = z.infer<typeof scriptRecordSchema>;

const entrySchema = z.object({
  id: z.string(),
  action: z.string(),
  startedAt: z.string(),
  script: scriptRecordSchema.optional(),
  finishedAt: z.string().optional(),
  result: z
    .object({
      ok: z.boolean(),
      result: z.record(z.string(), z.unknown()).optional(),
      error: z.string().optional(),
    })
    .optional(),
});
export type JournalEntry = z.infer<typeof entrySchema>;
export type ActionOutcome = NonNullable<JournalEntry['result']>;

const ID = /^[0-9a-f-]{36}$/;

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function createJournal(dir: string) {
  const file = (id: string) => {
    if (!ID.test(id)) throw new Error(`bad delivery id ${id.slice(0, 40)}`);
    return join(dir, `${id}.json`);
  };
  const journal = {
    dir,
    /**
     * The entry for a delivery id, or undefined when this agent never started it. An entry that exists but
     * cannot be read (a damaged disk, a hand edit) counts as started and unfinished: when unsure whether it
     * ran, the agent must not run it.
     */
    get(id: string): JournalEntry | undefined {
      let text: string;
      try {
        text = readFileSync(file(id), 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        return { id, action: 'unknown', startedAt: 'unknown' };
      }
      const parsed = entrySchema.safeParse(safeJson(text));
      return parsed.success ? parsed.data : { id, action: 'unknown', startedAt: 'unknown' };
    },
    /** Throws when the entry cannot be written (a full disk): the caller must then not run the action. */
    start(id: string, action: string): JournalEntry {
      const e = { id, action, startedAt: new Date().toISOString() };
      writeFileDurable(file(id), JSON.stringify(e));
      return e;
    },
    /** Adds (or completes) the script record of a started entry. Throws when it cannot be written. */
    recordScript(id: string, script: ScriptRecord): JournalEntry {
      const e = {
        ...(journal.get(id) ?? { id, action: 'run', startedAt: new Date().toISOString() }),
        script,
      };
      writeFileDurable(file(id), JSON.stringify(e));
      return e;
    },
    /** Keeps the result, and everything the entry held. Throws when it cannot be written. */
    finish(id: string, result: ActionOutcome): JournalEntry {
      const before = journal.get(id) ?? { id, action: 'unknown', startedAt: 'unknown' };
      const e = { ...before, finishedAt: new Date().toISOString(), result };
      writeFileDurable(file(id), JSON.stringify(e));
      return e;
    },
    ids(): string[] {
      return readdirSync(dir)
        .filter((n) => n.endsWith('.json'))
        .map((n) => n.slice(0, -5));
    },
  };
  return journal;
}

export type Journal = ReturnType<typeof createJournal>;
