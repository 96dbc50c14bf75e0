// The request state machine of DESIGN.md as a pure table. Services call assertTransition before every
// update and also guard the UPDATE with `where state = from`, so a refused transition changes nothing.
import type { RequestState } from '../../db/schema.ts';
import { Conflict } from '../errors.ts';

const TRANSITIONS: Record<RequestState, readonly RequestState[]> = {
  // `approved` straight from `requested`: nothing to approve (read-only script) and the requester confirmed.
  requested: ['pending_approval', 'approved', 'expired', 'cancelled'],
  pending_approval: ['approved', 'denied', 'expired', 'cancelled'],
  approved: ['dispatched', 'cancelled'],
  // Per-endpoint outcomes (including cancelled deliveries) end in `completed`.
  dispatched: ['completed'],
  completed: [],
  denied: [],
  expired: [],
  cancelled: [],
};

export const FINAL_STATES: readonly RequestState[] = ['completed', 'denied', 'expired', 'cancelled'];

export function canTransition(from: RequestState, to: RequestState): boolean {
  return TRANSITIONS[from]?.includes(to) ?? false;
}

export function isFinal(state: RequestState): boolean {
  return FINAL_STATES.includes(state);
}

/** Throws Conflict 'request.illegal_transition' when `from → to` is not in the table. */
export function assertTransition(from: RequestState, to: RequestState): void {
  if (!canTransition(from, to)) {
    throw new Conflict(
      'request.illegal_transition',
      `A request that is ${from.replace('_', ' ')} cannot become ${to.replace('_', ' ')}.`,
      { from, to },
    );
  }
}

export const FINAL_DELIVERY_STATES = ['succeeded', 'failed', 'expired', 'cancelled'] as const;
