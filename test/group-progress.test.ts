// An action group's live progress: one message in its thread, edited in place with every count and a bar,
// at most once a second per group whatever the number of results, on the real core with the Slack adapter
// talking to the local Slack stand-in. 1,000 endpoints are rows in the database; their results go through
// the broker's own outbox repository and the delivery reporter, and time is a hand-moved clock.
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import type { ChatContext } from '../bot/ports.ts';
import { progressBar } from '../bot/render/progress.ts';
import { createOutboxRepo } from '../broker/outbox/outbox-repo.ts';
import { actionGroups, deliveries, endpoints, segments } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import type { FakeSlack } from './helpers/fake-slack.ts';
import { createManualTimers, type ManualTimers, until } from './helpers/manual-timers.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';
import { mountSlack } from './helpers/slack-setup.ts';

const TOKEN = 'xoxb-progress-token';
const HOME = 'T0HOME';
const CHANNEL = 'CFLEET';
const ENDPOINTS = 1000;
const fmt = (n: number) => n.toLocaleString('en-US');
const BURST = ENDPOINTS / 10;
const _silent = { info() {}, warn() {}, error() {}, debug() {} };

describe('progress bar', () => {
  it('fills whole cells only and shows the percentage done', () => {
    expect(progressBar(0, 10)).toBe(`[${'░'.repeat(20)}]   0%`);
    expect(progressBar(999, 1000)).toBe(`[${'█'.repeat(19)}░]  99%`);
    expect(progressBar(1000, 1000)).toBe(`[${'█'.repeat(20)}] 100%`);
  });
});

