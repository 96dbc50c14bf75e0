// Staged waves of an action group after dispatch. A canary wave must succeed on every endpoint before the
// rest is released; a pace (`--rate N/min`) releases the rest a few at a time; failures at or above the
// group's threshold (`--halt-at`) halt it, holding everything not yet sent. A halted group says why in its
// thread and waits for `resume` (an approver, with a step-up bound to resuming this group) or `cancel`.
// Each change happens under the group row's lock with its audit record and what its thread is told (a row
// in the chat outbox, so a crash cannot keep the halt and lose the notice); brokers are woken and the outbox
// flushed after the commit. Times come from `clock`; `timers` only wake the pace up.
import { and, asc, eq, inArray, isNotNull, sql } from 'drizzle-orm';
import type { Db, DbOrTx } from '../../db/client.ts';
import { actionGroups, deliveries, endpoints, stepUpWindows } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { Conflict, Forbidden, NotFound } from '../errors.ts';
import { type ChatOutbox, requestThreadOf } from '../outbox/chat-outbox.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import type { Clock, Dispatcher, Logger, Timers } from '../ports.ts';
import { plural } from '../render/summary.ts';
import { findRequest } from '../requests/request-dal.ts';
import { loadView } from '../requests/request-view.ts';
import { bindTo } from '../stepup/stepup-binding.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import { type GroupRow, lockGroup } from './group-dal.ts';
import type { GroupProgress } from './group-progress.ts';
import { holdUnsent, releaseHeld, waveCounts } from './wave-plan.ts';

const FAILED_CANARY = ['failed', 'expired', 'cancelled'];
/** Paced releases are batched at least this far apart, whatever the rate. */
const MIN_TICK_MS = 1000;

interface Outcome {
  /** Endpoints whose deliveries were released: wake their brokers. */
  released: string[];
  /** Something was written into the chat outbox for the group's thread: flush it. */
  told?: boolean;
}

