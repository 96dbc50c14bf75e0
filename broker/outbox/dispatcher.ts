// The Dispatcher port on the durable outbox: deliveries are rows written in the approver's transaction,
// and a NOTIFY on `ar_outbox` after commit wakes whichever broker process holds each endpoint's agent.
import { and, eq, inArray, or } from 'drizzle-orm';
import { type Clock, type DeliverySpec, type Dispatcher, systemClock } from '../../bot/ports.ts';
import type { Db, DbOrTx } from '../../db/client.ts';
import { deliveries } from '../../db/schema.ts';

export const OUTBOX_CHANNEL = 'ar_outbox';
export const DELIVERY_CHANNEL = 'ar_delivery';
/** NOTIFY payloads are capped at 8000 bytes by PostgreSQL; ids are 36 characters plus a comma. */
const IDS_PER_NOTIFY = 200;

/** Splits ids into comma-separated NOTIFY payloads (one endpoint id, or several joined by commas). */
export function packIds(ids: string[]): string[] {
  const unique = [...new Set(ids)];
  const out: string[] = [];
  for (let i = 0; i < unique.length; i += IDS_PER_NOTIFY)
    out.push(unique.slice(i, i + IDS_PER_NOTIFY).join(','));
  return out;
}

export function createOutboxDispatcher(deps: {
  db: Db;
  notify: (channel: string, payload: string) => Promise<void>;
  clock?: Clock;
  /** The broker that owns this dispatcher sends to its own agents at once, without the NOTIFY round trip. */
  onWake?: (endpointIds: string[]) => void;
}): Dispatcher {
  const clock = deps.clock ?? systemClock;
  return {
    async enqueue(tx: DbOrTx, specs: DeliverySpec[]) {
      const out: { id: string; endpointId: string }[] = [];
      // Chunked so a fan-out to thousands of endpoints stays under the driver's parameter limit.
      for (let i = 0; i < specs.length; i += 1000) {
        const rows = await tx
          .insert(deliveries)
          .values(
            specs.slice(i, i + 1000).map((s) => ({
              requestId: s.requestId,
              endpointId: s.endpointId,
              action: s.action,
              payload: s.payload,
              expiresAt: s.expiresAt,
              state: 'queued' as const,
              held: s.held ?? false,
            })),
          )
          .returning({ id: deliveries.id, endpointId: deliveries.endpointId });
        out.push(...rows);
      }
      return out;
    },

    async wake(endpointIds: string[]) {
      deps.onWake?.(endpointIds);
      for (const payload of packIds(endpointIds)) await deps.notify(OUTBOX_CHANNEL, payload);
    },

    /**
     * Cancels deliveries not yet acknowledged (queued, or sent but unacked: the agent asks before running
     * and is told no). Acknowledged ones are already running and cannot be called back.
     */
    async cancel(tx: DbOrTx, target: { requestId?: string; deliveryId?: string }) {
      if (!target.requestId && !target.deliveryId) return 0;
      const which = or(
        target.requestId ? eq(deliveries.requestId, target.requestId) : undefined,
        target.deliveryId ? eq(deliveries.id, target.deliveryId) : undefined,
      );
      const rows = await tx
        .update(deliveries)
        .set({ state: 'cancelled', finishedAt: clock.now() })
        .where(and(which, inArray(deliveries.state, ['queued', 'sent'])))
        .returning({ id: deliveries.id });
      return rows.length;
    },
  };
}