describe.each(drivers)('action group progress (%s)', { timeout: 300_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  let mt: ManualTimers;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    mt = createManualTimers();
    // Read-only work on up to 2,000 endpoints runs without an approval, so the group dispatches at once.
    tp = await buildTestPlatform(tdb, { READ_ONLY_APPROVAL_ABOVE: '2000' }, { timers: mt.port });
    ({ slack, http, adapter } = await mountSlack(tp, {
      signingSecret: 'progress-secret',
      botToken: TOKEN,
      teamId: HOME,
      timers: mt.port,
    }));
    await http.ready();
    await tp.platform.users.mapTenant({ platform: 'slack', tenantId: HOME, orgName: 'home' });
    const ana = await tp.person('ana', ['active_response']);
    await tp.platform.users.linkChatIdentity({
      userId: ana.id,
      platform: 'slack',
      tenantId: HOME,
      chatUserId: 'UANA',
    });
    const [seg] = await tdb.db
      .insert(segments)
      .values({ name: 'fleet', activeResponseEnabled: true })
      .returning();
    const rows = Array.from({ length: ENDPOINTS }, (_, i) => ({
      hostname: `fleet-${String(i + 1).padStart(4, '0')}`,
      os: 'linux' as const,
      agentVersion: '2.0.0',
      segmentId: seg!.id,
    }));
    for (let i = 0; i < rows.length; i += 500) await tdb.db.insert(endpoints).values(rows.slice(i, i + 500));
  });

  afterEach(async () => {
    await adapter?.close();
    await http?.close();
    await slack?.close();
    await tdb?.destroy();
  });

  let eventSeq = 0;
  const ctx = (): ChatContext => ({
    identity: { platform: 'slack', tenantId: HOME, chatUserId: 'UANA' },
    channelId: CHANNEL,
    eventId: `progress-${++eventSeq}`,
  });

  /** Lets the edits a fired timer started reach the Slack stand-in. */
  async function settle() {
    await adapter.idle();
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  }

  it('edits one progress message in place, at most once a second, for a 1,000-endpoint group', async () => {
    await tp.platform.bot.handleCommand(ctx(), 'processes segment:fleet --case IR-9');
    const progressPost = await slack.waitFor(
      (c) => c.method === 'chat.postMessage' && /progress \[/.test(String(c.args.text)),
    );
    const card = slack.callsOf('chat.postMessage')[0]!;
    const cardTs = (card.args.thread_ts as string | undefined) ?? '';
    expect(progressPost.args.thread_ts).toBeDefined();
    expect(cardTs).toBe('');
    expect(String(progressPost.args.text)).toContain(`0 of ${fmt(ENDPOINTS)} done`);
    expect(String(progressPost.args.text)).toContain(`queued ${fmt(ENDPOINTS)}`);
    const [group] = await tdb.db.select().from(actionGroups);
    const requestId = group!.requestId;
    // Where the message lives, as the adapter returned it: every later edit names this ts.
    const progressTs = group!.progressMessageId;
    expect(progressTs).toMatch(/^\d+\.\d+$/);

    // The broker's side: every endpoint's delivery is sent, then results arrive in ten bursts over 2.5 s.
    const repo = createOutboxRepo({
      db: tdb.db,
      audit: tp.platform.audit,
      clock: tp.clock,
      brokerId: 'broker-test',
    });
    const all = await tdb.db
      .select({ id: deliveries.id, endpointId: deliveries.endpointId })
      .from(deliveries)
      .where(eq(deliveries.requestId, requestId));
    expect(all).toHaveLength(ENDPOINTS);
    const sent = await repo.claim(
      all.map((d) => d.endpointId),
      () => false,
    );
    // As the broker does: a batch's events are handed over at once, not one after the other.
    await Promise.all(sent.events.map((e) => tp.platform.reporter.deliveryChanged(e)));
    const start = mt.now();
    let events = 0;
    for (let burst = 0; burst < 10; burst++) {
      const slice = all.slice(burst * BURST, burst * BURST + BURST);
      const out = await repo.recordResults(
        slice.map((d, i) => ({
          endpointId: d.endpointId,
          res: {
            id: d.id,
            ok: !(burst === 3 && i < 7),
            result: { processes: [], total: 0 },
            error: burst === 3 && i < 7 ? 'agent refused' : undefined,
          },
        })),
      );
      const recorded = out.flatMap((r) => (r.status === 'recorded' ? [r.event] : []));
      events += recorded.length;
      await Promise.all(recorded.map((e) => tp.platform.reporter.deliveryChanged(e)));
      mt.advance(250);
      await settle();
    }
    expect(events).toBe(ENDPOINTS);
    await until(async () => {
      mt.advance(500);
      await settle();
      return slack
        .callsOf('chat.update')
        .some(
          (c) =>
            c.args.ts === progressTs &&
            String(c.args.text).includes(`${fmt(ENDPOINTS)} of ${fmt(ENDPOINTS)} done`),
        );
    }, 'the final progress edit');
    const elapsedSeconds = (mt.now() - start) / 1000;

    const edits = slack.callsOf('chat.update').filter((c) => c.args.ts === progressTs);
    // 2,000 delivery events (sent, then a result each) became a handful of edits: one a second at most,
    // plus the one right after the message was posted.
    expect(edits.length).toBeGreaterThanOrEqual(2);
    expect(edits.length).toBeLessThanOrEqual(Math.ceil(elapsedSeconds) + 2);
    const last = String(edits.at(-1)!.args.text);
    expect(last).toContain(`[${'█'.repeat(20)}] 100%`);
    expect(last).toContain(`succeeded ${ENDPOINTS - 7}`);
    expect(last).toContain('failed 7');
    expect(last).toContain('excluded 0');
    // The card itself changed once (to completed), not once per endpoint.
    const cardEdits = slack.callsOf('chat.update').filter((c) => c.args.ts !== progressTs);
    expect(cardEdits.length).toBeLessThanOrEqual(1);
    // The thread: the dispatch note, the progress message and the summary with the results page's link.
    const summary = await slack.waitFor(
      (c) => c.method === 'chat.postMessage' && /completed: /.test(String(c.args.text)),
    );
    expect(String(summary.args.text)).toMatch(/http:\/\/ar\.test\/groups\/R-[0-9A-Z]{6}/);
    expect(slack.callsOf('chat.postMessage').length).toBeLessThanOrEqual(4);

    // `status <group>` shows the same progress on demand.
    const ref = String(summary.args.text).match(/R-[0-9A-Z]{6}/)![0];
    const before = slack.calls.length;
    await tp.platform.bot.handleCommand(ctx(), `status ${ref}`);
    const status = await slack.waitFor((c) => c.method === 'chat.postMessage' && c.seq > before);
    expect(String(status.args.text)).toContain(`${ref} progress [${'█'.repeat(20)}] 100%`);
    expect(String(status.args.text)).toContain(`succeeded ${ENDPOINTS - 7} · failed 7`);
  });
});
