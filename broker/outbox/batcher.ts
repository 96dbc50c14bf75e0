// Group commit: items that arrive while a flush is running go into the next flush together. An idle
// broker flushes a single item at once (no timer, so no added latency); a busy one commits thousands of
// acknowledgements or sends in a handful of transactions instead of one each.
export function createBatcher<T, R>(flush: (items: T[]) => Promise<R[]>, maxBatch = 2000) {
  let pending: { item: T; resolve: (r: R) => void; reject: (e: unknown) => void }[] = [];
  let running = false;

  async function run() {
    running = true;
    while (pending.length) {
      const batch = pending.slice(0, maxBatch);
      pending = pending.slice(batch.length);
      try {
        const results = await flush(batch.map((b) => b.item));
        for (const [i, b] of batch.entries()) b.resolve(results[i] as R);
      } catch (e) {
        for (const b of batch) b.reject(e);
      }
    }
    running = false;
  }

  return {
    add(item: T): Promise<R> {
      return new Promise<R>((resolve, reject) => {
        pending.push({ item, resolve, reject });
        if (!running) setImmediate(run);
        running = true;
      });
    },
  };
}
