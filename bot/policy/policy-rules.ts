// Pure policy: the rule of each action (from the catalogue), target eligibility (segment, OS, agent version, revocation), the
// approval rule and who may approve. No database here, so every rule is testable with plain objects.
import { ACTIONS, type ActionName, type Os } from '../../protocol/actions.ts';
import { compareVersions } from '../../protocol/semver.ts';
import { Forbidden } from '../errors.ts';
import type { ExclusionKind, ExclusionView, TargetView } from '../ports.ts';
import type { ResolvedUser } from '../users/user-types.ts';

export interface ActionRule {
  /** Changes the endpoint's state: needs approval and a requester step-up (high risk). */
  changesEndpoint: boolean;
  /** Leaves the endpoint alone but hands evidence out of it (fetch). */
  handsOutEvidence: boolean;
  oses: readonly Os[];
  minAgentVersion: string;
}

export interface ScriptInfo {
  name: string;
  readOnly: boolean;
  oses: readonly string[];
  minAgentVersion: string;
}

export interface ActionSpec {
  action: ActionName;
  script?: ScriptInfo;
}

/**
 * The effective rule for an action, from the catalogue (protocol/actions.ts): a script narrows the OS list,
 * raises the minimum agent version and, when read-only, no longer counts as changing the endpoint.
 */
export function ruleFor(spec: ActionSpec): ActionRule {
  const base = ACTIONS[spec.action];
  if (spec.action !== 'run' || !spec.script) return base;
  const s = spec.script;
  return {
    changesEndpoint: !s.readOnly,
    handsOutEvidence: false,
    oses: base.oses.filter((o) => s.oses.includes(o)),
    minAgentVersion:
      compareVersions(s.minAgentVersion, base.minAgentVersion) > 0 ? s.minAgentVersion : base.minAgentVersion,
  };
}

export interface EndpointInfo {
  id: string;
  hostname: string;
  os: Os;
  agentVersion: string;
  segmentId: string;
  revokedAt: Date | null;
  reportedHostname?: string | null;
}

export interface SegmentInfo {
  id: string;
  name: string;
  activeResponseEnabled: boolean;
}

/** One requested target: the name as typed, and the endpoint when one by that name is enrolled. */
export interface Candidate {
  hostname: string;
  endpoint?: EndpointInfo;
  /** Set when the candidate stands for a selector that matched nothing (e.g. an unknown segment). */
  unresolvedReason?: string;
}

const OS_LABEL: Record<string, string> = { windows: 'Windows', linux: 'Linux', macos: 'macOS' };

/** Splits candidates into eligible targets and exclusions, each exclusion with a reason a person can act on. */
export function evaluateTargets(
  spec: ActionSpec,
  candidates: readonly Candidate[],
  segments: readonly SegmentInfo[],
): { targets: TargetView[]; exclusions: ExclusionView[] } {
  const rule = ruleFor(spec);
  const segById = new Map(segments.map((s) => [s.id, s]));
  const targets: TargetView[] = [];
  const exclusions: ExclusionView[] = [];
  const seen = new Set<string>();
  const what = spec.script ? `${spec.action} ${spec.script.name}` : spec.action;
  for (const c of candidates) {
    const ep = c.endpoint;
    if (!ep) {
      exclusions.push(
        c.unresolvedReason
          ? { hostname: c.hostname, reason: c.unresolvedReason, kind: 'unmatched' }
          : { hostname: c.hostname, reason: 'unknown endpoint', kind: 'unknown' },
      );
      continue;
    }
    if (seen.has(ep.id)) continue;
    seen.add(ep.id);
    const excluded = (kind: ExclusionKind, reason: string, extra: Partial<ExclusionView> = {}) =>
      exclusions.push({ hostname: ep.hostname, endpointId: ep.id, reason, kind, ...extra });
    const seg = segById.get(ep.segmentId);
    if (ep.revokedAt) excluded('revoked', 'the endpoint is revoked (its certificate no longer connects)');
    else if (!seg) excluded('segment', 'the endpoint is in no known segment');
    else if (!seg.activeResponseEnabled)
      excluded('segment', `segment ${seg.name} does not have Active Response enabled`);
    else if (!rule.oses.includes(ep.os)) {
      excluded('os', `${OS_LABEL[ep.os] ?? ep.os} is not supported for ${what}`, { os: ep.os });
    } else if (compareVersions(ep.agentVersion, rule.minAgentVersion) < 0) {
      excluded(
        'agent_version',
        `agent ${ep.agentVersion} < required ${rule.minAgentVersion}, upgrade the sensor and reschedule`,
      );
    } else {
      const reported =
        ep.reportedHostname && ep.reportedHostname !== ep.hostname ? ep.reportedHostname : undefined;
      targets.push({ endpointId: ep.id, hostname: ep.hostname, ...(reported ? { reported } : {}) });
    }
  }
  targets.sort((a, b) => (a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0));
  return { targets, exclusions };
}

