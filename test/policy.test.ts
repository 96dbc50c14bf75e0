import { describe, expect, it } from 'vitest';
import { Forbidden } from '../bot/errors.ts';
import {
  type ApprovalSubject,
  type Candidate,
  type EndpointInfo,
  quorumReached,
  type SegmentInfo,
} from '../bot/policy/policy-rules.ts';
import { createPolicy } from '../bot/policy/policy-service.ts';
import type { ResolvedUser } from '../bot/users/user-types.ts';
import { compareVersions } from '../protocol/semver.ts';

const policy = createPolicy();

function person(id: string, over: Partial<ResolvedUser> = {}): ResolvedUser {
  return {
    id,
    username: id,
    displayName: id,
    orgId: 'org-acme',
    orgName: 'Acme',
    external: false,
    roles: ['active_response', 'approver'],
    mfaEnrolled: true,
    disabled: false,
    ...over,
  };
}

const segs: SegmentInfo[] = [
  { id: 's-prod', name: 'prod', activeResponseEnabled: true },
  { id: 's-lab', name: 'lab', activeResponseEnabled: false },
];

function ep(hostname: string, over: Partial<EndpointInfo> = {}): Candidate {
  return {
    hostname,
    endpoint: {
      id: `id-${hostname}`,
      hostname,
      os: 'linux',
      agentVersion: '1.5.0',
      segmentId: 's-prod',
      revokedAt: null,
      ...over,
    },
  };
}

function forbiddenCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(Forbidden);
    return (e as Forbidden).code;
  }
  throw new Error('expected a Forbidden');
}

describe('target eligibility', () => {
  it('excludes a target outside an Active Response segment, naming the segment', () => {
    const res = policy.evaluateTargets(
      person('a'),
      { action: 'isolate' },
      [ep('web-01'), ep('lab-01', { segmentId: 's-lab' })],
      segs,
    );
    expect(res.targets).toEqual([{ endpointId: 'id-web-01', hostname: 'web-01' }]);
    expect(res.exclusions).toEqual([
      {
        hostname: 'lab-01',
        endpointId: 'id-lab-01',
        reason: 'segment lab does not have Active Response enabled',
        kind: 'segment',
      },
    ]);
  });

  it('refuses macOS as unsupported and old agents with the versions and what to do', () => {
    const res = policy.evaluateTargets(
      person('a'),
      {
        action: 'run',
        script: {
          name: 'triage',
          readOnly: true,
          oses: ['windows', 'linux', 'macos'],
          minAgentVersion: '0.0.0',
        },
      },
      [
        ep('mac-01', { os: 'macos' }),
        ep('old-01', { agentVersion: '1.0.3' }),
        ep('ok-01'),
        { hostname: 'ghost' },
      ],
      segs,
    );
    expect(res.targets.map((t) => t.hostname)).toEqual(['ok-01']);
    expect(res.exclusions).toEqual([
      {
        hostname: 'mac-01',
        endpointId: 'id-mac-01',
        reason: 'macOS is not supported for run triage',
        kind: 'os',
        os: 'macos',
      },
      {
        hostname: 'old-01',
        endpointId: 'id-old-01',
        reason: 'agent 1.0.3 < required 1.5.0, upgrade the sensor and reschedule',
        kind: 'agent_version',
      },
      { hostname: 'ghost', reason: 'unknown endpoint', kind: 'unknown' },
    ]);
  });

  it('takes the higher of the action and script minimum agent version, and the script OS list', () => {
    const script = { name: 'win-only', readOnly: false, oses: ['windows'], minAgentVersion: '2.0.0' };
    const res = policy.evaluateTargets(
      person('a'),
      { action: 'run', script },
      [
        ep('lin-01'),
        ep('win-01', { os: 'windows', agentVersion: '1.9.9' }),
        ep('win-02', { os: 'windows', agentVersion: '2.0.0' }),
      ],
      segs,
    );
    expect(res.targets.map((t) => t.hostname)).toEqual(['win-02']);
    expect(res.exclusions.map((e) => e.reason)).toEqual([
      'Linux is not supported for run win-only',
      'agent 1.9.9 < required 2.0.0, upgrade the sensor and reschedule',
    ]);
  });

  it('excludes revoked endpoints and counts a host named twice once', () => {
    const res = policy.evaluateTargets(
      person('a'),
      { action: 'put' },
      [ep('a-1', { revokedAt: new Date() }), ep('b-1'), ep('b-1')],
      segs,
    );
    expect(res.targets).toHaveLength(1);
    expect(res.exclusions[0]!.reason).toMatch(/revoked/);
  });

  it('compares versions numerically, without a dependency', () => {
    expect(compareVersions('1.10.0', '1.9.2')).toBe(1);
    expect(compareVersions('1.2', '1.2.0')).toBe(0);
    expect(compareVersions('1.2.0-rc1', '1.2.0')).toBe(-1);
    expect(compareVersions('v2.0.0', '1.99.99')).toBe(1);
  });
});

