// Every call the adapter makes to the Bot Framework connector passes through here, for two reasons:
// - Teams limits each bot per conversation (7 sends a second, 8 in 2 s, 60 in 30 s, 1,800 an hour) and per
//   app across a tenant (tens a second). Going over earns 429s and, repeated, a longer block; so sends wait
//   for a slot in every window instead, first come first served per conversation.
// - The SDK retries nothing. A 429, 412 (a concurrent operation on the same message), 502, 503 or 504 is
//   retried after the connector's Retry-After (seconds or an HTTP date) or a backoff, plus jitter so that
//   many waiting senders do not come back in the same millisecond. Anything else fails at once.
// Errors leave as TeamsApiError: the SDK's HTTP error carries the request's headers, bearer token included,
// so it is never logged or rethrown as is.
import type { Logger } from '../../bot/ports.ts';
import { systemTimers, type TimerPort } from '../slack/update-scheduler.ts';

export type { TimerPort };
export { systemTimers };

export interface RateWindow {
  windowMs: number;
  max: number;
}

/** Microsoft's documented per-bot, per-conversation limits for sending. */
export const CONVERSATION_LIMITS: readonly RateWindow[] = [
  { windowMs: 1_000, max: 7 },
  { windowMs: 2_000, max: 8 },
  { windowMs: 30_000, max: 60 },
  { windowMs: 3_600_000, max: 1_800 },
];

/** The app across all conversations of a tenant: stay well under the 30 to 50 a second Teams allows. */
export const APP_LIMITS: readonly RateWindow[] = [{ windowMs: 1_000, max: 30 }];

const RETRYABLE = new Set([412, 429, 502, 503, 504]);

/** A connector call that failed for good. `status` is 0 when the connector could not be reached. */
export class TeamsApiError extends Error {
  override name = 'TeamsApiError';
  constructor(
    message: string,
    readonly status: number,
    readonly attempts: number,
  ) {
    super(message);
  }
}

export function sleep(timers: TimerPort, ms: number): Promise<void> {
  return new Promise((resolve) => {
    timers.setTimer(resolve, Math.max(0, ms));
  });
}

/**
 * Sliding-window limiter. Each key keeps the times of its granted (or reserved) slots; a caller gets the
 * earliest time at which every window has room, reserves it, and waits until then. Reservations are made in
 * call order, so sends to one conversation keep their order.
 */
export function createRateLimiter(deps: { timers: TimerPort; limits: readonly RateWindow[] }) {
  const { timers, limits } = deps;
  const longest = Math.max(...limits.map((l) => l.windowMs));
  const slots = new Map<string, number[]>();

  function reserve(key: string): number {
    const now = timers.now();
    let list = slots.get(key);
    if (!list) {
      list = [];
      slots.set(key, list);
    }
    // Forget what no window can see any more.
    let drop = 0;
    while (drop < list.length && list[drop]! <= now - longest) drop++;
    if (drop) list.splice(0, drop);

    let t = Math.max(now, list.at(-1) ?? now);
    for (let moved = true; moved; ) {
      moved = false;
      for (const { windowMs, max } of limits) {
        // Slots inside (t - windowMs, t]: with `max` of them already, wait for the oldest to leave.
        let inside = 0;
        for (let i = list.length - 1; i >= 0 && list[i]! > t - windowMs; i--) inside++;
        if (inside >= max) {
          const oldest = list[list.length - max]!;
          t = oldest + windowMs;
          moved = true;
        }
      }
    }
    list.push(t);
    return t - now;
  }

  return {
    /** Resolves when the caller may send on `key`. */
    async acquire(key: string): Promise<void> {
      const wait = reserve(key);
      if (wait > 0) await sleep(timers, wait);
    },
    /** How long a send on `key` made now would wait, without reserving anything. */
    backlogMs(key: string): number {
      const list = slots.get(key);
      return list?.length ? Math.max(0, list.at(-1)! - timers.now()) : 0;
    },
  };
}

