// Follows delivery progress from the broker and tells the request's thread. A final result is marked
// reported (`reported_at`) in the same transaction that writes its thread reply (and the card edit) into the
// chat outbox (bot/outbox/), and the outbox's sender delivers them after the commit: a result is told in its
// thread exactly once, even when this process dies right after, and a result left unreported (a lost NOTIFY,
// a crash before that transaction) is found by `catchUp`, which the platform runs on a timer and after its
// LISTEN session comes back. The card shows the running counts, and completion of the whole request is
// announced by whoever moved it to `completed`.
// Events are handled one request at a time, in batches: the events of a request that arrive while a pass
// for it runs are taken together by the next pass. An action group's thousands of results then cost a few
// passes (each reading the request once), not one locked transaction and one full view per endpoint.
import { and, asc, eq, inArray, isNull, lt, or, sql } from 'drizzle-orm';
import type { Db, DbOrTx } from '../../db/client.ts';
import { chatOutbox, deliveries, endpoints, files } from '../../db/schema.ts';
import { type GroupProgress, isGroup } from '../groups/group-progress.ts';
import type { GroupWaves } from '../groups/group-waves.ts';
import {
  type ChatOutbox,
  type OutboxMessage,
  type RequestThread,
  requestThreadOf,
  threadLane,
} from '../outbox/chat-outbox.ts';
import type { Clock, DeliveryEvent, DeliveryObserver, FaultPoints, Logger } from '../ports.ts';
import { describeResult } from '../render/results.ts';
import { formatProgress } from '../render/summary.ts';
import { lockRequest } from '../requests/request-dal.ts';
import type { RequestService } from '../requests/request-service.ts';

const FINAL = ['succeeded', 'failed', 'expired', 'cancelled'] as const;
/**
 * Final states that reach the reporter as events. Cancelled deliveries are told in the thread by the cancel
 * itself, never here, so the catch-up does not look for them (the partial index leaves them out too).
 */
const REPORTED = ['succeeded', 'failed', 'expired'] as const;
/** How many unreported results one catch-up pass takes on; the next pass takes the rest. */
const CATCH_UP_BATCH = 200;
/** How long a process's claim on a result keeps others from reporting it (it may be posting it). */
const REPORT_LEASE_MS = 30_000;
/** Above this many targets, results are shown as counts on the card only, never one post per endpoint. */
const PER_ENDPOINT_REPLIES_MAX = 5;

interface Queued {
  event: DeliveryEvent;
  late: boolean;
}