export interface PolicyConfig {
  /** More targets than this needs two approvers. */
  blastRadiusThreshold: number;
  /** Approvers needed for anything that changes an endpoint. */
  approvalsDefault: number;
  /** Whether read-only investigation scripts need approval too. */
  readOnlyNeedsApproval: boolean;
  /**
   * Read-only work on more endpoints than this needs one approval even when `readOnlyNeedsApproval` is off:
   * an investigation script on a whole fleet is a decision, not a lookup.
   */
  readOnlyApprovalAbove: number;
  /** A request by a member of an external organisation needs an in-house approver. */
  externalNeedsInHouse: boolean;
  /**
   * `fetch` leaves the endpoint unchanged but carries evidence (possibly personal data, possibly malware)
   * out of it, so by default it needs an approval like a change does, without the requester step-up.
   */
  fetchNeedsApproval: boolean;
}

export interface ApprovalRequirement {
  approvalsRequired: number;
  inHouseRequired: boolean;
  requesterStepUpRequired: boolean;
}

export function approvalRule(
  cfg: PolicyConfig,
  actor: Pick<ResolvedUser, 'external'>,
  spec: ActionSpec,
  targetCount: number,
): ApprovalRequirement {
  const rule = ruleFor(spec);
  let approvals = 0;
  if (rule.changesEndpoint) approvals = cfg.approvalsDefault;
  else if (rule.handsOutEvidence) approvals = cfg.fetchNeedsApproval ? cfg.approvalsDefault : 0;
  else approvals = cfg.readOnlyNeedsApproval ? cfg.approvalsDefault : 0;
  if (approvals > 0 && targetCount > cfg.blastRadiusThreshold) approvals = Math.max(approvals, 2);
  const readOnly = !rule.changesEndpoint && !rule.handsOutEvidence;
  if (readOnly && targetCount > cfg.readOnlyApprovalAbove) approvals = Math.max(approvals, 1);
  // An external requester's request is never self-service, even a read-only one: someone in-house decides.
  const inHouseRequired = actor.external && cfg.externalNeedsInHouse;
  if (inHouseRequired) approvals = Math.max(approvals, 1);
  return { approvalsRequired: approvals, inHouseRequired, requesterStepUpRequired: rule.changesEndpoint };
}

/** Throws Forbidden unless the user may ask for actions: the role, enrolled TOTP, not disabled. */
export function requireRequester(actor: ResolvedUser): void {
  if (actor.disabled) {
    throw new Forbidden('policy.disabled', 'Your account is disabled. Ask a platform admin.');
  }
  if (!actor.roles.includes('active_response')) {
    throw new Forbidden(
      'policy.no_role',
      'You need the Active Response role to ask for actions on endpoints. Ask a platform admin to grant it.',
    );
  }
  if (!actor.mfaEnrolled) {
    throw new Forbidden(
      'policy.mfa_required',
      'MFA is enforced for Active Response: enrol an authenticator app (TOTP) before asking for actions. ' +
        'Ask a platform admin for an enrolment link.',
    );
  }
}

/** What canApprove needs to know about a request; a RequestView satisfies it. */
export interface ApprovalSubject {
  requester: { id: string; external: boolean };
  approvalsRequired: number;
  inHouseApprovalRequired: boolean;
  approvals: { approverId?: string; approverExternal?: boolean; decision: 'approve' | 'deny' }[];
}

/**
 * Throws Forbidden unless `approver` may decide `request`. For approvals with an in-house requirement,
 * external approvers may contribute but the approval that would complete the quorum must come from
 * in-house when no in-house approval is recorded yet; so an external approver alone never completes it.
 * A deny is a veto any eligible approver (internal or external) may cast.
 */
