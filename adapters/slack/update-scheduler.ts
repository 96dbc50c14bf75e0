// Slack allows about one message edit per second per channel. An action group reports progress once per
// endpoint, so without this a 200-endpoint run would be 200 chat.update calls fighting the rate limit.
// Each channel gets a tiny queue: the first edit in a quiet channel goes out at once; later ones within the
// interval are coalesced per card (only the newest view survives) and sent when the interval has passed.

export interface TimerPort {
  now(): number;
  /** Runs `fn` after `ms`; returns a cancel function. */
  setTimer(fn: () => void, ms: number): () => void;
}

export const systemTimers: TimerPort = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return () => clearTimeout(t);
  },
};

interface ChannelQueue {
  lastSentAt: number;
  /** Newest pending payload per message id, in first-queued order. */
  pending: Map<string, () => Promise<void>>;
  cancelTimer?: () => void;
  flushing: boolean;
}

export interface UpdateScheduler {
  /**
   * Queues `send` as the latest edit of `messageId` in `channelId`. Resolves once the edit went out when the
   * channel was quiet (so a caller sees its errors), otherwise at once: the newest view is sent later.
   */
  schedule(channelId: string, messageId: string, send: () => Promise<void>): Promise<void>;
  /** Sends everything still pending, ignoring the interval (used on shutdown). */
  drain(): Promise<void>;
  pendingCount(): number;
}

export function createUpdateScheduler(deps: {
  timers?: TimerPort;
  intervalMs?: number;
  onError: (err: unknown) => void;
}): UpdateScheduler {
  const timers = deps.timers ?? systemTimers;
  const interval = deps.intervalMs ?? 1000;
  const channels = new Map<string, ChannelQueue>();

  function queueOf(channelId: string): ChannelQueue {
    let q = channels.get(channelId);
    if (!q) {
      q = { lastSentAt: Number.NEGATIVE_INFINITY, pending: new Map(), flushing: false };
      channels.set(channelId, q);
    }
    return q;
  }

  function arm(q: ChannelQueue, channelId: string) {
    if (q.cancelTimer || q.flushing || q.pending.size === 0) return;
    const wait = Math.max(0, q.lastSentAt + interval - timers.now());
    q.cancelTimer = timers.setTimer(() => {
      q.cancelTimer = undefined;
      flushOne(q, channelId).catch(deps.onError);
    }, wait);
  }

  async function flushOne(q: ChannelQueue, channelId: string): Promise<void> {
    const first = q.pending.entries().next();
    if (first.done) return;
    const [messageId, send] = first.value;
    q.pending.delete(messageId);
    q.flushing = true;
    q.lastSentAt = timers.now();
    try {
      await send();
    } finally {
      q.flushing = false;
      // The queue stays (with its lastSentAt) so the next edit in this channel still respects the interval.
      if (q.pending.size > 0) arm(q, channelId);
    }
  }

  return {
    schedule(channelId, messageId, send) {
      const q = queueOf(channelId);
      // Re-inserting moves nothing: Map keeps the first position, so a busy card cannot starve others.
      q.pending.set(messageId, send);
      if (q.cancelTimer || q.flushing) return Promise.resolve();
      if (timers.now() - q.lastSentAt >= interval) return flushOne(q, channelId);
      arm(q, channelId);
      return Promise.resolve();
    },
    async drain() {
      for (const [, q] of channels) {
        q.cancelTimer?.();
        q.cancelTimer = undefined;
        for (const [id, send] of [...q.pending]) {
          q.pending.delete(id);
          await send().catch(deps.onError);
        }
      }
      channels.clear();
    },
    pendingCount() {
      let n = 0;
      for (const q of channels.values()) n += q.pending.size;
      return n;
    },
  };
}
