// An action group's live progress: one message in the request's thread, edited in place as deliveries move.
// The message and its edits are chat outbox rows (bot/outbox/): the post is written with the change that
// dispatched the group, and each change writes an edit that joins the group's pending one, so however many
// results arrive, one row stands for them and renders the newest counts when sent. The sender paces the
// edits of one message at most one per second across processes, and a crash loses no edit: the row waits.
import type { Db } from '../../db/client.ts';
import type { ChatOutbox } from '../outbox/chat-outbox.ts';
import type { RequestView } from '../ports.ts';
import { progressCounts, progressText } from '../render/progress.ts';
import { deliveryCounts, findRequest } from '../requests/request-dal.ts';
import * as gdal from './group-dal.ts';

/** A request with more than one target is an action group: it gets a progress message. */
export const isGroup = (view: Pick<RequestView, 'targets'>) => view.targets.length > 1;

export function createGroupProgress(deps: { db: Db; outbox: ChatOutbox; publicUrl: string }) {
  const { db, outbox } = deps;

  async function text(requestId: string): Promise<string | null> {
    const row = await findRequest(db, requestId);
    if (!row) return null;
    const group = await gdal.findGroup(db, requestId);
    const counts = progressCounts(
      (await deliveryCounts(db, [requestId])).get(requestId) ?? {},
      (row.exclusions as unknown[]).length,
    );
    return progressText({ ref: row.ref, counts, groupState: group?.state, haltReason: group?.haltReason });
  }

  return {
    /**
     * A delivery of the group moved: its progress message gets an edit with the newest counts (folded into
     * the one already waiting, sent once the message's edit slot comes). A group whose message is not posted
     * yet needs none: posting it writes its first edit.
     */
    async changed(requestId: string): Promise<void> {
      const group = await gdal.findGroup(db, requestId);
      if (!group?.progressPlatform || !group.progressMessageId) return;
      await outbox.enqueue(db, [{ kind: 'progress_update', platform: group.progressPlatform, requestId }]);
      await outbox.flush();
    },

    /** The progress text as it stands, for the message and for `status`. */
    text,

    /** The results page of a group: every endpoint's state, exit code and output (after a step-up). */
    resultsUrl(ref: string): string {
      return `${deps.publicUrl.replace(/\/$/, '')}/groups/${encodeURIComponent(ref)}`;
    },
  };
}

export type GroupProgress = ReturnType<typeof createGroupProgress>;
