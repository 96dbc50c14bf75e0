import type { StepUpPurpose } from '../../db/schema.ts';

/** A step-up link as the page shows it. The raw token is never stored; only its keyed hash is. */
export interface ChallengeView {
  id: string;
  userId: string;
  username: string;
  displayName: string;
  purpose: StepUpPurpose;
  /** What the challenge binds to: a request digest, `grant:<userId>:<role>`, a file id, ... */
  subject: string;
  requestId: string | null;
  expiresAt: Date;
}

/** A live step-up: it unlocks its purpose for its subject only (stepup-binding.ts), until it expires. */
export interface StepUpWindow {
  id: string;
  userId: string;
  purpose: StepUpPurpose;
  /** What the window is bound to within its purpose, e.g. `<request id>@<digest>` or a file id. */
  subject: string;
  expiresAt: Date;
}

export interface CreatedChallenge {
  challengeId: string;
  /** 128-bit random, base64url. Shown once, in the link. */
  token: string;
  url: string;
  expiresAt: Date;
}

export interface StepUpAttempt {
  token: string;
  password: string;
  totpCode: string;
  /** For an approval link: the person may deny from the page instead (default approve). */
  decision?: 'approve' | 'deny';
  /** Why, for a denial. */
  reason?: string;
  sourceIp?: string;
  userAgent?: string;
}
