// Card edits per channel: at most one per interval, the newest view wins, other channels are not held up.
// Time is a hand-moved clock and the timer fires only when the test says so.
import { describe, expect, it } from 'vitest';
import { createUpdateScheduler, type TimerPort } from '../adapters/slack/update-scheduler.ts';

function manualTimers() {
  let now = 0;
  const timers: { at: number; fn: () => void; cancelled: boolean }[] = [];
  const port: TimerPort = {
    now: () => now,
    setTimer(fn, ms) {
      const t = { at: now + ms, fn, cancelled: false };
      timers.push(t);
      return () => {
        t.cancelled = true;
      };
    },
  };
  return {
    port,
    /** Moves time forward and fires the timers that came due, letting their sends settle. */
    async advance(ms: number) {
      now += ms;
      for (const t of timers.filter((x) => !x.cancelled && x.at <= now)) {
        t.cancelled = true;
        t.fn();
      }
      for (let i = 0; i < 5; i++) await Promise.resolve();
    },
    armed: () => timers.filter((t) => !t.cancelled).length,
  };
}

describe('card update scheduler', () => {
  it('sends the first edit in a quiet channel at once', async () => {
    const t = manualTimers();
    const sent: string[] = [];
    const s = createUpdateScheduler({ timers: t.port, onError: () => {} });
    await s.schedule('C1', 'm1', async () => {
      sent.push('v1');
    });
    expect(sent).toEqual(['v1']);
  });

  it('coalesces a burst of edits to one card into the newest, sent after the interval', async () => {
    const t = manualTimers();
    const sent: string[] = [];
    const s = createUpdateScheduler({ timers: t.port, onError: () => {} });
    await s.schedule('C1', 'm1', async () => {
      sent.push('v1');
    });
    for (let i = 2; i <= 50; i++) {
      await s.schedule('C1', 'm1', async () => {
        sent.push(`v${i}`);
      });
    }
    expect(sent).toEqual(['v1']);
    await t.advance(999);
    expect(sent).toEqual(['v1']);
    await t.advance(1);
    expect(sent).toEqual(['v1', 'v50']);
    expect(s.pendingCount()).toBe(0);
  });

  it('spaces edits to two cards in one channel a second apart', async () => {
    const t = manualTimers();
    const sent: string[] = [];
    const s = createUpdateScheduler({ timers: t.port, onError: () => {} });
    const push = (v: string) => async () => {
      sent.push(v);
    };
    await s.schedule('C1', 'a', push('a1'));
    await s.schedule('C1', 'b', push('b1'));
    await s.schedule('C1', 'a', push('a2'));
    await t.advance(1000);
    expect(sent).toEqual(['a1', 'b1']);
    await t.advance(1000);
    expect(sent).toEqual(['a1', 'b1', 'a2']);
  });

  it('does not hold up another channel', async () => {
    const t = manualTimers();
    const sent: string[] = [];
    const s = createUpdateScheduler({ timers: t.port, onError: () => {} });
    await s.schedule('C1', 'a', async () => {
      sent.push('c1');
    });
    await s.schedule('C2', 'b', async () => {
      sent.push('c2');
    });
    expect(sent).toEqual(['c1', 'c2']);
  });

  it('reports a failed delayed edit and keeps going', async () => {
    const t = manualTimers();
    const errors: unknown[] = [];
    const sent: string[] = [];
    const s = createUpdateScheduler({ timers: t.port, onError: (e) => errors.push(e) });
    await s.schedule('C1', 'a', async () => {
      sent.push('a1');
    });
    await s.schedule('C1', 'a', () => Promise.reject(new Error('ratelimited')));
    await s.schedule('C1', 'b', async () => {
      sent.push('b1');
    });
    await t.advance(1000);
    expect(errors).toHaveLength(1);
    await t.advance(1000);
    expect(sent).toEqual(['a1', 'b1']);
  });

  it('sends everything pending on drain, ignoring the interval', async () => {
    const t = manualTimers();
    const sent: string[] = [];
    const s = createUpdateScheduler({ timers: t.port, onError: () => {} });
    await s.schedule('C1', 'a', async () => {
      sent.push('a1');
    });
    await s.schedule('C1', 'a', async () => {
      sent.push('a2');
    });
    await s.drain();
    expect(sent).toEqual(['a1', 'a2']);
    expect(t.armed()).toBe(0);
  });
});
