// The broker's side of the outbox: claim deliveries to send, record acknowledgements and results, expire
// what outlived its TTL. Each call is one transaction with its audit records; the caller sends frames and
// observer events only after it returns (nothing goes to an agent from inside a transaction).
import { and, asc, eq, getTableColumns, gt, inArray, lte, or, sql } from 'drizzle-orm';
import type { AuditEntry, AuditService } from '../../bot/audit/audit-service.ts';
import type { Clock, DeliveryEvent } from '../../bot/ports.ts';
import type { Db, DbOrTx } from '../../db/client.ts';
import { deliveries } from '../../db/schema.ts';
import { setIsolationFlags } from '../gateway/endpoint-presence.ts';

export type DeliveryRow = typeof deliveries.$inferSelect;
export type ResultInput = { id: string; ok: boolean; result?: Record<string, unknown>; error?: string };
/**
 * What a stored result changes beside its delivery, committed with it: more audit records (a refusal by the
 * agent, a script's full record) and the endpoint's isolation flag. Returned rather than written, so a batch
 * of results costs one statement for all their records and one for all their flags.
 */
export type ResultEffects = { records?: AuditEntry[]; isolated?: boolean };
export const FINAL_STATES = ['succeeded', 'failed', 'expired', 'cancelled'] as const;
/** Deliveries an agent may still have to see: never sent, sent but unacked, or running. */
const OPEN_STATES = ['queued', 'sent', 'acknowledged'] as const;
const PER_ENDPOINT_LIMIT = 50;
/** Deliveries past their time-to-live that have not started running. */
const DUE_STATES = ['queued', 'sent'] as const;

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
  // Every statement below that changes deliveries carries `audit.lockFirst()`: its transaction takes the
  // audit append lock before any delivery row, in the same round trip. An ack holding a delivery row while
  // waiting for the audit lock, and a send holding the audit lock while waiting for that row, would
  // otherwise deadlock on PostgreSQL.

  function expiredRecords(rows: DeliveryRow[]): AuditEntry[] {
    return [...byRequest(rows)].map(([requestId, list]) => ({
      actorType: 'system',
      actorId: brokerId,
      action: 'delivery.expired',
      outcome: 'failed',
      requestId,
      endpointId: list.length === 1 ? list[0]!.endpointId : null,
      details: { deliveries: list.map((r) => ({ id: r.id, endpointId: r.endpointId })) },
    }));
  }

  /** Expires what is due: the given deliveries, or every one on the given endpoints, or every one. */
  async function expireIn(tx: DbOrTx, now: Date, which?: { endpointIds?: string[]; ids?: string[] }) {
    const rows = await tx
      .update(deliveries)
      .set({ state: 'expired', finishedAt: now, error: 'time-to-live ran out before the agent took it' })
      .where(
        and(
          audit.lockFirst(),
          which?.ids ? inArray(deliveries.id, which.ids) : undefined,
          which?.endpointIds ? inArray(deliveries.endpointId, which.endpointIds) : undefined,
          inArray(deliveries.state, [...DUE_STATES]),
          lte(deliveries.expiresAt, now),
        ),
      )
      .returning();
    await audit.appendAll(expiredRecords(rows), tx);
    return rows;
  }

  type ResultItem = {
    endpointId: string;
    res: ResultInput;
    effects?: (row: DeliveryRow) => ResultEffects;
  };
  type ResultOutcome =
    | { status: 'unknown' }
    | { status: 'final'; row: DeliveryRow }
    | { status: 'recorded'; row: DeliveryRow; event: DeliveryEvent };

  /**
   * Records a batch of results: one statement stores them, one more writes their audit records (each result's
   * `delivery.result` followed by its effects' records, in the order the results came), and one more sets the
   * isolation flags they changed (an endpoint's last result wins). Only a sent or acknowledged delivery takes
   * a result: a queued one was never sent to the agent (unknown), and a final one keeps its first result.
   */
  async function recordResultsIn(tx: DbOrTx, now: Date, items: ResultItem[]): Promise<ResultOutcome[]> {
    const key = (endpointId: string, id: string) => `${id}:${endpointId}`;
    // A repeat within the batch (the agent re-sent a stored result) is answered as the final one it then is.
    const firsts = new Map<string, ResultItem>();
    for (const i of items)
      if (!firsts.has(key(i.endpointId, i.res.id))) firsts.set(key(i.endpointId, i.res.id), i);
    const given = [...firsts.values()].map((i) => ({
      id: i.res.id,
      endpointId: i.endpointId,
      state: i.res.ok ? 'succeeded' : 'failed',
      result: i.res.result ?? null,
      error: i.res.error ?? null,
    }));
    const recorded = await tx
      .update(deliveries)
      .set({ state: sql`r.state`, finishedAt: now, result: sql`r.result`, error: sql`r.error` })
      .from(
        sql`jsonb_to_recordset(${JSON.stringify(given)}::jsonb) as r(id uuid, "endpointId" uuid, state text,
          result jsonb, error text)`,
      )
      .where(
        and(
          audit.lockFirst(),
          inArray(
            deliveries.id,
            given.map((g) => g.id),
          ),
          sql`${deliveries.id} = r.id and ${deliveries.endpointId} = r."endpointId"`,
          inArray(deliveries.state, ['sent', 'acknowledged']),
        ),
      )
      .returning({ ...getTableColumns(deliveries), auditHead: audit.headSeen() });
    const done = new Map(recorded.map(({ auditHead: _, ...r }) => [key(r.endpointId, r.id), r]));
    const rest = given.filter((g) => !done.has(key(g.endpointId, g.id)));
    const others = rest.length
      ? await tx
          .select()
          .from(deliveries)
          .where(
            inArray(
              deliveries.id,
              rest.map((g) => g.id),
            ),
          )
      : [];
    const before = new Map(others.map((r) => [key(r.endpointId, r.id), r]));
    const ordered = [...firsts.values()];
    const records: AuditEntry[] = [];
    const isolation = new Map<string, boolean>();
    for (const i of ordered) {
      const row = done.get(key(i.endpointId, i.res.id));
      if (!row) continue;
      records.push({
        actorType: 'agent',
        actorId: i.endpointId,
        action: 'delivery.result',
        outcome: i.res.ok ? 'ok' : 'failed',
        requestId: row.requestId,
        endpointId: i.endpointId,
        details: {
          deliveryId: row.id,
          action: row.action,
          result: i.res.result ?? null,
          error: i.res.error ?? null,
        },
      });
      const effects = i.effects?.(row);
      records.push(...(effects?.records ?? []));
      if (effects?.isolated !== undefined) isolation.set(i.endpointId, effects.isolated);
    }
    await audit.appendAll(records, tx, recorded[0]?.auditHead);
    // The endpoint's isolation flag commits with the result that changed it, so nobody reads a succeeded
    // isolate of an endpoint still marked open.
    await setIsolationFlags(tx, isolation, now);
    return items.map((i): ResultOutcome => {
      const k = key(i.endpointId, i.res.id);
      const row = done.get(k);
      if (row && firsts.get(k) === i) return { status: 'recorded', row, event: ev(row, row.state) };
      const other = row ?? before.get(k);
      if (!other || other.state === 'queued') return { status: 'unknown' };
      return { status: 'final', row: other };
    });
  }

  return {
    /**
     * For the given endpoints (held by this broker): expires stale deliveries, then returns every open one
     * in seq order (as read before the claim), marking queued ones `sent`. `skip` holds ids already sent on
     * the current connections so they are not sent twice; sent or acknowledged ones from an earlier
     * connection are sent again (the agent's journal makes the repeat harmless).
     */
    async claim(endpointIds: string[], skip: (row: DeliveryRow) => boolean) {
      const now = clock.now();
      // A first look without any lock: a wake-up for work already sent (this broker's own NOTIFY coming
      // back, the sweep) ends here, with no transaction and without the audit lock that acknowledgements
      // wait for. What the transaction then changes is checked again there.
      const open = await db
        .select()
        .from(deliveries)
        .where(
          and(
            inArray(deliveries.endpointId, endpointIds),
            inArray(deliveries.state, [...OPEN_STATES]),
            // Held back by its action group (a canary first, a pace, a halt) until the group releases it;
            // a held one that outlived its TTL still expires.
            or(
              eq(deliveries.held, false),
              and(inArray(deliveries.state, [...DUE_STATES]), lte(deliveries.expiresAt, now)),
            ),
          ),
        )
        .orderBy(asc(deliveries.endpointId), asc(deliveries.seq));
      const isDue = (r: DeliveryRow) => r.state !== 'acknowledged' && r.expiresAt.getTime() <= now.getTime();
      const due = open.filter(isDue);
      const perEndpoint = new Map<string, number>();
      const candidates = open.filter((r) => {
        if (isDue(r) || skip(r)) return false;
        const n = (perEndpoint.get(r.endpointId) ?? 0) + 1;
        perEndpoint.set(r.endpointId, n);
        return n <= PER_ENDPOINT_LIMIT;
      });
      if (!due.length && !candidates.length) return { expired: [], toSend: [], events: [] };
      return db.transaction(async (tx) => {
        const expired = due.length ? await expireIn(tx, now, { ids: due.map((r) => r.id) }) : [];
        const claimed = candidates.length
          ? await tx
              .update(deliveries)
              .set({
                state: sql`case when ${deliveries.state} = 'queued' then 'sent' else ${deliveries.state} end`,
                sentAt: sql`coalesce(${deliveries.sentAt}, ${now.toISOString()}::timestamptz)`,
                attempts: sql`${deliveries.attempts} + 1`,
                brokerId,
              })
              .where(
                and(
                  audit.lockFirst(),
                  inArray(
                    deliveries.id,
                    candidates.map((r) => r.id),
                  ),
                  // Still open, released and within its TTL: a cancel, a result or the expiry sweep may
                  // have come in since the first look.
                  inArray(deliveries.state, [...OPEN_STATES]),
                  eq(deliveries.held, false),
                  or(eq(deliveries.state, 'acknowledged'), gt(deliveries.expiresAt, now)),
                ),
              )
              .returning({ id: deliveries.id, attempts: deliveries.attempts, auditHead: audit.headSeen() })
          : [];
        const byId = new Map(claimed.map((r) => [r.id, r]));
        const toSend = candidates.filter((r) => byId.has(r.id));
        // Only a claim moves a delivery out of `queued`, and each claim counts an attempt: the first one is
        // the one that sent it.
        const fresh = toSend.filter((r) => byId.get(r.id)!.attempts === 1);
        await audit.appendAll(
          [...byRequest(toSend)].map(([requestId, list]) => ({
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
                attempt: byId.get(r.id)!.attempts,
              })),
            },
          })),
          tx,
          claimed[0]?.auditHead,
        );
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
      // The (delivery, endpoint) pairs asked about: an agent can only acknowledge its own deliveries.
      const asked = (list: { id: string; endpointId: string }[]) =>
        and(
          inArray(
            deliveries.id,
            list.map((a) => a.id),
          ),
          sql`(${deliveries.id}, ${deliveries.endpointId}) in (select a.id, a."endpointId" from
            jsonb_to_recordset(${JSON.stringify(list)}::jsonb) as a(id uuid, "endpointId" uuid))`,
        );
      const key = (r: { id: string; endpointId: string }) => `${r.id}:${r.endpointId}`;
      return db.transaction(async (tx) => {
        // The usual case in one statement: a sent delivery within its TTL becomes acknowledged.
        const newlyAcked = await tx
          .update(deliveries)
          .set({ state: 'acknowledged', ackedAt: now })
          .where(
            and(audit.lockFirst(), asked(acks), eq(deliveries.state, 'sent'), gt(deliveries.expiresAt, now)),
          )
          .returning({
            id: deliveries.id,
            requestId: deliveries.requestId,
            endpointId: deliveries.endpointId,
            auditHead: audit.headSeen(),
          });
        const acked = new Set(newlyAcked.map(key));
        // The rest (repeats, expired, cancelled, unknown) are read, under the same locks, to say why not.
        const rest = acks.filter((a) => !acked.has(key(a)));
        const others = rest.length
          ? await tx
              .select()
              .from(deliveries)
              .where(and(audit.lockFirst(), asked(rest)))
              .for('update')
          : [];
        const byKey = new Map(others.map((r) => [key(r), r]));
        const decisions: { id: string; endpointId: string; go: boolean; reason?: string }[] = [];
        const expiredEndpoints = new Set<string>();
        for (const a of acks) {
          const r = byKey.get(key(a));
          if (acked.has(key(a)) || r?.state === 'acknowledged') {
            decisions.push({ ...a, go: true });
          } else if (!r) {
            decisions.push({ ...a, go: false, reason: 'unknown delivery' });
          } else if (r.state === 'sent' && r.expiresAt.getTime() <= now.getTime()) {
            expiredEndpoints.add(r.endpointId);
            decisions.push({ ...a, go: false, reason: 'expired' });
          } else {
            decisions.push({ ...a, go: false, reason: r.state });
          }
        }
        await audit.appendAll(
          [...byRequest(newlyAcked)].map(([requestId, list]) => ({
            actorType: 'agent',
            actorId: list.length === 1 ? list[0]!.endpointId : brokerId,
            action: 'delivery.acknowledged',
            outcome: 'ok',
            requestId,
            endpointId: list.length === 1 ? list[0]!.endpointId : null,
            details: { deliveries: list.map((r) => ({ id: r.id, endpointId: r.endpointId })) },
          })),
          tx,
          newlyAcked[0]?.auditHead,
        );
        const expired = expiredEndpoints.size
          ? await expireIn(tx, now, { endpointIds: [...expiredEndpoints] })
          : [];
        return {
          decisions,
          events: [...newlyAcked.map((r) => ev(r, 'acknowledged')), ...expired.map((r) => ev(r, 'expired'))],
        };
      });
    },

    /** Stores a result once; a repeat (the agent re-sends stored results after a reconnect) changes nothing. */
    async recordResult(endpointId: string, res: ResultInput, effects?: (row: DeliveryRow) => ResultEffects) {
      const now = clock.now();
      const [out] = await db.transaction((tx) => recordResultsIn(tx, now, [{ endpointId, res, effects }]));
      return out!;
    },

    /** Several results in one transaction (group commit); each keeps its own audit records. */
    recordResults(items: ResultItem[]) {
      const now = clock.now();
      return db.transaction((tx) => recordResultsIn(tx, now, items));
    },

    /** Expires every queued or unacknowledged delivery past its TTL, for endpoints that stay offline. */
    async expireDue() {
      const now = clock.now();
      const rows = await db.transaction((tx) => expireIn(tx, now));
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
