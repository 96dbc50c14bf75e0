// The core's entry points, called by every chat adapter and by the step-up page.

import type { ChatContext, RequestView } from './ports.ts';
import type { ChallengeView, StepUpAttempt, StepUpWindow } from './stepup/stepup-types.ts';

export interface DecisionInput {
  /** Request id (uuid) or ref (R-XXXXXX) from the button's value. */
  requestId: string;
  decision: 'approve' | 'deny';
  reason?: string;
}

/** What the step-up page shows before the user types anything. */
export interface StepUpPageView {
  challenge: ChallengeView;
  /** The request being approved or confirmed, when the challenge is bound to one. */
  request?: RequestView;
  /** Plain-words description of what is being confirmed, e.g. "Approve isolate on web-01". */
  summary: string;
}

export interface StepUpOutcome {
  challenge: ChallengeView;
  /** The window this step-up opened, bound to the challenge's purpose and subject. */
  window: StepUpWindow;
  windowExpiresAt: Date;
  /** Plain-words result for the "done" page, e.g. "Approved R-7K3QXM. Return to Slack." */
  message: string;
  request?: RequestView;
}

export interface BotCore {
  /**
   * A command typed in chat (`isolate web-01 --reason ...`). Never throws for user errors: they are
   * answered privately through the ChatPort. Idempotent on `ctx.eventId`.
   */
  handleCommand(ctx: ChatContext, text: string): Promise<void>;
  /** An Approve or Deny button click. Re-checks who clicked; idempotent under a row lock. */
  handleDecision(ctx: ChatContext, input: DecisionInput): Promise<void>;
  /** Throws NotFound / Conflict (used, expired) for a bad link. */
  describeStepUp(token: string): Promise<StepUpPageView>;
  /** Verifies password + TOTP, opens the window and carries out what the challenge was for. */
  completeStepUp(attempt: StepUpAttempt): Promise<StepUpOutcome>;
}
