// The one drizzle schema, shared by PGlite (embedded) and PostgreSQL. Migrations are generated from it
// with `npm run db:generate` and committed under db/migrations; both drivers run the same files.
import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';
import type { Os } from '../protocol/actions.ts';

const tz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });
const createdAt = () => tz('created_at').notNull().defaultNow();

export const ROLES = ['active_response', 'approver', 'admin'] as const;
export type Role = (typeof ROLES)[number];
export const PLATFORMS = ['slack', 'teams', 'console'] as const;
export type Platform = (typeof PLATFORMS)[number];
export { OSES, type Os } from '../protocol/actions.ts';

/** An organisation: the in-house one, or an external one such as an MDR provider. */
export const organizations = pgTable('organizations', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull().unique(),
  external: boolean('external').notNull().default(false),
  /** Roles members of this organisation may hold; a grant outside this list is refused. */
  allowedRoles: text('allowed_roles').array().notNull().default(sql`'{}'::text[]`),
  createdAt: createdAt(),
});

/** Which chat workspace or tenant belongs to which organisation. An unmapped tenant is refused. */
export const orgTenants = pgTable(
  'org_tenants',
  {
    platform: text('platform').$type<Platform>().notNull(),
    tenantId: text('tenant_id').notNull(),
    orgId: uuid('org_id')
      .notNull()
      .references(() => organizations.id),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.platform, t.tenantId] })],
);

export const users = pgTable('users', {
  id: uuid('id').primaryKey().defaultRandom(),
  username: text('username').notNull().unique(),
  displayName: text('display_name').notNull(),
  email: text('email'),
  orgId: uuid('org_id')
    .notNull()
    .references(() => organizations.id),
  /** argon2id PHC string. */
  passwordHash: text('password_hash').notNull(),
  /** AES-256-GCM under the platform secret key: base64(iv | tag | ciphertext). Null until enrolment starts. */
  totpSecretEnc: text('totp_secret_enc'),
  totpEnrolledAt: tz('totp_enrolled_at'),
  /** The last accepted TOTP time step; codes at or before it are refused (each code once). */
  totpLastStep: bigint('totp_last_step', { mode: 'number' }),
  failedAttempts: integer('failed_attempts').notNull().default(0),
  lockedUntil: tz('locked_until'),
  disabled: boolean('disabled').notNull().default(false),
  createdAt: createdAt(),
});

export const chatIdentities = pgTable(
  'chat_identities',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    platform: text('platform').$type<Platform>().notNull(),
    tenantId: text('tenant_id').notNull(),
    chatUserId: text('chat_user_id').notNull(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('chat_identities_key').on(t.platform, t.tenantId, t.chatUserId)],
);

export const roleGrants = pgTable(
  'role_grants',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    role: text('role').$type<Role>().notNull(),
    grantedBy: uuid('granted_by').references(() => users.id),
    grantedAt: tz('granted_at').notNull().defaultNow(),
    revokedAt: tz('revoked_at'),
    revokedBy: uuid('revoked_by').references(() => users.id),
  },
  (t) => [uniqueIndex('role_grants_active').on(t.userId, t.role).where(sql`revoked_at is null`)],
);

export const segments = pgTable('segments', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull().unique(),
  activeResponseEnabled: boolean('active_response_enabled').notNull().default(false),
  createdAt: createdAt(),
  updatedAt: tz('updated_at').notNull().defaultNow(),
});

export const endpoints = pgTable(
  'endpoints',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** Lower-case: host names are case-insensitive everywhere (chat, enrolment, lookups). */
    hostname: text('hostname').notNull().unique(),
    /** The name as the agent reported it (`WS-02`), for display only. */
    reportedHostname: text('reported_hostname'),
    os: text('os').$type<Os>().notNull(),
    osVersion: text('os_version').notNull().default(''),
    agentVersion: text('agent_version').notNull().default('0.0.0'),
    capabilities: text('capabilities').array().notNull().default(sql`'{}'::text[]`),
    segmentId: uuid('segment_id')
      .notNull()
      .references(() => segments.id),
    /** SHA-256 of the DER client certificate, lower-case hex: the agent's identity. */
    certFingerprint: text('cert_fingerprint').unique(),
    certSerial: text('cert_serial'),
    certNotAfter: tz('cert_not_after'),
    revokedAt: tz('revoked_at'),
    /** Broker process holding the agent's connection, null when offline. */
    brokerId: text('broker_id'),
    connectedAt: tz('connected_at'),
    lastSeenAt: tz('last_seen_at'),
    isolated: boolean('isolated').notNull().default(false),
    isolationChangedAt: tz('isolation_changed_at'),
    createdAt: createdAt(),
  },
  (t) => [
    index('endpoints_segment').on(t.segmentId),
    check('endpoints_hostname_lower', sql`${t.hostname} = lower(${t.hostname})`),
  ],
);

