// The request state machine applied to stored rows: each move locks nothing itself (callers hold the row
// lock), is checked against the transition table, guarded with `where state = from`, and writes exactly one
// audit record in the caller's transaction. Dispatch enqueues the deliveries in that same transaction.
import type { DbOrTx } from '../../db/client.ts';
import type { RequestState } from '../../db/schema.ts';
import { type DeliveryPayload, deliveryPayloadSchema } from '../../protocol/actions.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { Conflict, NotFound } from '../errors.ts';
import { finishGroup } from '../groups/group-dal.ts';
import { firstWave } from '../groups/wave-plan.ts';
import { scriptById } from '../inventory/inventory-dal.ts';
import { type Clock, DELIVERY_BATCH_SIZE, type Dispatcher, type TargetView } from '../ports.ts';
import { sha256Hex } from './digest.ts';
import * as dal from './request-dal.ts';
import { assertTransition, FINAL_DELIVERY_STATES } from './request-states.ts';

type Row = dal.RequestRow;
export type Actor = { type: 'user' | 'system'; id: string | null };
/** What one locked step produced: the row after it and the endpoints that got deliveries. */
export type Step =
  | { lapsed?: false; changed: boolean; row: Row; endpointIds: string[] }
  | { lapsed: true; row: Row };

export const SYSTEM: Actor = { type: 'system', id: 'request-service' };

