// A broker's own wake-ups come back to its own LISTEN. It already sent to its agents when it woke them, so each
// echo is passed over once; anything else, or an echo that never came, is not.
import { describe, expect, it } from 'vitest';
import { createEchoFilter } from '../broker/outbox/dispatcher.ts';

describe('the filter for echoes of a broker’s own wake-ups', () => {
  it('passes over each echo once, counting the same payload sent twice', () => {
    const f = createEchoFilter();
    f.sent('a,b');
    f.sent('a,b');
    f.sent('request:r:0');
    expect(f.echo('a,b')).toBe(true);
    expect(f.echo('request:r:0')).toBe(true);
    expect(f.echo('a,b')).toBe(true);
    // A third `a,b` was sent by another process: it is acted on.
    expect(f.echo('a,b')).toBe(false);
    expect(f.echo('c')).toBe(false);
    expect(f.size).toBe(0);
  });

  it('does not wait for the echo of a wake-up that never reached the database', () => {
    const f = createEchoFilter();
    f.sent('a');
    f.lost('a');
    expect(f.echo('a')).toBe(false);
  });

  it('forgets an echo that did not come in time, and everything when the LISTEN session was lost', () => {
    let now = 0;
    const f = createEchoFilter(10_000, () => now);
    f.sent('a');
    now = 10_001;
    expect(f.echo('a')).toBe(false);
    f.sent('b');
    f.clear();
    expect(f.echo('b')).toBe(false);
  });

  it('stays bounded when echoes never come', () => {
    let now = 0;
    const f = createEchoFilter(10_000, () => now);
    for (let i = 0; i < 10_000; i++) f.sent(`e${i}`);
    now = 20_000;
    f.sent('late');
    expect(f.size).toBe(1);
    expect(f.echo('late')).toBe(true);
  });
});
