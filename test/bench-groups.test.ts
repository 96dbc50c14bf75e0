// Keeps `npm run bench:groups` from rotting: its core runs with 20 simulated agents (a child process, real
// certificates, the real agent protocol) against the real broker and platform, through an analyst's request
// and a commander's step-up approval, once on a connected fleet and once queued for a fleet that is away and
// then reconnects at once. Nothing here is timed: the bench prints the figures.
import { afterEach, describe, expect, it } from 'vitest';
import { runGroupsBench } from '../bench/groups-bench-core.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';

const N = 20;

describe.each(drivers)('bench:groups core on %s', { timeout: 120_000 }, (driver) => {
  let tdb: TestDatabase | undefined;
  afterEach(async () => {
    await tdb?.destroy();
  });

  it('runs a group on every agent and drains a queued one after a reconnect: none lost, none run twice', async () => {
    tdb = await openTestDatabase(driver);
    const r = await runGroupsBench(tdb, { n: N });
    for (const g of [r.online, r.offline]) {
      expect(g.deliveries).toBe(N);
      expect(g.results_stored_in_db).toBe(N);
      expect(g.lost).toBe(0);
      expect(g.run_twice).toBe(0);
      // One card, its edits, a few thread notes and one progress message: never a post per endpoint.
      expect(g.chat_calls - g.progress_edits).toBeLessThanOrEqual(12);
      expect(g.chat_calls_by_method.postThreadMessage ?? 0).toBeLessThanOrEqual(1);
    }
    expect(r.offline.queued_before_reconnect).toBe(N);
  });
});
