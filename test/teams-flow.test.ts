// The Teams flow on the real core (app/platform.ts) and a real database: the real SDK App receives genuinely
// signed activities on /api/messages and talks to the local stand-in connector, which records every card,
// edit, thread reply and private note. Request to card, the approvers' own view, a click's answer, refusals
// shown only to the clicker, people from another tenant and guests, retries and double clicks.
import { and, eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { actionRequests, approvals, auditLog, deliveries } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  cardAction,
  cardOf,
  messageActivity,
  type Person,
  signedActivity,
  type TeamsCall,
  textOf,
} from './helpers/fake-teams.ts';
import { until } from './helpers/manual-timers.ts';
import { buildTestPlatform, type Person as PlatformPerson, type TestPlatform } from './helpers/platform.ts';
import {
  CHANNEL,
  CLIENT_ID,
  join,
  MDR_TENANT,
  notesIn,
  openNoteAs,
  people,
  seatAnaAndIan,
  startTeamsHarness,
  type TeamsHarness,
} from './helpers/teams-setup.ts';

const GUEST_UPN = 'gus_acme-mdr.example#EXT#@contoso.onmicrosoft.com';
type Card = {
  body?: unknown[];
  actions?: { verb?: string; title?: string; url?: string }[];
  refresh?: { userIds?: string[] };
};

