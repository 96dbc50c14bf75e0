// Authority bound to its purpose, through the real core and the console chat: each attack the review
// described, performed as described, and refused (and audited). A step-up for the history approves and
// grants nothing; links are judged by who their owner is when they are used; cancel is for the request's own
// people; external organisations read their own requests only.
import { randomUUID } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { approvals, auditLog, deliveries, files, roleGrants, sessions } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';

describe.each(drivers)('authority in chat on %s', (driver) => {
  let tdb: TestDatabase;
  let t: TestPlatform;
  let analyst: Person;
  let commander: Person;
  let root: Person;
  let boss: Person;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    t = await buildTestPlatform(tdb);
    analyst = await t.person('analyst', ['active_response']);
    commander = await t.person('commander', ['active_response', 'approver']);
    root = await t.person('root', ['active_response', 'admin']);
    boss = await t.person('boss', ['admin']);
    await t.endpoint('web-01', 'linux');
  });
  afterEach(async () => {
    await tdb.destroy();
  });

  const lastPrivate = (to: string) =>
    t.chat.transcript.findLast((m) => m.kind === 'private' && m.to === to)?.text ?? '';
  /** A step-up the way the page does it, on the next 30-second step (each code is accepted once). */
  const stepUp = (url: string, p: Person) => {
    t.clock.advance(30_000);
    return t.stepUp(url, p);
  };
  const roles = async (name: string) => (await t.platform.users.getUser(name)).roles.sort();
  const stepUpRecords = async (userId: string) =>
    (await t.platform.audit.list({ actorId: userId, actionPrefix: 'stepup.attempt' })).reverse();

  /** `analyst` asks for isolation and confirms it; returns the pending request's ref and id. */
  async function pendingIsolation() {
    await t.say('analyst', 'isolate web-01 --reason "C2 beacon" --case IR-42');
    const done = await stepUp(t.lastLinkFor('analyst'), analyst);
    return done.request!;
  }

  /** The same, approved by commander through his own step-up: dispatched, deliveries queued. */
  async function dispatchedIsolation() {
    const view = await pendingIsolation();
    await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: view.ref, decision: 'approve' });
    const approved = await stepUp(t.lastLinkFor('commander'), commander);
    expect(approved.request?.state).toBe('dispatched');
    return approved.request!;
  }

  it('does not let a step-up made to read the history approve a request or change a role', async () => {
    const view = await pendingIsolation();
    await t.say('commander', 'history');
    await stepUp(t.lastLinkFor('commander'), commander);
    const historyLink = t.lastLinkFor('commander');
    // One click on Approve with the history window open: a new link for this request, no approval.
    await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: view.ref, decision: 'approve' });
    expect(lastPrivate('commander')).toMatch(new RegExp(`Approving ${view.ref} .* needs a fresh step-up`));
    expect(t.lastLinkFor('commander')).not.toBe(historyLink);
    expect(await tdb.db.select().from(approvals)).toHaveLength(0);
    expect((await t.platform.requests.getView(view.id)).state).toBe('pending_approval');

    await t.say('root', 'history');
    await stepUp(t.lastLinkFor('root'), root);
    await t.say('root', 'grant analyst approver');
    expect(lastPrivate('root')).toMatch(
      /Changing roles needs a fresh step-up \(grant approver for analyst\)/,
    );
    expect(await roles('analyst')).toEqual(['active_response']);

    // The link bound to the decision does it.
    await stepUp(t.lastLinkFor('root'), root);
    expect(await roles('analyst')).toEqual(['active_response', 'approver']);
  });

  it('makes a grant link minted before a demotion worthless: revoking ends the links, and the use re-checks', async () => {
    await t.say('root', 'grant analyst admin');
    const preMinted = t.lastLinkFor('root');
    await t.say('root', 'grant commander admin');
    const another = t.lastLinkFor('root');
    await t.say('boss', 'revoke root admin');
    await stepUp(t.lastLinkFor('boss'), boss);
    expect(await roles('root')).toEqual(['active_response']);
    const [revoked] = await t.platform.audit.list({ actionPrefix: 'role.revoked' });
    expect(revoked!.details).toMatchObject({ username: 'root', role: 'admin', closedLinks: 2 });

    await expect(stepUp(preMinted, root)).rejects.toMatchObject({ code: 'stepup.link_expired' });
    await expect(stepUp(another, root)).rejects.toMatchObject({ code: 'stepup.link_expired' });
    expect(await roles('analyst')).toEqual(['active_response']);
    expect(await roles('commander')).toEqual(['active_response', 'approver']);
    expect((await stepUpRecords(root.id)).at(-1)).toMatchObject({
      outcome: 'refused',
      details: { reason: 'link_expired', purpose: 'grant' },
    });

    // A link that escaped the revoke (the grant row removed behind the service's back) is re-checked when
    // it is used, inside the transaction that would apply it, and the refusal is audited.
    await t.say('boss', 'grant root admin');
    await stepUp(t.lastLinkFor('boss'), boss);
    await t.say('root', 'grant commander admin');
    const survivor = t.lastLinkFor('root');
    await tdb.db
      .update(roleGrants)
      .set({ revokedAt: t.clock.now() })
      .where(and(eq(roleGrants.userId, root.id), eq(roleGrants.role, 'admin')));
    await expect(stepUp(survivor, root)).rejects.toMatchObject({ code: 'role.actor_not_admin' });
    expect(await roles('commander')).toEqual(['active_response', 'approver']);
    expect((await stepUpRecords(root.id)).at(-1)).toMatchObject({
      outcome: 'refused',
      details: { reason: 'not_allowed', error: 'role.actor_not_admin', purpose: 'grant' },
    });
  });

  it('re-checks an approver and a session starter when their link is used, not when it was sent', async () => {
    await t.say('analyst', 'session start web-01 --reason "look around"');
    const sessionLink = t.lastLinkFor('analyst');
    const view = await pendingIsolation();
    await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: view.ref, decision: 'approve' });
    const approveLink = t.lastLinkFor('commander');
    // Both lose the role the link relied on, without the link being revoked with it.
    await tdb.db
      .update(roleGrants)
      .set({ revokedAt: t.clock.now() })
      .where(and(eq(roleGrants.userId, commander.id), eq(roleGrants.role, 'approver')));
    await tdb.db
      .update(roleGrants)
      .set({ revokedAt: t.clock.now() })
      .where(eq(roleGrants.userId, analyst.id));
    await expect(stepUp(approveLink, commander)).rejects.toMatchObject({ code: 'approval.no_role' });
    await expect(stepUp(sessionLink, analyst)).rejects.toMatchObject({ code: 'policy.no_role' });
    expect(await tdb.db.select().from(approvals)).toHaveLength(0);
    expect(await tdb.db.select().from(sessions)).toHaveLength(0);
    expect((await stepUpRecords(commander.id)).at(-1)).toMatchObject({
      outcome: 'refused',
      details: { reason: 'not_allowed', error: 'approval.no_role' },
    });
  });

  it('refuses a cancel by an approver of nothing, and after dispatch cancels only through a step-up', async () => {
    const view = await dispatchedIsolation();
    const deputy = await t.person('deputy', ['active_response', 'approver']);
    await t.say('deputy', `cancel ${view.ref}`);
    expect(lastPrivate('deputy')).toMatch(
      /Only the person who asked for R-\w+, its approvers or an in-house admin/,
    );
    const [refused] = await t.platform.audit.list({ actionPrefix: 'request.cancel_refused' });
    expect(refused).toMatchObject({ actorId: deputy.id, outcome: 'refused', requestId: view.id });

    // The requester may, but after dispatch a cancel is confirmed like an approval.
    await t.say('analyst', `cancel ${view.ref}`);
    expect(lastPrivate('analyst')).toMatch(/already dispatched, so cancelling .* needs a fresh step-up/);
    const queued = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, view.id));
    expect(queued.map((d) => d.state)).toEqual(['queued']);
    const done = await stepUp(t.lastLinkFor('analyst'), analyst);
    expect(done.message).toMatch(/Cancelled R-\w+: 1 queued delivery withdrawn/);
    const after = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, view.id));
    expect(after.map((d) => d.state)).toEqual(['cancelled']);
    expect(
      t.chat.transcript.some(
        (m) => m.kind === 'thread' && /Cancelled by analyst: 1 queued delivery/.test(m.text),
      ),
    ).toBe(true);
  });

  it('keeps an external organisation to its own requests: no cancel, status, audit or download of in-house ones', async () => {
    await t.platform.users.createOrganization({
      name: 'mdr',
      external: true,
      allowedRoles: ['active_response', 'approver'],
    });
    await t.platform.users.mapTenant({ platform: 'console', tenantId: 'tenant-mdr', orgName: 'mdr' });
    const mdrLead = await t.person('mdr-lead', ['active_response', 'approver'], { org: 'mdr' });
    const inHouse = await dispatchedIsolation();
    await t.say('mdr-lead', `cancel ${inHouse.ref}`, 'tenant-mdr');
    expect(lastPrivate('mdr-lead')).toMatch(/asked for in-house; only in-house people can cancel it/);
    const queued = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, inHouse.id));
    expect(queued.map((d) => d.state)).toEqual(['queued']);
    // The endpoint's queue shows them none of the in-house work waiting on it.
    await t.say('mdr-lead', 'queue web-01', 'tenant-mdr');
    expect(t.chat.transcript.findLast((m) => m.kind === 'reply')?.text).toBe(
      'web-01 (offline) has nothing queued.',
    );
    await t.say('analyst', 'queue web-01');
    expect(t.chat.transcript.findLast((m) => m.kind === 'reply')?.text).toContain(inHouse.ref);

    await t.say('mdr-lead', `status ${inHouse.ref}`, 'tenant-mdr');
    expect(lastPrivate('mdr-lead')).toMatch(/not one of your organisation's requests/);
    await t.say('mdr-lead', `audit ${inHouse.ref}`, 'tenant-mdr');
    expect(lastPrivate('mdr-lead')).toMatch(/not one of your organisation's requests/);
    await t.say('mdr-lead', 'audit analyst', 'tenant-mdr');
    expect(lastPrivate('mdr-lead')).toMatch(/neither an enrolled endpoint, a user nor a request ref/);

    // Their own request, and everything they may read, shows; nothing of the in-house one does.
    await t.say('mdr-lead', 'isolate web-01 --reason "seen by MDR"', 'tenant-mdr');
    const own = (await stepUp(t.lastLinkFor('mdr-lead'), mdrLead)).request!;
    await t.say('mdr-lead', 'audit', 'tenant-mdr');
    const listing = t.chat.transcript.findLast(
      (m) => m.kind === 'reply' && /Latest audit records/.test(m.text),
    );
    expect(listing?.text).toContain(own.ref);
    expect(listing?.text).not.toContain(inHouse.ref);
    expect(listing?.text).not.toMatch(/ by (analyst|commander|root|boss)\b/);
    await t.say('mdr-lead', `status ${own.ref}`, 'tenant-mdr');
    expect(t.chat.transcript.findLast((m) => m.kind === 'reply')?.text).toMatch(
      new RegExp(`^${own.ref}: isolate`),
    );

    const [evidence] = await tdb.db
      .insert(files)
      .values({
        kind: 'fetched',
        name: 'dump.bin',
        size: 4,
        sha256: 'ab'.repeat(32),
        storageKey: randomUUID(),
        requestId: inHouse.id,
      })
      .returning();
    await t.say('mdr-lead', `download ${evidence!.id}`, 'tenant-mdr');
    expect(lastPrivate('mdr-lead')).toMatch(/only its requester, its approvers and in-house admins/);
    const refusals = await tdb.db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, 'file.download'), eq(auditLog.actorId, mdrLead.id)));
    expect(refusals).toEqual([
      expect.objectContaining({
        outcome: 'refused',
        details: expect.objectContaining({ reason: 'file.not_yours' }),
      }),
    ]);
    await t.say('analyst', `download ${evidence!.id}`);
    expect(lastPrivate('analyst')).toMatch(/Download dump\.bin .*\/stepup\//);
  });

  it('keeps the reason and case of a session, on the step-up path and in chat, up to the full 2,000 characters', async () => {
    const long = `triage ${'x'.repeat(1992)}`;
    expect(long).toHaveLength(1999);
    await t.say('analyst', `session start web-01 --reason "${long}" --case IR-42`);
    await stepUp(t.lastLinkFor('analyst'), analyst);
    await t.say('analyst', 'session stop web-01');
    // With the requester's step-up still live, the next session opens at once and keeps its reason too.
    await t.say('analyst', 'session start web-01 --reason "second look" --case IR-43');
    const rows = await tdb.db.select().from(sessions).orderBy(sessions.caseId);
    expect(rows.map((r) => [r.reason, r.caseId])).toEqual([
      [long, 'IR-42'],
      ['second look', 'IR-43'],
    ]);
    const started = await t.platform.audit.list({ actionPrefix: 'session.started' });
    expect(started.map((r) => (r.details as { caseId: string }).caseId).sort()).toEqual(['IR-42', 'IR-43']);
  });
});