export const enrolmentTokens = pgTable('enrolment_tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  tokenHash: text('token_hash').notNull().unique(),
  segmentId: uuid('segment_id')
    .notNull()
    .references(() => segments.id),
  createdBy: uuid('created_by').references(() => users.id),
  expiresAt: tz('expires_at').notNull(),
  usedAt: tz('used_at'),
  /** The endpoint this token created or re-enrolled, once used. */
  endpointId: uuid('endpoint_id').references(() => endpoints.id),
  /**
   * Null: the token enrols a new endpoint only. Set: it re-enrols this endpoint only (`endpoint
   * reenroll-token`), under the endpoint's own name, segment and revocation state.
   */
  reenrolEndpointId: uuid('reenrol_endpoint_id').references(() => endpoints.id),
  createdAt: createdAt(),
});

/**
 * The script library: one row per version of a script; what `run <script>` may name is the newest enabled
 * version. A version never changes once stored (migration 0006 refuses UPDATE of anything but
 * `disabled_at`): adding a script under an existing name adds the next version, and a request pins the
 * version row (`action_requests.script_id`) and its SHA-256.
 */
export const scripts = pgTable(
  'scripts',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    description: text('description').notNull().default(''),
    body: text('body').notNull(),
    sha256: text('sha256').notNull(),
    /** 1, 2, ... per name. */
    version: integer('version').notNull().default(1),
    /** Read-only investigation scripts need no approval by default. */
    readOnly: boolean('read_only').notNull().default(false),
    /**
     * The parameters as a JSON Schema (`{"type":"object","properties":{...}}`), checked with Ajv before a
     * request is stored. Rows from before versioning hold the older `{ name: { type, required, pattern,
     * max } }` form, read as the equivalent JSON Schema (bot/scripts/script-params.ts).
     */
    paramsSchema: jsonb('params_schema').notNull().default({}),
    minAgentVersion: text('min_agent_version').notNull().default('0.0.0'),
    oses: text('oses').array().notNull().default(sql`'{windows,linux}'::text[]`),
    /** How long the agent lets the script run before killing it. */
    timeoutSeconds: integer('timeout_seconds').notNull().default(600),
    /** Most bytes of stdout (and of stderr) the agent keeps and reports. */
    outputCapBytes: integer('output_cap_bytes').notNull().default(1_048_576),
    /** Set on every version of a disabled script: `run` no longer finds it. */
    disabledAt: tz('disabled_at'),
    /** Shipped with the platform and installed at start (bot/scripts/builtin-scripts.ts), not added by an admin. */
    builtin: boolean('builtin').notNull().default(false),
    createdBy: uuid('created_by').references(() => users.id),
    createdAt: createdAt(),
    updatedAt: tz('updated_at').notNull().defaultNow(),
  },
  (t) => [uniqueIndex('scripts_name_version').on(t.name, t.version)],
);

export const REQUEST_STATES = [
  'requested',
  'pending_approval',
  'approved',
  'dispatched',
  'completed',
  'denied',
  'expired',
  'cancelled',
] as const;
export type RequestState = (typeof REQUEST_STATES)[number];

