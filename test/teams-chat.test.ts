// The Teams ChatPort and what sits under it, against the local connector stand-in, with time moved by hand:
// the card shows every fact Slack's shows, 429s are retried after Retry-After and nothing is lost, card
// edits go out as they come (the chat outbox paces them), the bot's token never goes to an unknown host,
// tokens are shared, and private notes open for their recipient only.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { renderRequestCard } from '../adapters/teams/cards.ts';
import { createRateLimiter, TeamsApiError } from '../adapters/teams/outbound-gate.ts';
import { createNoteSealer, deriveNoteKey } from '../adapters/teams/private-notes.ts';
import { encodeAddress } from '../adapters/teams/teams-context.ts';
import { createTokenProvider } from '../adapters/teams/token-provider.ts';
import type { ChatContext, ChatMessageRef, RequestView } from '../bot/ports.ts';
import { requestFacts } from '../bot/render/summary.ts';
import { openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { sampleRequestView } from './helpers/fake-slack.ts';
import {
  BOT_SCOPE,
  cardAction,
  cardOf,
  signedActivity,
  startFakeTeams,
  textOf,
} from './helpers/fake-teams.ts';
import { TEST_SECRET_KEY } from './helpers/keys.ts';
import { createManualTimers, type ManualTimers, until } from './helpers/manual-timers.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';
import {
  CHANNEL,
  CLIENT_ID,
  CLIENT_SECRET,
  HOME_TENANT,
  join,
  notesIn,
  openNoteAs,
  people,
  silent,
  startTeamsHarness,
  type TeamsHarness,
} from './helpers/teams-setup.ts';

describe('Teams request card', () => {
  it('shows every fact an approver needs, as Slack and the console do', () => {
    const view = sampleRequestView({
      action: 'kill',
      params: { pid: 4242 },
      note: 'seen by EDR',
      approvalsRequired: 2,
      approvals: [{ approverName: 'Ian_Commander', decision: 'approve', at: new Date(), approverId: 'u9' }],
      progress: { queued: 1, succeeded: 3 },
    });
    const card = JSON.stringify(renderRequestCard(view));
    const plain = (s: string) => s.replace(/\\\\(.)/g, '$1');
    for (const fact of requestFacts(view, 10)) {
      for (const line of fact.value.split('\n')) expect(plain(card)).toContain(line);
    }
    expect(card).toContain('R-7K3QXM · kill pid 4242');
    expect(card).toContain('1 of 2');
    expect(plain(card)).toContain('Approved by Ian_Commander');
    expect(card).toContain('pending approval · queued 1 · succeeded 3');
    expect(card).toContain('"version":"1.5"');
  });

  it('offers Approve and Deny (Action.Execute, request id in the data) only in the deciding view, and refreshes only approvers', () => {
    const view = sampleRequestView();
    const shared = renderRequestCard(view, { refreshUserIds: ['29:1ian'] });
    expect(shared.actions).toBeUndefined();
    expect(shared.refresh?.userIds).toEqual(['29:1ian']);
    expect(shared.refresh?.action).toMatchObject({
      type: 'Action.Execute',
      verb: 'ar.refresh',
      data: { requestId: view.id },
    });
    const deciding = renderRequestCard(view, { decide: true });
    expect(
      deciding.actions?.map((a) => [a.type, (a as { verb?: string }).verb, (a as { data?: unknown }).data]),
    ).toEqual([
      ['Action.Execute', 'ar.approve', { requestId: view.id }],
      ['Action.Execute', 'ar.deny', { requestId: view.id }],
    ]);
    // A decided request shows no buttons and asks nobody to refresh.
    const done = renderRequestCard(
      { ...view, state: 'dispatched' },
      { decide: true, refreshUserIds: ['29:1ian'] },
    );
    expect(done.actions).toBeUndefined();
    expect(done.refresh).toBeUndefined();
  });

  it('shows what people typed as typed, never as Markdown or a link', () => {
    const card = JSON.stringify(
      renderRequestCard(sampleRequestView({ reason: '[click](https://evil.example) *now*' })),
    );
    expect(card).toContain('\\\\[click\\\\](https://evil.example) \\\\*now\\\\*');
  });
});

describe('Teams ChatPort against the connector stand-in', { timeout: 60_000 }, () => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let h: TeamsHarness;
  let timers: ManualTimers;
  let ctx: ChatContext;

  beforeEach(async () => {
    tdb = await openTestDatabase('pglite');
    tp = await buildTestPlatform(tdb);
    timers = createManualTimers();
    h = await startTeamsHarness(tp, { timers: timers.port, random: () => 0 });
    join(h.teams, CHANNEL, people.ana);
    ctx = {
      identity: {
        platform: 'teams',
        tenantId: HOME_TENANT,
        chatUserId: people.ana.aadObjectId,
        displayName: 'Ana',
      },
      channelId: encodeAddress({
        kind: 'channel',
        serviceUrl: h.teams.serviceUrl,
        conversationId: CHANNEL.id,
      }),
      threadId: '1800000000001',
    };
  });

  afterEach(async () => {
    // Let anything still waiting for a slot go out before the stand-in closes.
    while (timers.next()) await new Promise((r) => setImmediate(r));
    await h.adapter.close();
    await h.http.close();
    await h.teams.close();
    await tdb.destroy();
  });

  const ref = (): ChatMessageRef => ({
    platform: 'teams',
    channelId: ctx.channelId,
    messageId: '0',
    threadId: ctx.threadId!,
  });

  it('retries a 429 after the Retry-After the connector asked for, and the message arrives once', async () => {
    h.teams.fail(429, { times: 2, retryAfter: '3', when: (c) => c.kind === 'create' });
    const sent = h.adapter.chat.replyInThread(ref(), 'web-01: isolated from the network');
    await until(() => timers.waiting().includes(3000), 'the first wait');
    timers.next();
    await until(() => timers.waiting().includes(3000), 'the second wait');
    timers.next();
    await sent;
    expect(h.teams.rejected.map((c) => c.status)).toEqual([429, 429]);
    const arrived = h.teams
      .callsOf('create')
      .filter((c) => textOf(c) === 'web-01: isolated from the network');
    expect(arrived).toHaveLength(1);
    expect(arrived[0]!.conversationId).toBe(`${CHANNEL.id};messageid=1800000000001`);
    // Exactly what was asked, plus jitter (none here: the jitter source gives 0).
    expect(h.adapter.gate.retryWaits()).toEqual([3000, 3000]);
  });

  it('gives up on a call that keeps failing, naming the call and never the token; a 400 is not retried', async () => {
    h.teams.fail(503, { times: 5, when: (c) => c.kind === 'create' });
    const failing = h.adapter.chat.replyInThread(ref(), 'never arrives').catch((e: unknown) => e);
    for (let i = 0; i < 4; i++) {
      await until(() => timers.waiting().length > 0, `wait ${i + 1}`);
      timers.next();
    }
    const err = (await failing) as TeamsApiError;
    expect(err).toBeInstanceOf(TeamsApiError);
    expect(err.message).toBe('post to Teams failed: HTTP 503 after 5 attempts');
    expect(JSON.stringify(err)).not.toMatch(/Bearer|eyJ/);

    h.teams.fail(400, { when: (c) => c.kind === 'create' });
    await expect(h.adapter.chat.replyInThread(ref(), 'bad')).rejects.toThrow(
      'post to Teams failed: HTTP 400',
    );
    expect(h.teams.callsOf('create')).toEqual([]);
  });

  it('edits the card in place at once: pacing and coalescing belong to the chat outbox', async () => {
    const view = (done: number): RequestView =>
      sampleRequestView({ state: 'dispatched', progress: { queued: 3 - done, succeeded: done } });
    const card = await h.adapter.chat.postRequestCard(ctx, view(0));
    for (let i = 1; i <= 3; i++) await h.adapter.chat.updateRequestCard(card, view(i));
    const edits = h.teams.callsOf('update');
    expect(edits).toHaveLength(3);
    expect(new Set(edits.map((e) => e.activityId))).toEqual(new Set([card.messageId]));
    expect(JSON.stringify(cardOf(edits.at(-1)))).toContain('🚀 dispatched · succeeded 3');
  });

  it('never sends the bot token to a service URL whose host is not allowed', async () => {
    const elsewhere = { ...ref(), channelId: `channel|https://evil.example/teams|${CHANNEL.id}` };
    await expect(h.adapter.chat.replyInThread(elsewhere, 'hello')).rejects.toThrow(
      /not an allowed service URL/,
    );
    await expect(h.adapter.chat.updateRequestCard(elsewhere, sampleRequestView())).rejects.toThrow(
      /not an allowed service URL/,
    );
    expect(h.teams.calls.filter((c) => c.kind !== 'member')).toEqual([]);
  });
});

