// The life of an action through the real core and the console chat: request, requester step-up, card,
// approval by someone else with their own step-up, dispatch into the outbox, and the audit trail.
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { actionRequests, approvals, deliveries } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';

describe.each(drivers)('console chat flow on %s', (driver) => {
  let tdb: TestDatabase;
  let t: TestPlatform;
  let analyst: Person;
  let commander: Person;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    t = await buildTestPlatform(tdb);
    analyst = await t.person('analyst', ['active_response']);
    commander = await t.person('commander', ['active_response', 'approver']);
    await t.endpoint('web-01', 'linux');
    await t.endpoint('mac-03', 'macos');
  });
  afterEach(async () => {
    await tdb.destroy();
  });

  const card = () => t.chat.transcript.find((m) => m.kind === 'card');

  async function requestToPending() {
    await t.say('analyst', 'isolate web-01 mac-03 --reason "C2 beacon" --case IR-42');
    await t.stepUp(t.lastLinkFor('analyst'), analyst);
    const c = card();
    expect(c?.view?.state).toBe('pending_approval');
    return c!.view!;
  }

  it('takes an isolate request to a pending approval card after the requester steps up', async () => {
    await t.say('analyst', 'isolate web-01 mac-03 --reason "C2 beacon" --case IR-42');
    expect(card()).toBeUndefined();
    expect(t.chat.transcript.find((m) => m.kind === 'reply')?.text).toMatch(/waiting for analyst to confirm/);
    const outcome = await t.stepUp(t.lastLinkFor('analyst'), analyst);
    expect(outcome.message).toMatch(/Confirmed R-/);
    const view = card()!.view!;
    expect(view).toMatchObject({
      state: 'pending_approval',
      action: 'isolate',
      caseId: 'IR-42',
      approvalsRequired: 1,
    });
    expect(view.targets.map((x) => x.hostname)).toEqual(['web-01']);
    expect(view.exclusions).toEqual([
      expect.objectContaining({ hostname: 'mac-03', reason: expect.stringMatching(/macOS/) }),
    ]);
    expect(card()!.text).toMatch(/\[Approve\] \[Deny\]/);
  });

  it('refuses the requester approving their own request, privately, and changes nothing', async () => {
    const view = await requestToPending();
    await t.platform.bot.handleDecision(t.ctx('analyst'), { requestId: view.ref, decision: 'approve' });
    const refusal = t.chat.transcript.findLast((m) => m.kind === 'private' && m.to === 'analyst');
    expect(refusal?.text).toMatch(/You asked for this/);
    expect(await tdb.db.select().from(approvals)).toHaveLength(0);
    expect((await t.platform.requests.getView(view.id)).state).toBe('pending_approval');
  });

  it('dispatches once after an approver steps up, whatever double clicks and retries do', async () => {
    const view = await requestToPending();
    const click = t.ctx('commander');
    await t.platform.bot.handleDecision(click, { requestId: view.ref, decision: 'approve' });
    const link = t.lastLinkFor('commander');
    const outcome = await t.stepUp(link, commander);
    expect(outcome.message).toMatch(/Approved/);

    // A retry of the same click, a second click and the used link again: none adds anything.
    await t.platform.bot.handleDecision(click, { requestId: view.ref, decision: 'approve' });
    await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: view.ref, decision: 'approve' });
    await expect(t.stepUp(link, commander)).rejects.toMatchObject({ code: 'stepup.link_used' });

    expect(await tdb.db.select().from(approvals)).toHaveLength(1);
    const rows = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, view.id));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ action: 'isolate', state: 'queued' });
    expect(card()!.view!.state).toBe('dispatched');
    const thread = t.chat.transcript.filter((m) => m.kind === 'thread').map((m) => m.text);
    expect(thread).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/Approved by commander/),
        expect.stringMatching(/Dispatched to 1 endpoint/),
      ]),
    );
    await expect(t.platform.audit.verify()).resolves.toMatchObject({ ok: true });
  });

  it('records a denial with its reason and never dispatches', async () => {
    const view = await requestToPending();
    await t.say('commander', `deny ${view.ref} --reason "wrong host"`);
    expect(card()!.view!.state).toBe('denied');
    expect(
      t.chat.transcript.some((m) => m.kind === 'thread' && /Denied by commander: wrong host/.test(m.text)),
    ).toBe(true);
    expect(await tdb.db.select().from(deliveries)).toHaveLength(0);
  });

  it('expires an undecided request after the approval TTL and says so on the card', async () => {
    const view = await requestToPending();
    t.clock.advance(61 * 60 * 1000);
    await t.platform.sweep();
    expect(card()!.view!.state).toBe('expired');
    expect(t.chat.transcript.some((m) => m.kind === 'thread' && /expired: nobody decided/.test(m.text))).toBe(
      true,
    );
    await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: view.ref, decision: 'approve' });
    expect(t.chat.transcript.findLast((m) => m.kind === 'private' && m.to === 'commander')?.text).toMatch(
      /expired/i,
    );
    expect(await tdb.db.select().from(deliveries)).toHaveLength(0);
  });

  it('answers bad input privately with the right form and stores nothing', async () => {
    await t.say('analyst', 'isolate --reason');
    await t.say('analyst', 'frobnicate web-01');
    const privates = t.chat.transcript.filter((m) => m.kind === 'private').map((m) => m.text);
    expect(privates).toHaveLength(2);
    expect(privates[1]).toMatch(/frobnicate/);
    expect(await tdb.db.select().from(actionRequests)).toHaveLength(0);
    const rejected = await t.platform.audit.list({ actionPrefix: 'command.rejected' });
    expect(rejected).toHaveLength(2);
  });

  it('refuses an unknown chat identity and audits the refusal', async () => {
    await t.say('mallory', 'isolate web-01 --reason x');
    expect(t.chat.transcript.find((m) => m.kind === 'private' && m.to === 'mallory')?.text).toMatch(/admin/i);
    expect(await t.platform.audit.list({ actionPrefix: 'identity.refused' })).toHaveLength(1);
    expect(await tdb.db.select().from(actionRequests)).toHaveLength(0);
  });

  it('handles a redelivered event once', async () => {
    const ctx = t.ctx('analyst');
    await t.platform.bot.handleCommand(ctx, 'isolate web-01 --reason "dup"');
    await t.platform.bot.handleCommand(ctx, 'isolate web-01 --reason "dup"');
    expect(await tdb.db.select().from(actionRequests)).toHaveLength(1);
  });

  it('opens a session only after step-up and audits its start and stop', async () => {
    await t.say('analyst', 'session start web-01');
    await t.stepUp(t.lastLinkFor('analyst'), analyst);
    expect(t.chat.transcript.some((m) => /session with web-01 started/.test(m.text))).toBe(true);
    await t.say('analyst', 'session stop web-01');
    const actions = (await t.platform.audit.list({ actionPrefix: 'session.' })).map((r) => r.action);
    expect(actions.sort()).toEqual(['session.started', 'session.stopped']);
  });
});
