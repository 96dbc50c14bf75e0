// The configured policy the request service and the bot router consult. The rules themselves are pure
// (policy-rules.ts); this binds them to the deployment's settings.
import type { ResolvedUser } from '../users/user-types.ts';
import {
  type ActionSpec,
  type ApprovalRequirement,
  type ApprovalSubject,
  approvalRule,
  type Candidate,
  canApprove,
  canCancel,
  canDownloadEvidence,
  evaluateTargets,
  type PolicyConfig,
  quorumReached,
  requireRequester,
  ruleFor,
  type SegmentInfo,
} from './policy-rules.ts';

export function createPolicy(opts: Partial<PolicyConfig> = {}) {
  const config: PolicyConfig = {
    blastRadiusThreshold: opts.blastRadiusThreshold ?? 10,
    approvalsDefault: opts.approvalsDefault ?? 1,
    readOnlyNeedsApproval: opts.readOnlyNeedsApproval ?? false,
    readOnlyApprovalAbove: opts.readOnlyApprovalAbove ?? 50,
    externalNeedsInHouse: opts.externalNeedsInHouse ?? true,
    fetchNeedsApproval: opts.fetchNeedsApproval ?? true,
  };
  if (!Number.isInteger(config.approvalsDefault) || config.approvalsDefault < 1) {
    throw new Error('policy: approvalsDefault must be an integer of at least 1');
  }
  if (!Number.isInteger(config.blastRadiusThreshold) || config.blastRadiusThreshold < 1) {
    throw new Error('policy: blastRadiusThreshold must be an integer of at least 1');
  }
  if (!Number.isInteger(config.readOnlyApprovalAbove) || config.readOnlyApprovalAbove < 1) {
    throw new Error('policy: readOnlyApprovalAbove must be an integer of at least 1');
  }

  return {
    config,
    ruleFor,
    /** Throws Forbidden ('policy.no_role', 'policy.mfa_required', 'policy.disabled') for a non-requester. */
    requireRequester,
    /**
     * Splits the requested targets into eligible ones and exclusions with reasons. The actor is part of
     * the signature so per-organisation scoping can be added without changing callers.
     */
    evaluateTargets(
      _actor: ResolvedUser,
      spec: ActionSpec,
      candidates: readonly Candidate[],
      segments: readonly SegmentInfo[],
    ) {
      return evaluateTargets(spec, candidates, segments);
    },
    approvalRule(actor: ResolvedUser, spec: ActionSpec, targetCount: number): ApprovalRequirement {
      return approvalRule(config, actor, spec, targetCount);
    },
    /** Throws Forbidden ('approval.*') unless `approver` may decide; returns { ok: true } otherwise. */
    canApprove(approver: ResolvedUser, request: ApprovalSubject, decision: 'approve' | 'deny' = 'approve') {
      return canApprove(approver, request, decision);
    },
    quorumReached,
    /** Throws Forbidden unless `actor` may cancel the request: its requester, its approvers, in-house admins. */
    canCancel,
    /** Throws Forbidden 'file.not_yours' unless `user` may download evidence fetched by `request`. */
    canDownloadEvidence,
  };
}

export type PolicyService = ReturnType<typeof createPolicy>;
export const createPolicyService = createPolicy;
