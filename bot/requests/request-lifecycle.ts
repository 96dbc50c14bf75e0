// What happens to a request after it is decided: cancellation (before or after dispatch), expiry of
// undecided requests, and completion once every delivery is final. Same rules as the service: lock the row,
// one audit record per transition, nothing sent to chat from here.
import { and, eq, gt } from 'drizzle-orm';
import { z } from 'zod';
import type { Db, DbOrTx } from '../../db/client.ts';
import { deliveries, stepUpWindows } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { BadRequest, Conflict, Forbidden, NotFound } from '../errors.ts';
import { setGroupState } from '../groups/group-dal.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import type { Clock, Dispatcher, RequestView } from '../ports.ts';
import { bindTo } from '../stepup/stepup-binding.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import { partiesOf } from './request-access.ts';
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
  policy: Pick<PolicyService, 'canCancel'>;
  transitions: Transitions;
}) {
  const { db, audit, clock, dispatcher, policy } = deps;
  const { transition, requireRow, expireIfLapsed, completeIfDone } = deps.transitions;

  /** The request `target` names (a ref, a request id or a delivery id), and the delivery when it names one. */
  async function resolveTarget(t: DbOrTx, target: string, lock: boolean) {
    const parsed = z.string().min(1).max(64).safeParse(target);
    if (!parsed.success)
      throw new BadRequest('request.invalid', 'Give a request ref (R-7K3QXM) or a delivery id.');
    const find = (id: string) => (lock ? dal.lockRequest(t, id) : dal.findRequest(t, id));
    let row = await find(target);
    let deliveryId: string | undefined;
    if (!row && dal.isUuid(target)) {
      const [d] = await t.select().from(deliveries).where(eq(deliveries.id, target.toLowerCase()));
      if (d) {
        deliveryId = d.id;
        row = await find(d.requestId);
      }
    }
    if (!row)
      throw new NotFound('request.not_found', `There is no request or delivery "${target.slice(0, 64)}".`);
    return { row, deliveryId };
  }

  /** Who may cancel and whether there is anything left to cancel; Forbidden or Conflict otherwise. */
  async function checkCancel(t: DbOrTx, row: Row, deliveryId: string | undefined, actor: ResolvedUser) {
    policy.canCancel(actor, await partiesOf(t, row));
    if (isFinal(row.state)) {
      throw new Conflict(
        'request.already_final',
        `${row.ref} is already ${row.state}; there is nothing to cancel.`,
      );
    }
    if (row.state !== 'dispatched' && deliveryId)
      throw new Conflict('request.not_dispatched', `${row.ref} has not been dispatched.`);
  }

  /** Records a refused cancel in its own transaction (the caller's, if any, is about to roll back). */
  async function auditRefusal(actor: ResolvedUser, target: string, err: unknown, requestId?: string) {
    if (!(err instanceof Forbidden || err instanceof Conflict)) return;
    await audit.append({
      actorType: 'user',
      actorId: actor.id,
      action: 'request.cancel_refused',
      outcome: 'refused',
      requestId: requestId ?? null,
      details: { target: target.slice(0, 64), code: err.code },
    });
  }

  return {
    /**
     * What cancelling `target` would act on, checked against the rules without locking or changing anything,
     * so a chat command can refuse, or send a step-up link, before anything else. A refusal is audited.
     * `stepUpRequired`: the request is dispatched, so cancelling needs a step-up bound to it
     * (`bindTo.cancel(requestId, deliveryId)`).
     */
    async prepareCancel(target: string, actor: ResolvedUser) {
      let requestId: string | undefined;
      try {
        const { row, deliveryId } = await resolveTarget(db, target, false);
        requestId = row.id;
        await checkCancel(db, row, deliveryId, actor);
        return { requestId: row.id, ref: row.ref, deliveryId, stepUpRequired: row.state === 'dispatched' };
      } catch (err) {
        await auditRefusal(actor, target, err, requestId);
        throw err;
      }
    },

    /**
     * Cancels a request (before dispatch: → cancelled; after: its queued deliveries) or one delivery by id,
     * re-checking under the row lock who may (policy `canCancel`). After dispatch it needs
     * `stepUpWindowId`: the actor's live window opened to cancel this request (or this delivery); without
     * one it throws Forbidden 'cancel.stepup_required'. Without a caller `tx` a refusal is audited here;
     * with one (a step-up completion) the step-up's own record covers it. `inTx` runs in the cancel's
     * transaction with what it did (the chat messages saying so commit with it).
     */
    async cancel(
      target: string,
      actor: ResolvedUser,
      opts: {
        stepUpWindowId?: string;
        inTx?: (tx: DbOrTx, done: { requestId: string; cancelledDeliveries: number }) => Promise<void>;
      } = {},
      tx?: DbOrTx,
    ): Promise<{ request?: RequestView; cancelledDeliveries: number }> {
      let requestId: string | undefined;
      const run = async (t: DbOrTx) => {
        const { row, deliveryId } = await resolveTarget(t, target, true);
        requestId = row.id;
        await checkCancel(t, row, deliveryId, actor);
        const who = { type: 'user' as const, id: actor.id };
        if (row.state !== 'dispatched') return { row: await transition(t, row, 'cancelled', who), n: 0 };
        // After dispatch, withdrawing work is as weighty as approving it: a step-up bound to this cancel.
        const [win] = opts.stepUpWindowId
          ? await t
              .select({ id: stepUpWindows.id })
              .from(stepUpWindows)
              .where(
                and(
                  eq(stepUpWindows.id, opts.stepUpWindowId),
                  eq(stepUpWindows.userId, actor.id),
                  gt(stepUpWindows.expiresAt, clock.now()),
                  eq(stepUpWindows.purpose, 'cancel'),
                  eq(stepUpWindows.subject, bindTo.cancel(row.id, deliveryId)),
                ),
              )
          : [];
        if (!win) {
          throw new Forbidden(
            'cancel.stepup_required',
            `${row.ref} is already dispatched, so cancelling it needs a fresh step-up.`,
          );
        }
        // The audit lock before the delivery rows, as the broker's claims, acks and results take them: in the
        // other order a cancel racing a claim of the same deliveries would deadlock.
        await audit.lockNow(t);
        const n = await dispatcher.cancel(t, deliveryId ? { deliveryId } : { requestId: row.id });
        // A whole action group withdrawn: its waves stop (a halted one no longer waits for a resume).
        if (!deliveryId) await setGroupState(t, row.id, 'cancelled', clock.now());
        await audit.append(
          {
            actorType: 'user',
            actorId: actor.id,
            action: 'request.deliveries_cancelled',
            outcome: 'ok',
            requestId: row.id,
            details: { ref: row.ref, deliveryId, cancelled: n, stepUpWindowId: win.id },
          },
          t,
        );
        return { row: (await completeIfDone(t, row)).row, n };
      };
      const runAll = async (t: DbOrTx) => {
        const done = await run(t);
        await opts.inTx?.(t, { requestId: done.row.id, cancelledDeliveries: done.n });
        return done;
      };
      let out: Awaited<ReturnType<typeof run>>;
      try {
        out = tx ? await runAll(tx) : await db.transaction(runAll);
      } catch (err) {
        if (!tx) await auditRefusal(actor, target, err, requestId);
        throw err;
      }
      return { request: await loadView(tx ?? db, out.row), cancelledDeliveries: out.n };
    },

    /**
     * Expires undecided requests past their approval TTL and returns them. `inTx` runs in each expiry's
     * transaction (the chat messages saying so commit with it).
     */
    async expireStale(
      inTx?: (tx: DbOrTx, request: { id: string; ref: string }) => Promise<void>,
    ): Promise<RequestView[]> {
      const ids = await dal.staleRequestIds(db, clock.now());
      const expired: Row[] = [];
      for (const id of ids) {
        const row = await db.transaction(async (tx) => {
          const r = await dal.lockRequest(tx, id);
          if (!r || !(await expireIfLapsed(tx, r))) return null;
          await inTx?.(tx, r);
          return dal.findRequest(tx, id);
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
