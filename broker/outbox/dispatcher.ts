// The Dispatcher port on the durable outbox: deliveries are rows written in the approver's transaction,
// and a NOTIFY on `ar_outbox` after commit wakes whichever broker process holds each endpoint's agent.
import { and, asc, eq, inArray, or } from 'drizzle-orm';
import {
  type Clock,
  DELIVERY_BATCH_SIZE,
  type DeliverySpec,
  type Dispatcher,
  systemClock,
  type WakeScope,
} from '../../bot/ports.ts';
import type { Db, DbOrTx } from '../../db/client.ts';
import { deliveries } from '../../db/schema.ts';

export const OUTBOX_CHANNEL = 'ar_outbox';
export const DELIVERY_CHANNEL = 'ar_delivery';
/** NOTIFY payloads are capped at 8000 bytes by PostgreSQL; ids are 36 characters plus a comma. */
const IDS_PER_NOTIFY = 200;

/** The NOTIFY payload that wakes the brokers for batch `index` of a request: `request:<id>:<index>`. */
const BATCH_PREFIX = 'request:';

/** The wake-up payloads for `endpointIds`: one per batch of the request when scoped and many, else by id. */
export function wakePayloads(endpointIds: string[], scope?: WakeScope): string[] {
  if (!scope || endpointIds.length <= IDS_PER_NOTIFY) return packIds(endpointIds);
  const batches = Math.ceil(scope.deliveries / DELIVERY_BATCH_SIZE);
  return Array.from({ length: batches }, (_, i) => `${BATCH_PREFIX}${scope.requestId}:${i}`);
}

/**
 * The endpoint ids an `ar_outbox` payload names: the ids themselves, or for a batch wake-up the endpoints of
 * that batch of the request's deliveries in the order they were written (one indexed query; a request's
 * deliveries are never deleted, so the batch is the one the dispatcher wrote and audited).
 */
export async function endpointsOfWake(db: Db, payload: string): Promise<string[]> {
  if (!payload.startsWith(BATCH_PREFIX)) return payload.split(',');
  const [requestId = '', index = ''] = payload.slice(BATCH_PREFIX.length).split(':');
  const i = Number(index);
  if (!/^[0-9a-f-]{36}$/.test(requestId) || !Number.isInteger(i) || i < 0) return [];
  const rows = await db
    .select({ endpointId: deliveries.endpointId })
    .from(deliveries)
    .where(eq(deliveries.requestId, requestId))
    .orderBy(asc(deliveries.seq))
    .offset(i * DELIVERY_BATCH_SIZE)
    .limit(DELIVERY_BATCH_SIZE);
  return rows.map((r) => r.endpointId);
}

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
      // In batches: a fan-out to thousands of endpoints stays under the driver's parameter limit, and each
      // batch is the one the request's audit record and wake-up name.
      for (let i = 0; i < specs.length; i += DELIVERY_BATCH_SIZE) {
        const rows = await tx
          .insert(deliveries)
          .values(
            specs.slice(i, i + DELIVERY_BATCH_SIZE).map((s) => ({
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

    async wake(endpointIds: string[], scope?: WakeScope) {
      deps.onWake?.(endpointIds);
      for (const payload of wakePayloads(endpointIds, scope)) await deps.notify(OUTBOX_CHANNEL, payload);
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

/**
 * The wake-ups a process sent, so that each one's echo on its own LISTEN is passed over once: the process
 * already woke its own agents when it sent it. Counted per payload (the same endpoint may be woken twice).
 * An echo that never came (the NOTIFY failed, or the LISTEN session dropped: `clear` on resubscribing) is
 * forgotten after `ttlMs`, so the same payload sent later by another process is not passed over for it.
 */
const MAX_PAYLOADS = 10_000;

export function createEchoFilter(ttlMs = 10_000, now = () => Date.now()) {
  const sent = new Map<string, number[]>();
  const forgetOld = (times: number[]) => {
    while (times.length && times[0]! < now() - ttlMs) times.shift();
  };
  return {
    sent(payload: string) {
      // Bounded, at a cost that does not grow per send: a sweep that frees less than half gives up on all.
      if (sent.size >= MAX_PAYLOADS) {
        for (const [p, times] of sent) {
          forgetOld(times);
          if (!times.length) sent.delete(p);
        }
        if (sent.size >= MAX_PAYLOADS / 2) sent.clear();
      }
      const times = sent.get(payload) ?? [];
      times.push(now());
      sent.set(payload, times);
    },
    /** One send of `payload` never reached the database. */
    lost(payload: string) {
      const times = sent.get(payload);
      times?.pop();
      if (!times?.length) sent.delete(payload);
    },
    /** True when `payload` is the echo of one this process sent (and counts it as seen). */
    echo(payload: string): boolean {
      const times = sent.get(payload);
      if (!times) return false;
      forgetOld(times);
      const mine = times.shift() !== undefined;
      if (!times.length) sent.delete(payload);
      return mine;
    },
    clear() {
      sent.clear();
    },
    get size() {
      return sent.size;
    },
  };
}