describe('approval rule', () => {
  const readOnly = { name: 'triage', readOnly: true, oses: ['linux'], minAgentVersion: '0.0.0' };
  const writes = { ...readOnly, name: 'remediate', readOnly: false };

  it('needs nobody for a read-only investigation script', () => {
    expect(policy.approvalRule(person('a'), { action: 'run', script: readOnly }, 3)).toEqual({
      approvalsRequired: 0,
      inHouseRequired: false,
      requesterStepUpRequired: false,
    });
  });

  it('needs exactly one approval for read-only work on more than READ_ONLY_APPROVAL_ABOVE endpoints', () => {
    const ro = { action: 'run' as const, script: readOnly };
    expect(policy.approvalRule(person('a'), ro, 50).approvalsRequired).toBe(0);
    // Above the blast radius too, but it is one decision, not two.
    expect(policy.approvalRule(person('a'), ro, 51)).toEqual({
      approvalsRequired: 1,
      inHouseRequired: false,
      requesterStepUpRequired: false,
    });
    expect(policy.approvalRule(person('a'), { action: 'processes' }, 51).approvalsRequired).toBe(1);
    const five = createPolicy({ readOnlyApprovalAbove: 5 });
    expect(five.approvalRule(person('a'), ro, 5).approvalsRequired).toBe(0);
    expect(five.approvalRule(person('a'), ro, 6).approvalsRequired).toBe(1);
    expect(() => createPolicy({ readOnlyApprovalAbove: 0 })).toThrow(/readOnlyApprovalAbove/);
  });

  it('needs one approver and a requester step-up for anything that changes an endpoint', () => {
    for (const spec of [
      { action: 'isolate' as const },
      { action: 'kill' as const },
      { action: 'run' as const, script: writes },
    ]) {
      expect(policy.approvalRule(person('a'), spec, 1)).toEqual({
        approvalsRequired: 1,
        inHouseRequired: false,
        requesterStepUpRequired: true,
      });
    }
  });

  it('needs an approval for fetch (evidence leaves the endpoint) but no requester step-up', () => {
    expect(policy.approvalRule(person('a'), { action: 'fetch' }, 1)).toMatchObject({
      approvalsRequired: 1,
      requesterStepUpRequired: false,
    });
    expect(
      createPolicy({ fetchNeedsApproval: false }).approvalRule(person('a'), { action: 'fetch' }, 1)
        .approvalsRequired,
    ).toBe(0);
  });

  it('needs two approvers above the blast-radius threshold', () => {
    expect(policy.approvalRule(person('a'), { action: 'isolate' }, 10).approvalsRequired).toBe(1);
    expect(policy.approvalRule(person('a'), { action: 'isolate' }, 11).approvalsRequired).toBe(2);
    expect(
      createPolicy({ blastRadiusThreshold: 3 }).approvalRule(person('a'), { action: 'isolate' }, 4)
        .approvalsRequired,
    ).toBe(2);
  });

  it('requires an in-house approver for an external requester, even for read-only work', () => {
    const ext = person('mdr', { external: true });
    expect(policy.approvalRule(ext, { action: 'isolate' }, 1)).toMatchObject({
      approvalsRequired: 1,
      inHouseRequired: true,
    });
    expect(policy.approvalRule(ext, { action: 'run', script: readOnly }, 1)).toMatchObject({
      approvalsRequired: 1,
      inHouseRequired: true,
    });
    expect(
      createPolicy({ externalNeedsInHouse: false }).approvalRule(ext, { action: 'isolate' }, 1)
        .inHouseRequired,
    ).toBe(false);
  });
});

