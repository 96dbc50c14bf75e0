// A clock and timer that move only when a test says so (the TimerPort of the card scheduler and of the
// Teams outbound gate). Nothing waits for real time to pass; `run` fires whatever came due.
import type { TimerPort } from '../../adapters/slack/update-scheduler.ts';

export function createManualTimers(start = 1_800_000_000_000) {
  let now = start;
  const timers: { at: number; ms: number; fn: () => void; done: boolean }[] = [];
  const port: TimerPort = {
    now: () => now,
    setTimer(fn, ms) {
      const t = { at: now + Math.max(0, ms), ms, fn, done: false };
      timers.push(t);
      return () => {
        t.done = true;
      };
    },
  };
  const live = () => timers.filter((t) => !t.done).sort((a, b) => a.at - b.at);
  return {
    port,
    now: () => now,
    /** The delays (ms, as asked for) of the timers waiting now. */
    waiting: () => live().map((t) => t.ms),
    /** Moves time forward by `ms` and fires every timer that came due, in order. */
    advance(ms: number) {
      const until = now + ms;
      for (let t = live()[0]; t && t.at <= until; t = live()[0]) {
        now = Math.max(now, t.at);
        t.done = true;
        t.fn();
      }
      now = until;
    },
    /** Jumps to the next timer and fires it; false when none waits. */
    next(): boolean {
      const t = live()[0];
      if (!t) return false;
      now = Math.max(now, t.at);
      t.done = true;
      t.fn();
      return true;
    },
  };
}

export type ManualTimers = ReturnType<typeof createManualTimers>;

/** Polls `cond` (letting real I/O run between polls) until it holds; for sends to the local stand-in. */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
  tries = 400,
): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`gave up waiting for ${what}`);
}
