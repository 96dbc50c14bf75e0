// The broker's side of the outbox: claim deliveries to send, record acknowledgements and results, expire
// what outlived its TTL. Each call is one transaction with its audit records; the caller sends frames and
// observer events only after it returns (nothing goes to an agent from inside a transaction).
import { and, asc, eq, inArray, lte, sql } from 'drizzle-orm';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import type { Clock, DeliveryEvent } from '../../bot/ports.ts';
import type { Db, DbOrTx } from '../../db/client.ts';
import { deliveries } from '../../db/schema.ts';

export type DeliveryRow = typeof deliveries.$inferSelect;
export type ResultInput = { id: string; ok: boolean; result?: Record<string, unknown>; error?: string };
export const FINAL_STATES = ['succeeded', 'failed', 'expired', 'cancelled'] as const;
/** Deliveries an agent may still have to see: never sent, sent but unacked, or running. */
const OPEN_STATES = ['queued', 'sent', 'acknowledged'] as const;
const PER_ENDPOINT_LIMIT = 50;
/**
 * The audit service's append lock (bot/audit/audit-service.ts). Outbox transactions take it first, before
 * any row lock: an ack holding a delivery row while waiting for the audit lock, and a send holding the
 * audit lock while waiting for that row, would otherwise deadlock on PostgreSQL.
 */
const AUDIT_LOCK_KEY = 7_261_002;
const lockAuditFirst = (tx: DbOrTx) => tx.execute(sql`select pg_advisory_xact_lock(${AUDIT_LOCK_KEY})`);

const ev = (r: { id: string; requestId: string; endpointId: string }, state: string): DeliveryEvent => ({
  deliveryId: r.id,
  requestId: r.requestId,
  endpointId: r.endpointId,
  state,
});

/** Groups rows by request so one audit record covers a batch (a fan-out is one record per batch). */
function byRequest<T extends { requestId: string }>(rows: T[]): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const r of rows) {
    const list = m.get(r.requestId);
    if (list) list.push(r);
    else m.set(r.requestId, [r]);
  }
  return m;
}