export const actionRequests = pgTable(
  'action_requests',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** Short id people type in chat, e.g. R-7K3QXM. */
    ref: text('ref').notNull().unique(),
    action: text('action').notNull(),
    params: jsonb('params').notNull().default({}),
    scriptId: uuid('script_id').references(() => scripts.id),
    scriptName: text('script_name'),
    scriptSha256: text('script_sha256'),
    /** [{ endpointId, hostname }] in canonical (hostname) order. */
    targets: jsonb('targets').notNull(),
    /** [{ hostname, endpointId?, reason }] */
    exclusions: jsonb('exclusions').notNull().default([]),
    digest: text('digest').notNull(),
    reason: text('reason').notNull(),
    caseId: text('case_id'),
    note: text('note'),
    requesterId: uuid('requester_id')
      .notNull()
      .references(() => users.id),
    requesterExternal: boolean('requester_external').notNull().default(false),
    state: text('state').$type<RequestState>().notNull(),
    approvalsRequired: integer('approvals_required').notNull().default(1),
    inHouseApprovalRequired: boolean('in_house_approval_required').notNull().default(false),
    /** Time-to-live of each delivery once dispatched, in seconds. */
    deliveryTtlSeconds: integer('delivery_ttl_seconds').notNull(),
    approvalExpiresAt: tz('approval_expires_at'),
    chatPlatform: text('chat_platform').$type<Platform>(),
    chatTenantId: text('chat_tenant_id'),
    chatChannelId: text('chat_channel_id'),
    chatMessageId: text('chat_message_id'),
    chatThreadId: text('chat_thread_id'),
    createdAt: createdAt(),
    updatedAt: tz('updated_at').notNull().defaultNow(),
  },
  (t) => [index('action_requests_state').on(t.state), index('action_requests_requester').on(t.requesterId)],
);

export const approvals = pgTable(
  'approvals',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    requestId: uuid('request_id')
      .notNull()
      .references(() => actionRequests.id),
    approverId: uuid('approver_id')
      .notNull()
      .references(() => users.id),
    /** The request digest this decision was made against. */
    digest: text('digest').notNull(),
    decision: text('decision').$type<'approve' | 'deny'>().notNull(),
    reason: text('reason'),
    approverExternal: boolean('approver_external').notNull().default(false),
    stepUpWindowId: uuid('step_up_window_id'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('approvals_one_per_approver').on(t.requestId, t.approverId)],
);

export const STEPUP_PURPOSES = [
  'approve',
  'confirm',
  'grant',
  'session',
  'download',
  'history',
  'upload',
  'cancel',
  'resume',
  'enrol_totp',
] as const;
export type StepUpPurpose = (typeof STEPUP_PURPOSES)[number];

/** Single-use links: step-up for a digest or a grant, or TOTP enrolment. Only the token's hash is kept. */
export const stepUpChallenges = pgTable(
  'step_up_challenges',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    tokenHash: text('token_hash').notNull().unique(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    purpose: text('purpose').$type<StepUpPurpose>().notNull(),
    /** What the challenge binds to: a request digest, `grant:<user>:<role>`, a file id, ... */
    subject: text('subject').notNull(),
    requestId: uuid('request_id').references(() => actionRequests.id),
    expiresAt: tz('expires_at').notNull(),
    usedAt: tz('used_at'),
    createdAt: createdAt(),
  },
  (t) => [index('step_up_challenges_user').on(t.userId)],
);

export const stepUpWindows = pgTable(
  'step_up_windows',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    challengeId: uuid('challenge_id').references(() => stepUpChallenges.id),
    /** What the step-up was for: a window unlocks that purpose only (an approve window never opens history). */
    purpose: text('purpose').$type<StepUpPurpose>().notNull(),
    /**
     * What it is bound to within that purpose (stepup-binding.ts): a request and its digest, a role change, a
     * file id, ... A decision checks both, so one window never stands in for another decision.
     */
    subject: text('subject').notNull(),
    openedAt: tz('opened_at').notNull(),
    expiresAt: tz('expires_at').notNull(),
    sourceIp: text('source_ip'),
    userAgent: text('user_agent'),
  },
  (t) => [index('step_up_windows_user').on(t.userId, t.expiresAt)],
);

export const DELIVERY_STATES = [
  'queued',
  'sent',
  'acknowledged',
  'succeeded',
  'failed',
  'expired',
  'cancelled',
] as const;
export type DeliveryState = (typeof DELIVERY_STATES)[number];

