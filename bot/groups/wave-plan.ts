// The first wave of an action group, chosen in the dispatching transaction: with a canary, that many
// endpoints (online ones first, so the canary does not wait on a machine that is off); with only a pace, the
// first endpoint; otherwise every endpoint. The deliveries of everyone else are written held, and the broker
// sends no held delivery until the group releases it (group-waves.ts).
import { and, asc, eq, inArray, isNotNull, sql } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionGroups, deliveries, endpoints } from '../../db/schema.ts';
import { BadRequest } from '../errors.ts';
import type { TargetView } from '../ports.ts';
import { lockGroup } from './group-dal.ts';

/**
 * The staged-wave options of a command (only the many-target commands carry them), refused when they make no
 * sense for `targets` endpoints: waves need a group, and a canary must leave someone after it.
 */
export function checkWaves(
  command: { canary?: number; ratePerMinute?: number; haltAtPercent?: number },
  targets: number,
) {
  const { canary, ratePerMinute, haltAtPercent } = command;
  const waves = { canary, ratePerMinute, haltAtPercent };
  if (canary === undefined && ratePerMinute === undefined && haltAtPercent === undefined) return waves;
  if (targets < 2) {
    throw new BadRequest(
      'request.waves_need_group',
      '--canary, --rate and --halt-at are for action groups: name more than one endpoint (or a segment).',
    );
  }
  if (canary !== undefined && canary >= targets) {
    throw new BadRequest(
      'request.canary_too_large',
      `--canary ${canary} leaves nothing after the canary: the group has ${targets} endpoints.`,
    );
  }
  return waves;
}

/** Endpoint ids of the first wave, or null when the whole group goes at once. */
export async function firstWave(
  tx: DbOrTx,
  requestId: string,
  targets: TargetView[],
  now: Date,
): Promise<Set<string> | null> {
  const group = await lockGroup(tx, requestId);
  if (!group || (!group.canary && !group.ratePerMinute)) return null;
  if (group.canary) {
    const ids = targets.map((t) => t.endpointId);
    const online = new Set<string>();
    for (let i = 0; i < ids.length; i += 5000) {
      const rows = await tx
        .select({ id: endpoints.id })
        .from(endpoints)
        .where(and(inArray(endpoints.id, ids.slice(i, i + 5000)), isNotNull(endpoints.brokerId)));
      for (const r of rows) online.add(r.id);
    }
    const ordered = [...ids.filter((id) => online.has(id)), ...ids.filter((id) => !online.has(id))];
    await tx
      .update(actionGroups)
      .set({ state: 'canary', updatedAt: now })
      .where(eq(actionGroups.requestId, requestId));
    return new Set(ordered.slice(0, group.canary));
  }
  await tx
    .update(actionGroups)
    .set({ state: 'running', pacedFrom: now, pacedReleased: 1, updatedAt: now })
    .where(eq(actionGroups.requestId, requestId));
  return new Set(targets.slice(0, 1).map((t) => t.endpointId));
}

/** Releases up to `n` held deliveries of a request (all when `n` is undefined), oldest first. */
export async function releaseHeld(tx: DbOrTx, requestId: string, n?: number): Promise<string[]> {
  if (n !== undefined && n <= 0) return [];
  const pick = tx
    .select({ id: deliveries.id })
    .from(deliveries)
    .where(
      and(eq(deliveries.requestId, requestId), eq(deliveries.held, true), eq(deliveries.state, 'queued')),
    )
    .orderBy(asc(deliveries.seq));
  const ids = n === undefined ? pick : pick.limit(n);
  const rows = await tx
    .update(deliveries)
    .set({ held: false })
    .where(inArray(deliveries.id, sql`(${ids})`))
    .returning({ endpointId: deliveries.endpointId });
  return rows.map((r) => r.endpointId);
}

/** Holds every delivery of a request not yet sent (a halt); returns how many. */
export async function holdUnsent(tx: DbOrTx, requestId: string): Promise<number> {
  const rows = await tx
    .update(deliveries)
    .set({ held: true })
    .where(
      and(eq(deliveries.requestId, requestId), eq(deliveries.state, 'queued'), eq(deliveries.held, false)),
    )
    .returning({ id: deliveries.id });
  return rows.length;
}

/** Delivery counts of a request split by held and state, in one query. */
export async function waveCounts(tx: DbOrTx, requestId: string) {
  const rows = await tx
    .select({ held: deliveries.held, state: deliveries.state, n: sql<number>`count(*)::int` })
    .from(deliveries)
    .where(eq(deliveries.requestId, requestId))
    .groupBy(deliveries.held, deliveries.state);
  const out = {
    total: 0,
    held: 0,
    released: {} as Record<string, number>,
    all: {} as Record<string, number>,
  };
  for (const r of rows) {
    const n = Number(r.n);
    out.total += n;
    out.all[r.state] = (out.all[r.state] ?? 0) + n;
    if (r.held) out.held += n;
    else out.released[r.state] = (out.released[r.state] ?? 0) + n;
  }
  return out;
}