export function createTransitions(deps: {
  audit: AuditService;
  clock: Clock;
  dispatcher: Dispatcher;
  approvalTtlMs: number;
}) {
  const { audit, clock, dispatcher, approvalTtlMs } = deps;

  /** One state change plus its one audit record; throws (changing nothing) when the move is illegal. */
  async function transition(
    tx: DbOrTx,
    row: Row,
    to: RequestState,
    actor: Actor,
    details: Record<string, unknown> = {},
    extra: Partial<dal.NewRequestRow> = {},
  ): Promise<Row> {
    assertTransition(row.state, to);
    const next = await dal.updateState(tx, row.id, row.state, to, clock.now(), extra);
    if (!next)
      throw new Conflict(
        'request.state_changed',
        `${row.ref} changed while this was being decided; look again.`,
      );
    await audit.append(
      {
        actorType: actor.type,
        actorId: actor.id,
        action: `request.${to}`,
        outcome: 'ok',
        requestId: row.id,
        details: { ref: row.ref, from: row.state, to, digest: row.digest, ...details },
      },
      tx,
    );
    return next;
  }

  /**
   * The script version the request pinned must still hash to what the request (and so its approvals) bound
   * to, and must not have been disabled since.
   */
  async function approvedScriptBody(tx: DbOrTx, row: Row): Promise<string | null> {
    if (!row.scriptName) return null;
    const script = row.scriptId ? await scriptById(tx, row.scriptId) : null;
    if (script?.disabledAt) {
      throw new Conflict(
        'request.script_disabled',
        `Script ${row.scriptName} v${script.version} was disabled after ${row.ref} was made; it will not run.`,
      );
    }
    if (!script || sha256Hex(script.body) !== row.scriptSha256) {
      throw new Conflict(
        'request.digest_changed',
        `Script ${row.scriptName} changed in the library after ${row.ref} was made, so its digest no longer holds. ` +
          'Run the command again to make a new request; approvals do not carry over.',
      );
    }
    return script.body;
  }

  /**
   * approved → dispatched: one delivery per target in the same transaction, written in batches of
   * DELIVERY_BATCH_SIZE in target order, each batch with one audit record naming every endpoint in it (so a
   * 10,000-endpoint group costs ten records, not ten thousand, and still says who got what).
   */
  async function dispatch(tx: DbOrTx, row: Row, actor: Actor) {
    const body = await approvedScriptBody(tx, row);
    const approved = await transition(tx, row, 'approved', actor);
    const expiresAt = new Date(clock.now().getTime() + approved.deliveryTtlSeconds * 1000);
    const targets = row.targets as TargetView[];
    // An action group with staged waves sends its first wave now; the rest is written held.
    const wave = await firstWave(tx, row.id, targets, clock.now());
    const created = await dispatcher.enqueue(
      tx,
      targets.map((t) => {
        // The catalogue's payload shape, checked here so a delivery the agent would refuse never leaves.
        const payload: DeliveryPayload = deliveryPayloadSchema.parse({
          requestId: row.id,
          ref: row.ref,
          digest: row.digest,
          hostname: t.hostname,
          params: row.params,
          scriptBody: body ?? undefined,
        });
        const held = wave ? !wave.has(t.endpointId) : false;
        return { requestId: row.id, endpointId: t.endpointId, action: row.action, payload, expiresAt, held };
      }),
    );
    const batches = Math.ceil(created.length / DELIVERY_BATCH_SIZE);
    for (let b = 0; b < batches; b++) {
      const batch = created.slice(b * DELIVERY_BATCH_SIZE, (b + 1) * DELIVERY_BATCH_SIZE);
      await audit.append(
        {
          actorType: actor.type,
          actorId: actor.id,
          action: 'request.deliveries_queued',
          outcome: 'ok',
          requestId: row.id,
          details: {
            ref: row.ref,
            batch: b + 1,
            of: batches,
            deliveries: batch.length,
            held: wave ? batch.filter((c) => !wave.has(c.endpointId)).length : 0,
            endpointIds: batch.map((c) => c.endpointId),
          },
        },
        tx,
      );
    }
    const dispatched = await transition(tx, approved, 'dispatched', actor, {
      deliveries: created.length,
      expiresAt: expiresAt.toISOString(),
    });
    const sent = wave ? created.filter((c) => wave.has(c.endpointId)) : created;
    return { row: dispatched, endpointIds: sent.map((c) => c.endpointId) };
  }

  /** After the requester is confirmed (or needed no step-up): wait for approvers or go straight out. */
  async function advance(tx: DbOrTx, row: Row, actorId: string) {
    const who: Actor = { type: 'user', id: actorId };
    if (row.approvalsRequired === 0) return dispatch(tx, row, who);
    const expires = new Date(clock.now().getTime() + approvalTtlMs);
    const next = await transition(tx, row, 'pending_approval', who, {}, { approvalExpiresAt: expires });
    return { row: next, endpointIds: [] as string[] };
  }

  async function requireRow(tx: DbOrTx, idOrRef: string, lock: boolean): Promise<Row> {
    const row = lock ? await dal.lockRequest(tx, idOrRef) : await dal.findRequest(tx, idOrRef);
    if (!row) throw new NotFound('request.not_found', `There is no request "${idOrRef.slice(0, 64)}".`);
    return row;
  }

  function expiredConflict(row: Row) {
    return new Conflict(
      'request.expired',
      `${row.ref} expired: nobody decided within the approval time. Ask again if it is still needed.`,
    );
  }

  /** Marks a lapsed, undecided request expired; returns true when it did. */
  async function expireIfLapsed(tx: DbOrTx, row: Row): Promise<boolean> {
    if (!row.approvalExpiresAt || row.approvalExpiresAt.getTime() > clock.now().getTime()) return false;
    if (row.state !== 'requested' && row.state !== 'pending_approval') return false;
    await transition(tx, row, 'expired', SYSTEM, {
      approvalExpiresAt: row.approvalExpiresAt.toISOString(),
    });
    return true;
  }

  async function completeIfDone(tx: DbOrTx, row: Row): Promise<{ row: Row; completedNow: boolean }> {
    if (row.state !== 'dispatched') return { row, completedNow: false };
    const counts = (await dal.deliveryCounts(tx, [row.id])).get(row.id) ?? {};
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const final = FINAL_DELIVERY_STATES.reduce((a, s) => a + (counts[s] ?? 0), 0);
    if (total === 0 || final < total) return { row, completedNow: false };
    const next = await transition(tx, row, 'completed', SYSTEM, { deliveries: counts });
    await finishGroup(tx, row.id, clock.now());
    return { row: next, completedNow: true };
  }
  return {
    transition,
    approvedScriptBody,
    dispatch,
    advance,
    requireRow,
    expiredConflict,
    expireIfLapsed,
    completeIfDone,
  };
}

export type Transitions = ReturnType<typeof createTransitions>;
