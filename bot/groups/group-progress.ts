// An action group's live progress: one message in the request's thread, edited in place as deliveries move.
// Edits are coalesced to at most one per `intervalMs` per group: in this process by a timer per group (the
// first change in a quiet second goes out at once, later ones fold into one trailing edit with the newest
// counts), and across processes by the group row's edit slot. The chat adapter then spaces edits further
// within its platform's limits. Time comes from `timers`, so tests move it by hand.
import type { Db } from '../../db/client.ts';
import type { ChatMessageRef, ChatPort, Logger, RequestView, Timers } from '../ports.ts';
import { type ProgressCounts, progressCounts, progressText } from '../render/progress.ts';
import { deliveryCounts, findRequest } from '../requests/request-dal.ts';
import * as gdal from './group-dal.ts';

/** A request with more than one target is an action group: it gets a progress message. */
export const isGroup = (view: Pick<RequestView, 'targets'>) => view.targets.length > 1;

interface Pending {
  lastAt: number;
  cancel?: () => void;
  inFlight: boolean;
  dirty: boolean;
}

export function createGroupProgress(deps: {
  db: Db;
  chat: ChatPort;
  timers: Timers;
  logger: Logger;
  publicUrl: string;
  intervalMs?: number;
}) {
  const { db, chat, timers, logger } = deps;
  const interval = deps.intervalMs ?? 1000;
  const groups = new Map<string, Pending>();

  async function snapshot(requestId: string): Promise<{ text: string; counts: ProgressCounts } | null> {
    const row = await findRequest(db, requestId);
    if (!row) return null;
    const group = await gdal.findGroup(db, requestId);
    const counts = progressCounts(
      (await deliveryCounts(db, [requestId])).get(requestId) ?? {},
      (row.exclusions as unknown[]).length,
    );
    const text = progressText({
      ref: row.ref,
      counts,
      groupState: group?.state,
      haltReason: group?.haltReason,
    });
    return { text, counts };
  }

  function pendingOf(requestId: string): Pending {
    let p = groups.get(requestId);
    if (!p) {
      // Forget groups idle for a whole interval: their next edit may go out at once anyway.
      if (groups.size > 1000) {
        const stale = timers.now() - interval;
        for (const [id, q] of groups) if (!q.cancel && !q.inFlight && q.lastAt <= stale) groups.delete(id);
      }
      p = { lastAt: Number.NEGATIVE_INFINITY, inFlight: false, dirty: false };
      groups.set(requestId, p);
    }
    return p;
  }

  async function edit(requestId: string, p: Pending): Promise<void> {
    p.inFlight = true;
    try {
      // The reads come first and the interval counts from the chat call itself: under load the reads take
      // hundreds of milliseconds, and counting from before them let two edits land closer than the interval.
      const snap = await snapshot(requestId);
      const slot = await gdal.claimEditSlot(db, requestId, new Date(timers.now()), interval);
      const ref = slot && gdal.progressRefOf(slot);
      if (!ref) {
        // Another process edited within the interval: try again after it, with whatever is newest then.
        p.lastAt = timers.now();
        const group = await gdal.findGroup(db, requestId);
        if (group?.progressMessageId) p.dirty = true;
        return;
      }
      p.lastAt = timers.now();
      if (snap) await chat.updateThreadMessage(ref, snap.text);
    } catch (err) {
      logger.error({ err, requestId }, 'could not edit the progress message of an action group');
    } finally {
      p.inFlight = false;
      if (p.dirty) {
        p.dirty = false;
        void changed(requestId);
      }
    }
  }

  /** A delivery of the group moved: edit its progress message now, or once the interval has passed. */
  function changed(requestId: string): Promise<void> {
    const p = pendingOf(requestId);
    if (p.inFlight) {
      p.dirty = true;
      return Promise.resolve();
    }
    if (p.cancel) return Promise.resolve();
    const wait = p.lastAt + interval - timers.now();
    if (wait <= 0) return edit(requestId, p);
    p.cancel = timers.setTimer(() => {
      p.cancel = undefined;
      void edit(requestId, p);
    }, wait);
    return Promise.resolve();
  }

  return {
    changed,

    /**
     * Posts the group's progress message in its card's thread (once, whichever process gets there first)
     * and schedules a refresh, so results that arrived while it was being posted show up too.
     */
    async start(requestId: string, cardRef: ChatMessageRef): Promise<void> {
      const group = await gdal.findGroup(db, requestId);
      if (!group || group.progressMessageId) return;
      const snap = await snapshot(requestId);
      if (!snap) return;
      const posted = await chat.postThreadMessage(cardRef, snap.text);
      const now = timers.now();
      if (await gdal.setProgressMessage(db, requestId, posted, new Date(now))) {
        pendingOf(requestId).lastAt = now;
        await changed(requestId);
      }
    },

    /** The progress text as it stands, for `status`. */
    async text(requestId: string): Promise<string | null> {
      return (await snapshot(requestId))?.text ?? null;
    },

    /** The results page of a group: every endpoint's state, exit code and output (after a step-up). */
    resultsUrl(ref: string): string {
      return `${deps.publicUrl.replace(/\/$/, '')}/groups/${encodeURIComponent(ref)}`;
    },

    /** Stops the timers (shutdown); edits still pending are dropped, the next change sends the newest. */
    stop() {
      for (const p of groups.values()) p.cancel?.();
      groups.clear();
    },
  };
}

export type GroupProgress = ReturnType<typeof createGroupProgress>;