/** The durable per-endpoint outbox. `seq` orders deliveries to one endpoint. */
export const deliveries = pgTable(
  'deliveries',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    seq: bigserial('seq', { mode: 'number' }).notNull(),
    requestId: uuid('request_id')
      .notNull()
      .references(() => actionRequests.id),
    endpointId: uuid('endpoint_id')
      .notNull()
      .references(() => endpoints.id),
    action: text('action').notNull(),
    payload: jsonb('payload').notNull(),
    state: text('state').$type<DeliveryState>().notNull().default('queued'),
    attempts: integer('attempts').notNull().default(0),
    expiresAt: tz('expires_at').notNull(),
    brokerId: text('broker_id'),
    sentAt: tz('sent_at'),
    ackedAt: tz('acked_at'),
    finishedAt: tz('finished_at'),
    result: jsonb('result'),
    error: text('error'),
    /** Set once chat accepted the final state's report; a catch-up reports what is still unset. */
    reportedAt: tz('reported_at'),
    /**
     * Held back by its action group's staged waves (canary first, then paced, or halted): the broker sends
     * no held delivery; the group releases them.
     */
    held: boolean('held').notNull().default(false),
    /** A platform process is posting the result (a lease: bot/deliveries/delivery-reporter.ts). */
    reportClaimedAt: tz('report_claimed_at'),
    createdAt: createdAt(),
  },
  (t) => [
    index('deliveries_endpoint_pending').on(t.endpointId, t.seq).where(sql`state in ('queued','sent')`),
    index('deliveries_request').on(t.requestId),
    // The reporter's catch-up reads this every few seconds: only results still to be told in a thread.
    index('deliveries_unreported')
      .on(t.finishedAt)
      .where(sql`reported_at is null and state in ('succeeded','failed','expired')`),
  ],
);

export const GROUP_STATES = ['canary', 'running', 'halted', 'cancelled', 'finished'] as const;
export type GroupState = (typeof GROUP_STATES)[number];

/**
 * An action group: a request with more than one target. Its staged waves (a canary, a pace, a failure
 * threshold that halts it) and the one thread message that shows its live progress.
 */
export const actionGroups = pgTable(
  'action_groups',
  {
    requestId: uuid('request_id')
      .primaryKey()
      .references(() => actionRequests.id),
    /** Endpoints that run first; the rest wait until every one of them succeeded. */
    canary: integer('canary'),
    /** Deliveries released per minute after the canary. */
    ratePerMinute: integer('rate_per_minute'),
    /** Failed endpoints, in percent of the group, at which it halts. */
    haltAtPercent: integer('halt_at_percent').notNull().default(10),
    state: text('state').$type<GroupState>().notNull().default('running'),
    haltReason: text('halt_reason'),
    /** When the paced wave started, and how many of its deliveries have been released since. */
    pacedFrom: tz('paced_from'),
    pacedReleased: integer('paced_released').notNull().default(0),
    /** Failures already counted when someone resumed it: the threshold applies to failures after that. */
    failuresAtResume: integer('failures_at_resume').notNull().default(0),
    progressPlatform: text('progress_platform').$type<Platform>(),
    progressChannelId: text('progress_channel_id'),
    progressMessageId: text('progress_message_id'),
    progressThreadId: text('progress_thread_id'),
    /** The last edit of the progress message, from any process: edits are at most one a second per group. */
    progressEditedAt: tz('progress_edited_at'),
    createdAt: createdAt(),
    updatedAt: tz('updated_at').notNull().defaultNow(),
  },
  (t) => [index('action_groups_state').on(t.state)],
);

export const sessions = pgTable('sessions', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id')
    .notNull()
    .references(() => users.id),
  endpointId: uuid('endpoint_id')
    .notNull()
    .references(() => endpoints.id),
  reason: text('reason'),
  caseId: text('case_id'),
  stepUpWindowId: uuid('step_up_window_id').references(() => stepUpWindows.id),
  chatPlatform: text('chat_platform').$type<Platform>(),
  chatChannelId: text('chat_channel_id'),
  chatThreadId: text('chat_thread_id'),
  startedAt: tz('started_at').notNull(),
  endedAt: tz('ended_at'),
});

export const files = pgTable(
  'files',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** 'fetched' evidence from an endpoint, or 'library' files that `put` can push. */
    kind: text('kind').$type<'fetched' | 'library'>().notNull(),
    name: text('name').notNull(),
    sourcePath: text('source_path'),
    size: bigint('size', { mode: 'number' }).notNull(),
    sha256: text('sha256').notNull(),
    storageKey: text('storage_key').notNull(),
    requestId: uuid('request_id').references(() => actionRequests.id),
    deliveryId: uuid('delivery_id').references(() => deliveries.id),
    endpointId: uuid('endpoint_id').references(() => endpoints.id),
    createdBy: uuid('created_by').references(() => users.id),
    createdAt: createdAt(),
  },
  // `put <name>` must name one library file: names are unique among library files.
  (t) => [uniqueIndex('files_library_name').on(t.name).where(sql`kind = 'library'`)],
);

/** Idempotency keys for chat retries (Slack event ids, Teams activity ids). */
export const processedEvents = pgTable('processed_events', {
  key: text('key').primaryKey(),
  createdAt: createdAt(),
});

