// Follows delivery progress from the broker and tells the request's thread. A final result is marked
// reported (`reported_at`) only after chat accepted its post, so a crash or a failed post between the two
// leaves it for `catchUp`, which the platform runs on a timer and after its LISTEN session comes back (a
// NOTIFY sent while it was down is lost). That makes a result reach the thread at least once; the card shows
// the running counts, and completion of the whole request is announced by whoever moved it to `completed`.
import { and, asc, eq, inArray, isNull, lt, or } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import { deliveries, endpoints, files } from '../../db/schema.ts';
import { cardRefOf } from '../handlers/chat-ref.ts';
import type { ChatPort, Clock, DeliveryEvent, DeliveryObserver, Logger } from '../ports.ts';
import { describeResult } from '../render/results.ts';
import { formatProgress } from '../render/summary.ts';
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

export function createDeliveryReporter(deps: {
  db: Db;
  chat: ChatPort;
  requests: RequestService;
  clock: Clock;
  logger: Logger;
  publicUrl: string;
}): DeliveryObserver & { catchUp(): Promise<number> } {
  const { db, chat, requests, clock } = deps;
  /** Results being reported by this process: the NOTIFY and a catch-up pass may name the same one. */
  const inFlight = new Set<string>();

  /**
   * Takes the result for reporting: unreported, and not claimed by another process within the lease (two
   * platform processes hear the same event). A process that dies holding the claim only delays the report
   * until the lease runs out.
   */
  async function claim(deliveryId: string) {
    const now = clock.now();
    const [row] = await db
      .update(deliveries)
      .set({ reportClaimedAt: now })
      .where(
        and(
          eq(deliveries.id, deliveryId),
          isNull(deliveries.reportedAt),
          inArray(deliveries.state, [...FINAL]),
          or(
            isNull(deliveries.reportClaimedAt),
            lt(deliveries.reportClaimedAt, new Date(now.getTime() - REPORT_LEASE_MS)),
          ),
        ),
      )
      .returning();
    return row;
  }

  /** A post that failed frees its claim, so the next catch-up pass tries again at once. */
  async function release(deliveryId: string) {
    await db
      .update(deliveries)
      .set({ reportClaimedAt: null })
      .where(and(eq(deliveries.id, deliveryId), isNull(deliveries.reportedAt)));
  }

  async function markReported(deliveryId: string) {
    await db
      .update(deliveries)
      .set({ reportedAt: clock.now() })
      .where(and(eq(deliveries.id, deliveryId), isNull(deliveries.reportedAt)));
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
  async function allReported(requestId: string) {
    const rows = await db
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

  /**
   * `late` marks a catch-up: the request may have been completed by an earlier report whose thread post
   * failed, so nobody announced it; the one that reports its last result does.
   */
  async function deliveryChanged(event: DeliveryEvent, late = false): Promise<void> {
    const final = (FINAL as readonly string[]).includes(event.state);
    if (final && inFlight.has(event.deliveryId)) return;
    if (final) inFlight.add(event.deliveryId);
    let pending: typeof deliveries.$inferSelect | undefined;
    let reported = false;
    try {
      pending = final ? await claim(event.deliveryId) : undefined;
      // A catch-up only reports; someone else reported or is reporting this one.
      if (late && !pending) return;
      const progress = await requests.onDeliveryChanged(event.requestId);
      const ref = await cardRefOf(db, event.requestId);
      if (ref) {
        await chat.updateRequestCard(ref, progress.request);
        if (pending && progress.request.targets.length <= PER_ENDPOINT_REPLIES_MAX) {
          await chat.replyInThread(ref, await resultMessage(pending));
        }
      }
      // Only now: had the post failed (or this process died), the result would still be unreported.
      if (pending) await markReported(pending.id);
      reported = true;
      const announce =
        progress.completedNow ||
        (late &&
          pending !== undefined &&
          progress.request.state === 'completed' &&
          (await allReported(event.requestId)));
      if (ref && announce) {
        const counts = progress.request.progress ? formatProgress(progress.request.progress) : '';
        await chat.replyInThread(ref, `${progress.request.ref} completed: ${counts}.`);
      }
    } catch (err) {
      deps.logger.error({ err, deliveryId: event.deliveryId }, 'could not report delivery progress to chat');
      if (pending && !reported) await release(pending.id).catch(() => undefined);
    } finally {
      if (final) inFlight.delete(event.deliveryId);
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
      for (const r of rows) await deliveryChanged(r, true);
      return rows.length;
    },
  };
}
