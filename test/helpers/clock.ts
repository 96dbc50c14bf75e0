import type { Clock } from '../../bot/ports.ts';

/** A clock tests move by hand; nothing in a test sleeps to let time pass. */
export function createTestClock(start = new Date('2026-11-28T09:00:00Z')) {
  let now = start.getTime();
  const clock: Clock & { advance(ms: number): void; set(d: Date): void } = {
    now: () => new Date(now),
    advance(ms: number) {
      now += ms;
    },
    set(d: Date) {
      now = d.getTime();
    },
  };
  return clock;
}
