// Signs the audit chain's head now and then and keeps the signature outside the database: appended to the
// checkpoint log first (the file under DATA_DIR), then posted to every anchor sink (the Slack audit channel,
// Teams later). Runs in the server process. A checkpoint is due after `everyRecords` appends (1,000) or,
// when the head moved at all, after `everyMs` (a minute); so at most a minute or a thousand records can be
// deleted from the tail without a checkpoint noticing. Appends from other processes (broker processes on
// the same PostgreSQL) are seen by polling the head every `pollMs`.
//
// Nothing here is on the append path: appends only bump a counter. Posting is not on the checkpoint path
// either: the file is written first, and each sink is posted to in the background, one post at a time per
// sink, so a sink that hangs holds up neither checkpoints nor the other sinks. A sink that fails is logged
// and gets the newest checkpoint on the next run, which covers every earlier one.
import type { Clock, Logger } from '../ports.ts';
import {
  type AuditAnchorSink,
  type AuditCheckpoint,
  type CheckpointLog,
  signCheckpoint,
} from './audit-checkpoint.ts';
import type { CheckpointKeys } from './audit-keys.ts';
import type { AuditService } from './audit-service.ts';

export interface CheckpointTimer {
  /** Calls `fn` every `ms`; returns a cancel function. */
  every(ms: number, fn: () => void): () => void;
}

export const systemCheckpointTimer: CheckpointTimer = {
  every(ms, fn) {
    const t = setInterval(fn, ms);
    t.unref?.();
    return () => clearInterval(t);
  },
};

export interface CheckpointerDeps {
  audit: Pick<AuditService, 'head' | 'sealLegacyChain'>;
  log: CheckpointLog;
  keys: CheckpointKeys;
  clock: Clock;
  logger: Logger;
  timer?: CheckpointTimer;
  /** A checkpoint after this many new records (default 1,000). */
  everyRecords?: number;
  /** A checkpoint after this long when the head moved (default 60 s). */
  everyMs?: number;
  /** How often the head is polled (default 5 s). */
  pollMs?: number;
  /** How long stop() waits for posts still under way (default 5 s). */
  postGraceMs?: number;
}