export function createGroupWaves(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  timers: Timers;
  dispatcher: Dispatcher;
  outbox: ChatOutbox;
  policy: Pick<PolicyService, 'canApprove'>;
  progress: GroupProgress;
  logger: Logger;
}) {
  const { db, audit, clock, timers, dispatcher, outbox, logger } = deps;
  let cancelTick: (() => void) | undefined;
  let tickAt = Number.POSITIVE_INFINITY;

  /** How many paced deliveries are due by `now`: the k-th (from 0) at pacedFrom + k minutes / rate. */
  function dueCount(g: GroupRow, now: Date): number {
    if (!g.ratePerMinute || !g.pacedFrom) return 0;
    const elapsed = Math.max(0, now.getTime() - g.pacedFrom.getTime());
    return Math.floor((elapsed * g.ratePerMinute) / 60_000) + 1 - g.pacedReleased;
  }

  function nextDueAt(g: GroupRow): number | undefined {
    if (!g.ratePerMinute || !g.pacedFrom) return undefined;
    return g.pacedFrom.getTime() + Math.ceil((g.pacedReleased * 60_000) / g.ratePerMinute);
  }

  /** Releases the next wave after a canary passed or a resume: paced, or everything at once. */
  async function goOn(tx: DbOrTx, g: GroupRow, now: Date): Promise<string[]> {
    if (!g.ratePerMinute) {
      await tx
        .update(actionGroups)
        .set({ state: 'running', updatedAt: now })
        .where(eq(actionGroups.requestId, g.requestId));
      return releaseHeld(tx, g.requestId);
    }
    await tx
      .update(actionGroups)
      .set({ state: 'running', pacedFrom: now, pacedReleased: 1, updatedAt: now })
      .where(eq(actionGroups.requestId, g.requestId));
    return releaseHeld(tx, g.requestId, 1);
  }

  /**
   * Writes `text` for the group's thread into the chat outbox within `tx`, so it commits with the change it
   * tells of. Returns whether there was a thread to tell (a request posted nowhere has none).
   */
  async function tell(tx: DbOrTx, requestId: string, text: string): Promise<boolean> {
    // The card's thread, or behind the card while it waits to be posted.
    const ref = await requestThreadOf(tx, requestId);
    if (!ref) return false;
    await outbox.enqueue(tx, [{ kind: 'thread_reply', ref, text }]);
    return true;
  }

  /** Halts the group, holding what is not yet sent, and tells its thread why; all within `tx`. */
  async function halt(tx: DbOrTx, g: GroupRow, ref: string, reason: string, now: Date): Promise<Outcome> {
    const held = await holdUnsent(tx, g.requestId);
    await tx
      .update(actionGroups)
      .set({ state: 'halted', haltReason: reason, updatedAt: now })
      .where(eq(actionGroups.requestId, g.requestId));
    await audit.append(
      {
        actorType: 'system',
        actorId: 'group-waves',
        action: 'group.halted',
        outcome: 'ok',
        requestId: g.requestId,
        details: { ref, reason, held },
      },
      tx,
    );
    const told = await tell(
      tx,
      g.requestId,
      `${ref} halted: ${reason}. ${plural(held, 'delivery', 'deliveries')} not yet sent ${held === 1 ? 'is' : 'are'} held. Nothing more goes out until an approver types resume ${ref} or someone cancels it with cancel ${ref}; both need a step-up.`,
    );
    return { released: [], told };
  }

  /** Why the canary failed, in words: the first endpoint that did not succeed and what it reported. */
  async function canaryFailure(tx: DbOrTx, requestId: string): Promise<string> {
    const [d] = await tx
      .select({
        host: endpoints.hostname,
        state: deliveries.state,
        error: deliveries.error,
        result: deliveries.result,
      })
      .from(deliveries)
      .innerJoin(endpoints, eq(endpoints.id, deliveries.endpointId))
      .where(
        and(
          eq(deliveries.requestId, requestId),
          eq(deliveries.held, false),
          inArray(deliveries.state, FAILED_CANARY as never[]),
        ),
      )
      .orderBy(asc(deliveries.finishedAt))
      .limit(1);
    if (!d) return 'the canary wave did not succeed';
    const exit = (d.result as { exitCode?: unknown } | null)?.exitCode;
    const how = typeof exit === 'number' ? `exit code ${exit}` : (d.error ?? d.state);
    return `the canary wave failed on ${d.host} (${d.state}: ${how.slice(0, 200)})`;
  }

  async function afterCommit(requestId: string, out: Outcome) {
    if (out.released.length) await dispatcher.wake(out.released).catch(() => undefined);
    if (out.told) await outbox.flush();
    await deps.progress.changed(requestId);
    await arm();
  }

  /** Arms the pace's wake-up for the earliest group that has deliveries due later. */
  async function arm() {
    const paced = await db
      .select()
      .from(actionGroups)
      .where(and(eq(actionGroups.state, 'running'), isNotNull(actionGroups.ratePerMinute)));
    let at = Number.POSITIVE_INFINITY;
    for (const g of paced) {
      const held = await db
        .select({ n: sql<number>`count(*)::int` })
        .from(deliveries)
        .where(and(eq(deliveries.requestId, g.requestId), eq(deliveries.held, true)));
      const next = nextDueAt(g);
      if (Number(held[0]?.n ?? 0) > 0 && next !== undefined) at = Math.min(at, next);
    }
    if (at === Number.POSITIVE_INFINITY || at >= tickAt) return;
    cancelTick?.();
    tickAt = at;
    const wait = Math.max(MIN_TICK_MS, at - clock.now().getTime());
    cancelTick = timers.setTimer(() => {
      cancelTick = undefined;
      tickAt = Number.POSITIVE_INFINITY;
      tick().catch((err) => logger.error({ err }, 'releasing paced deliveries failed'));
    }, wait);
  }

  /** Releases every paced delivery that came due; runs on the pace's timer and on the platform's sweep. */
  async function tick(): Promise<number> {
    const ids = await db
      .select({ id: actionGroups.requestId })
      .from(actionGroups)
      .where(and(eq(actionGroups.state, 'running'), isNotNull(actionGroups.ratePerMinute)));
    let released = 0;
    for (const { id } of ids) {
      const now = clock.now();
      const woken = await db.transaction(async (tx) => {
        const g = await lockGroup(tx, id);
        if (g?.state !== 'running') return [];
        const n = dueCount(g, now);
        if (n <= 0) return [];
        const out = await releaseHeld(tx, id, n);
        if (!out.length) return [];
        await tx
          .update(actionGroups)
          .set({ pacedReleased: g.pacedReleased + n, updatedAt: now })
          .where(eq(actionGroups.requestId, id));
        await audit.append(
          {
            actorType: 'system',
            actorId: 'group-waves',
            action: 'group.released',
            outcome: 'ok',
            requestId: id,
            details: { released: out.length, endpointIds: out, ratePerMinute: g.ratePerMinute },
          },
          tx,
        );
        return out;
      });
      released += woken.length;
      if (woken.length) await dispatcher.wake(woken).catch(() => undefined);
    }
    await arm();
    return released;
  }

  return {
    tick,

    /**
     * A delivery of the group reached a final state: a passed canary releases the next wave, a failed one
     * halts the group, and failures at the threshold halt it. Never throws (the caller is the reporter).
     */
    async afterDelivery(requestId: string): Promise<void> {
      try {
        const out = await db.transaction(async (tx): Promise<Outcome> => {
          const g = await lockGroup(tx, requestId);
          if (!g || (g.state !== 'canary' && g.state !== 'running')) return { released: [] };
          const row = await findRequest(tx, requestId);
          if (row?.state !== 'dispatched') return { released: [] };
          const now = clock.now();
          const c = await waveCounts(tx, requestId);
          if (g.state === 'canary') {
            if (FAILED_CANARY.some((s) => (c.released[s] ?? 0) > 0)) {
              return halt(tx, g, row.ref, await canaryFailure(tx, requestId), now);
            }
            const releasedTotal = c.total - c.held;
            if ((c.released.succeeded ?? 0) < releasedTotal) return { released: [] };
            const released = await goOn(tx, g, now);
            await audit.append(
              {
                actorType: 'system',
                actorId: 'group-waves',
                action: 'group.canary_passed',
                outcome: 'ok',
                requestId,
                details: { ref: row.ref, canary: releasedTotal, released: released.length },
              },
              tx,
            );
            const pace = g.ratePerMinute ? `, ${g.ratePerMinute} a minute` : '';
            const told = await tell(
              tx,
              requestId,
              `${row.ref}: the canary wave succeeded on ${plural(releasedTotal, 'endpoint')}; going on with the other ${c.held}${pace}.`,
            );
            return { released, told };
          }
          const failed = (c.all.failed ?? 0) - g.failuresAtResume;
          if (failed > 0 && c.held + (c.all.queued ?? 0) > 0 && failed * 100 >= g.haltAtPercent * c.total) {
            const pct = Math.round((failed * 100) / c.total);
            const reason = `${plural(failed, 'endpoint')} of ${c.total} failed (${pct}%), at or above its halt threshold of ${g.haltAtPercent}%`;
            return halt(tx, g, row.ref, reason, now);
          }
          return { released: [] };
        });
        await afterCommit(requestId, out);
      } catch (err) {
        logger.error({ err, requestId }, 'could not follow the waves of an action group');
      }
    },

    /**
     * Resumes a halted group: an approver (not its requester) with a live step-up window bound to resuming
     * it. Failures so far no longer count toward the threshold. The thread's notice is written into the chat
     * outbox in the same transaction; with a caller `tx` the caller calls `announce` after its commit.
     */
    async resume(
      requestId: string,
      actor: ResolvedUser,
      stepUpWindowId: string | undefined,
      tx?: DbOrTx,
    ): Promise<{ ref: string; outcome: Outcome }> {
      const run = async (t: DbOrTx) => {
        const g = await lockGroup(t, requestId);
        const row = await findRequest(t, requestId);
        if (!g || !row) throw new NotFound('group.not_found', `There is no action group "${requestId}".`);
        const view = await loadView(t, row);
        deps.policy.canApprove(actor, { ...view, approvalsRequired: 1, approvals: [] });
        if (g.state !== 'halted') {
          throw new Conflict(
            'group.not_halted',
            `${row.ref} is ${g.state}, not halted; there is nothing to resume.`,
          );
        }
        const now = clock.now();
        const [win] = stepUpWindowId
          ? await t
              .select({ id: stepUpWindows.id })
              .from(stepUpWindows)
              .where(
                and(
                  eq(stepUpWindows.id, stepUpWindowId),
                  eq(stepUpWindows.userId, actor.id),
                  sql`${stepUpWindows.expiresAt} > ${now.toISOString()}::timestamptz`,
                  eq(stepUpWindows.purpose, 'resume'),
                  eq(stepUpWindows.subject, bindTo.resume(requestId)),
                ),
              )
          : [];
        if (!win) {
          throw new Forbidden('resume.stepup_required', `Resuming ${row.ref} needs a fresh step-up.`);
        }
        const c = await waveCounts(t, requestId);
        await t
          .update(actionGroups)
          .set({ failuresAtResume: c.all.failed ?? 0, haltReason: null })
          .where(eq(actionGroups.requestId, requestId));
        const released = await goOn(t, { ...g, failuresAtResume: c.all.failed ?? 0 }, now);
        await audit.append(
          {
            actorType: 'user',
            actorId: actor.id,
            action: 'group.resumed',
            outcome: 'ok',
            requestId,
            details: {
              ref: row.ref,
              haltReason: g.haltReason,
              released: released.length,
              stepUpWindowId: win.id,
            },
          },
          t,
        );
        const pace = g.ratePerMinute ? ` at ${g.ratePerMinute} a minute` : '';
        const told = await tell(
          t,
          requestId,
          `${row.ref} resumed by ${actor.displayName}: ${plural(c.held, 'held delivery', 'held deliveries')} go on${pace}.`,
        );
        return { ref: row.ref, outcome: { released, told } };
      };
      return tx ? run(tx) : db.transaction(run);
    },

    /** After a resume committed: wakes the brokers, sends its thread notice and refreshes the progress. */
    announce: afterCommit,

    /** Marks a group cancelled (its queued deliveries were withdrawn in the caller's transaction). */
    async cancelled(tx: DbOrTx, requestId: string): Promise<void> {
      await tx
        .update(actionGroups)
        .set({ state: 'cancelled', updatedAt: clock.now() })
        .where(eq(actionGroups.requestId, requestId));
    },

    stop() {
      cancelTick?.();
      cancelTick = undefined;
    },
  };
}

export type GroupWaves = ReturnType<typeof createGroupWaves>;
