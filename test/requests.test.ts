import { count, desc, eq } from 'drizzle-orm';
import postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AUDIT_LOCK_KEY, createAuditService } from '../bot/audit/audit-service.ts';
import { parseCommand } from '../bot/commands/command-parser.ts';
import type { Command } from '../bot/commands/command-types.ts';
import { AppError } from '../bot/errors.ts';
import { createPolicy } from '../bot/policy/policy-service.ts';
import { setChatMessage } from '../bot/requests/request-dal.ts';
import { createRequestService } from '../bot/requests/request-service.ts';
import { assertTransition, canTransition } from '../bot/requests/request-states.ts';
import { bindTo } from '../bot/stepup/stepup-binding.ts';
import type { ResolvedUser } from '../bot/users/user-types.ts';
import { actionRequests, approvals, auditLog, deliveries, REQUEST_STATES } from '../db/schema.ts';
import { waitFor } from './helpers/agents.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  chatContext,
  createFixtures,
  createTableDispatcher,
  type Fixtures,
  sha256,
} from './helpers/fixtures.ts';
import { testChainKey } from './helpers/keys.ts';

/** Awaits a promise expected to fail with an AppError and returns it. */
async function failure(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AppError) return e;
    throw e;
  }
  throw new Error('expected the call to fail');
}

describe('assertTransition', () => {
  it('allows exactly the moves of the state machine and refuses the rest', () => {
    expect(() => assertTransition('pending_approval', 'approved')).not.toThrow();
    expect(() => assertTransition('approved', 'dispatched')).not.toThrow();
    expect(() => assertTransition('dispatched', 'completed')).not.toThrow();
    for (const from of ['completed', 'denied', 'expired', 'cancelled'] as const) {
      for (const to of REQUEST_STATES) expect(canTransition(from, to)).toBe(false);
    }
    expect(() => assertTransition('denied', 'approved')).toThrow(
      expect.objectContaining({ code: 'request.illegal_transition' }),
    );
    expect(() => assertTransition('pending_approval', 'dispatched')).toThrow(/cannot become dispatched/);
  });
});