describe.each(drivers)('Teams flow on the real core (%s)', { timeout: 180_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let h: TeamsHarness;
  let ana: PlatformPerson;
  let ian: PlatformPerson;
  let posts = 0;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb);
    h = await startTeamsHarness(tp, {
      maxConcurrentWork: driver === 'pglite' ? 1 : 2,
      // What the core says must reach each click's own answer here, however loaded the machine; the
      // answer budget itself is tested in teams-chat.
      answerWithinMs: 15_000,
    });
    ({ ana, ian } = await seatAnaAndIan(tp, h.teams));
    await tp.endpoint('web-01');
  });

  afterEach(async () => {
    await h.adapter.close();
    await h.http.close();
    await h.teams.close();
    await tdb.destroy();
  });

  const say = (from: Person, text: string, id = String(1_800_000_000_000 + ++posts)) =>
    messageActivity({
      clientId: CLIENT_ID,
      serviceUrl: h.teams.serviceUrl,
      from,
      conversation: CHANNEL,
      text,
      id,
    });

  /** A click on the card `cardId` in thread `thread`; returns the card the clicker's client shows. */
  async function click(
    from: Person,
    verb: string,
    requestId: string,
    at: { cardId: string; thread: string },
    id?: string,
  ) {
    const res = await h.send(
      cardAction({
        clientId: CLIENT_ID,
        serviceUrl: h.teams.serviceUrl,
        from,
        conversation: CHANNEL,
        verb,
        data: { requestId },
        replyToId: at.cardId,
        threadId: at.thread,
        id,
      }),
    );
    expect(res.statusCode).toBe(200);
    const answer = res.json() as { statusCode: number; type: string; value: Card };
    expect(answer.type).toBe('application/vnd.microsoft.card.adaptive');
    return answer.value;
  }

  /** The step-up link a card offers (its "Open the step-up page" button). */
  const linkIn = (text: string) => {
    const url = text.match(/"url":"(https?:\/\/[^"]+\/stepup\/[A-Za-z0-9_-]+)"/)?.[1];
    if (!url) throw new Error(`no step-up link in ${text.slice(0, 300)}`);
    return url;
  };
  const isRequestCard = (c: TeamsCall) =>
    c.kind === 'create' && /digest/.test(JSON.stringify(cardOf(c) ?? {}));
  const threadTexts = (thread: string) =>
    h.teams
      .callsOf('create')
      .filter((c) => c.conversationId === `${CHANNEL.id};messageid=${thread}`)
      .map(textOf)
      .filter(Boolean);

  /**
   * Ana asks for an isolation in a new channel post; when the core asks her to confirm (no step-up window),
   * she opens her private note and confirms. Returns the card's message and the request.
   */
  async function requestIsolation(
    host = 'web-01',
    who: { person: Person; platform: PlatformPerson } = { person: people.ana, platform: ana },
  ) {
    const notesBefore = notesIn(h.teams).length;
    const post = say(who.person, `isolate ${host} --reason "C2 beacon" --case IR-42`);
    await h.send(post);
    const note = notesIn(h.teams)[notesBefore];
    if (note) await tp.stepUp(linkIn(await openNoteAs(h, note, who.person, CHANNEL)), who.platform);
    await h.adapter.idle();
    const card = h.teams.calls.filter(isRequestCard).at(-1);
    if (!card) throw new Error('no request card was posted');
    const [row] = await tdb.db
      .select()
      .from(actionRequests)
      .where(eq(actionRequests.chatMessageId, card.activityId!));
    return { card, requestId: row!.id, at: { cardId: card.activityId!, thread: String(post.id) } };
  }

  it('posts the card in the command’s thread, offers Approve/Deny to approvers only, and dispatches on approval', async () => {
    const { card, requestId, at } = await requestIsolation();
    expect(card.conversationId).toBe(`${CHANNEL.id};messageid=${at.thread}`);
    const shared = cardOf(card) as Card;
    const text = JSON.stringify(shared);
    for (const shown of [
      'isolate',
      'web-01',
      'C2 beacon',
      'IR-42',
      'ana',
      'pending approval',
      '0 of 1',
      'digest',
    ])
      expect(text).toContain(shown);
    // Everyone sees the read-only card; Ian's client is told to ask for his own view.
    expect(shared.actions ?? []).toEqual([]);
    expect(shared.refresh?.userIds).toEqual([people.ian.id]);
    expect(threadTexts(at.thread).join('\n')).toMatch(/ana asked for isolate on web-01/);

    const iansView = await click(people.ian, 'ar.refresh', requestId, at);
    expect(iansView.actions?.map((a) => a.verb)).toEqual(['ar.approve', 'ar.deny']);
    const anasView = await click(people.ana, 'ar.refresh', requestId, at);
    expect(anasView.actions ?? []).toEqual([]);

    // Ian clicks Approve without a step-up window: his answer carries the single-use link, for him only.
    const before = h.teams.calls.length;
    const answer = await click(people.ian, 'ar.approve', requestId, at);
    const link = linkIn(JSON.stringify(answer));
    expect(JSON.stringify(h.teams.calls.slice(before))).not.toContain(link.split('/').pop()!);
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(0);

    await tp.stepUp(link, ian);
    await h.adapter.idle();
    const rows = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, requestId));
    expect(rows.map((r) => r.action)).toEqual(['isolate']);
    const replies = threadTexts(at.thread).join('\n');
    expect(replies).toMatch(/Approved by ian/);
    expect(replies).toMatch(/Dispatched to 1 endpoint/);
    // The card is edited in place: same message, now dispatched, no buttons and no refresh.
    const edit = await h.teams.waitFor(
      (c) =>
        c.kind === 'update' && c.activityId === at.cardId && /dispatched/.test(JSON.stringify(cardOf(c))),
    );
    expect(edit.conversationId).toBe(`${CHANNEL.id};messageid=${at.thread}`);
    const edited = cardOf(edit) as Card;
    expect(edited.actions ?? []).toEqual([]);
    expect(edited.refresh).toBeUndefined();
    expect(JSON.stringify(edited)).toContain('Approved by ian');
  });

  it('refuses the requester approving her own request: shown only to her, nothing posted, nothing changed', async () => {
    await tp.platform.users.grantRole({ userId: ana.id, role: 'approver' });
    const { requestId, at } = await requestIsolation();
    const before = h.teams.calls.filter((c) => c.kind !== 'member').length;
    const answer = await click(people.ana, 'ar.approve', requestId, at);
    expect(JSON.stringify(answer)).toMatch(/You asked for this; another approver must decide/);
    expect(answer.actions ?? []).toEqual([]);
    expect(h.teams.calls.filter((c) => c.kind !== 'member').slice(before)).toEqual([]);
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(0);
  });

  it('refuses someone from another tenant and a guest until their tenant is mapped, and then never as the only approver', async () => {
    join(h.teams, CHANNEL, people.max, { tenantId: MDR_TENANT });
    join(h.teams, CHANNEL, people.gus, { userRole: 'guest', userPrincipalName: GUEST_UPN });
    const { requestId, at } = await requestIsolation();

    // Unmapped: each is told which tenant an admin must map, privately.
    const maxAnswer = JSON.stringify(await click(people.max, 'ar.approve', requestId, at));
    expect(maxAnswer).toContain(MDR_TENANT);
    expect(maxAnswer).toMatch(/not connected to Active Response/);
    const gusAnswer = JSON.stringify(await click(people.gus, 'ar.approve', requestId, at));
    expect(gusAnswer).toContain('guest:acme-mdr.example');
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(0);
    const refusals = await tdb.db.select().from(auditLog).where(eq(auditLog.action, 'identity.refused'));
    expect(refusals.map((r) => (r.details as { tenantId?: string }).tenantId)).toEqual(
      expect.arrayContaining([MDR_TENANT, 'guest:acme-mdr.example']),
    );

    // The admin maps both to the MDR provider's (external) organisation and links the two people.
    const users = tp.platform.users;
    await users.createOrganization({
      name: 'acme-mdr',
      external: true,
      allowedRoles: ['active_response', 'approver'],
    });
    await users.mapTenant({ platform: 'teams', tenantId: MDR_TENANT, orgName: 'acme-mdr' });
    await users.mapTenant({ platform: 'teams', tenantId: 'guest:acme-mdr.example', orgName: 'acme-mdr' });
    const max = await tp.person('max', ['active_response'], { org: 'acme-mdr' });
    const gus = await tp.person('gus', ['approver'], { org: 'acme-mdr' });
    await users.linkChatIdentity({
      userId: max.id,
      platform: 'teams',
      tenantId: MDR_TENANT,
      chatUserId: people.max.aadObjectId,
    });
    await users.linkChatIdentity({
      userId: gus.id,
      platform: 'teams',
      tenantId: 'guest:acme-mdr.example',
      chatUserId: people.gus.aadObjectId,
    });

    // Max's own request is taken, marked external, and needs an in-house approver.
    const mdr = await requestIsolation('web-01', { person: people.max, platform: max });
    const text = JSON.stringify(cardOf(mdr.card));
    expect(text).toContain('max (external)');
    expect(text).toContain('an in-house approver required');
    // Gus is a recognised approver now, but external: he alone cannot approve it.
    const gusTry = JSON.stringify(await click(people.gus, 'ar.approve', mdr.requestId, mdr.at));
    expect(gusTry).toMatch(/an in-house approver must approve it/);
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, mdr.requestId))).toHaveLength(
      0,
    );
    // Ian (in-house) can.
    await tp.stepUp(
      linkIn(JSON.stringify(await click(people.ian, 'ar.approve', mdr.requestId, mdr.at))),
      ian,
    );
    const [row] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, mdr.requestId));
    expect(row!.state).toBe('dispatched');
  });

  it('runs a command once when Teams redelivers the activity', async () => {
    const post = say(people.ana, 'isolate web-01 --reason "C2 beacon"');
    await h.send(post);
    await h.send(post);
    await Promise.all([h.send(post), h.send(post)]);
    expect(await tdb.db.select().from(actionRequests)).toHaveLength(1);
    expect(notesIn(h.teams)).toHaveLength(1);
  });

  it('records one approval and one dispatch for a double click, a redelivered click and the links they sent', async () => {
    const { requestId, at } = await requestIsolation();
    const invoke = (id: string) =>
      signedActivity(
        h.teams.key,
        CLIENT_ID,
        cardAction({
          clientId: CLIENT_ID,
          serviceUrl: h.teams.serviceUrl,
          from: people.ian,
          conversation: CHANNEL,
          verb: 'ar.approve',
          data: { requestId },
          replyToId: at.cardId,
          threadId: at.thread,
          id,
        }),
      );
    // Two clicks arriving together, then Teams redelivering the first one. Each click is answered with a
    // step-up link bound to this request; no click decides anything by itself, and the redelivery is one click.
    const [a, b] = await Promise.all([
      h.http.inject(invoke('f:click-a')),
      h.http.inject(invoke('f:click-b')),
    ]);
    const c = await h.http.inject(invoke('f:click-a'));
    await h.adapter.idle();
    expect([a.statusCode, b.statusCode, c.statusCode]).toEqual([200, 200, 200]);
    const links = [a, b].map((r) => linkIn(JSON.stringify(r.json())));
    expect(new Set(links).size).toBe(2);
    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(0);

    // Ian follows both: the first approves and dispatches, the second finds nothing left to change.
    const first = await tp.stepUp(links[0]!, ian);
    tp.clock.advance(30_000);
    const second = await tp.stepUp(links[1]!, ian);
    expect(first.message).toMatch(/^Approved R-/);
    expect(second.message).toMatch(/You had already approved R-/);
    await h.adapter.idle();

    expect(await tdb.db.select().from(approvals).where(eq(approvals.requestId, requestId))).toHaveLength(1);
    expect(await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, requestId))).toHaveLength(1);
    expect(threadTexts(at.thread).filter((t) => /Approved by ian/.test(t))).toHaveLength(1);
    // A click after that is told, in its own answer, that there is nothing left to decide.
    const late = await h.http.inject(invoke('f:click-d'));
    expect(JSON.stringify(late.json())).toMatch(/already|nothing to decide/);
    expect(JSON.stringify(late.json())).not.toContain('ar.approve');
  });

  it('records a denial with the reason typed on the card, and removes the buttons', async () => {
    const { requestId, at } = await requestIsolation();
    const res = await h.send(
      cardAction({
        clientId: CLIENT_ID,
        serviceUrl: h.teams.serviceUrl,
        from: people.ian,
        conversation: CHANNEL,
        verb: 'ar.deny',
        data: { requestId, reason: 'false positive, the beacon is our scanner' },
        replyToId: at.cardId,
        threadId: at.thread,
      }),
    );
    expect(res.statusCode).toBe(200);
    const [req] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, requestId));
    expect(req!.state).toBe('denied');
    expect(threadTexts(at.thread).join('\n')).toMatch(
      /Denied by ian: false positive, the beacon is our scanner/,
    );
    const edit = await h.teams.waitFor(
      (c) => c.kind === 'update' && c.activityId === at.cardId && /denied/.test(JSON.stringify(cardOf(c))),
    );
    expect((cardOf(edit) as Card).actions ?? []).toEqual([]);
    const rows = await tdb.db
      .select()
      .from(approvals)
      .where(and(eq(approvals.requestId, requestId), eq(approvals.decision, 'deny')));
    expect(rows).toHaveLength(1);
  });

  it('keeps the request when the card cannot be posted, and status shows it', async () => {
    // Ana confirms through a first request, so the next one posts its card straight away.
    await requestIsolation();
    h.teams.fail(500, {
      times: 1,
      when: (c) => c.kind === 'create' && /digest/.test(JSON.stringify(c.body)),
    });
    await tp.endpoint('web-02');
    await h.send(say(people.ana, 'isolate web-02 --reason "second host"'));
    const rows = await tdb.db
      .select()
      .from(actionRequests)
      .where(eq(actionRequests.state, 'pending_approval'));
    const lost = rows.find((r) => JSON.stringify(r.targets).includes('web-02'));
    expect(lost).toBeDefined();
    expect(lost!.chatMessageId).toBeNull();
    // Ana hears privately that the request stands and its card will follow, and `status` shows it.
    expect(await openNoteAs(h, notesIn(h.teams).at(-1)!, people.ana, CHANNEL)).toMatch(
      new RegExp(`${lost!.ref} is recorded \\(pending approval\\), but its card could not be posted yet`),
    );
    await h.send(say(people.ana, `status ${lost!.ref}`));
    const status = h.teams
      .callsOf('create')
      .map(textOf)
      .find((t) => t.includes(lost!.ref));
    expect(status).toMatch(/pending approval/);
    // The chat outbox posts the card on its retry, and the thread hears who asked for what.
    await until(async () => {
      const [row] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, lost!.id));
      return Boolean(row?.chatMessageId);
    }, 'the card posted on retry');
    await h.teams.waitFor((c) => c.kind === 'create' && /asked for isolate on web-02/.test(textOf(c)));
  });
});
