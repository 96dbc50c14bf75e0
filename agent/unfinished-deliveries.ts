// What became of deliveries this agent started and never finished: it crashed, was killed or restarted while
// they ran. The journal says each one started, so none runs again; what is reported is what really happened.
// A script is looked for through its journal record: adopted while it still runs, its end collected when it
// is over, "outcome unknown" when it left no trace. Any other action was cut short at an unknown point.
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type ExecContext, helperCall } from './actions/execute.ts';
import { adoptScript } from './actions/run-script.ts';
import { removeRun, runsDir } from './actions/script-files.ts';
import type { ActionOutcome, Journal, JournalEntry } from './journal.ts';

const DELIVERY_ID = /^[0-9a-f-]{36}$/;

export function createUnfinishedDeliveries(deps: {
  journal: Journal;
  stateDir: string;
  maxOutputBytes: number;
  execContext: (deliveryId: string, startedAt: string) => ExecContext;
  log: (msg: string, extra?: object) => void;
}) {
  const { journal, stateDir, log } = deps;
  return {
    /** The outcome to report for an entry that started and has no result. */
    async settle(entry: JournalEntry): Promise<ActionOutcome> {
      if (entry.script) {
        const ctx = deps.execContext(entry.id, entry.startedAt);
        return adoptScript(entry.script, {
          startedAt: entry.startedAt,
          maxOutputBytes: deps.maxOutputBytes,
          helper: (op, args) => helperCall(ctx, op, args),
          log,
        });
      }
      return {
        ok: false,
        error: 'interrupted: the agent stopped before this action finished; it was not run again',
      };
    },

    /**
     * The unfinished scripts an earlier run of this agent left in its state directory, to settle at start.
     * The files of finished ones (the agent stopped before it removed them) are removed here.
     */
    leftoverScripts(): JournalEntry[] {
      let names: string[];
      try {
        names = readdirSync(runsDir(stateDir)).filter((n) => DELIVERY_ID.test(n));
      } catch {
        return [];
      }
      const out: JournalEntry[] = [];
      for (const id of names) {
        const entry = journal.get(id);
        if (entry?.script && !entry.result) out.push(entry);
        else if (entry?.script) removeRun(entry.script);
        else rmSync(join(runsDir(stateDir), id), { recursive: true, force: true });
      }
      return out;
    },
  };
}
