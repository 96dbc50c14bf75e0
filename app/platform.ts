// Builds the service graph once: the composition root (main.ts), the demo and the end-to-end tests all call
// this, so what the tests exercise is what production runs.

import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import {
  type CheckpointTimer,
  countAppendsFor,
  createAuditCheckpointer,
} from '../bot/audit/audit-checkpointer.ts';
import { auditChainKey } from '../bot/audit/audit-keys.ts';
import { type AuditService, createAuditService } from '../bot/audit/audit-service.ts';
import { createBotService } from '../bot/bot-service.ts';
import { createDeliveryReporter } from '../bot/deliveries/delivery-reporter.ts';
import { createGroupProgress } from '../bot/groups/group-progress.ts';
import { createGroupWaves } from '../bot/groups/group-waves.ts';
import { createInteractionInbox } from '../bot/inbox/interaction-inbox.ts';
import { createFileLibrary } from '../bot/library/file-library.ts';
import { createChatOutbox, enqueueChat, requestThreadOf } from '../bot/outbox/chat-outbox.ts';
import { createChatPosts } from '../bot/outbox/chat-posts.ts';
import { createChatSender } from '../bot/outbox/chat-sender.ts';
import { createPolicy } from '../bot/policy/policy-service.ts';
import {
  type Clock,
  type DeliveryEvent,
  type FaultPoints,
  type FileStore,
  type Logger,
  systemTimers,
  type Timers,
} from '../bot/ports.ts';
import { createRequestService } from '../bot/requests/request-service.ts';
import { installBuiltinScripts } from '../bot/scripts/builtin-scripts.ts';
import { createScriptLibrary } from '../bot/scripts/script-library.ts';
import { createSessionService } from '../bot/sessions/session-service.ts';
import { createStepUpService } from '../bot/stepup/stepup-service.ts';
import { createUserService } from '../bot/users/user-service.ts';
import { createLocalFileStore } from '../broker/files/local-file-store.ts';
import { createOutboxDispatcher } from '../broker/outbox/dispatcher.ts';
import type { Database, Db } from '../db/client.ts';
import { checkpointLogFor, resolveCheckpointKeys } from './audit-anchoring.ts';
import { createChatRouter } from './chat-router.ts';
import type { Config } from './config.ts';
import { registerDatabaseMetrics } from './metrics.ts';

export interface PlatformOptions {
  config: Config;
  database: Database;
  logger: Logger;
  clock: Clock;
  secretKey: Buffer;
  /**
   * When given, the database-backed metrics are registered on it: requests and deliveries by state, outbox
   * depth, audit events and step-up outcomes (app/metrics.ts).
   */
  metrics?: Registry;
  /** Where evidence and library files live; default DATA_DIR/files. */
  fileStore?: FileStore;
  /** Milliseconds and timers of the group progress edits and paced waves (default: the system's). */
  timers?: Timers;
  /** Timer of the audit checkpointer's poll (default: the system's). */
  checkpointTimer?: CheckpointTimer;
}

const deliveryEventSchema = z.object({
  deliveryId: z.string().uuid(),
  requestId: z.string().uuid(),
  endpointId: z.string().uuid(),
  state: z.string().max(32),
});

/** The step-up service with its limits taken from config; the CLI builds the same one. */
export function stepUpFromConfig(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  secretKey: Buffer;
  config: Config;
}) {
  const { config } = deps;
  return createStepUpService({
    ...deps,
    publicUrl: config.PUBLIC_URL,
    windowSeconds: config.STEPUP_WINDOW,
    linkTtlSeconds: config.STEPUP_LINK_TTL,
    lockoutThreshold: config.LOCKOUT_THRESHOLD,
    lockoutSeconds: config.LOCKOUT_DURATION,
  });
}

/**
 * The fault drill's switch: FAULT_CRASH_AT names a point between a click and its result where this process
 * kills itself (SIGKILL, as an OOM killer or a pulled plug would), so a drill can show that nothing
 * committed is lost and nothing half-done survives. Unset, it does nothing.
 */
function faultPointsFor(config: Config, logger: Logger): FaultPoints | undefined {
  const at = config.FAULT_CRASH_AT;
  if (!at) return undefined;
  logger.warn({ point: at }, 'FAULT_CRASH_AT is set: this process kills itself when it gets there');
  return {
    reached(point) {
      if (point !== at) return;
      logger.warn({ point }, 'FAULT_CRASH_AT reached: killing this process');
      process.kill(process.pid, 'SIGKILL');
    },
  };
}

