// Everything a listener does after its ack runs through here. Two jobs:
// - Acks first, always: post-ack work runs at most `maxConcurrent` at a time, the rest wait in a queue. Without
//   the bound, a burst of commands floods the event loop (and an embedded database that runs on it) with
//   work, and the next requests' acks queue behind it past Slack's 3 s limit.
// - Failures the core did not already answer become a private "reference X" message matching a log line,
//   and shutdown can wait for work in flight.
import { randomBytes } from 'node:crypto';
import type { ChatContext, ChatPort, Logger } from '../../../bot/ports.ts';

export function createWorkTracker(deps: { chat: ChatPort; logger: Logger; maxConcurrent?: number }) {
  const limit = Math.max(1, deps.maxConcurrent ?? 2);
  const inflight = new Set<Promise<void>>();
  const waiting: (() => void)[] = [];
  let running = 0;

  async function report(ctx: ChatContext | undefined, err: unknown): Promise<void> {
    const ref = `ERR-${randomBytes(4).toString('hex')}`;
    deps.logger.error({ err, ref, channel: ctx?.channelId }, 'slack listener failed after ack');
    if (!ctx) return;
    await deps.chat
      .notifyPrivately(
        ctx,
        `Something went wrong on our side, reference ${ref}. Try again or give the reference to an admin.`,
      )
      .catch((sendErr) =>
        deps.logger.error({ err: sendErr, ref }, 'could not tell the user about a failure'),
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
    // Hand the slot over on the next turn of the event loop, after pending I/O: requests waiting for
    // their ack are read and answered before the next piece of work starts.
    if (next) setImmediate(next);
    else running--;
  }

  return {
    /** Runs `work` once a slot is free; never rejects. */
    async run(ctx: ChatContext | undefined, work: () => Promise<void>): Promise<void> {
      const p = (async () => {
        await slot();
        try {
          await work();
        } catch (err) {
          await report(ctx, err);
        } finally {
          release();
        }
      })();
      inflight.add(p);
      try {
        await p;
      } finally {
        inflight.delete(p);
      }
    },
    /** Resolves when no listener work is running or queued (shutdown, and tests that wait for the tail). */
    async idle(): Promise<void> {
      while (inflight.size) await Promise.allSettled([...inflight]);
    },
    queued: () => waiting.length,
    report,
  };
}

export type WorkTracker = ReturnType<typeof createWorkTracker>;
