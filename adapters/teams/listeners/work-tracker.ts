// What the adapter does after (or while) answering Teams runs through here. Teams waits for the HTTP answer
// to a message (and redelivers it after about 15 s), so a command's work is queued and the answer goes out
// at once; at most `maxConcurrent` jobs run at a time, so a burst cannot flood the event loop (and an
// embedded database that runs on it) and delay the next answers. Clicks have a tracker of their own: their
// answer waits for the decision only up to its budget, and a queued click is answered without it.
// Everything is tracked, so shutdown and tests can wait for what is in flight.
import { randomBytes } from 'node:crypto';
import type { ChatContext, ChatPort, Logger } from '../../../bot/ports.ts';

/** Loop turns a queued job waits for answers in progress before it starts anyway (no starvation). */
const MAX_YIELDS = 200;

export function createWorkTracker(deps: {
  chat: ChatPort;
  logger: Logger;
  maxConcurrent?: number;
  /** Requests being answered right now: queued work lets them go first (their answers have deadlines). */
  answering?: () => number;
}) {
  const limit = Math.max(1, deps.maxConcurrent ?? 2);
  const inflight = new Set<Promise<unknown>>();
  const waiting: (() => void)[] = [];
  let running = 0;

  /** A failure the core did not answer itself: a private "reference X" matching a log line. */
  async function report(ctx: ChatContext | undefined, err: unknown): Promise<void> {
    const ref = `ERR-${randomBytes(4).toString('hex')}`;
    deps.logger.error({ err, ref }, 'Teams work failed after the answer');
    if (!ctx) return;
    await deps.chat
      .notifyPrivately(
        ctx,
        `Something went wrong on our side, reference ${ref}. Try again or give the reference to an admin.`,
      )
      .catch((sendErr) =>
        deps.logger.error(
          { err: (sendErr as Error).message, ref },
          'could not tell the user about a failure',
        ),
      );
  }

  async function slot(): Promise<void> {
    if (running < limit) {
      running++;
      return;
    }
    await new Promise<void>((resolve) => waiting.push(resolve));
  }

  function release(): void {
    const next = waiting.shift();
    // Hand the slot over after pending I/O, so requests waiting for their answer are read first.
    if (next) setImmediate(next);
    else running--;
  }

  function track<T>(p: Promise<T>): Promise<T> {
    inflight.add(p);
    void p.finally(() => inflight.delete(p)).catch(() => {});
    return p;
  }

  return {
    /** Queues `work` (bounded concurrency); never rejects. `ctx` is who hears about an unexpected failure. */
    run(ctx: () => ChatContext | undefined, work: () => Promise<void>): Promise<void> {
      return track(
        (async () => {
          await slot();
          for (let i = 0; i < MAX_YIELDS && (deps.answering?.() ?? 0) > 0; i++) {
            await new Promise<void>((resolve) => setImmediate(resolve));
          }
          try {
            await work();
          } catch (err) {
            await report(ctx(), err);
          } finally {
            release();
          }
        })(),
      );
    },
    /**
     * Queues `work` like `run`, but hands its result (or failure) back: a click's decision, whose answer
     * does not wait for it beyond its budget.
     */
    queue<T>(work: () => Promise<T>): Promise<T> {
      return track(
        (async () => {
          await slot();
          try {
            return await work();
          } finally {
            release();
          }
        })(),
      );
    },
    /** Tracks work that runs now. */
    track,
    /** Resolves when nothing is running or queued. */
    async idle(): Promise<void> {
      while (inflight.size) await Promise.allSettled([...inflight]);
    },
    queued: () => waiting.length,
  };
}

export type WorkTracker = ReturnType<typeof createWorkTracker>;
