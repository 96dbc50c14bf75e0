// The journal of deliveries this agent has started, one small file per delivery id. `start` is fsync'd
// before the action runs, so after any crash the agent knows it may have run it and never runs it again
// (at-most-once); `finish` keeps the result so a redelivery gets the same answer again. Entries are never
// pruned: the id of every delivery this agent ever started stays here, so a delivery replayed any time later
// (a fake broker with a captured one) is answered from the journal and never run again.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileDurable } from './agent-state.ts';

const entrySchema = z.object({
  id: z.string(),
  action: z.string(),
  startedAt: z.string(),
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
  return {
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
    start(id: string, action: string): JournalEntry {
      const e = { id, action, startedAt: new Date().toISOString() };
      writeFileDurable(file(id), JSON.stringify(e));
      return e;
    },
    finish(entry: JournalEntry, result: ActionOutcome): JournalEntry {
      const e = { ...entry, finishedAt: new Date().toISOString(), result };
      writeFileDurable(file(entry.id), JSON.stringify(e));
      return e;
    },
    ids(): string[] {
      return readdirSync(dir)
        .filter((n) => n.endsWith('.json'))
        .map((n) => n.slice(0, -5));
    },
  };
}

export type Journal = ReturnType<typeof createJournal>;
