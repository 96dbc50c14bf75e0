// The agent's writes to its journal, made to survive a full or failing disk. Before an action: a write is
// tried a few times, and if the disk still refuses it the caller must not run the action (it reports the
// delivery failed, with the reason). After an action: its result is sent anyway, kept in memory for a
// redelivery, and written again and again until the disk takes it, so freeing space is enough to catch up;
// nothing waits for a restart.
import type { ActionOutcome, Journal, JournalEntry, ScriptRecord } from './journal.ts';

/** Attempts of a write before an action, with a doubling pause from this first one. */
const ATTEMPTS = 3;
const FIRST_PAUSE_MS = 200;
/** Retries of results not yet written start at the first delay and back off to the last. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function createJournalWriter(deps: {
  journal: Journal;
  log: (msg: string, extra?: object) => void;
  /** Called once an entry holds its result (the agent removes the run's files then). */
  onRecorded: (entry: JournalEntry) => void;
}) {
  const { journal, log, onRecorded } = deps;
  const unrecorded = new Map<string, ActionOutcome>();
  let timer: NodeJS.Timeout | undefined;
  let delay = RETRY_FIRST_MS;

  async function attempt<T>(what: string, id: string, write: () => T): Promise<T> {
    for (let i = 1; ; i++) {
      try {
        return write();
      } catch (e) {
        if (i >= ATTEMPTS) throw e;
        log('journal write failed; trying again', { what, id, err: (e as Error).message });
        await sleep(FIRST_PAUSE_MS * 2 ** (i - 1));
      }
    }
  }

  function record(id: string, outcome: ActionOutcome): boolean {
    let entry: JournalEntry;
    try {
      entry = journal.finish(id, outcome);
    } catch (e) {
      if (!unrecorded.has(id))
        log('could not write a result to the journal; keeping it in memory and trying again', {
          id,
          err: (e as Error).message,
        });
      return false;
    }
    try {
      onRecorded(entry);
    } catch (e) {
      log('could not clean up after a delivery', { id, err: (e as Error).message });
    }
    return true;
  }

  function retryLater() {
    if (timer || !unrecorded.size) return;
    timer = setTimeout(() => {
      timer = undefined;
      for (const [id, outcome] of unrecorded) {
        if (!record(id, outcome)) continue;
        unrecorded.delete(id);
        log('result written to the journal after all', { id });
      }
      delay = unrecorded.size ? Math.min(RETRY_MAX_MS, delay * 2) : RETRY_FIRST_MS;
      retryLater();
    }, delay);
    timer.unref();
  }

  return {
    /** Writes "started". Throws the last error when the disk refuses every attempt: then run nothing. */
    start: (id: string, action: string) => attempt('start', id, () => journal.start(id, action)),
    /** Writes a script's record. Throws the last error when the disk refuses every attempt. */
    recordScript: (id: string, rec: ScriptRecord) =>
      attempt('script', id, () => journal.recordScript(id, rec)),
    /** Writes a result, or keeps it and retries until the disk takes it. Never throws. */
    finish(id: string, outcome: ActionOutcome) {
      if (record(id, outcome)) return;
      unrecorded.set(id, outcome);
      retryLater();
    },
    /** A result this agent has but could not write yet. */
    unrecorded: (id: string) => unrecorded.get(id),
    stop() {
      if (timer) clearTimeout(timer);
    },
  };
}

export type JournalWriter = ReturnType<typeof createJournalWriter>;