export function createPlatform(opts: PlatformOptions) {
  const { config, database, logger, clock, secretKey } = opts;
  const faults = faultPointsFor(config, logger);
  const db = database.db;
  const baseAudit = createAuditService({ db, clock, chainKey: auditChainKey(secretKey) });
  // Signs the chain's head into DATA_DIR and the audit channel; main.ts starts it (tests that do not, never
  // touch the file).
  const checkpointer = createAuditCheckpointer({
    audit: baseAudit,
    log: checkpointLogFor(config),
    keys: resolveCheckpointKeys(config, secretKey),
    clock,
    logger,
    timer: opts.checkpointTimer,
  });
  const audit = countAppendsFor(baseAudit, checkpointer);
  if (opts.metrics) registerDatabaseMetrics(opts.metrics, db);
  const users = createUserService({ db, audit, clock, secretKey });
  const stepup = stepUpFromConfig({ db, audit, clock, secretKey, config });
  const policy = createPolicy({
    blastRadiusThreshold: config.BLAST_RADIUS_THRESHOLD,
    readOnlyApprovalAbove: config.READ_ONLY_APPROVAL_ABOVE,
  });
  const dispatcher = createOutboxDispatcher({ db, notify: database.notify, clock });
  const requests = createRequestService({
    db,
    audit,
    clock,
    policy,
    dispatcher,
    approvalTtlSeconds: config.APPROVAL_TTL,
    deliveryTtlSeconds: config.DELIVERY_TTL,
    maxScriptBytes: config.MAX_SCRIPT_BYTES,
  });
  const sessions = createSessionService({ db, audit, clock });
  const fileStore = opts.fileStore ?? createLocalFileStore(join(config.DATA_DIR, 'files'));
  const library = createFileLibrary({ db, audit, fileStore, maxFileBytes: config.MAX_FILE_BYTES });
  const scripts = createScriptLibrary({ db, audit, maxScriptBytes: config.MAX_SCRIPT_BYTES });
  const router = createChatRouter();
  // What the core says in chat goes into the chat outbox and out through the sender (bot/outbox/), which
  // delivers it through the adapters registered on the router.
  const progress = createGroupProgress({
    db,
    outbox: { enqueue: enqueueChat, flush: () => sender.kick() },
    publicUrl: config.PUBLIC_URL,
  });
  const sender = createChatSender({
    db,
    chat: router.chat,
    render: (requestId) => requests.getView(requestId),
    posts: createChatPosts({
      db,
      chat: router.chat,
      render: (requestId) => requests.getView(requestId),
      progressText: progress.text,
      clock,
    }),
    timers: opts.timers ?? systemTimers,
    logger,
  });
  const outbox = createChatOutbox({ kick: sender.kick });
  const waves = createGroupWaves({
    db,
    audit,
    clock,
    timers: opts.timers ?? systemTimers,
    dispatcher,
    outbox,
    policy,
    progress,
    logger,
  });
  const bot = createBotService({
    db,
    audit,
    clock,
    logger,
    chat: router.chat,
    outbox,
    faults,
    users,
    stepup,
    policy,
    requests,
    sessions,
    dispatcher,
    library,
    scripts,
    progress,
    waves,
    publicUrl: config.PUBLIC_URL,
  });
  const inbox = createInteractionInbox({ db, bot, clock, logger });
  const reporter = createDeliveryReporter({
    db,
    outbox,
    requests,
    progress,
    waves,
    clock,
    logger,
    publicUrl: config.PUBLIC_URL,
    faults,
  });

  return {
    config,
    clock,
    secretKey,
    db,
    audit,
    checkpointer,
    users,
    stepup,
    policy,
    dispatcher,
    requests,
    sessions,
    fileStore,
    library,
    scripts,
    router,
    outbox,
    sender,
    bot,
    inbox,
    reporter,
    progress,
    waves,

    /**
     * Follows delivery events from every broker process (they NOTIFY `ar_delivery` after each commit) and
     * reports them to chat. Events sent while the LISTEN session was down are lost, so once it is back the
     * unreported results are caught up (main.ts also runs `catchUpDeliveries` on a timer). Returns the
     * unsubscribe function.
     */
    followDeliveries(): Promise<() => Promise<void>> {
      const onResubscribed = () => {
        logger.info({}, 'delivery events resubscribed; reporting results they may have missed');
        reporter.catchUp().catch((err) => logger.error({ err }, 'delivery catch-up failed'));
      };
      return database.listen(
        'ar_delivery',
        (payload) => {
          // One event, or an array of the events a broker committed together.
          let events: DeliveryEvent[];
          try {
            const parsed: unknown = JSON.parse(payload);
            events = z
              .array(deliveryEventSchema)
              .max(1000)
              .parse(Array.isArray(parsed) ? parsed : [parsed]);
          } catch {
            logger.warn({ payload: payload.slice(0, 200) }, 'ignored a malformed delivery event');
            return;
          }
          for (const event of events) void reporter.deliveryChanged(event);
        },
        onResubscribed,
      );
    },

    /**
     * Installs the built-in scripts into the library (main.ts and the demo call it once at start): the same
     * bytes add nothing, changed ones add a new version, and each version added is audited once.
     */
    installBuiltinScripts: () => installBuiltinScripts(scripts, logger),

    /** Reports final results nobody reported yet (a lost event, a failed post, a crash before it). */
    catchUpDeliveries: () => reporter.catchUp(),

    /** Expires requests nobody decided within the approval TTL and says so on their cards; run on a timer. */
    async sweep(): Promise<void> {
      // Paced groups also release on their own timer; this catches up after a restart.
      await waves.tick().catch((err) => logger.error({ err }, 'releasing paced deliveries failed'));
      await sender
        .prune(24 * 3600_000)
        .catch((err) => logger.error({ err }, 'pruning the chat outbox failed'));
      const expired = await requests.expireStale(async (tx, request) => {
        const ref = await requestThreadOf(tx, request.id);
        if (!ref) return;
        await outbox.enqueue(tx, [
          { kind: 'card_update', ref, requestId: request.id },
          {
            kind: 'thread_reply',
            ref,
            text: `${request.ref} expired: nobody decided within ${Math.round(config.APPROVAL_TTL / 60)} minutes. Ask again if it is still needed.`,
          },
        ]);
      });
      if (expired.length) await outbox.flush();
    },
  };
}

export type Platform = ReturnType<typeof createPlatform>;