export function canApprove(
  approver: ResolvedUser,
  request: ApprovalSubject,
  decision: 'approve' | 'deny' = 'approve',
): { ok: true } {
  if (approver.id === request.requester.id) {
    const hint = decision === 'deny' ? ' To withdraw your own request, use cancel.' : '';
    throw new Forbidden('approval.self', `You asked for this; another approver must decide.${hint}`);
  }
  if (approver.disabled) throw new Forbidden('approval.disabled', 'Your account is disabled.');
  if (!approver.roles.includes('approver')) {
    throw new Forbidden('approval.no_role', 'Only people with the approver role can decide requests.');
  }
  if (!approver.mfaEnrolled) {
    throw new Forbidden(
      'approval.mfa_required',
      'MFA is enforced for approvers: enrol an authenticator app (TOTP) first. Ask a platform admin for a link.',
    );
  }
  if (decision === 'approve' && request.inHouseApprovalRequired && approver.external) {
    const approves = request.approvals.filter((a) => a.decision === 'approve');
    const hasInHouse = approves.some((a) => a.approverExternal === false);
    if (!hasInHouse && approves.length + 1 >= request.approvalsRequired) {
      throw new Forbidden(
        'approval.external_not_allowed',
        'This request came from an external organisation, so an in-house approver must approve it.',
      );
    }
  }
  return { ok: true };
}

/** Whether the recorded approvals complete the quorum, counting the in-house rule. */
export function quorumReached(request: ApprovalSubject): boolean {
  const approves = request.approvals.filter((a) => a.decision === 'approve');
  if (approves.length < request.approvalsRequired) return false;
  if (request.inHouseApprovalRequired && !approves.some((a) => a.approverExternal === false)) return false;
  return true;
}

/** Who a request belongs to and who approved it: what cancel and evidence downloads are decided on. */
export interface RequestParties {
  ref: string;
  requesterId: string;
  requesterExternal: boolean;
  /** Users who recorded an approval (decision approve) on the request. */
  approverIds: readonly string[];
}

const inHouseAdmin = (u: ResolvedUser) => u.roles.includes('admin') && !u.external;

/**
 * Throws Forbidden unless `actor` may cancel the request (or one of its deliveries): its requester, one of
 * its approvers, or an in-house admin, with enrolled MFA, and never an external user on an in-house
 * request. Whether a live step-up is needed (after dispatch) is the caller's check.
 */
export function canCancel(actor: ResolvedUser, request: RequestParties): { ok: true } {
  if (actor.disabled) throw new Forbidden('cancel.disabled', 'Your account is disabled.');
  if (actor.external && !request.requesterExternal) {
    throw new Forbidden(
      'cancel.external_not_allowed',
      `${request.ref} was asked for in-house; only in-house people can cancel it.`,
    );
  }
  const party =
    actor.id === request.requesterId || request.approverIds.includes(actor.id) || inHouseAdmin(actor);
  if (!party) {
    throw new Forbidden(
      'request.cancel_forbidden',
      `Only the person who asked for ${request.ref}, its approvers or an in-house admin can cancel it.`,
    );
  }
  if (!actor.mfaEnrolled) {
    throw new Forbidden(
      'cancel.mfa_required',
      'MFA is enforced for cancelling: enrol an authenticator app (TOTP) first. Ask a platform admin for a link.',
    );
  }
  return { ok: true };
}

/**
 * Throws Forbidden unless `user` may download evidence fetched by `request` (null: a file tied to no
 * request): the requester while they hold the Active Response role, an approver of that request while
 * they hold the approver role, or an in-house admin.
 */
export function canDownloadEvidence(user: ResolvedUser, request: RequestParties | null): { ok: true } {
  if (user.disabled) throw new Forbidden('file.disabled', 'Your account is disabled.');
  if (inHouseAdmin(user)) return { ok: true };
  const requester = request && user.id === request.requesterId && user.roles.includes('active_response');
  const approver = request?.approverIds.includes(user.id) && user.roles.includes('approver');
  if (!requester && !approver) {
    throw new Forbidden(
      'file.not_yours',
      request
        ? `This evidence was fetched for ${request.ref}: only its requester, its approvers and in-house admins can download it.`
        : 'This file belongs to no request: only in-house admins can download it.',
    );
  }
  return { ok: true };
}
