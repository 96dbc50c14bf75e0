// Action requests from creation to completion. Each state change happens in one transaction that locks the
// request row, re-checks its state, writes exactly one audit record for the transition and (on approval)
// enqueues the deliveries; brokers are woken and chat is told only after the commit.
import { and, eq, gt } from 'drizzle-orm';
import { z } from 'zod';
import type { Db, DbOrTx } from '../../db/client.ts';
import { PLATFORMS, stepUpWindows } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { actionCommandSchema, type Command, reasonSchema } from '../commands/command-types.ts';
import { BadRequest, Conflict, describeZodIssues, Forbidden } from '../errors.ts';
import { ensureGroup } from '../groups/group-dal.ts';
import { checkWaves } from '../groups/wave-plan.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import type { ChatContext, Clock, Dispatcher, RequestView } from '../ports.ts';
import { bindTo } from '../stepup/stepup-binding.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import { buildRequest, PLATFORM_MAX_TARGETS } from './request-builder.ts';
import * as dal from './request-dal.ts';
import { createLifecycle } from './request-lifecycle.ts';
import { createTransitions, type Step } from './request-transitions.ts';
import { loadView, loadViews } from './request-view.ts';

const ctxSchema = z.object({
  identity: z.object({
    platform: z.enum(PLATFORMS),
    tenantId: z.string().max(256),
    chatUserId: z.string().max(256),
  }),
  channelId: z.string().min(1).max(256),
  threadId: z.string().max(256).optional(),
});

const decideSchema = z.object({
  requestId: z.string().min(1).max(64),
  decision: z.enum(['approve', 'deny']),
  reason: reasonSchema.optional(),
  digest: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
  stepUpWindowId: z.uuid().optional(),
});

export interface DecideInput {
  /** Request id (uuid) or ref (R-XXXXXX). */
  requestId: string;
  approver: ResolvedUser;
  decision: 'approve' | 'deny';
  reason?: string;
  /** The digest the approver saw; a different stored digest means the request changed under them. */
  digest?: string;
  /**
   * The approver's live step-up window, opened to approve this request at this digest (required to
   * approve; see stepup-binding.ts).
   */
  stepUpWindowId?: string;
}

export interface DecisionResult {
  changed: boolean;
  request: RequestView;
  /** Endpoints that got deliveries; when the caller passed a tx it must call dispatcher.wake after commit. */
  dispatchedEndpointIds?: string[];
}