export function createOutboxRepo(deps: { db: Db; audit: AuditService; clock: Clock; brokerId: string }) {
  const { db, audit, clock, brokerId } = deps;

  async function expireIn(tx: DbOrTx, now: Date, endpointIds?: string[]) {
    const rows = await tx
      .update(deliveries)
      .set({ state: 'expired', finishedAt: now, error: 'time-to-live ran out before the agent took it' })
      .where(
        and(
          inArray(deliveries.state, ['queued', 'sent']),
          lte(deliveries.expiresAt, now),
          endpointIds ? inArray(deliveries.endpointId, endpointIds) : undefined,
        ),
      )
      .returning();
    for (const [requestId, list] of byRequest(rows)) {
      await audit.append(
        {
          actorType: 'system',
          actorId: brokerId,
          action: 'delivery.expired',
          outcome: 'failed',
          requestId,
          endpointId: list.length === 1 ? list[0]!.endpointId : null,
          details: { deliveries: list.map((r) => ({ id: r.id, endpointId: r.endpointId })) },
        },
        tx,
      );
    }
    return rows;
  }

  async function recordResultIn(
    tx: DbOrTx,
    now: Date,
    endpointId: string,
    res: ResultInput,
    extraAudit?: (row: DeliveryRow, tx: DbOrTx) => Promise<void>,
  ) {
    const [row] = await tx
      .select()
      .from(deliveries)
      .where(and(eq(deliveries.id, res.id), eq(deliveries.endpointId, endpointId)))
      .for('update');
    // A queued delivery was never sent to the agent: it cannot have a result for it.
    if (!row || row.state === 'queued') return { status: 'unknown' as const };
    if (!['sent', 'acknowledged'].includes(row.state)) return { status: 'final' as const, row };
    const state = res.ok ? ('succeeded' as const) : ('failed' as const);
    const [updated] = await tx
      .update(deliveries)
      .set({
        state,
        finishedAt: now,

        result: res.result ?? null,
        error: res.error ?? null,
      })
      .where(eq(deliveries.id, row.id))
      .returning();
    await audit.append(
      {
        actorType: 'agent',
        actorId: endpointId,
        action: 'delivery.result',
        outcome: res.ok ? 'ok' : 'failed',
        requestId: row.requestId,
        endpointId,
        details: {
          deliveryId: row.id,
          action: row.action,
          result: res.result ?? null,
          error: res.error ?? null,
        },
      },
      tx,
    );
    await extraAudit?.(updated!, tx);
    return { status: 'recorded' as const, row: updated!, event: ev(row, state) };
  }

  return {
    /**
     * For the given endpoints (held by this broker): expires stale deliveries, then returns every open one
     * in seq order, marking queued ones `sent`. `skip` holds ids already sent on the current connections so
     * they are not sent twice; sent or acknowledged ones from an earlier connection are sent again (the
     * agent's journal makes the repeat harmless).
     */
    async claim(endpointIds: string[], skip: (row: DeliveryRow) => boolean) {
      const now = clock.now();
      return db.transaction(async (tx) => {
        await lockAuditFirst(tx);
        const expired = await expireIn(tx, now, endpointIds);
        const open = await tx
          .select()
          .from(deliveries)
          .where(
            and(
              inArray(deliveries.endpointId, endpointIds),
              inArray(deliveries.state, [...OPEN_STATES]),
              // Held back by its action group (a canary first, a pace, a halt) until the group releases it.
              eq(deliveries.held, false),
            ),
          )
          .orderBy(asc(deliveries.endpointId), asc(deliveries.seq));
        const perEndpoint = new Map<string, number>();
        const toSend = open.filter((r) => {
          if (skip(r)) return false;
          const n = (perEndpoint.get(r.endpointId) ?? 0) + 1;
          perEndpoint.set(r.endpointId, n);
          return n <= PER_ENDPOINT_LIMIT;
        });
        if (!toSend.length) return { expired, toSend, events: expired.map((r) => ev(r, 'expired')) };
        const ids = toSend.map((r) => r.id);
        await tx
          .update(deliveries)
          .set({
            state: sql`case when ${deliveries.state} = 'queued' then 'sent' else ${deliveries.state} end`,
            sentAt: sql`coalesce(${deliveries.sentAt}, ${now.toISOString()}::timestamptz)`,
            attempts: sql`${deliveries.attempts} + 1`,
            brokerId,
          })
          .where(inArray(deliveries.id, ids));
        const fresh = toSend.filter((r) => r.state === 'queued');
        for (const [requestId, list] of byRequest(toSend)) {
          await audit.append(
            {
              actorType: 'system',
              actorId: brokerId,
              action: 'delivery.sent',
              outcome: 'ok',
              requestId,
              endpointId: list.length === 1 ? list[0]!.endpointId : null,
              details: {
                deliveries: list.map((r) => ({
                  id: r.id,
                  endpointId: r.endpointId,
                  attempt: r.attempts + 1,
                })),
              },
            },
            tx,
          );
        }
        return {
          expired,
          toSend,
          events: [...expired.map((r) => ev(r, 'expired')), ...fresh.map((r) => ev(r, 'sent'))],
        };
      });
    },

    /**
     * Records acknowledgements. A delivery may run only if it is still `sent` (or already acknowledged on an
     * earlier connection) and its TTL has not run out; the rest get `go: false` with the reason.
     */
    async acknowledge(acks: { id: string; endpointId: string }[]) {
      const now = clock.now();
      return db.transaction(async (tx) => {
        await lockAuditFirst(tx);
        const rows = await tx
          .select()
          .from(deliveries)
          .where(inArray(deliveries.id, [...new Set(acks.map((a) => a.id))]))
          .for('update');
        const byId = new Map(rows.map((r) => [r.id, r]));
        const decisions: { id: string; endpointId: string; go: boolean; reason?: string }[] = [];
        const newlyAcked: DeliveryRow[] = [];
        const newlyAckedIds = new Set<string>();
        const expiredNow: string[] = [];
        const expiredEndpoints = new Set<string>();
        for (const a of acks) {
          const r = byId.get(a.id);
          if (!r || r.endpointId !== a.endpointId) {
            decisions.push({ ...a, go: false, reason: 'unknown delivery' });
          } else if (r.state === 'acknowledged') {
            decisions.push({ ...a, go: true });
          } else if (r.state === 'sent' && r.expiresAt.getTime() > now.getTime()) {
            if (!newlyAckedIds.has(r.id)) {
              newlyAckedIds.add(r.id);
              newlyAcked.push(r);
            }
            decisions.push({ ...a, go: true });
          } else if (r.state === 'sent') {
            expiredNow.push(r.id);
            expiredEndpoints.add(r.endpointId);
            decisions.push({ ...a, go: false, reason: 'expired' });
          } else {
            decisions.push({ ...a, go: false, reason: r.state });
          }
        }
        if (newlyAcked.length) {
          await tx
            .update(deliveries)
            .set({ state: 'acknowledged', ackedAt: now })
            .where(
              inArray(
                deliveries.id,
                newlyAcked.map((r) => r.id),
              ),
            );
          for (const [requestId, list] of byRequest(newlyAcked)) {
            await audit.append(
              {
                actorType: 'agent',
                actorId: list.length === 1 ? list[0]!.endpointId : brokerId,
                action: 'delivery.acknowledged',
                outcome: 'ok',
                requestId,
                endpointId: list.length === 1 ? list[0]!.endpointId : null,
                details: { deliveries: list.map((r) => ({ id: r.id, endpointId: r.endpointId })) },
              },
              tx,
            );
          }
        }
        const expired = expiredNow.length ? await expireIn(tx, now, [...expiredEndpoints]) : [];
        return {
          decisions,
          events: [...newlyAcked.map((r) => ev(r, 'acknowledged')), ...expired.map((r) => ev(r, 'expired'))],
        };
      });
    },

    /** Stores a result once; a repeat (the agent re-sends stored results after a reconnect) changes nothing. */
    recordResult(
      endpointId: string,
      res: ResultInput,
      extraAudit?: (row: DeliveryRow, tx: DbOrTx) => Promise<void>,
    ) {
      return db.transaction(async (tx) => {
        await lockAuditFirst(tx);
        return recordResultIn(tx, clock.now(), endpointId, res, extraAudit);
      });
    },

    /** Several results in one transaction (group commit); each keeps its own audit records. */
    recordResults(
      items: {
        endpointId: string;
        res: ResultInput;
        extraAudit?: (row: DeliveryRow, tx: DbOrTx) => Promise<void>;
      }[],
    ) {
      const now = clock.now();
      return db.transaction(async (tx) => {
        await lockAuditFirst(tx);
        const out = [];
        for (const i of items) out.push(await recordResultIn(tx, now, i.endpointId, i.res, i.extraAudit));
        return out;
      });
    },

    /** Expires every queued or unacknowledged delivery past its TTL, for endpoints that stay offline. */
    async expireDue() {
      const now = clock.now();
      const rows = await db.transaction(async (tx) => {
        await lockAuditFirst(tx);
        return expireIn(tx, now);
      });
      return rows.map((r) => ev(r, 'expired'));
    },

    /** True when the delivery is this endpoint's and acknowledged: the agent may be running it. */
    async running(endpointId: string, id: string) {
      const [row] = await db
        .select({ state: deliveries.state })
        .from(deliveries)
        .where(and(eq(deliveries.id, id), eq(deliveries.endpointId, endpointId)));
      return row?.state === 'acknowledged';
    },

    async get(id: string) {
      const [row] = await db.select().from(deliveries).where(eq(deliveries.id, id));
      return row;
    },
  };
}

export type OutboxRepo = ReturnType<typeof createOutboxRepo>;
