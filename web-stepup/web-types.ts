// What the step-up pages need from the rest of the platform. Each dependency is narrowed to the methods the
// pages call, so tests and the composition root pass the real services and nothing more is reachable.
import type { AuditService } from '../bot/audit/audit-service.ts';
import type { BotCore } from '../bot/bot-types.ts';
import type { FileLibrary } from '../bot/library/file-library.ts';
import type { Clock, FileStore } from '../bot/ports.ts';
import type { StepUpService } from '../bot/stepup/stepup-service.ts';
import type { UserService } from '../bot/users/user-service.ts';
import type { Db } from '../db/client.ts';

export interface StepUpPagesConfig {
  /** PUBLIC_URL without a trailing slash; redirects and links are built from it. */
  publicUrl: string;
  /** `Secure` on every cookie; true when PUBLIC_URL is https. */
  secureCookies: boolean;
  /** The platform secret key; the cookie-signing key is derived from it. */
  secretKey: Buffer;
  /**
   * Step-up and enrolment page requests within `rateWindowMs` (default one minute): per link owner for live
   * links (default 30), and per IP for unknown, malformed, used or expired links (default 60).
   */
  rateLimitPerIp?: number;
  rateLimitPerUser?: number;
  rateWindowMs?: number;
  /** Audit records per history page (default 50). */
  historyLimit?: number;
  /** Largest file the library upload page takes (MAX_FILE_BYTES). */
  maxLibraryFileBytes: number;
}

export interface StepUpPagesDeps {
  bot: Pick<BotCore, 'describeStepUp' | 'completeStepUp'>;
  stepup: Pick<
    StepUpService,
    | 'inspectChallenge'
    | 'verifyEnrolmentPassword'
    | 'startTotpEnrolment'
    | 'confirmTotpEnrolment'
    | 'windowById'
  >;
  users: Pick<UserService, 'getUser'>;
  audit: AuditService;
  fileStore: FileStore;
  library: Pick<FileLibrary, 'add'>;
  db: Db;
  clock: Clock;
  config: StepUpPagesConfig;
}