/**
 * Chat interactions (commands, clicks) recorded before the platform is acked, and processed from here: a
 * process that dies after the ack leaves the row unprocessed, and the next start processes it.
 */
export const chatInbox = pgTable(
  'chat_inbox',
  {
    /** `<platform>:<event id>`: a platform retry of the same event finds its row. */
    key: text('key').primaryKey(),
    kind: text('kind').$type<'command' | 'decision'>().notNull(),
    payload: jsonb('payload').notNull(),
    receivedAt: tz('received_at').notNull().defaultNow(),
    processedAt: tz('processed_at'),
  },
  (t) => [index('chat_inbox_open').on(t.receivedAt).where(sql`processed_at is null`)],
);

export const CHAT_OUTBOX_KINDS = [
  'card_post',
  'card_update',
  'thread_reply',
  'progress_post',
  'progress_update',
  'session_thread',
] as const;
export type ChatOutboxKind = (typeof CHAT_OUTBOX_KINDS)[number];
export const CHAT_OUTBOX_STATES = ['pending', 'sending', 'sent', 'failed'] as const;
export type ChatOutboxState = (typeof CHAT_OUTBOX_STATES)[number];

/**
 * Chat messages and card edits the core wants said, written in the transaction of the change they report
 * and delivered by a sender (bot/outbox/chat-sender.ts). Rows of one `lane` (a thread, or one card) go out in
 * `id` order. A card or progress edit carries only the request id: the sender renders it as it is when it
 * sends, so one pending row per message (`coalesce_key`) stands for every change since the last edit.
 */
export const chatOutbox = pgTable(
  'chat_outbox',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    platform: text('platform').$type<Platform>().notNull(),
    kind: text('kind').$type<ChatOutboxKind>().notNull(),
    /**
     * Where it goes: the card's (or thread's) ChatMessageRef; `{ platform, requestId }` while the request's
     * card waits to be posted; the channel for a session thread; `{}` for a card post or a progress edit
     * (they find their place from the request or group row).
     */
    target: jsonb('target').notNull(),
    /**
     * `thread:<platform>:<channel>:<thread>`, `card:<platform>:<channel>:<message>`, `request:<id>` (a card
     * post and what waits for it), `progress:<request id>` or `session:<id>`.
     */
    lane: text('lane').notNull(),
    /** Set for card and progress edits: a newer edit of the same message joins the pending row. */
    coalesceKey: text('coalesce_key'),
    /** thread_reply: { text }; session_thread: { sessionId, text }; the others: { requestId }. */
    payload: jsonb('payload').notNull(),
    state: text('state').$type<ChatOutboxState>().notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    /** Null: as soon as possible. Set after a failure (backoff) or a rate limit (Retry-After). */
    nextAttemptAt: tz('next_attempt_at'),
    /** While `sending`: the claim runs out then, and another sender may take the row again. */
    leaseUntil: tz('lease_until'),
    lastError: text('last_error'),
    createdAt: createdAt(),
    sentAt: tz('sent_at'),
  },
  (t) => [
    index('chat_outbox_open').on(t.lane, t.id).where(sql`state in ('pending','sending')`),
    index('chat_outbox_lane_sent').on(t.lane, t.sentAt).where(sql`state = 'sent'`),
    uniqueIndex('chat_outbox_coalesce').on(t.coalesceKey).where(sql`state = 'pending'`),
  ],
);

/**
 * The tamper-evident audit log. `seq` is assigned gap-free under a lock, and `hash` is SHA-256 over the
 * canonical JSON of the row including `prev_hash`. A trigger (migration 0001) refuses UPDATE, DELETE and
 * TRUNCATE.
 */
export const auditLog = pgTable(
  'audit_log',
  {
    seq: bigint('seq', { mode: 'number' }).primaryKey(),
    at: tz('at').notNull(),
    actorType: text('actor_type').$type<'user' | 'chat' | 'agent' | 'system' | 'anonymous'>().notNull(),
    actorId: text('actor_id'),
    action: text('action').notNull(),
    outcome: text('outcome').$type<'ok' | 'refused' | 'failed' | 'error'>().notNull(),
    requestId: uuid('request_id'),
    endpointId: uuid('endpoint_id'),
    details: jsonb('details').notNull().default({}),
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
  },
  (t) => [
    index('audit_log_request').on(t.requestId),
    index('audit_log_endpoint').on(t.endpointId),
    index('audit_log_actor').on(t.actorId),
  ],
);
