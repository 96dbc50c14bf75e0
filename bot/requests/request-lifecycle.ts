// What happens to a request after it is decided: cancellation (before or after dispatch), expiry of
// undecided requests, and completion once every delivery is final. Same rules as the service: lock the row,
// one audit record per transition, nothing sent to chat from here.
import { eq } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.ts';
import { deliveries } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { BadRequest, Conflict, Forbidden, NotFound } from '../errors.ts';
import type { Clock, Dispatcher, RequestView } from '../ports.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import * as dal from './request-dal.ts';
import { isFinal } from './request-states.ts';
import type { Transitions } from './request-transitions.ts';
import { loadView, loadViews } from './request-view.ts';

type Row = dal.RequestRow;

export function createLifecycle(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  dispatcher: Dispatcher;
  transitions: Transitions;
}) {
  const { db, audit, clock, dispatcher } = deps;
  const { transition, requireRow, expireIfLapsed, completeIfDone } = deps.transitions;

  return {
    /**
     * Cancels a request (before dispatch: → cancelled; after: its queued deliveries) or one delivery by id.
     * The requester, approvers and admins may cancel.
     */
    async cancel(
      target: string,
      actor: ResolvedUser,
    ): Promise<{ request?: RequestView; cancelledDeliveries: number }> {
      const t0 = z.string().min(1).max(64).safeParse(target);
      if (!t0.success)
        throw new BadRequest('request.invalid', 'Give a request ref (R-7K3QXM) or a delivery id.');
      const out = await db.transaction(async (tx) => {
        let row = await dal.lockRequest(tx, target);
        let deliveryId: string | undefined;
        if (!row && dal.isUuid(target)) {
          const [d] = await tx.select().from(deliveries).where(eq(deliveries.id, target.toLowerCase()));
          if (d) {
            deliveryId = d.id;
            row = await dal.lockRequest(tx, d.requestId);
          }
        }
        if (!row)
          throw new NotFound(
            'request.not_found',
            `There is no request or delivery "${target.slice(0, 64)}".`,
          );
        const mayCancel =
          row.requesterId === actor.id || actor.roles.includes('admin') || actor.roles.includes('approver');
        if (!mayCancel || actor.disabled) {
          throw new Forbidden(
            'request.cancel_forbidden',
            `Only the requester, an approver or an admin can cancel ${row.ref}.`,
          );
        }
        if (isFinal(row.state)) {
          throw new Conflict(
            'request.already_final',
            `${row.ref} is already ${row.state}; there is nothing to cancel.`,
          );
        }
        const who = { type: 'user' as const, id: actor.id };
        if (row.state !== 'dispatched') {
          if (deliveryId) throw new Conflict('request.not_dispatched', `${row.ref} has not been dispatched.`);
          return { row: await transition(tx, row, 'cancelled', who), n: 0 };
        }
        const n = await dispatcher.cancel(tx, deliveryId ? { deliveryId } : { requestId: row.id });
        await audit.append(
          {
            actorType: 'user',
            actorId: actor.id,
            action: 'request.deliveries_cancelled',
            outcome: 'ok',
            requestId: row.id,
            details: { ref: row.ref, deliveryId, cancelled: n },
          },
          tx,
        );
        return { row: (await completeIfDone(tx, row)).row, n };
      });
      return { request: await loadView(db, out.row), cancelledDeliveries: out.n };
    },

    /** Expires undecided requests past their approval TTL; returns them so their cards can be updated. */
    async expireStale(): Promise<RequestView[]> {
      const ids = await dal.staleRequestIds(db, clock.now());
      const expired: Row[] = [];
      for (const id of ids) {
        const row = await db.transaction(async (tx) => {
          const r = await dal.lockRequest(tx, id);
          return r && (await expireIfLapsed(tx, r)) ? dal.findRequest(tx, id) : null;
        });
        if (row) expired.push(row);
      }
      return loadViews(db, expired);
    },

    /**
     * A delivery changed; when every delivery is final the request completes. Returns the fresh view with
     * progress counts, and whether this call completed it (so only one caller announces completion).
     */
    async onDeliveryChanged(requestId: string) {
      const out = await db.transaction(async (tx) =>
        completeIfDone(tx, await requireRow(tx, requestId, true)),
      );
      const request = await loadView(db, out.row);
      return { request, progress: request.progress ?? {}, completedNow: out.completedNow };
    },
  };
}
