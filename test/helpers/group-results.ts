// A finished action group of `n` endpoints stored directly in the database, for the results page tests:
// every tenth endpoint failed (exit 1, with stderr), the rest succeeded; each wrote 21 lines of output.
import { actionGroups, actionRequests, deliveries, endpoints, segments } from '../../db/schema.ts';
import type { WebFixture } from './web-stepup.ts';

export async function seedFinishedGroup(f: WebFixture, requesterId: string, ref: string, n: number) {
  const [seg] = await f.tdb.db
    .insert(segments)
    .values({ name: 'fleet', activeResponseEnabled: true })
    .returning();
  const hosts = await f.tdb.db
    .insert(endpoints)
    .values(
      Array.from({ length: n }, (_, i) => ({
        hostname: `host-${String(i + 1).padStart(3, '0')}`,
        os: 'linux' as const,
        segmentId: seg!.id,
      })),
    )
    .returning();
  const [request] = await f.tdb.db
    .insert(actionRequests)
    .values({
      ref,
      action: 'run',
      scriptName: 'collect',
      targets: hosts.map((h) => ({ endpointId: h.id, hostname: h.hostname })),
      digest: 'e'.repeat(64),
      reason: 'sweep',
      requesterId,
      state: 'completed',
      deliveryTtlSeconds: 3600,
    })
    .returning();
  await f.tdb.db.insert(actionGroups).values({ requestId: request!.id, state: 'finished' });
  const now = f.clock.now();
  const rows = await f.tdb.db
    .insert(deliveries)
    .values(
      hosts.map((h, i) => ({
        requestId: request!.id,
        endpointId: h.id,
        action: 'run',
        payload: {},
        expiresAt: now,
        state: i % 10 === 0 ? ('failed' as const) : ('succeeded' as const),
        sentAt: now,
        finishedAt: now,
        result: {
          outcome: 'exited',
          exitCode: i % 10 === 0 ? 1 : 0,
          durationMs: 1200 + i,
          stdout: `report of ${h.hostname}\n${'line\n'.repeat(20)}`,
          stderr: i % 10 === 0 ? 'permission denied, ok' : '',
        },
      })),
    )
    .returning();
  return { requestId: request!.id, deliveryIds: rows.map((r) => r.id) };
}
