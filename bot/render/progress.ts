// An action group's live progress in words: the counts of every state a person follows (running is an
// acknowledged delivery, excluded an endpoint the policy left out) and a text progress bar, the same in every
// chat and in `status`.
import { FINAL_DELIVERY_STATES } from '../requests/request-states.ts';

export const PROGRESS_STATES = [
  'queued',
  'sent',
  'running',
  'succeeded',
  'failed',
  'expired',
  'cancelled',
  'excluded',
] as const;
export type ProgressState = (typeof PROGRESS_STATES)[number];
export type ProgressCounts = Record<ProgressState, number>;

const BAR_CELLS = 20;

/** Delivery counts by stored state (plus the number excluded) as the states a person reads. */
export function progressCounts(deliveries: Record<string, number>, excluded: number): ProgressCounts {
  return {
    queued: deliveries.queued ?? 0,
    sent: deliveries.sent ?? 0,
    running: deliveries.acknowledged ?? 0,
    succeeded: deliveries.succeeded ?? 0,
    failed: deliveries.failed ?? 0,
    expired: deliveries.expired ?? 0,
    cancelled: deliveries.cancelled ?? 0,
    excluded,
  };
}

/** Deliveries that reached a final state, of all the group's deliveries. */
export function doneOf(c: ProgressCounts): { done: number; total: number } {
  const done = FINAL_DELIVERY_STATES.reduce((n, s) => n + c[s], 0);
  return { done, total: done + c.queued + c.sent + c.running };
}

/** `[██████░░░░░░░░░░░░░░]  31%`: whole cells only, so the bar never claims more than is done. */
export function progressBar(done: number, total: number, cells = BAR_CELLS): string {
  const share = total > 0 ? done / total : 1;
  const full = Math.floor(share * cells);
  const pct = Math.floor(share * 100);
  return `[${'█'.repeat(full)}${'░'.repeat(cells - full)}] ${String(pct).padStart(3)}%`;
}

const n = (x: number) => x.toLocaleString('en-US');

export interface ProgressInput {
  ref: string;
  counts: ProgressCounts;
  /** The group's own state when it is not simply running (a canary, a halt, a cancel). */
  groupState?: string;
  haltReason?: string | null;
}

/** The progress message: a headline with the bar, then every count (zeros too, so the layout stays put). */
export function progressText(p: ProgressInput): string {
  const { done, total } = doneOf(p.counts);
  const stage =
    p.groupState === 'halted'
      ? ` — HALTED${p.haltReason ? `: ${p.haltReason}` : ''}`
      : p.groupState === 'canary'
        ? ' — canary wave'
        : p.groupState === 'cancelled'
          ? ' — cancelled'
          : done === total
            ? ' — finished'
            : '';
  const counts = PROGRESS_STATES.map((s) => `${s} ${n(p.counts[s])}`).join(' · ');
  return `${p.ref} progress ${progressBar(done, total)} ${n(done)} of ${n(total)} done${stage}\n${counts}`;
}