describe('who may ask and who may approve', () => {
  it('refuses requesters without the role, without MFA, or disabled', () => {
    expect(forbiddenCode(() => policy.requireRequester(person('a', { roles: ['approver'] })))).toBe(
      'policy.no_role',
    );
    expect(forbiddenCode(() => policy.requireRequester(person('a', { mfaEnrolled: false })))).toBe(
      'policy.mfa_required',
    );
    expect(forbiddenCode(() => policy.requireRequester(person('a', { disabled: true })))).toBe(
      'policy.disabled',
    );
    expect(() => policy.requireRequester(person('a'))).not.toThrow();
  });

  const request = (over: Partial<ApprovalSubject> = {}): ApprovalSubject => ({
    requester: { id: 'req', external: false },
    approvalsRequired: 1,
    inHouseApprovalRequired: false,
    approvals: [],
    ...over,
  });

  it('refuses an approval by the requester, telling them another approver must decide', () => {
    try {
      policy.canApprove(person('req'), request());
      throw new Error('not refused');
    } catch (e) {
      expect((e as Forbidden).code).toBe('approval.self');
      expect((e as Error).message).toBe('You asked for this; another approver must decide.');
    }
  });

  it('refuses approvers without the role or without MFA', () => {
    expect(
      forbiddenCode(() => policy.canApprove(person('x', { roles: ['active_response'] }), request())),
    ).toBe('approval.no_role');
    expect(forbiddenCode(() => policy.canApprove(person('x', { mfaEnrolled: false }), request()))).toBe(
      'approval.mfa_required',
    );
  });

  it('does not let an external approver supply the last approval of an in-house-required request', () => {
    const ext = person('mdr-2', { external: true });
    const inHouseNeeded = request({
      requester: { id: 'req', external: true },
      inHouseApprovalRequired: true,
    });
    expect(forbiddenCode(() => policy.canApprove(ext, inHouseNeeded))).toBe('approval.external_not_allowed');
    // With two needed, the external one may be the first; the second must then be in-house.
    const two = { ...inHouseNeeded, approvalsRequired: 2 };
    expect(policy.canApprove(ext, two)).toEqual({ ok: true });
    const afterExternal = {
      ...two,
      approvals: [{ approverId: 'mdr-2', approverExternal: true, decision: 'approve' as const }],
    };
    expect(forbiddenCode(() => policy.canApprove(person('mdr-3', { external: true }), afterExternal))).toBe(
      'approval.external_not_allowed',
    );
    expect(policy.canApprove(person('ic'), afterExternal)).toEqual({ ok: true });
    // A deny is a veto any eligible approver may cast.
    expect(policy.canApprove(ext, inHouseNeeded, 'deny')).toEqual({ ok: true });
  });

  it('reaches quorum only with enough approvals and, when required, one in-house', () => {
    const ext = { approverId: 'e', approverExternal: true, decision: 'approve' as const };
    const int = { approverId: 'i', approverExternal: false, decision: 'approve' as const };
    expect(quorumReached(request({ approvals: [int] }))).toBe(true);
    expect(quorumReached(request({ inHouseApprovalRequired: true, approvals: [ext] }))).toBe(false);
    expect(
      quorumReached(request({ approvalsRequired: 2, inHouseApprovalRequired: true, approvals: [ext, int] })),
    ).toBe(true);
  });

  describe('cancel and evidence downloads', () => {
    const request = {
      ref: 'R-7K3QXM',
      requesterId: 'ann',
      requesterExternal: false,
      approverIds: ['ic'],
    };
    const admin = person('root', { roles: ['admin'] });

    it('lets the requester, its approvers and in-house admins cancel, with MFA', () => {
      for (const who of [person('ann'), person('ic'), admin]) {
        expect(policy.canCancel(who, request)).toEqual({ ok: true });
      }
      const refused = (who: ResolvedUser) => {
        try {
          policy.canCancel(who, request);
        } catch (e) {
          return (e as Forbidden).code;
        }
        return 'allowed';
      };
      expect(refused(person('other-approver'))).toBe('request.cancel_forbidden');
      expect(refused(person('ic', { mfaEnrolled: false }))).toBe('cancel.mfa_required');
      expect(refused(person('ic', { external: true }))).toBe('cancel.external_not_allowed');
      expect(refused(person('mdr-admin', { roles: ['admin'], external: true }))).toBe(
        'cancel.external_not_allowed',
      );
      expect(refused(person('ann', { disabled: true }))).toBe('cancel.disabled');
      // An external request may be cancelled by its external requester.
      const ext = { ...request, requesterId: 'mdr', requesterExternal: true };
      expect(policy.canCancel(person('mdr', { external: true }), ext)).toEqual({ ok: true });
    });

    it('lets the requester, its approvers and in-house admins download its evidence, while they hold their role', () => {
      expect(policy.canDownloadEvidence(person('ann'), request)).toEqual({ ok: true });
      expect(policy.canDownloadEvidence(person('ic'), request)).toEqual({ ok: true });
      expect(policy.canDownloadEvidence(admin, request)).toEqual({ ok: true });
      expect(policy.canDownloadEvidence(admin, null)).toEqual({ ok: true });
      for (const [who, req] of [
        [person('someone'), request],
        [person('ann', { roles: ['approver'] }), request],
        [person('ic', { roles: ['active_response'] }), request],
        [person('mdr-admin', { roles: ['admin'], external: true }), request],
        [person('ann'), null],
      ] as const) {
        expect(() => policy.canDownloadEvidence(who, req)).toThrow(
          expect.objectContaining({ code: 'file.not_yours' }),
        );
      }
    });
  });
});