describe('Teams card clicks when the core is slow', { timeout: 60_000 }, () => {
  it('answers within the budget with what it last showed, and the late word reaches the clicker privately', async () => {
    const tdb = await openTestDatabase('pglite');
    const tp = await buildTestPlatform(tdb);
    const timers = createManualTimers();
    let release!: () => void;
    const slow = new Promise<void>((r) => {
      release = r;
    });
    let h!: TeamsHarness;
    // A core that takes its time, then tells the clicker something only they may see.
    const bot = {
      ...tp.platform.bot,
      async handleDecision(ctx: ChatContext) {
        await slow;
        await h.adapter.chat.notifyPrivately(ctx, 'You asked for this; another approver must decide.');
      },
    };
    h = await startTeamsHarness(tp, { bot, timers: timers.port, random: () => 0, answerWithinMs: 1500 });
    try {
      join(h.teams, CHANNEL, people.ian);
      const view = sampleRequestView();
      const ctx: ChatContext = {
        identity: { platform: 'teams', tenantId: HOME_TENANT, chatUserId: people.ana.aadObjectId },
        channelId: encodeAddress({
          kind: 'channel',
          serviceUrl: h.teams.serviceUrl,
          conversationId: CHANNEL.id,
        }),
        threadId: '1800000000001',
      };
      const card = await h.adapter.chat.postRequestCard(ctx, view);
      const click = h.http.inject(
        signedActivity(
          h.teams.key,
          CLIENT_ID,
          cardAction({
            clientId: CLIENT_ID,
            serviceUrl: h.teams.serviceUrl,
            from: people.ian,
            conversation: CHANNEL,
            verb: 'ar.approve',
            data: { requestId: view.id },
            replyToId: card.messageId,
            threadId: '1800000000001',
          }),
        ),
      );
      await until(() => timers.waiting().includes(1500), 'the answer budget');
      timers.advance(1500);
      const answer = await click;
      expect(answer.statusCode).toBe(200);
      const shown = JSON.stringify(answer.json());
      expect(shown).toContain('Still working on it');
      expect(shown).toContain('R-7K3QXM · isolate');

      release();
      await h.adapter.idle();
      const note = notesIn(h.teams).at(-1)!;
      expect(await openNoteAs(h, note, people.ian, CHANNEL)).toContain('another approver must decide');
    } finally {
      release();
      await h.adapter.close();
      await h.http.close();
      await h.teams.close();
      await tdb.destroy();
    }
  });
});