export function createRequestService(deps: {
  db: Db;
  audit: AuditService;
  clock: Clock;
  policy: PolicyService;
  dispatcher: Dispatcher;
  approvalTtlSeconds?: number;
  deliveryTtlSeconds?: number;
  maxScriptBytes?: number;
  /** Most endpoints one request may select (segments included). */
  maxTargets?: number;
}) {
  const { db, audit, clock, policy, dispatcher } = deps;
  const approvalTtlMs = (deps.approvalTtlSeconds ?? 3600) * 1000;
  const deliveryTtlSeconds = deps.deliveryTtlSeconds ?? 604_800;
  const maxScriptBytes = deps.maxScriptBytes ?? 1024 * 1024;
  const maxTargets = deps.maxTargets ?? PLATFORM_MAX_TARGETS;
  const transitions = createTransitions({ audit, clock, dispatcher, approvalTtlMs });
  const lifecycle = createLifecycle({ db, audit, clock, dispatcher, policy, transitions });
  const { transition, approvedScriptBody, dispatch, advance, requireRow, expiredConflict, expireIfLapsed } =
    transitions;

  async function wakeQuietly(endpointIds: string[], row: dal.RequestRow) {
    // A failed or lost wake-up loses nothing: the deliveries are committed, and each broker looks for queued
    // deliveries of its agents every few seconds (OUTBOX_SWEEP) and after its LISTEN session comes back.
    const scope = { requestId: row.id, deliveries: (row.targets as unknown[]).length };
    if (endpointIds.length) await dispatcher.wake(endpointIds, scope).catch(() => undefined);
  }

  return {
    ...lifecycle,

    /**
     * Validates, resolves targets, applies policy and stores a new request with its `request.created`
     * audit record (carrying the full script). Stores nothing when every target is excluded.
     */
    async createRequest(
      actor: ResolvedUser,
      cmd: Command,
      ctx: ChatContext,
      opts: {
        requesterStepUpValid: boolean;
        /**
         * Runs inside the request's transaction when the request is visible to approvers at once (no
         * requester step-up is due), with its view: the card's post goes into the chat outbox there.
         */
        inTx?: (tx: DbOrTx, request: RequestView) => Promise<void>;
      },
    ): Promise<{ request: RequestView; needsRequesterStepUp: boolean; autoApproved: boolean }> {
      const parsed = actionCommandSchema.safeParse(cmd);
      if (!parsed.success) {
        throw new BadRequest(
          'request.invalid',
          `That request is not valid: ${describeZodIssues(parsed.error.issues)}.`,
        );
      }
      const c = parsed.data;
      const chat = ctxSchema.safeParse(ctx);
      if (!chat.success) throw new BadRequest('request.bad_context', describeZodIssues(chat.error.issues));
      policy.requireRequester(actor);
      const built = await buildRequest({ db, policy, maxScriptBytes, maxTargets }, actor, c);
      if (!built.targets.length) {
        const reasons = built.exclusions.slice(0, 20).map((e) => `${e.hostname}: ${e.reason}`);
        const more = built.exclusions.length > 20 ? `\n…and ${built.exclusions.length - 20} more` : '';
        throw new BadRequest(
          'request.no_targets',
          `No endpoint can take ${c.kind}:\n${reasons.join('\n')}${more}`,
          {
            exclusions: built.exclusions.slice(0, 100),
          },
        );
      }
      // Only the many-target commands carry wave options; the others leave them undefined.
      const waves = checkWaves(c as Parameters<typeof checkWaves>[0], built.targets.length);
      const rule = policy.approvalRule(actor, built.spec, built.targets.length);
      if (rule.requesterStepUpRequired && !c.reason) {
        throw new BadRequest(
          'request.reason_required',
          `${c.kind} changes the endpoint, so it needs --reason "<why>".`,
        );
      }
      const needsRequesterStepUp = rule.requesterStepUpRequired && !opts.requesterStepUpValid;
      const now = clock.now();
      const result = await db.transaction(async (tx) => {
        const row = await dal.insertRequest(tx, {
          action: c.kind,
          params: built.params,
          scriptId: built.script?.id ?? null,
          scriptName: built.script?.name ?? null,
          scriptSha256: built.scriptSha256,
          targets: built.targets,
          exclusions: built.exclusions,
          digest: built.digest,
          reason: c.reason ?? '',
          caseId: c.caseId ?? null,
          note: c.note ?? null,
          requesterId: actor.id,
          requesterExternal: actor.external,
          state: 'requested',
          approvalsRequired: rule.approvalsRequired,
          inHouseApprovalRequired: rule.inHouseRequired,
          deliveryTtlSeconds: c.ttlSeconds ?? deliveryTtlSeconds,
          approvalExpiresAt: new Date(now.getTime() + approvalTtlMs),
          chatPlatform: chat.data.identity.platform,
          chatTenantId: chat.data.identity.tenantId,
          chatChannelId: chat.data.channelId,
          chatThreadId: chat.data.threadId ?? null,
        });
        // More than one target makes it an action group, with its progress message and staged waves.
        if (built.targets.length > 1) {
          await ensureGroup(tx, {
            requestId: row.id,
            canary: waves.canary ?? null,
            ratePerMinute: waves.ratePerMinute ?? null,
            haltAtPercent: waves.haltAtPercent ?? 10,
          });
        }
        await audit.append(
          {
            actorType: 'user',
            actorId: actor.id,
            action: 'request.created',
            outcome: 'ok',
            requestId: row.id,
            details: {
              ref: row.ref,
              action: c.kind,
              params: built.params,
              script: built.script
                ? { name: built.script.name, sha256: built.scriptSha256, body: built.script.body }
                : undefined,
              targets: built.targets,
              exclusions: built.exclusions,
              digest: built.digest,
              reason: row.reason,
              caseId: row.caseId,
              note: row.note,
              approvalsRequired: rule.approvalsRequired,
              inHouseRequired: rule.inHouseRequired,
              waves: built.targets.length > 1 ? waves : undefined,
              requesterStepUpRequired: rule.requesterStepUpRequired,
              chat: { platform: row.chatPlatform, channelId: row.chatChannelId },
            },
          },
          tx,
        );
        if (needsRequesterStepUp) return { row, endpointIds: [] as string[] };
        const advanced = await advance(tx, row, actor.id);
        if (opts.inTx) await opts.inTx(tx, await loadView(tx, advanced.row));
        return advanced;
      });
      await wakeQuietly(result.endpointIds, result.row);
      return {
        request: await loadView(db, result.row),
        needsRequesterStepUp,
        autoApproved: result.row.state === 'dispatched',
      };
    },

    /**
     * The requester's step-up for `digest` succeeded: requested → pending_approval (or straight out when no
     * approval is needed). With a caller `tx`, the caller wakes `dispatchedEndpointIds` after its commit.
     */
    async confirmRequester(
      requestId: string,
      actorId: string,
      digest: string,
      tx?: DbOrTx,
    ): Promise<DecisionResult> {
      const run = async (t: DbOrTx): Promise<Step> => {
        const row = await requireRow(t, requestId, true);
        if (row.requesterId !== actorId) {
          throw new Forbidden(
            'request.not_requester',
            `Only the person who asked for ${row.ref} can confirm it.`,
          );
        }
        if (row.state !== 'requested') {
          if (row.state === 'expired') throw expiredConflict(row);
          throw new Conflict(
            'request.already_confirmed',
            `${row.ref} is already ${row.state.replace('_', ' ')}.`,
          );
        }
        if (row.digest !== digest) {
          throw new Conflict(
            'request.digest_changed',
            `${row.ref} is not what you confirmed (its digest differs). Ask again.`,
          );
        }
        if (await expireIfLapsed(t, row)) return { lapsed: true, row };
        return { changed: true, ...(await advance(t, row, actorId)) };
      };
      const out = tx ? await run(tx) : await db.transaction(run);
      if (out.lapsed) throw expiredConflict(out.row);
      if (!tx) await wakeQuietly(out.endpointIds, out.row);
      return {
        changed: true,
        request: await loadView(tx ?? db, out.row),
        dispatchedEndpointIds: out.endpointIds,
      };
    },

    /**
     * Records one approver's decision under a row lock. A repeat by the same approver is `{ changed:
     * false }`. Enough approvals dispatch in the same transaction. Without a caller `tx` the brokers are
     * woken after commit (unless `wake: false`, for a caller that tells chat first); with one, the caller
     * wakes `dispatchedEndpointIds`. `inTx` runs inside the decision's transaction when the decision changed
     * something, with the request as it now is: what it writes (the chat messages telling the thread)
     * commits or rolls back with the decision.
     */
    async decide(
      input: DecideInput,
      tx?: DbOrTx,
      opts: { wake?: boolean; inTx?: (tx: DbOrTx, request: RequestView) => Promise<void> } = {},
    ): Promise<DecisionResult> {
      const v = decideSchema.safeParse({ ...input, approver: undefined });
      if (!v.success) throw new BadRequest('approval.invalid', describeZodIssues(v.error.issues));
      const { approver } = input;
      const run = async (t: DbOrTx): Promise<Step> => {
        const row = await requireRow(t, v.data.requestId, true);
        const prior = await dal.approvalsFor(t, [row.id]);
        if (prior.some((a) => a.approverId === approver.id)) return { changed: false, row, endpointIds: [] };
        if (row.state !== 'pending_approval') {
          if (row.state === 'expired') throw expiredConflict(row);
          if (row.state === 'requested') {
            throw new Conflict(
              'request.awaiting_requester',
              `${row.ref} is waiting for the requester to confirm it first.`,
            );
          }
          throw new Conflict(
            'request.already_decided',
            `${row.ref} is already ${row.state.replace('_', ' ')}; nothing changed.`,
          );
        }
        if (await expireIfLapsed(t, row)) return { lapsed: true, row };
        const view = await loadView(t, row);
        policy.canApprove(approver, view, v.data.decision);
        if (v.data.digest && v.data.digest !== row.digest) {
          throw new Conflict(
            'request.digest_changed',
            `${row.ref} changed since you looked at it (digest ${row.digest.slice(0, 12)}, you saw ${v.data.digest.slice(0, 12)}). Review it again.`,
          );
        }
        const now = clock.now();
        if (v.data.decision === 'approve') {
          const [win] = v.data.stepUpWindowId
            ? await t
                .select({ id: stepUpWindows.id })
                .from(stepUpWindows)
                .where(
                  and(
                    eq(stepUpWindows.id, v.data.stepUpWindowId),
                    eq(stepUpWindows.userId, approver.id),
                    gt(stepUpWindows.expiresAt, now),
                    // A window opened for anything else (the history, another request) approves nothing.
                    eq(stepUpWindows.purpose, 'approve'),
                    eq(stepUpWindows.subject, bindTo.request(row.id, row.digest)),
                  ),
                )
            : [];
          if (!win) {
            throw new Forbidden(
              'approval.stepup_required',
              `Approving ${row.ref} needs a step-up for this request; click Approve again for a link.`,
            );
          }
          await approvedScriptBody(t, row);
        }
        const approval = await dal.insertApproval(t, {
          requestId: row.id,
          approverId: approver.id,
          digest: row.digest,
          decision: v.data.decision,
          reason: v.data.reason ?? null,
          approverExternal: approver.external,
          stepUpWindowId: v.data.stepUpWindowId ?? null,
        });
        if (!approval) return { changed: false, row, endpointIds: [] };
        const who = { type: 'user' as const, id: approver.id };
        if (v.data.decision === 'deny') {
          const next = await transition(t, row, 'denied', who, {
            approvalId: approval.id,
            reason: approval.reason,
          });
          return { changed: true, row: next, endpointIds: [] };
        }
        await audit.append(
          {
            actorType: 'user',
            actorId: approver.id,
            action: 'approval.recorded',
            outcome: 'ok',
            requestId: row.id,
            details: {
              ref: row.ref,
              approvalId: approval.id,
              digest: row.digest,
              external: approver.external,
            },
          },
          t,
        );
        const approvals = [
          ...view.approvals,
          { approverId: approver.id, approverExternal: approver.external, decision: 'approve' as const },
        ];
        if (!policy.quorumReached({ ...view, approvals })) return { changed: true, row, endpointIds: [] };
        const out = await dispatch(t, row, who);
        return { changed: true, row: out.row, endpointIds: out.endpointIds };
      };
      let out: Step;
      try {
        const runAll = async (t: DbOrTx): Promise<Step> => {
          const step = await run(t);
          if (opts.inTx && !step.lapsed && step.changed) await opts.inTx(t, await loadView(t, step.row));
          return step;
        };
        out = tx ? await runAll(tx) : await db.transaction(runAll);
      } catch (err) {
        // Refused decisions are audited too; with a caller tx the caller owns what gets recorded, since a
        // second transaction here could wait on the caller's own locks.
        if (!tx && (err instanceof Forbidden || err instanceof Conflict)) {
          await audit.append({
            actorType: 'user',
            actorId: approver.id,
            action: 'approval.refused',
            outcome: 'refused',
            requestId: dal.isUuid(v.data.requestId) ? v.data.requestId : null,
            details: { request: v.data.requestId, decision: v.data.decision, code: err.code },
          });
        }
        throw err;
      }
      if (out.lapsed) throw expiredConflict(out.row);
      if (!tx && opts.wake !== false) await wakeQuietly(out.endpointIds, out.row);
      return {
        changed: out.changed,
        request: await loadView(tx ?? db, out.row),
        dispatchedEndpointIds: out.endpointIds.length ? out.endpointIds : undefined,
      };
    },

    /** Approving always needs the approver's live step-up window; the caller sends the link when it lapsed. */
    approvalNeedsStepUp(_request?: RequestView): boolean {
      return true;
    },

    async getView(idOrRef: string): Promise<RequestView> {
      if (typeof idOrRef !== 'string' || idOrRef.length > 64)
        throw new BadRequest('request.invalid', 'Not a request reference.');
      return loadView(db, await requireRow(db, idOrRef, false));
    },

    async listForUser(userId: string, limit = 20): Promise<RequestView[]> {
      return loadViews(db, await dal.requestsForUser(db, userId, Math.min(Math.max(limit, 1), 100)));
    },
  };
}

export type RequestService = ReturnType<typeof createRequestService>;
