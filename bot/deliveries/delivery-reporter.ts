// Follows delivery progress from the broker and tells the request's thread. Each final result is reported
// once even when two processes hear about it (the `reported_at` claim), and the card shows the running
// counts; completion of the whole request is announced once, by whoever moved it to `completed`.
import { and, eq, inArray, isNull } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import { deliveries, endpoints, files } from '../../db/schema.ts';
import { type GroupProgress, isGroup } from '../groups/group-progress.ts';
import type { GroupWaves } from '../groups/group-waves.ts';
import { cardRefOf } from '../handlers/chat-ref.ts';
import type { ChatPort, Clock, DeliveryEvent, DeliveryObserver, Logger } from '../ports.ts';
import { describeResult } from '../render/results.ts';
import { formatProgress } from '../render/summary.ts';
import type { RequestService } from '../requests/request-service.ts';

const FINAL = ['succeeded', 'failed', 'expired', 'cancelled'] as const;
/** Above this many targets, results are shown as counts on the card only, never one post per endpoint. */
const PER_ENDPOINT_REPLIES_MAX = 5;

export function createDeliveryReporter(deps: {
  db: Db;
  chat: ChatPort;
  requests: RequestService;
  progress: GroupProgress;
  waves: GroupWaves;
  clock: Clock;
  logger: Logger;
  publicUrl: string;
}): DeliveryObserver {
  const { db, chat, requests, clock } = deps;

  async function claimFinal(deliveryId: string) {
    const [row] = await db
      .update(deliveries)
      .set({ reportedAt: clock.now() })
      .where(
        and(
          eq(deliveries.id, deliveryId),
          isNull(deliveries.reportedAt),
          inArray(deliveries.state, [...FINAL]),
        ),
      )
      .returning();
    return row;
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

  return {
    async deliveryChanged(event: DeliveryEvent): Promise<void> {
      try {
        const claimed = (FINAL as readonly string[]).includes(event.state)
          ? await claimFinal(event.deliveryId)
          : undefined;
        const progress = await requests.onDeliveryChanged(event.requestId);
        const ref = await cardRefOf(db, event.requestId);
        if (!ref) return;
        // A group's counts live in its progress message (edited at most once a second); its card changes
        // only with the request's state.
        const group = isGroup(progress.request);
        if (!group || progress.completedNow) await chat.updateRequestCard(ref, progress.request);
        // A final result may pass or fail a canary, or reach the failure threshold that halts the group.
        if (group && claimed) await deps.waves.afterDelivery(event.requestId);
        if (group) await deps.progress.changed(event.requestId);
        if (claimed && progress.request.targets.length <= PER_ENDPOINT_REPLIES_MAX) {
          await chat.replyInThread(ref, await resultMessage(claimed));
        }
        if (progress.completedNow) {
          const counts = progress.request.progress ? formatProgress(progress.request.progress) : '';
          const results = group
            ? ` Every endpoint's state, exit code and output: ${deps.progress.resultsUrl(progress.request.ref)}`
            : '';
          await chat.replyInThread(ref, `${progress.request.ref} completed: ${counts}.${results}`);
        }
      } catch (err) {
        deps.logger.error(
          { err, deliveryId: event.deliveryId },
          'could not report delivery progress to chat',
        );
      }
    },
  };
}