describe.each(drivers)('request service on %s', (driver) => {
  let tdb: TestDatabase;
  let clock: ReturnType<typeof createTestClock>;
  let f: Fixtures;
  let dispatcher: ReturnType<typeof createTableDispatcher>;
  let analyst: ResolvedUser;
  let ic: ResolvedUser;
  let ic2: ResolvedUser;
  let mdr: ResolvedUser;
  let mdrApprover: ResolvedUser;
  let prodId: string;

  function service(policy = createPolicy()) {
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    return createRequestService({ db: tdb.db, audit, clock, policy, dispatcher, approvalTtlSeconds: 3600 });
  }

  async function counts() {
    const n = async (t: typeof actionRequests | typeof approvals | typeof deliveries | typeof auditLog) =>
      Number((await tdb.db.select({ n: count() }).from(t))[0]!.n);
    return {
      requests: await n(actionRequests),
      approvals: await n(approvals),
      deliveries: await n(deliveries),
      audit: await n(auditLog),
    };
  }

  async function auditActions(requestId: string) {
    const rows = await tdb.db
      .select()
      .from(auditLog)
      .where(eq(auditLog.requestId, requestId))
      .orderBy(auditLog.seq);
    return rows.map((r) => r.action);
  }

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    clock = createTestClock();
    f = createFixtures(tdb.db, clock);
    dispatcher = createTableDispatcher();
    analyst = await f.user('analyst', { roles: ['active_response'] });
    ic = await f.user('commander', { roles: ['approver'] });
    ic2 = await f.user('deputy', { roles: ['approver'] });
    mdr = await f.user('mdr-analyst', { roles: ['active_response'], external: true });
    mdrApprover = await f.user('mdr-lead', { roles: ['approver'], external: true });
    const prod = await f.segment('prod', true);
    const lab = await f.segment('lab', false);
    prodId = prod.id;
    await f.endpoint('web-01', prod.id);
    await f.endpoint('web-02', prod.id, { os: 'windows' });
    await f.endpoint('lab-01', lab.id);
    await f.endpoint('mac-01', prod.id, { os: 'macos' });
    await f.endpoint('old-01', prod.id, { agentVersion: '1.0.3' });
  });
  afterEach(async () => {
    await tdb.destroy();
  });

  const create = (svc: ReturnType<typeof service>, user: ResolvedUser, text: string, stepUp = true) =>
    svc.createRequest(user, parseCommand(text), chatContext(), { requesterStepUpValid: stepUp });

  /** A live window `who` opened by stepping up to approve this request at its current digest. */
  async function approveWindow(who: ResolvedUser, request: { id: string; digest: string }) {
    return f.stepUpWindow(who.id, {
      purpose: 'approve',
      subject: bindTo.request(request.id, request.digest),
    });
  }

  async function approve(svc: ReturnType<typeof service>, who: ResolvedUser, ref: string, digest?: string) {
    const row = await svc.getView(ref);
    return svc.decide({
      requestId: ref,
      approver: who,
      decision: 'approve',
      digest,
      stepUpWindowId: await approveWindow(who, row),
    });
  }

  it('stores a request pending approval, excluding targets outside enabled segments with their reasons', async () => {
    const svc = service();
    const res = await create(
      svc,
      analyst,
      'isolate web-01 web-02 lab-01 mac-01 ghost --reason "C2 beacon" --case IR-42',
    );
    expect(res.needsRequesterStepUp).toBe(false);
    expect(res.autoApproved).toBe(false);
    const v = res.request;
    expect(v.ref).toMatch(/^R-[0-9A-HJKMNP-TV-Z]{6}$/);
    expect(v.state).toBe('pending_approval');
    expect(v.targets.map((t) => t.hostname)).toEqual(['web-01', 'web-02']);
    expect(v.exclusions).toEqual([
      expect.objectContaining({
        hostname: 'lab-01',
        reason: 'segment lab does not have Active Response enabled',
      }),
      expect.objectContaining({ hostname: 'mac-01', reason: 'macOS is not supported for isolate' }),
      { hostname: 'ghost', reason: 'unknown endpoint', kind: 'unknown' },
    ]);
    expect(v).toMatchObject({
      approvalsRequired: 1,
      inHouseApprovalRequired: false,
      caseId: 'IR-42',
      reason: 'C2 beacon',
    });
    expect(await auditActions(v.id)).toEqual(['request.created', 'request.pending_approval']);
    expect((await svc.getView(v.ref)).id).toBe(v.id);
  });

  it('excludes agents below the required version with the versions named', async () => {
    await f.script('collect', 'print("collect")\n', { readOnly: true });
    const res = await create(service(), analyst, 'run collect web-01 old-01');
    expect(res.request.exclusions).toEqual([
      expect.objectContaining({
        hostname: 'old-01',
        reason: 'agent 1.0.3 < required 1.5.0, upgrade the sensor and reschedule',
      }),
    ]);
  });

  it('refuses a request whose every target is excluded, listing the reasons and storing nothing', async () => {
    const before = await counts();
    const e = await failure(create(service(), analyst, 'isolate lab-01 mac-01 --reason x'));
    expect(e.code).toBe('request.no_targets');
    expect(e.message).toContain('lab-01: segment lab does not have Active Response enabled');
    expect(e.message).toContain('mac-01: macOS is not supported for isolate');
    expect(await counts()).toEqual(before);
  });

  it('refuses requesters without enrolled MFA or without the role, storing nothing', async () => {
    const noMfa = await f.user('newbie', { roles: ['active_response'], mfa: false });
    const before = await counts();
    expect((await failure(create(service(), noMfa, 'isolate web-01 --reason x'))).code).toBe(
      'policy.mfa_required',
    );
    expect((await failure(create(service(), ic, 'isolate web-01 --reason x'))).code).toBe('policy.no_role');
    expect(await counts()).toEqual(before);
  });

  it('holds a high-risk request until the requester confirms the same digest', async () => {
    const svc = service();
    const res = await create(svc, analyst, 'kill web-01 4242 --reason "miner"', false);
    expect(res.needsRequesterStepUp).toBe(true);
    expect(res.request.state).toBe('requested');
    const stale = '0'.repeat(64);
    expect((await failure(svc.confirmRequester(res.request.id, analyst.id, stale))).code).toBe(
      'request.digest_changed',
    );
    expect((await failure(svc.confirmRequester(res.request.id, ic.id, res.request.digest))).code).toBe(
      'request.not_requester',
    );
    expect((await failure(approve(svc, ic, res.request.ref))).code).toBe('request.awaiting_requester');
    const ok = await svc.confirmRequester(res.request.id, analyst.id, res.request.digest);
    expect(ok.request.state).toBe('pending_approval');
  });

  it('dispatches a read-only script at once, one delivery per target carrying the exact script', async () => {
    const body = 'import ar\nprint(ar.hostname())\n';
    await f.script('hostinfo', body, {
      readOnly: true,
      params: { depth: { type: 'integer', required: true } },
    });
    const svc = service();
    const res = await create(svc, analyst, 'run hostinfo web-01 web-02 depth=3');
    expect(res.autoApproved).toBe(true);
    expect(res.request.state).toBe('dispatched');
    expect(res.request.params).toEqual({
      script: { name: 'hostinfo', version: 1, sha256: sha256(body) },
      args: { depth: 3 },
      timeoutSeconds: 600,
      // The version's output cap travels with the delivery (the library's default, 1 MiB).
      outputCapBytes: 1_048_576,
    });
    const rows = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, res.request.id));
    expect(rows).toHaveLength(2);
    expect(rows[0]!.action).toBe('run');
    expect(rows[0]!.payload).toMatchObject({
      params: res.request.params,
      scriptBody: body,
      digest: res.request.digest,
    });
    expect(dispatcher.woken.flat().sort()).toEqual(rows.map((r) => r.endpointId).sort());
    const [created] = await tdb.db.select().from(auditLog).where(eq(auditLog.action, 'request.created'));
    expect(created!.details).toMatchObject({ script: { name: 'hostinfo', body } });
    expect(await auditActions(res.request.id)).toEqual([
      'request.created',
      'request.approved',
      'request.deliveries_queued',
      'request.dispatched',
    ]);
    expect((await failure(create(svc, analyst, 'run hostinfo web-01'))).code).toBe('request.missing_param');
    expect((await failure(create(svc, analyst, 'run hostinfo web-01 depth=x'))).code).toBe(
      'request.bad_param',
    );
  });

  it('holds a read-only script on more than READ_ONLY_APPROVAL_ABOVE endpoints for exactly one approval', async () => {
    await f.script('triage', 'print("triage")\n', { readOnly: true });
    await f.endpoints('fleet', 6, prodId);
    const svc = service(createPolicy({ readOnlyApprovalAbove: 5, blastRadiusThreshold: 3 }));
    const few = (await create(svc, analyst, 'run triage fleet-001 fleet-002 fleet-003 fleet-004 fleet-005'))
      .request;
    expect(few).toMatchObject({ state: 'dispatched', approvalsRequired: 0 });
    const before = (await counts()).deliveries;
    const all = (await create(svc, analyst, 'run triage segment:prod')).request;
    expect(all.targets.length).toBeGreaterThan(5);
    expect(all).toMatchObject({ state: 'pending_approval', approvalsRequired: 1 });
    expect((await counts()).deliveries).toBe(before);
    expect((await approve(svc, ic, all.ref)).request.state).toBe('dispatched');
  });

  it('needs an approval but no requester step-up for fetch, and resolves put against the file library', async () => {
    const svc = service();
    const fetched = await create(svc, analyst, 'fetch web-01 /tmp/dropper.bin', false);
    expect(fetched.needsRequesterStepUp).toBe(false);
    expect(fetched.request).toMatchObject({
      state: 'pending_approval',
      approvalsRequired: 1,
      params: { path: '/tmp/dropper.bin' },
    });
    expect((await failure(create(svc, analyst, 'put web-01 missing.sh /opt/x --reason fix'))).code).toBe(
      'request.unknown_file',
    );
    const file = await f.libraryFile('fix.sh', '#!/bin/sh\nexit 0\n');
    const put = await create(svc, analyst, `put web-01 ${file.sha256} /opt/fix.sh --reason fix`);
    expect(put.request.params).toEqual({
      file: { id: file.id, name: 'fix.sh', sha256: file.sha256, size: file.size },
      destPath: '/opt/fix.sh',
    });
  });

  it('gives deliveries the --ttl of the command, or the default', async () => {
    const svc = service();
    const short = (await create(svc, analyst, 'isolate web-01 --reason x --ttl 2h')).request;
    const normal = (await create(svc, analyst, 'isolate web-02 --reason x')).request;
    clock.advance(60_000);
    await approve(svc, ic, short.ref);
    await approve(svc, ic, normal.ref);
    const [d1] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, short.id));
    const [d2] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, normal.id));
    expect(d1!.expiresAt.getTime() - clock.now().getTime()).toBe(2 * 3600_000);
    expect(d2!.expiresAt.getTime() - clock.now().getTime()).toBe(604_800_000);
  });

  it('refuses an approval by the requester', async () => {
    const both = await f.user('both', { roles: ['active_response', 'approver'] });
    const svc = service();
    const { request } = await create(svc, both, 'isolate web-01 --reason x');
    const e = await failure(approve(svc, both, request.ref));
    expect(e.code).toBe('approval.self');
    expect(e.message).toMatch(/another approver must decide/);
    expect((await counts()).approvals).toBe(0);
    expect((await svc.getView(request.id)).state).toBe('pending_approval');
    const [refused] = await tdb.db.select().from(auditLog).where(eq(auditLog.action, 'approval.refused'));
    expect(refused).toMatchObject({
      actorId: both.id,
      outcome: 'refused',
      details: { code: 'approval.self' },
    });
  });

  it('refuses an approval whose step-up was for anything else: the history, another request, an old digest', async () => {
    const svc = service();
    const target = (await create(svc, analyst, 'isolate web-01 --reason "contain"')).request;
    const other = (await create(svc, analyst, 'isolate web-02 --reason "other"')).request;
    const windows = [
      await f.stepUpWindow(ic.id, { purpose: 'history', subject: 'history' }),
      await f.stepUpWindow(ic.id, { purpose: 'grant', subject: bindTo.roleChange('grant', ic.id, 'admin') }),
      await approveWindow(ic, other),
      await f.stepUpWindow(ic.id, { purpose: 'approve', subject: bindTo.request(target.id, '0'.repeat(64)) }),
      await approveWindow(ic2, target), // someone else's
    ];
    for (const stepUpWindowId of windows) {
      const e = await failure(
        svc.decide({ requestId: target.ref, approver: ic, decision: 'approve', stepUpWindowId }),
      );
      expect(e.code).toBe('approval.stepup_required');
    }
    expect((await counts()).approvals).toBe(0);
    const refused = await tdb.db.select().from(auditLog).where(eq(auditLog.action, 'approval.refused'));
    expect(refused).toHaveLength(windows.length);
    expect((await svc.getView(target.id)).state).toBe('pending_approval');
    const ok = await svc.decide({
      requestId: target.ref,
      approver: ic,
      decision: 'approve',
      stepUpWindowId: await approveWindow(ic, target),
    });
    expect(ok.request.state).toBe('dispatched');
  });

  it('needs an in-house approver for an external requester; an external approver alone does not complete it', async () => {
    const svc = service();
    const { request } = await create(svc, mdr, 'isolate web-01 --reason "seen by MDR"');
    expect(request.inHouseApprovalRequired).toBe(true);
    expect((await failure(approve(svc, mdrApprover, request.ref))).code).toBe(
      'approval.external_not_allowed',
    );
    expect((await svc.getView(request.id)).state).toBe('pending_approval');
    expect((await counts()).deliveries).toBe(0);
    const res = await approve(svc, ic, request.ref);
    expect(res.request.state).toBe('dispatched');
    expect(res.request.approvals).toEqual([
      expect.objectContaining({ approverId: ic.id, approverExternal: false }),
    ]);
  });

  it('lets an external approver give the first of two approvals, but the second must be in-house', async () => {
    const svc = service(createPolicy({ approvalsDefault: 2 }));
    const { request } = await create(svc, mdr, 'isolate web-01 --reason x');
    expect((await approve(svc, mdrApprover, request.ref)).request.state).toBe('pending_approval');
    const other = await f.user('mdr-lead-2', { roles: ['approver'], external: true });
    expect((await failure(approve(svc, other, request.ref))).code).toBe('approval.external_not_allowed');
    expect((await approve(svc, ic, request.ref)).request.state).toBe('dispatched');
  });

  it('binds approvals to the digest: a changed script makes a new request that starts with no approvals', async () => {
    await f.script('fix', 'print("v1")\n');
    const svc = service();
    const r1 = (await create(svc, analyst, 'run fix web-01 --reason patch')).request;
    const a1 = await approve(svc, ic, r1.ref, r1.digest);
    expect(a1.request.state).toBe('dispatched');
    expect(a1.request.approvals[0]!.digest).toBe(r1.digest);
    await f.editScript('fix', 'print("v2")\n');
    const r2 = (await create(svc, analyst, 'run fix web-01 --reason patch')).request;
    expect(r2.digest).not.toBe(r1.digest);
    expect(r2.approvals).toEqual([]);
    expect(r2.state).toBe('pending_approval');
    const stale = await failure(approve(svc, ic, r2.ref, r1.digest));
    expect(stale.code).toBe('request.digest_changed');
    expect((await svc.getView(r2.id)).approvals).toEqual([]);
    // A third version while r2 waits changes nothing for r2: it pinned v2, and v2 is what goes out.
    await f.editScript('fix', 'print("v3")\n');
    expect((await approve(svc, ic, r2.ref, r2.digest)).request.state).toBe('dispatched');
    const [sent] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, r2.id));
    expect((sent!.payload as { scriptBody: string }).scriptBody).toBe('print("v2")\n');
  });

  it('records one approval per approver and dispatches once under 10 concurrent decisions by two approvers', async () => {
    await f.endpoints('fleet', 12, prodId);
    const svc = service();
    const { request } = await create(svc, analyst, 'isolate segment:prod --reason outbreak');
    expect(request.targets.length).toBe(15); // 12 fleet + web-01, web-02, old-01 (mac-01 is unsupported)
    expect(request.approvalsRequired).toBe(2);
    const w1 = await approveWindow(ic, request);
    const w2 = await approveWindow(ic2, request);
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        svc.decide({
          requestId: request.id,
          approver: i % 2 ? ic2 : ic,
          decision: 'approve',
          digest: request.digest,
          stepUpWindowId: i % 2 ? w2 : w1,
        }),
      ),
    );
    const ok = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    expect(ok).toHaveLength(10); // a repeat by the same approver is a no-op, not an error
    expect(ok.filter((r) => r.changed)).toHaveLength(2);
    expect((await counts()).approvals).toBe(2);
    expect((await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, request.id))).length).toBe(
      15,
    );
    const actions = await auditActions(request.id);
    expect(actions.filter((a) => a === 'request.dispatched')).toHaveLength(1);
    expect(actions.filter((a) => a === 'approval.recorded')).toHaveLength(2);
    await expect(
      createAuditService({ db: tdb.db, clock, chainKey: testChainKey }).verify(),
    ).resolves.toMatchObject({ ok: true });
    expect((await svc.getView(request.id)).state).toBe('dispatched');
  });

  it('makes one approval and one dispatch when one approver clicks ten times at once', async () => {
    const svc = service();
    const { request } = await create(svc, analyst, 'isolate web-01 web-02 --reason x');
    const w = await approveWindow(ic, request);
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        svc.decide({ requestId: request.ref, approver: ic, decision: 'approve', stepUpWindowId: w }),
      ),
    );
    expect(results.filter((r) => r.changed)).toHaveLength(1);
    expect(results.every((r) => r.request.state === 'dispatched')).toBe(true);
    expect((await counts()).approvals).toBe(1);
    expect((await counts()).deliveries).toBe(2);
  });

  it('changes nothing on an illegal transition: the row and the audit log stay as they were', async () => {
    const svc = service();
    const { request } = await create(svc, analyst, 'isolate web-01 --reason x');
    const denied = await svc.decide({ requestId: request.ref, approver: ic, decision: 'deny', reason: 'no' });
    expect(denied.request.state).toBe('denied');
    const again = await svc.decide({ requestId: request.ref, approver: ic, decision: 'deny' });
    expect(again.changed).toBe(false);
    const [rowBefore] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, request.id));
    const before = await counts();
    expect((await failure(approve(svc, ic2, request.ref))).code).toBe('request.already_decided');
    expect((await failure(svc.cancel(request.ref, analyst))).code).toBe('request.already_final');
    expect((await svc.onDeliveryChanged(request.id)).completedNow).toBe(false);
    const [rowAfter] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, request.id));
    expect(rowAfter).toEqual(rowBefore);
    // Only the refusals themselves are recorded: one `approval.refused` and one `request.cancel_refused`.
    expect(await counts()).toEqual({ ...before, audit: before.audit + 2 });
    const last = await tdb.db.select().from(auditLog).orderBy(desc(auditLog.seq)).limit(2);
    expect(last.reverse()).toEqual([
      expect.objectContaining({
        action: 'approval.refused',
        outcome: 'refused',
        details: expect.objectContaining({ code: 'request.already_decided' }),
      }),
      expect.objectContaining({
        action: 'request.cancel_refused',
        outcome: 'refused',
        details: expect.objectContaining({ code: 'request.already_final' }),
      }),
    ]);
  });

  it('expires an undecided request after the approval TTL on the test clock', async () => {
    const svc = service();
    const r1 = (await create(svc, analyst, 'isolate web-01 --reason x')).request;
    const r2 = (await create(svc, analyst, 'isolate web-02 --reason x')).request;
    const unconfirmed = (await create(svc, analyst, 'isolate web-01 web-02 --reason x', false)).request;
    clock.advance(3599_000);
    expect(await svc.expireStale()).toEqual([]);
    clock.advance(2_000);
    const e = await failure(approve(svc, ic, r1.ref));
    expect(e.code).toBe('request.expired');
    expect((await svc.getView(r1.id)).state).toBe('expired');
    const expired = await svc.expireStale();
    expect(expired.map((v) => v.ref).sort()).toEqual([r2.ref, unconfirmed.ref].sort());
    expect((await failure(svc.confirmRequester(unconfirmed.id, analyst.id, unconfirmed.digest))).code).toBe(
      'request.expired',
    );
    expect(await auditActions(r2.id)).toEqual([
      'request.created',
      'request.pending_approval',
      'request.expired',
    ]);
    expect((await counts()).approvals).toBe(0);
  });

  it('refuses oversize input and stores nothing: a 10 MB script, 100,000 hosts, a 1 MB reason', async () => {
    await f.script('huge', `# ${'x'.repeat(10 * 1024 * 1024)}\n`);
    const svc = service();
    const before = await counts();
    const big = await failure(create(svc, analyst, 'run huge web-01 --reason x'));
    expect(big.code).toBe('request.script_too_large');
    expect(big.message).toMatch(/at most 1048576 bytes/);
    const hosts = Array.from({ length: 100_000 }, (_, i) => `h${i}`);
    const manyHosts = { kind: 'isolate', hosts, segments: [], reason: 'x' } as Command;
    const many = await failure(
      svc.createRequest(analyst, manyHosts, chatContext(), { requesterStepUpValid: true }),
    );
    expect(many.code).toBe('request.invalid');
    expect(many.message).toMatch(/at most 1000 hosts/);
    const longReason = {
      kind: 'isolate',
      hosts: ['web-01'],
      segments: [],
      reason: 'r'.repeat(1024 * 1024),
    } as Command;
    const long = await failure(
      svc.createRequest(analyst, longReason, chatContext(), { requesterStepUpValid: true }),
    );
    expect(long.message).toMatch(/reason: is too long \(at most 2000 characters\)/);
    expect(await counts()).toEqual(before);
  });

  it('cancels a pending request, and a dispatched one by withdrawing its queued deliveries', async () => {
    const svc = service();
    const pending = (await create(svc, analyst, 'isolate web-01 --reason x')).request;
    expect((await svc.cancel(pending.ref, analyst)).request?.state).toBe('cancelled');
    const sent = (await create(svc, analyst, 'isolate web-01 web-02 --reason y')).request;
    await approve(svc, ic, sent.ref);
    const outsider = await f.user('outsider', { roles: ['active_response'] });
    expect((await failure(svc.cancel(sent.ref, outsider))).code).toBe('request.cancel_forbidden');
    const [one] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, sent.id));
    // After dispatch each cancel needs the canceller's step-up for that very cancel.
    const single = await svc.cancel(one!.id, analyst, {
      stepUpWindowId: await f.stepUpWindow(analyst.id, {
        purpose: 'cancel',
        subject: bindTo.cancel(sent.id, one!.id),
      }),
    });
    expect(single).toMatchObject({ cancelledDeliveries: 1, request: { state: 'dispatched' } });
    const res = await svc.cancel(sent.ref, analyst, {
      stepUpWindowId: await f.stepUpWindow(analyst.id, {
        purpose: 'cancel',
        subject: bindTo.cancel(sent.id),
      }),
    });
    expect(res.cancelledDeliveries).toBe(1);
    expect(res.request?.state).toBe('completed');
    expect(res.request?.progress).toEqual({ cancelled: 2 });
  });

  // Needs a second session holding the lock while the cancel runs, so it exists for PostgreSQL only: PGlite
  // has one session.
  if (driver === 'postgres')
    it('takes the audit lock before withdrawing deliveries, as the broker does, so a cancel racing a claim cannot deadlock', async () => {
      const svc = service();
      const sent = (await create(svc, analyst, 'isolate web-01 web-02 --reason y')).request;
      await approve(svc, ic, sent.ref);
      const windowId = await f.stepUpWindow(analyst.id, {
        purpose: 'cancel',
        subject: bindTo.cancel(sent.id),
      });
      const broker = postgres(tdb.url!, { max: 1, onnotice: () => {} });
      try {
        let cancelled: Promise<unknown> | undefined;
        await broker.begin(async (claim) => {
          // A claim: the audit lock first, then the request's delivery rows.
          await claim`select pg_advisory_xact_lock(${AUDIT_LOCK_KEY})`;
          cancelled = svc.cancel(sent.ref, analyst, { stepUpWindowId: windowId });
          cancelled.catch(() => {});
          await waitFor(
            async () =>
              (await claim`select 1 from pg_locks where locktype = 'advisory' and not granted`).length > 0,
            'the cancel to wait for the audit lock',
          );
          // Had the cancel locked these rows before waiting, this update and the cancel would deadlock.
          await claim`update deliveries set attempts = attempts + 1 where request_id = ${sent.id}`;
        });
        expect(await cancelled).toMatchObject({ cancelledDeliveries: 2 });
      } finally {
        await broker.end();
      }
    });

  it('refuses cancels by approvers of other requests, external users on in-house requests and people without MFA, audited', async () => {
    const svc = service(createPolicy({ approvalsDefault: 2 }));
    const pending = (await create(svc, analyst, 'isolate web-01 --reason "contain"')).request;
    // An external approver may give the first of two approvals on an in-house request...
    await approve(svc, mdrApprover, pending.ref);
    const adminNoMfa = await f.user('root', { roles: ['admin'], mfa: false });
    const before = await counts();
    // ...but cancelling it would let an outside party keep a host from being contained.
    expect((await failure(svc.cancel(pending.ref, mdrApprover))).code).toBe('cancel.external_not_allowed');
    // An approver who has not approved this request is not one of its approvers.
    expect((await failure(svc.cancel(pending.ref, ic2))).code).toBe('request.cancel_forbidden');
    expect((await failure(svc.cancel(pending.ref, adminNoMfa))).code).toBe('cancel.mfa_required');
    expect((await svc.getView(pending.id)).state).toBe('pending_approval');
    const refused = await tdb.db
      .select()
      .from(auditLog)
      .where(eq(auditLog.action, 'request.cancel_refused'))
      .orderBy(auditLog.seq);
    expect(refused.map((r) => [r.actorId, r.outcome, (r.details as { code: string }).code])).toEqual([
      [mdrApprover.id, 'refused', 'cancel.external_not_allowed'],
      [ic2.id, 'refused', 'request.cancel_forbidden'],
      [adminNoMfa.id, 'refused', 'cancel.mfa_required'],
    ]);
    expect(refused.every((r) => r.requestId === pending.id)).toBe(true);
    expect(await counts()).toEqual({ ...before, audit: before.audit + 3 });
  });

  it('cancels after dispatch only with a step-up bound to that cancel, for the requester, its approvers and in-house admins', async () => {
    const svc = service();
    const sent = (await create(svc, analyst, 'isolate web-01 web-02 --reason y')).request;
    const other = (await create(svc, analyst, 'isolate web-01 --reason other')).request;
    await approve(svc, ic, sent.ref);
    // Any other live window (the history, a cancel of another request) does not count.
    const history = await f.stepUpWindow(ic.id, { purpose: 'history', subject: 'history' });
    const elsewhere = await f.stepUpWindow(ic.id, { purpose: 'cancel', subject: bindTo.cancel(other.id) });
    for (const stepUpWindowId of [undefined, history, elsewhere]) {
      expect((await failure(svc.cancel(sent.ref, ic, { stepUpWindowId }))).code).toBe(
        'cancel.stepup_required',
      );
    }
    expect((await counts()).deliveries).toBe(2);
    expect(
      (await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, sent.id))).every(
        (d) => d.state === 'queued',
      ),
    ).toBe(true);
    const plan = await svc.prepareCancel(sent.ref, ic);
    expect(plan).toMatchObject({ requestId: sent.id, stepUpRequired: true });
    const res = await svc.cancel(sent.ref, ic, {
      stepUpWindowId: await f.stepUpWindow(ic.id, { purpose: 'cancel', subject: bindTo.cancel(sent.id) }),
    });
    expect(res).toMatchObject({ cancelledDeliveries: 2, request: { state: 'completed' } });

    // An in-house admin who is neither requester nor approver may cancel; before dispatch, without a step-up.
    const admin = await f.user('platform-admin', { roles: ['admin'] });
    const pending = (await create(svc, analyst, 'isolate web-02 --reason z')).request;
    expect((await svc.prepareCancel(pending.ref, admin)).stepUpRequired).toBe(false);
    expect((await svc.cancel(pending.ref, admin)).request?.state).toBe('cancelled');
  });

  it('completes a dispatched request once every delivery is final, reporting completion once', async () => {
    const svc = service();
    const { request } = await create(svc, analyst, 'isolate web-01 web-02 --reason x');
    await approve(svc, ic, request.ref);
    const rows = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, request.id));
    await tdb.db.update(deliveries).set({ state: 'succeeded' }).where(eq(deliveries.id, rows[0]!.id));
    const mid = await svc.onDeliveryChanged(request.id);
    expect(mid).toMatchObject({ completedNow: false, progress: { queued: 1, succeeded: 1 } });
    await tdb.db.update(deliveries).set({ state: 'failed' }).where(eq(deliveries.id, rows[1]!.id));
    const done = await svc.onDeliveryChanged(request.id);
    expect(done.completedNow).toBe(true);
    expect(done.request.state).toBe('completed');
    expect((await svc.onDeliveryChanged(request.id)).completedNow).toBe(false);
  });

  it('stores the card location and lists a user’s requests newest first', async () => {
    const svc = service();
    const r1 = (await create(svc, analyst, 'isolate web-01 --reason x')).request;
    clock.advance(1000);
    const r2 = (await create(svc, analyst, 'isolate web-02 --reason x')).request;
    // Where the chat outbox's sender records a posted card (bot/outbox/chat-posts.ts).
    await setChatMessage(tdb.db, r1.id, {
      platform: 'console',
      channelId: 'C-ops',
      messageId: 'm1',
      threadId: 'm1',
    });
    const [row] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, r1.id));
    expect(row).toMatchObject({ chatMessageId: 'm1', chatThreadId: 'm1' });
    expect((await svc.listForUser(analyst.id)).map((v) => v.ref)).toEqual([r2.ref, r1.ref]);
    expect((await failure(svc.getView('R-ZZZZZZ'))).code).toBe('request.not_found');
  });
});
