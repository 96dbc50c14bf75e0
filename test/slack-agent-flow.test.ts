// The Slack flow end to end with a real agent: /ar isolate in Slack, the requester's and the approver's
// step-ups, the outbox, the broker's mTLS link to a real agent process (agent/main.ts with --dry-run, so the
// test machine is never actually isolated), and the result coming back as a thread reply and a card edit.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { desc, eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { actionRequests, deliveries } from '../db/schema.ts';
import {
  type AgentProcess,
  enrolAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  buttonClick,
  type FakeSlack,
  type SlackCall,
  signedRequest,
  slashCommand,
} from './helpers/fake-slack.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';
import { mountSlack } from './helpers/slack-setup.ts';

const SECRET = 'agent-flow-secret';
const TOKEN = 'xoxb-agent-flow';
const HOME = 'T0HOME';
const CHANNEL = 'CINCIDENT';
const _silent = { info() {}, warn() {}, error() {}, debug() {} };

describe.each(drivers)('Slack flow with a real agent (%s)', { timeout: 240_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let tb: TestBroker;
  let agent: AgentProcess | undefined;
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  let unfollow: (() => Promise<void>) | undefined;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
    // Wall-clock start: the broker checks delivery expiry against its own clock. The broker's file store is
    // the platform's, so `put` finds library files.
    tp = await buildTestPlatform(tdb, {}, { startAt: new Date(), fileStore: tb.fileStore });
    ({ slack, http, adapter } = await mountSlack(tp, {
      signingSecret: SECRET,
      botToken: TOKEN,
      teamId: HOME,
    }));
    await http.ready();
    // Delivery progress reaches chat the way it does in production: the broker NOTIFYs, the platform listens.
    unfollow = await tp.platform.followDeliveries();
  });

  afterEach(async () => {
    await unfollow?.();
    await agent?.kill();
    await adapter.close();
    await http.close();
    await slack.close();
    await tb.stop();
    await tdb.destroy();
  });

  const ephemeralTo = (user: string) =>
    slack
      .callsOf('chat.postEphemeral')
      .filter((c) => c.args.user === user)
      .at(-1);
  const linkIn = (c: SlackCall | undefined) => {
    const url = String(c?.args.text ?? '').match(/https?:\/\/\S+\/stepup\/[A-Za-z0-9_-]+/)?.[0];
    if (!url) throw new Error(`no step-up link in ${JSON.stringify(c?.args.text)}`);
    return url;
  };

  /** People linked to Slack users in the home workspace: Ana asks, Ian approves. */
  async function people() {
    const users = tp.platform.users;
    await users.mapTenant({ platform: 'slack', tenantId: HOME, orgName: 'home' });
    const ana = await tp.person('ana', ['active_response']);
    const ian = await tp.person('ian', ['approver']);
    await users.linkChatIdentity({ userId: ana.id, platform: 'slack', tenantId: HOME, chatUserId: 'UANA' });
    await users.linkChatIdentity({ userId: ian.id, platform: 'slack', tenantId: HOME, chatUserId: 'UIAN' });
    return { ana, ian };
  }

  /**
   * `/ar <text>` by Ana, her step-up, the card, Ian's Approve click and his step-up, as Slack delivers them.
   * Resolves to the request row and the card's ts once the request completed and its notice is in the thread.
   */
  async function throughSlack(text: string, who: Awaited<ReturnType<typeof people>>) {
    const cmd = slashCommand({ text, user: 'UANA', team: HOME, channel: CHANNEL });
    expect((await http.inject(signedRequest(SECRET, cmd))).statusCode).toBe(200);
    await adapter.idle();
    await tp.stepUp(linkIn(ephemeralTo('UANA')), who.ana);
    const [request] = await tdb.db
      .select()
      .from(actionRequests)
      .orderBy(desc(actionRequests.createdAt))
      .limit(1);
    const ts = request!.chatMessageId!;
    const click = buttonClick({
      actionId: 'ar_approve',
      value: request!.id,
      user: 'UIAN',
      userTeam: HOME,
      team: HOME,
      channel: CHANNEL,
      messageTs: ts,
    });
    expect((await http.inject(signedRequest(SECRET, click))).statusCode).toBe(200);
    await adapter.idle();
    await tp.stepUp(linkIn(ephemeralTo('UIAN')), who.ian);
    await slack.waitFor(
      (c) =>
        c.method === 'chat.postMessage' && c.args.thread_ts === ts && /completed/.test(String(c.args.text)),
      90_000,
    );
    const thread = slack
      .callsOf('chat.postMessage')
      .filter((c) => c.args.thread_ts === ts)
      .map((c) => String(c.args.text));
    const card = slack.callsOf('chat.postMessage').find((c) => c.args.ts === ts || c.args.blocks)!;
    return { request: request!, ts, thread, card };
  }

  it('kills a process by a long name through Slack: the decoy is gone and the thread says which', async () => {
    const who = await people();
    const stateDir = tempDir('ar-agent-').dir;
    const sandbox = join(stateDir, 'sandbox');
    mkdirSync(join(sandbox, 'bin'), { recursive: true });
    const enrolled = await enrolAgent(tb, tdb, 'web-01', ['--sandbox', sandbox]);
    agent = enrolled.agent;
    const name = 'coinminer-xmrig-helper';
    copyFileSync('/bin/sleep', join(sandbox, 'bin', name));
    const decoy = spawn(join(sandbox, 'bin', name), ['600'], { cwd: sandbox, stdio: 'ignore' });
    const gone = new Promise((r) => decoy.once('exit', r));

    const { thread } = await throughSlack(`kill web-01 ${name} --reason "miner"`, who);
    await gone;
    expect(thread.join('\n')).toContain(`web-01: killed 1 process (${decoy.pid} coinminer-xmrig-helper)`);
    const cardBlocks = JSON.stringify(
      slack.callsOf('chat.postMessage').find((c) => Array.isArray(c.args.blocks))!.args.blocks,
    );
    expect(cardBlocks).toContain('Process name');
    expect(cardBlocks).toContain(name);
  });

  it('puts a library file through Slack: written with the approved SHA-256 shown on the card', async () => {
    const who = await people();
    const stateDir = tempDir('ar-agent-').dir;
    const sandbox = join(stateDir, 'sandbox');
    mkdirSync(sandbox, { recursive: true });
    const enrolled = await enrolAgent(tb, tdb, 'web-01', ['--sandbox', sandbox]);
    agent = enrolled.agent;
    const content = Buffer.from('#!/bin/sh\necho fixed\n');
    const sha = createHash('sha256').update(content).digest('hex');
    await tp.platform.library.add({
      name: 'fix.sh',
      source: Readable.from([content]),
      actor: { type: 'system', id: 'test' },
    });
    const dest = join(sandbox, 'fix.sh');

    const { thread } = await throughSlack(`put web-01 fix.sh ${dest} --reason "patch"`, who);
    expect(createHash('sha256').update(readFileSync(dest)).digest('hex')).toBe(sha);
    expect(thread.join('\n')).toContain(`web-01: wrote ${dest} — ${content.length} bytes, sha256 ${sha}`);
    const cardBlocks = JSON.stringify(
      slack.callsOf('chat.postMessage').find((c) => Array.isArray(c.args.blocks))!.args.blocks,
    );
    expect(cardBlocks).toContain(sha);
    expect(cardBlocks).toContain('fix.sh');
  });

  it('isolates web-01 through Slack: card, approval, step-ups, agent result in the thread, card completed', async () => {
    const users = tp.platform.users;
    await users.mapTenant({ platform: 'slack', tenantId: HOME, orgName: 'home' });
    const ana = await tp.person('ana', ['active_response']);
    const ian = await tp.person('ian', ['approver']);
    await users.linkChatIdentity({ userId: ana.id, platform: 'slack', tenantId: HOME, chatUserId: 'UANA' });
    await users.linkChatIdentity({ userId: ian.id, platform: 'slack', tenantId: HOME, chatUserId: 'UIAN' });
    const enrolled = await enrolAgent(tb, tdb, 'web-01', ['--dry-run']);
    agent = enrolled.agent;

    const cmd = slashCommand({
      text: 'isolate web-01 --reason "C2 beacon" --case IR-42',
      user: 'UANA',
      team: HOME,
      channel: CHANNEL,
    });
    expect((await http.inject(signedRequest(SECRET, cmd))).statusCode).toBe(200);
    await adapter.idle();
    await tp.stepUp(linkIn(ephemeralTo('UANA')), ana);

    const card = slack.callsOf('chat.postMessage').find((c) => Array.isArray(c.args.blocks));
    const [request] = await tdb.db.select().from(actionRequests);
    expect(card).toBeDefined();
    const ts = request!.chatMessageId!;

    const click = buttonClick({
      actionId: 'ar_approve',
      value: request!.id,
      user: 'UIAN',
      userTeam: HOME,
      team: HOME,
      channel: CHANNEL,
      messageTs: ts,
    });
    expect((await http.inject(signedRequest(SECRET, click))).statusCode).toBe(200);
    await adapter.idle();
    await tp.stepUp(linkIn(ephemeralTo('UIAN')), ian);

    // The agent runs the isolation (dry run) and reports; the result comes back into the card's thread.
    const result = await slack.waitFor(
      (c) =>
        c.method === 'chat.postMessage' &&
        c.args.thread_ts === ts &&
        /web-01: isolated from the network/.test(String(c.args.text)),
      90_000,
    );
    expect(result.args.channel).toBe(CHANNEL);
    await slack.waitFor(
      (c) =>
        c.method === 'chat.postMessage' && c.args.thread_ts === ts && /completed/.test(String(c.args.text)),
      30_000,
    );
    const [delivery] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, request!.id));
    expect(delivery!.state).toBe('succeeded');
    await waitFor(async () => {
      const [row] = await tdb.db.select().from(actionRequests).where(eq(actionRequests.id, request!.id));
      return row!.state === 'completed';
    }, 'the request to complete');
    // The card's last edit shows the finished state and no buttons.
    const edit = await slack.waitFor(
      (c) =>
        c.method === 'chat.update' && c.args.ts === ts && /completed/.test(JSON.stringify(c.args.blocks)),
      10_000,
    );
    expect((edit.args.blocks as { type: string }[]).some((b) => b.type === 'actions')).toBe(false);
  });
});
