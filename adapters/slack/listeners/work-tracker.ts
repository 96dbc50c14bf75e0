// Everything a listener does after its ack runs through here: failures the core did not already answer
// become a private "reference X" message matching a log line, and shutdown can wait for work in flight.
import { randomBytes } from 'node:crypto';
import type { ChatContext, ChatPort, Logger } from '../../../bot/ports.ts';

export function createWorkTracker(deps: { chat: ChatPort; logger: Logger }) {
  const inflight = new Set<Promise<void>>();

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

  return {
    /** Runs `work` after the ack; never rejects. */
    async run(ctx: ChatContext | undefined, work: () => Promise<void>): Promise<void> {
      const p = work().catch((err) => report(ctx, err));
      inflight.add(p);
      try {
        await p;
      } finally {
        inflight.delete(p);
      }
    },
    /** Resolves when no listener work is running (graceful shutdown, and benchmarks that wait for the tail). */
    async idle(): Promise<void> {
      while (inflight.size) await Promise.allSettled([...inflight]);
    },
    report,
  };
}

export type WorkTracker = ReturnType<typeof createWorkTracker>;