export function createDeliveryReporter(deps: {
  db: Db;
  outbox: ChatOutbox;
  requests: RequestService;
  progress: GroupProgress;
  waves: GroupWaves;
  clock: Clock;
  logger: Logger;
  publicUrl: string;
  /** Fault drills only (FAULT_CRASH_AT). */
  faults?: FaultPoints;
}): DeliveryObserver & { catchUp(): Promise<number> } {
  const { db, outbox, requests, clock } = deps;
  /** Per request: the events waiting for the next pass, and the pass running now (if any). */
  const queues = new Map<string, { waiting: Map<string, Queued>; running: Promise<void> | null }>();

  /**
   * Takes results for reporting: unreported, and not claimed by another process within the lease (two
   * platform processes hear the same event). A process that dies holding a claim only delays the report
   * until the lease runs out.
   */
  async function claim(deliveryIds: string[]) {
    const now = clock.now();
    const rows = await db
      .update(deliveries)
      .set({ reportClaimedAt: now })
      .where(
        and(
          inArray(deliveries.id, deliveryIds),
          isNull(deliveries.reportedAt),
          inArray(deliveries.state, [...FINAL]),
          or(
            isNull(deliveries.reportClaimedAt),
            lt(deliveries.reportClaimedAt, new Date(now.getTime() - REPORT_LEASE_MS)),
          ),
        ),
      )
      .returning();
    return rows.sort((a, b) => (a.finishedAt?.getTime() ?? 0) - (b.finishedAt?.getTime() ?? 0));
  }

  /** A post that failed frees its claims, so the next catch-up pass tries again at once. */
  async function release(deliveryIds: string[]) {
    await db
      .update(deliveries)
      .set({ reportClaimedAt: null })
      .where(and(inArray(deliveries.id, deliveryIds), isNull(deliveries.reportedAt)));
  }

  /** Marks results reported; returns the ones this call marked (another process may have been first). */
  async function markReported(tx: DbOrTx, deliveryIds: string[]): Promise<Set<string>> {
    const rows = await tx
      .update(deliveries)
      .set({ reportedAt: clock.now() })
      .where(and(inArray(deliveries.id, deliveryIds), isNull(deliveries.reportedAt)))
      .returning({ id: deliveries.id });
    return new Set(rows.map((r) => r.id));
  }

  async function resultMessage(d: typeof deliveries.$inferSelect): Promise<string> {
    const [ep] = await db
      .select({ hostname: endpoints.hostname, reported: endpoints.reportedHostname })
      .from(endpoints)
      .where(eq(endpoints.id, d.endpointId));
    const fileId = (d.result as { fileId?: unknown } | null)?.fileId;
    const [file] =
      d.action === 'fetch' && typeof fileId === 'string'
        ? await db.select().from(files).where(eq(files.id, fileId))
        : [];
    return describeResult({
      host: ep?.reported ?? ep?.hostname ?? d.endpointId,
      action: d.action,
      state: d.state,
      result: d.result,
      error: d.error,
      file,
    });
  }

  /** True when no final result of the request is still waiting to be told in its thread. */
  async function allReported(tx: DbOrTx, requestId: string) {
    const rows = await tx
      .select({ id: deliveries.id })
      .from(deliveries)
      .where(
        and(
          eq(deliveries.requestId, requestId),
          isNull(deliveries.reportedAt),
          inArray(deliveries.state, [...REPORTED]),
        ),
      )
      .limit(1);
    return rows.length === 0;
  }

  /** True when the request's completion notice is already in its thread's outbox (sent or not). */
  async function completionTold(tx: DbOrTx, ref: RequestThread, requestId: string, requestRef: string) {
    // Told in the card's thread, or still waiting with the card in the request's lane.
    const lanes = [...new Set([threadLane(ref), threadLane({ platform: ref.platform, requestId })])];
    const rows = await tx
      .select({ id: chatOutbox.id })
      .from(chatOutbox)
      .where(
        and(
          inArray(chatOutbox.lane, lanes),
          eq(chatOutbox.kind, 'thread_reply'),
          sql`${chatOutbox.payload}->>'text' like ${`${requestRef} completed: %`}`,
        ),
      )
      .limit(1);
    return rows.length > 0;
  }

  /**
   * One pass over the events of one request. A catch-up (`late`) pass only reports results nobody holds; any
   * pass that completes the request or reports one of its results may be the one that tells the completion
   * (see the report transaction).
   */
  async function reportBatch(requestId: string, batch: Queued[]): Promise<void> {
    const finals = batch.filter((q) => (FINAL as readonly string[]).includes(q.event.state));
    let pending: (typeof deliveries.$inferSelect)[] = [];
    let reported = false;
    if (finals.length) deps.faults?.reached('result-stored');
    try {
      pending = finals.length ? await claim(finals.map((q) => q.event.deliveryId)) : [];
      // A catch-up only reports; someone else reported or is reporting these.
      if (!pending.length && batch.every((q) => q.late)) return;
      const progress = await requests.onDeliveryChanged(requestId);
      // The card's thread, or the request's lane while its card waits to be posted.
      const ref = await requestThreadOf(db, requestId);
      // A group's counts live in its progress message (edited at most once a second); its card changes
      // only with the request's state.
      const group = isGroup(progress.request);
      // A final result may pass or fail a canary, or reach the failure threshold that halts the group;
      // waves go on whether or not the request has a card to update.
      if (group && pending.length) await deps.waves.afterDelivery(requestId);
      const perEndpoint = ref !== null && progress.request.targets.length <= PER_ENDPOINT_REPLIES_MAX;
      const replies = perEndpoint
        ? await Promise.all(pending.map(async (d) => ({ id: d.id, text: await resultMessage(d) })))
        : [];
      if (pending.length || ref) {
        await db.transaction(async (tx) => {
          // One report transaction of a request at a time (across processes): whether the completion is
          // still to be told is decided under this lock, so it is told exactly once.
          const current = await lockRequest(tx, requestId);
          // Only the results this transaction marks are told: a second process gets none of them.
          const marked = pending.length
            ? await markReported(
                tx,
                pending.map((d) => d.id),
              )
            : new Set();
          if (!ref) return;
          const messages: OutboxMessage[] = [];
          if (!group || progress.completedNow) messages.push({ kind: 'card_update', ref, requestId });
          for (const r of replies)
            if (marked.has(r.id)) messages.push({ kind: 'thread_reply', ref, text: r.text });
          // The completion is told once, after the request's last result, by whichever pass finds it
          // completed with every result reported and no completion told yet: the pass that completed it, or
          // the one that reported a result another process still held, or a catch-up after a crash.
          const announce =
            (progress.completedNow || marked.size > 0) &&
            current?.state === 'completed' &&
            (await allReported(tx, requestId)) &&
            !(await completionTold(tx, ref, requestId, progress.request.ref));
          if (announce) {
            const counts = progress.request.progress ? formatProgress(progress.request.progress) : '';
            const results = group
              ? ` Every endpoint's state, exit code and output: ${deps.progress.resultsUrl(progress.request.ref)}`
              : '';
            messages.push({
              kind: 'thread_reply',
              ref,
              text: `${progress.request.ref} completed: ${counts}.${results}`,
            });
          }
          await outbox.enqueue(tx, messages);
        });
      }
      reported = true;
      await outbox.flush();
      if (ref && group) await deps.progress.changed(requestId);
    } catch (err) {
      deps.logger.error(
        { err, requestId, deliveries: batch.length },
        'could not report delivery progress to chat',
      );
      if (pending.length && !reported) await release(pending.map((d) => d.id)).catch(() => undefined);
    }
  }

  /** Queues the event for its request's next pass; resolves once a pass has handled it. Never rejects. */
  function deliveryChanged(event: DeliveryEvent, late = false): Promise<void> {
    let q = queues.get(event.requestId);
    if (!q) {
      q = { waiting: new Map(), running: null };
      queues.set(event.requestId, q);
    }
    const before = q.waiting.get(event.deliveryId);
    q.waiting.set(event.deliveryId, { event, late: late || (before?.late ?? false) });
    if (!q.running) q.running = drain(event.requestId, q);
    return q.running;
  }

  async function drain(
    requestId: string,
    q: { waiting: Map<string, Queued>; running: Promise<void> | null },
  ): Promise<void> {
    // Let the events of the same burst (one broker batch, one NOTIFY) join the first pass.
    await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      while (q.waiting.size) {
        const batch = [...q.waiting.values()];
        q.waiting.clear();
        await reportBatch(requestId, batch);
      }
    } finally {
      q.running = null;
      queues.delete(requestId);
    }
  }

  return {
    deliveryChanged: (event: DeliveryEvent) => deliveryChanged(event),

    /**
     * Reports every final result not yet reported (oldest first, a batch at a time): the ones whose NOTIFY
     * was lost, and the ones whose post failed or was cut short by a crash. Returns how many it took on.
     */
    async catchUp(): Promise<number> {
      const rows = await db
        .select({
          deliveryId: deliveries.id,
          requestId: deliveries.requestId,
          endpointId: deliveries.endpointId,
          state: deliveries.state,
        })
        .from(deliveries)
        .where(and(isNull(deliveries.reportedAt), inArray(deliveries.state, [...REPORTED])))
        .orderBy(asc(deliveries.finishedAt))
        .limit(CATCH_UP_BATCH);
      await Promise.all(rows.map((r) => deliveryChanged(r, true)));
      return rows.length;
    },
  };
}