describe('Teams rate limits per conversation', () => {
  it('grants sends within 7 a second, 8 in 2 s and 60 in 30 s, in order', async () => {
    const timers = createManualTimers(0);
    const limiter = createRateLimiter({
      timers: timers.port,
      limits: [
        { windowMs: 1_000, max: 7 },
        { windowMs: 2_000, max: 8 },
        { windowMs: 30_000, max: 60 },
      ],
    });
    const granted: number[] = [];
    const order: number[] = [];
    const all = Array.from({ length: 70 }, (_, i) =>
      limiter.acquire('19:c@thread.tacv2').then(() => {
        granted.push(timers.now());
        order.push(i);
      }),
    );
    // Another conversation is not held up by this one.
    let other = false;
    void limiter.acquire('19:other@thread.tacv2').then(() => {
      other = true;
    });
    await Promise.resolve();
    expect(other).toBe(true);
    while (granted.length < 70) {
      timers.next();
      for (let i = 0; i < 3; i++) await Promise.resolve();
    }
    await Promise.all(all);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    const inWindow = (ms: number) =>
      Math.max(...granted.map((t) => granted.filter((u) => u >= t && u < t + ms).length));
    expect(inWindow(1_000)).toBeLessThanOrEqual(7);
    expect(inWindow(2_000)).toBeLessThanOrEqual(8);
    expect(inWindow(30_000)).toBeLessThanOrEqual(60);
    // It does not wait longer than the limits need: 70 sends fit in the third 30-second window.
    expect(granted.at(-1)).toBeLessThan(62_000);
  });
});

describe('Teams bot tokens', { timeout: 30_000 }, () => {
  it('shares one grant among concurrent callers and asks again only shortly before expiry', async () => {
    const teams = await startFakeTeams({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      tenantId: HOME_TENANT,
    });
    try {
      let now = Date.now();
      const tokens = createTokenProvider({
        config: {
          loginEndpoint: teams.identityUrl,
          tenantId: HOME_TENANT,
          clientId: CLIENT_ID,
          clientSecret: CLIENT_SECRET,
        },
        logger: silent,
        nowMs: () => now,
      });
      const got = await Promise.all(Array.from({ length: 20 }, () => tokens.token(BOT_SCOPE)));
      expect(new Set(got).size).toBe(1);
      expect(teams.tokenRequests()).toBe(1);
      now += 50 * 60_000; // 50 of the token's 60 minutes: still fresh
      await tokens.token(BOT_SCOPE);
      expect(teams.tokenRequests()).toBe(1);
      now += 6 * 60_000; // within five minutes of expiry
      await tokens.token(BOT_SCOPE);
      expect(teams.tokenRequests()).toBe(2);
    } finally {
      await teams.close();
    }
  });
});

describe('Teams private notes', () => {
  it('open for their recipient only, and not at all once tampered with', () => {
    const notes = createNoteSealer(deriveNoteKey(TEST_SECRET_KEY));
    const sealed = notes.seal(people.ana.aadObjectId, 'Confirm R-7K3QXM: https://ar.test/stepup/abc');
    expect(sealed).not.toContain('stepup');
    expect(notes.open(sealed, people.ana.aadObjectId.toUpperCase())).toBe(
      'Confirm R-7K3QXM: https://ar.test/stepup/abc',
    );
    expect(notes.open(sealed, people.ian.aadObjectId)).toBeUndefined();
    const tampered = `${sealed.slice(0, -2)}${sealed.at(-2) === 'A' ? 'B' : 'A'}${sealed.at(-1)}`;
    expect(notes.open(tampered, people.ana.aadObjectId)).toBeUndefined();
    const otherKey = createNoteSealer(deriveNoteKey(Buffer.alloc(32, 9)));
    expect(otherKey.open(sealed, people.ana.aadObjectId)).toBeUndefined();
  });
});
