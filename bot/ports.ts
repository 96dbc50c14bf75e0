// The ports the core talks through. Adapters (Slack, Teams, console), the broker and the composition root
// implement them; bot/ never imports a chat SDK or a network library.
import type { DbOrTx } from '../db/client.ts';
import type { Platform, RequestState } from '../db/schema.ts';

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** Milliseconds and one-shot timers, so coalescing and pacing can be driven by a hand-moved clock in tests. */
export interface Timers {
  now(): number;
  /** Runs `fn` after `ms`; returns a cancel function. */
  setTimer(fn: () => void, ms: number): () => void;
}

export const systemTimers: Timers = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return () => clearTimeout(t);
  },
};

/**
 * Named points between a click and its result where an operator's fault drill (FAULT_CRASH_AT) kills the
 * process, to prove that what was committed survives and what was not is not half-done.
 */
export const FAULT_POINTS = [
  'request-after-commit',
  'decision-before-commit',
  'decision-after-commit',
  'after-dispatch',
  'result-stored',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

/** Told when the core passes a fault point; does nothing unless a drill asked for that point. */
export interface FaultPoints {
  reached(point: FaultPoint): void;
}

/** The subset of pino the core uses, so tests can pass a silent logger. */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** Who said something in chat, as the platform reports it. */
export interface ChatIdentity {
  platform: Platform;
  /** Slack team id (for Slack Connect: the user's own team), Teams tenant id, or 'local' for the console. */
  tenantId: string;
  chatUserId: string;
  displayName?: string;
}

/** Where a message was said, and where the bot answers. */
export interface ChatContext {
  identity: ChatIdentity;
  channelId: string;
  /** Thread the command was typed in, if any. */
  threadId?: string;
  /** Platform event id, for idempotency across retries and duplicate app copies. */
  eventId?: string;
}

/** A posted message: enough to update it and reply in its thread later, from any process. */
export interface ChatMessageRef {
  platform: Platform;
  channelId: string;
  messageId: string;
  threadId: string;
}

export interface TargetView {
  endpointId: string;
  /** The stored, lower-case name: what the digest covers. */
  hostname: string;
  /** The name as the agent reported it (`WS-02`), for display; absent when it is the same. */
  reported?: string;
}

/** Why an endpoint was left out, for grouping on the card and the approve page (see render/summary.ts). */
export const EXCLUSION_KINDS = ['os', 'agent_version', 'segment', 'unknown', 'unmatched', 'revoked'] as const;
export type ExclusionKind = (typeof EXCLUSION_KINDS)[number];

export interface ExclusionView {
  hostname: string;
  endpointId?: string;
  reason: string;
  /** Absent on requests stored before exclusions were grouped; they show under "other reasons". */
  kind?: ExclusionKind;
  /** The endpoint's OS, for an `os` exclusion: macOS is called out by name. */
  os?: string;
}

/** What a request card shows. Rendering (Block Kit, Adaptive Card, text) is the adapter's job. */
export interface RequestView {
  id: string;
  ref: string;
  action: string;
  params: Record<string, unknown>;
  scriptName?: string | null;
  scriptSha256?: string | null;
  targets: TargetView[];
  exclusions: ExclusionView[];
  reason: string;
  caseId?: string | null;
  note?: string | null;
  requester: { id: string; displayName: string; external: boolean };
  state: RequestState;
  digest: string;
  approvalsRequired: number;
  inHouseApprovalRequired: boolean;
  approvals: {
    approverName: string;
    decision: 'approve' | 'deny';
    reason?: string | null;
    at: Date;
    /** Who decided and whether they are external: the in-house rule is checked from these. */
    approverId?: string;
    approverExternal?: boolean;
    /** The digest the decision was made against. */
    digest?: string;
  }[];
  approvalExpiresAt?: Date | null;
  /** How long each delivery waits for an offline endpoint. */
  deliveryTtlSeconds?: number;
  /**
   * Before dispatch: how many targets are connected now (they run it at once) and how many are offline
   * (their deliveries wait in the outbox until they connect). Absent once dispatched: `progress` tells then.
   */
  presence?: { online: number; offline: number };
  /**
   * An action group's staged waves, as approved: a canary of that many first (the rest only once all of them
   * succeeded), then `ratePerMinute` at a time, halting when `haltAtPercent` of the group failed.
   */
  waves?: { canary: number | null; ratePerMinute: number | null; haltAtPercent: number };
  /** Per-endpoint delivery counts once dispatched, e.g. { queued: 2, succeeded: 5 }. */
  progress?: Record<string, number>;
  createdAt: Date;
}

/** The messaging-bot interface, implemented once per chat platform. */
export interface ChatPort {
  /** Post a new request card with Approve and Deny buttons in the context's channel (or thread). */
  postRequestCard(ctx: ChatContext, view: RequestView): Promise<ChatMessageRef>;
  /** Update the card in place after a state change. Idempotent. */
  updateRequestCard(ref: ChatMessageRef, view: RequestView): Promise<void>;
  /** Reply in the card's (or command's) thread. */
  replyInThread(ref: ChatMessageRef, text: string): Promise<void>;
  /** A private message only `to` sees (Slack ephemeral, Teams 1:1, console private line). */
  notifyPrivately(ctx: ChatContext, text: string): Promise<void>;
  /** A plain, visible reply to a command (help, status, queue listings). */
  reply(ctx: ChatContext, text: string): Promise<void>;
  /**
   * A plain message in the card's thread that is edited later (an action group's live progress); returns
   * where it lives.
   */
  postThreadMessage(ref: ChatMessageRef, text: string): Promise<ChatMessageRef>;
  /** Edits a message posted with postThreadMessage, within the platform's edit limits (coalesced). */
  updateThreadMessage(ref: ChatMessageRef, text: string): Promise<void>;
  /** A visible message that opens a thread of its own (an interactive session); returns where it lives. */
  startThread(ctx: ChatContext, text: string): Promise<ChatMessageRef>;
}

/**
 * What the core says straight to the person typing: answers, listings, private notices and step-up links.
 * Nobody else waits for them and they make no sense later, so they skip the chat outbox; everything a
 * channel or thread hears goes through the outbox instead (bot/outbox/).
 */
export type DirectChat = Pick<ChatPort, 'reply' | 'notifyPrivately'>;

/** One delivery to write into the outbox: one per target endpoint. */
export interface DeliverySpec {
  requestId: string;
  endpointId: string;
  action: string;
  payload: Record<string, unknown>;
  expiresAt: Date;
  /** Held back by its action group's staged waves: the broker sends it only once the group releases it. */
  held?: boolean;
}

/**
 * A request's deliveries are written, audited and announced to the brokers in batches of this many: batch
 * `i` of a request is its deliveries `i * 1000` to `i * 1000 + 999` in the order they were written (`seq`).
 */
export const DELIVERY_BATCH_SIZE = 1000;

/** Which request a wake-up is for, so a large one can name its batches instead of every endpoint. */
export interface WakeScope {
  requestId: string;
  /** How many deliveries the request has (one per target). */
  deliveries: number;
}

/**
 * Hands approved work to the broker. `enqueue` writes outbox rows inside the caller's transaction (so the
 * request's state change and its deliveries commit together); `wake` runs after commit and tells whichever
 * broker holds those endpoints to look at its outbox: by endpoint id for a few, once per batch of the
 * request (`scope`) for many.
 */
export interface Dispatcher {
  enqueue(tx: DbOrTx, deliveries: DeliverySpec[]): Promise<{ id: string; endpointId: string }[]>;
  wake(endpointIds: string[], scope?: WakeScope): Promise<void>;
  /** Cancel queued deliveries (of a request, or one delivery). Returns how many were cancelled. */
  cancel(tx: DbOrTx, target: { requestId?: string; deliveryId?: string }): Promise<number>;
}

/** Where fetched evidence and library files live. The default keeps them under DATA_DIR/files. */
export interface FileStore {
  /** Streams `source` into the store under a new key, hashing as it goes. */
  put(
    source: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
  ): Promise<{ key: string; size: number; sha256: string }>;
  /** Opens a stored file for reading; throws NotFound when the key is unknown. */
  open(key: string): Promise<NodeJS.ReadableStream>;
  remove(key: string): Promise<void>;
}

/** A delivery changed state (sent, acknowledged, succeeded, failed, expired, cancelled). */
export interface DeliveryEvent {
  deliveryId: string;
  requestId: string;
  endpointId: string;
  state: string;
}

/**
 * The broker tells the core about delivery progress through this port after each committed change; the
 * core updates the request's state and the chat thread. Implementations must be idempotent.
 */
export interface DeliveryObserver {
  deliveryChanged(event: DeliveryEvent): Promise<void>;
}