export function createAuditCheckpointer(deps: CheckpointerDeps) {
  const { audit, log, keys, clock, logger } = deps;
  const everyRecords = deps.everyRecords ?? 1000;
  const everyMs = deps.everyMs ?? 60_000;
  const pollMs = deps.pollMs ?? 5000;
  const timer = deps.timer ?? systemCheckpointTimer;
  const postGraceMs = deps.postGraceMs ?? 5000;

  /** The newest checkpoint known (from the log at start, then each one written). */
  let last: { seq: number; atMs: number } | undefined;
  let appendedSince = 0;
  let cancelTimer: (() => void) | undefined;
  let inFlight: Promise<void> | undefined;
  let runAgain = false;
  const sinks: AuditAnchorSink[] = [];
  /** Per sink, the newest checkpoint it has not accepted yet. */
  const unposted = new Map<AuditAnchorSink, AuditCheckpoint>();
  /** Per sink, the post under way. */
  const posting = new Map<AuditAnchorSink, Promise<void>>();

  async function loadLast(): Promise<void> {
    for (const e of await log.readAll()) {
      if (!('checkpoint' in e)) continue;
      if (!last || e.checkpoint.seq > last.seq)
        last = { seq: e.checkpoint.seq, atMs: Date.parse(e.checkpoint.at) };
    }
  }

  /** Starts a post to every sink that has an unposted checkpoint and no post under way; does not wait. */
  function post(): void {
    for (const [sink, cp] of unposted) {
      if (posting.has(sink)) continue;
      const p = (async () => {
        try {
          await sink.postCheckpoint(cp);
          if (unposted.get(sink) === cp) unposted.delete(sink);
        } catch (err) {
          logger.warn(
            { err, sink: sink.name, seq: cp.seq },
            'could not post an audit checkpoint; retrying next time',
          );
        } finally {
          posting.delete(sink);
        }
      })();
      posting.set(sink, p);
    }
  }

  async function postsSettled(): Promise<void> {
    while (posting.size) await Promise.all(posting.values());
  }

  /** Signs `head`, appends it to the log, then hands it to the sinks. */
  async function write(head: { seq: number; hash: string }): Promise<AuditCheckpoint> {
    const cp = signCheckpoint(head, clock.now(), keys.privateKey);
    await log.append(cp);
    last = { seq: cp.seq, atMs: Date.parse(cp.at) };
    for (const sink of sinks) unposted.set(sink, cp);
    logger.info({ seq: cp.seq, hash: cp.hash }, 'audit checkpoint signed');
    post();
    return cp;
  }

  /** One look at the head; signs it when due (or when `force` and it moved). */
  async function runOnce(force: boolean): Promise<AuditCheckpoint | undefined> {
    const head = await audit.head();
    if (!head) return undefined;
    if (last && head.seq < last.seq) {
      // Never sign a shorter chain over a longer one: that would bury the evidence. verify names the gap.
      logger.error(
        { head: head.seq, checkpoint: last.seq },
        'the audit log is behind its last signed checkpoint: records were deleted; run `audit verify`',
      );
      return undefined;
    }
    if (last && head.seq === last.seq) return undefined;
    // The count also covers appends this process made in transactions not yet committed when it was
    // triggered: then the committed head is signed now, and the rest with the next checkpoint.
    const due =
      force ||
      !last ||
      head.seq - last.seq >= everyRecords ||
      appendedSince >= everyRecords ||
      clock.now().getTime() - last.atMs >= everyMs;
    if (!due) return undefined;
    if (!head.keyed) {
      // Signing a head without the keyed hash would vouch for records anyone could have written.
      logger.error(
        { head: head.seq },
        'the newest audit record does not carry the keyed hash; not signing it',
      );
      return undefined;
    }
    appendedSince = 0;
    return write(head);
  }

  /** Single flight: a trigger while a run is going makes one more run afterwards. */
  function run(): Promise<void> {
    if (inFlight) {
      runAgain = true;
      return inFlight;
    }
    inFlight = (async () => {
      try {
        do {
          runAgain = false;
          await runOnce(false);
          post();
        } while (runAgain);
      } catch (err) {
        logger.error({ err }, 'audit checkpoint failed; retrying on the next tick');
      } finally {
        inFlight = undefined;
      }
    })();
    return inFlight;
  }

  /**
   * Upgrades a chain begun before keyed hashing (audit.sealLegacyChain) and signs a checkpoint on the
   * marker at once, which is what vouches for the old records. Only when the checkpoint log is still empty:
   * once checkpoints exist, an all-unkeyed chain is not an old one but a replaced one, and is left for
   * `audit verify` to report.
   */
  async function sealLegacyChain(): Promise<AuditCheckpoint | undefined> {
    if ((await log.readAll()).length > 0) {
      const head = await audit.head();
      if (head && !head.keyed)
        logger.error(
          { head: head.seq },
          'the newest audit record does not carry the keyed hash although checkpoints exist; run `audit verify`',
        );
      return undefined;
    }
    const res = await audit.sealLegacyChain();
    if (!res.sealed) {
      if (res.why === 'broken')
        logger.error({ problem: res.problem }, 'the audit chain could not be switched to keyed hashing');
      return undefined;
    }
    logger.info({ legacyThrough: res.record.seq - 1 }, 'audit chain switched to keyed hashing');
    return write({ seq: res.record.seq, hash: res.record.hash });
  }

  return {
    /** Adds a place checkpoints are posted to (the Slack audit channel). */
    addSink(sink: AuditAnchorSink): void {
      sinks.push(sink);
    },

    sealLegacyChain,

    /** Loads the last checkpoint, upgrades an old chain, and starts polling. */
    async start(): Promise<void> {
      await loadLast();
      await sealLegacyChain();
      cancelTimer = timer.every(pollMs, () => void run());
    },

    /** Counts an append; crossing `everyRecords` triggers a checkpoint without waiting for the poll. */
    noteAppended(): void {
      appendedSince++;
      if (cancelTimer && appendedSince >= everyRecords) void run();
    },

    /** The poll, callable directly (tests drive it with an injected timer and clock). */
    tick: run,

    /** Resolves when no checkpoint run and no post is under way. */
    async idle(): Promise<void> {
      while (inFlight) await inFlight;
      await postsSettled();
    },

    /** Signs the head now if it moved since the last checkpoint (`audit checkpoint`, and at shutdown). */
    async checkpointNow(): Promise<AuditCheckpoint | undefined> {
      if (!last) await loadLast();
      while (inFlight) await inFlight;
      return runOnce(true);
    },

    /** Stops polling, then signs the head one last time so a clean shutdown leaves nothing unanchored. */
    async stop(): Promise<void> {
      cancelTimer?.();
      cancelTimer = undefined;
      while (inFlight) await inFlight;
      try {
        await runOnce(true);
      } catch (err) {
        logger.error({ err }, 'final audit checkpoint failed');
      }
      // Give the last posts a moment; a sink that hangs must not hold up the shutdown.
      let grace: NodeJS.Timeout | undefined;
      await Promise.race([
        postsSettled(),
        new Promise<void>((resolve) => {
          grace = setTimeout(resolve, postGraceMs);
        }),
      ]);
      clearTimeout(grace);
    },
  };
}

export type AuditCheckpointer = ReturnType<typeof createAuditCheckpointer>;

/** The audit service with each append counted towards the next checkpoint. */
export function countAppendsFor(
  audit: AuditService,
  checkpointer: Pick<AuditCheckpointer, 'noteAppended'>,
): AuditService {
  return {
    ...audit,
    async append(entry, tx) {
      const record = await audit.append(entry, tx);
      checkpointer.noteAppended();
      return record;
    },
  };
}