/** Milliseconds the server asked us to wait: Retry-After as delta-seconds or an HTTP date. */
export function retryAfterMs(header: unknown, nowMs: number): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  if (typeof v !== 'string' && typeof v !== 'number') return undefined;
  const s = String(v).trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const at = Date.parse(s);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

interface HttpFailure {
  status: number;
  retryAfter?: unknown;
  code?: string;
}

/** Status and Retry-After of an SDK (axios) error, reading nothing else from it. */
function failureOf(err: unknown): HttpFailure {
  const e = err as { response?: { status?: number; headers?: Record<string, unknown> }; code?: string };
  const headers = e?.response?.headers;
  const retryAfter =
    headers && typeof (headers as { get?: unknown }).get === 'function'
      ? (headers as { get(n: string): unknown }).get('retry-after')
      : headers?.['retry-after'];
  return {
    status: e?.response?.status ?? 0,
    retryAfter,
    code: typeof e?.code === 'string' ? e.code : undefined,
  };
}

export interface GateOptions {
  timers?: TimerPort;
  /** 0 ≤ x < 1; injected so tests can see the jitter. */
  random?: () => number;
  logger: Logger;
  maxAttempts?: number;
  /** A Retry-After longer than this is not waited for: the call fails and the caller decides. */
  maxRetryAfterMs?: number;
  conversationLimits?: readonly RateWindow[];
  appLimits?: readonly RateWindow[];
}

export function createOutboundGate(opts: GateOptions) {
  const timers = opts.timers ?? systemTimers;
  const random = opts.random ?? Math.random;
  const maxAttempts = opts.maxAttempts ?? 5;
  const maxRetryAfter = opts.maxRetryAfterMs ?? 120_000;
  const perConversation = createRateLimiter({
    timers,
    limits: opts.conversationLimits ?? CONVERSATION_LIMITS,
  });
  const perApp = createRateLimiter({ timers, limits: opts.appLimits ?? APP_LIMITS });
  const waits: number[] = [];
  let inflight = 0;

  return {
    /**
     * Runs `call` when the conversation `key` and the app both have room, retrying the statuses above.
     * `what` names the call in errors and logs (never a token, never message text).
     */
    async run<T>(key: string, what: string, call: () => Promise<T>): Promise<T> {
      for (let attempt = 1; ; attempt++) {
        await perConversation.acquire(key);
        await perApp.acquire('app');
        let failure: unknown;
        inflight++;
        try {
          return await call();
        } catch (err) {
          failure = err;
        } finally {
          inflight--;
        }
        const f = failureOf(failure);
        const asked = retryAfterMs(f.retryAfter, timers.now());
        const retryable = RETRYABLE.has(f.status);
        if (!retryable || attempt >= maxAttempts || (asked !== undefined && asked > maxRetryAfter)) {
          const why = f.status ? `HTTP ${f.status}` : (f.code ?? 'no answer');
          throw new TeamsApiError(
            `${what} failed: ${why}${retryable ? ` after ${attempt} attempt${attempt === 1 ? '' : 's'}` : ''}`,
            f.status,
            attempt,
          );
        }
        // Exponential backoff when the server gave no Retry-After; jitter up to a fifth on top (at least
        // 50 ms), so a crowd of senders that were told the same time spreads out.
        const base = asked ?? Math.min(30_000, 500 * 2 ** (attempt - 1));
        const wait = Math.round(base + random() * Math.max(50, base * 0.2));
        waits.push(wait);
        opts.logger.warn(
          { call: what, status: f.status, attempt, waitMs: wait, retryAfterMs: asked },
          'Teams connector asked us to slow down or failed for a moment; retrying',
        );
        await sleep(timers, wait);
      }
    },
    /** Every retry wait so far, in ms (tests and the benchmark). */
    retryWaits: () => [...waits],
    backlogMs: (key: string) => perConversation.backlogMs(key),
    /** Connector calls under way (waiting for a slot or a retry not included). */
    inflight: () => inflight,
  };
}

export type OutboundGate = ReturnType<typeof createOutboundGate>;
