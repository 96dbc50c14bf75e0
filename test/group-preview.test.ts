// The preview an approver sees before a group runs: how many targets run it at once (online), how many wait
// in the outbox (offline), and every exclusion grouped by reason with the first names of each group, on the
// Slack card (through the local Slack stand-in), the console card and the approve page, which links to a
// page listing every endpoint under the same link rules.
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SlackAdapter } from '../adapters/slack/slack-plugin.ts';
import { endpoints, segments } from '../db/schema.ts';
import { registerStepUpPages } from '../web-stepup/stepup-plugin.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { type FakeSlack, type SlackCall, signedRequest, slashCommand } from './helpers/fake-slack.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';
import { mountSlack } from './helpers/slack-setup.ts';

const SECRET = 'preview-signing-secret';
const TOKEN = 'xoxb-preview-token';
const HOME = 'T0HOME';
const CHANNEL = 'CINCIDENT';
const _silent = { info() {}, warn() {}, error() {}, debug() {} };
const COMMAND =
  'run tidy web-01 ws-02 old-04 lab-05 ghost-09 os:macos --canary 1 --rate 30/min --halt-at 20% --reason "clean up" --case IR-9';
const WAVES = 'canary of 1 first, the rest only once it succeeded, 30 a minute; halts at 20% failed';
const MACS = ['mac-01', 'mac-02', 'mac-03', 'mac-04', 'mac-05', 'mac-06', 'mac-07'];

describe.each(drivers)('group preview on %s', { timeout: 180_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let slack: FakeSlack;
  let http: FastifyInstance;
  let adapter: SlackAdapter;
  let ana: Person;
  let ian: Person;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb);
    ({ slack, http, adapter } = await mountSlack(tp, {
      signingSecret: SECRET,
      botToken: TOKEN,
      teamId: HOME,
    }));
    const p = tp.platform;
    await registerStepUpPages(http, {
      bot: p.bot,
      stepup: p.stepup,
      users: p.users,
      audit: p.audit,
      fileStore: {
        put: async () => ({ key: '', size: 0, sha256: '' }),
        open: async () => {
          throw new Error('none');
        },
        remove: async () => {},
      },
      library: p.library,
      db: p.db,
      clock: p.clock,
      config: {
        publicUrl: 'http://ar.test',
        secureCookies: false,
        secretKey: p.secretKey,
        maxLibraryFileBytes: 1024,
      },
    });
    await http.ready();
    await p.users.mapTenant({ platform: 'slack', tenantId: HOME, orgName: 'home' });
    ana = await tp.person('ana', ['active_response']);
    ian = await tp.person('ian', ['approver']);
    await p.users.linkChatIdentity({ userId: ana.id, platform: 'slack', tenantId: HOME, chatUserId: 'UANA' });

    await tdb.db.insert(segments).values({ name: 'lab', activeResponseEnabled: false });
    const web = await tp.endpoint('web-01');
    await tp.endpoint('ws-02');
    await tp.endpoint('old-04', 'linux', 'servers', '1.0.0');
    await tp.endpoint('lab-05', 'linux', 'lab');
    for (const m of MACS) await tp.endpoint(m, 'macos');
    // web-01's agent holds a broker connection; every other endpoint is offline.
    await tdb.db.update(endpoints).set({ brokerId: 'broker-a' }).where(eq(endpoints.id, web.id));
    await p.scripts.upsert({ name: 'tidy', body: 'print("tidy")\n', description: 'changes things' });
    // Slow on a loaded machine: the first test of a worker migrates the database it copies from.
  }, 120_000);

  afterEach(async () => {
    await adapter.close();
    await http.close();
    await slack.close();
    await tdb.destroy();
  });

  const isCard = (c: SlackCall) => c.method === 'chat.postMessage' && Array.isArray(c.args.blocks);
  const linkIn = (text: string) => {
    const url = text.match(/https?:\/\/\S+\/stepup\/[A-Za-z0-9_-]+/)?.[0];
    if (!url) throw new Error(`no step-up link in ${text}`);
    return url;
  };

  it('lists exclusions by OS, agent version and segment with their counts on the Slack card, within its limits', async () => {
    const res = await http.inject(
      signedRequest(SECRET, slashCommand({ text: COMMAND, user: 'UANA', team: HOME, channel: CHANNEL })),
    );
    expect(res.statusCode).toBe(200);
    await adapter.idle();
    const link = slack.callsOf('chat.postEphemeral').at(-1);
    await tp.stepUp(linkIn(String(link?.args.text)), ana);
    const card = await slack.waitFor(isCard);
    const blocks = card.args.blocks as {
      type: string;
      text?: { text: string };
      fields?: { text: string }[];
    }[];
    const fields = blocks.flatMap((b) => b.fields ?? []).map((f) => f.text);
    expect(fields).toContain(
      '*Preview*\n1 run it now (online) · 1 offline, queued until they connect · 10 excluded',
    );
    // The approver sees how it will go out: the canary, the pace and the halt threshold.
    expect(fields).toContain(`*Waves*\n${WAVES}`);
    const excluded = blocks.find((b) => b.text?.text.startsWith('*Excluded (10)*'))?.text?.text;
    expect(excluded?.split('\n')).toEqual([
      '*Excluded (10)*',
      '• OS not supported (7): mac-01, mac-02, mac-03, mac-04, mac-05, … and 2 more (macOS is not supported for actions, scripts or action groups)',
      '• Agent older than the minimum version (1): old-04 (upgrade the sensor, then ask again)',
      '• Segment not enabled for Active Response (1): lab-05',
      '• Unknown host (1): ghost-09',
      '• Every endpoint and exclusion is listed on the approval page (Approve sends you its link).',
    ]);
    // Slack's limits: 50 blocks, 3,000 characters a section, 2,000 a field.
    expect(blocks.length).toBeLessThanOrEqual(50);
    for (const b of blocks) expect((b.text?.text ?? '').length).toBeLessThanOrEqual(3000);
    for (const f of fields) expect(f.length).toBeLessThanOrEqual(2000);
  });

  it('shows the same preview and groups on the console card', async () => {
    await tp.say('ana', COMMAND);
    await tp.stepUp(tp.lastLinkFor('ana'), ana);
    const card = tp.chat.transcript.find((m) => m.kind === 'card');
    expect(card?.view?.presence).toEqual({ online: 1, offline: 1 });
    const text = card!.text;
    expect(text).toContain(
      'Preview: 1 run it now (online) · 1 offline, queued until they connect · 10 excluded',
    );
    expect(text).toContain(
      'Excluded (10): OS not supported (7): mac-01, mac-02, mac-03, mac-04, mac-05, mac-06, mac-07 (macOS is not supported for actions, scripts or action groups)',
    );
    expect(text).toContain('Agent older than the minimum version (1): old-04');
    expect(text).toContain('Segment not enabled for Active Response (1): lab-05');
    expect(text).toContain('Unknown host (1): ghost-09');
    expect(text).toContain(`Waves: ${WAVES}`);
  });

  it('lists every endpoint on a page behind the approval link, and refuses it once the link is used', async () => {
    await tp.say('ana', COMMAND);
    await tp.stepUp(tp.lastLinkFor('ana'), ana);
    const ref = tp.chat.transcript.find((m) => m.kind === 'card')!.view!.ref;
    await tp.say('ian', `approve ${ref}`);
    const path = new URL(tp.lastLinkFor('ian')).pathname;

    const page = await http.inject({ method: 'GET', url: path });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain(`href="${path}/endpoints"`);
    expect(page.body).toContain('OS not supported (7)');
    expect(page.body).toContain(WAVES);

    const list = await http.inject({ method: 'GET', url: `${path}/endpoints` });
    expect(list.statusCode).toBe(200);
    expect(list.body).toMatch(
      /Run it now: online \(1\)<\/h2>\s*<ul class="hosts"><li><span class="host">web-01<\/span>/,
    );
    expect(list.body).toMatch(
      /Offline: queued until they connect \(1\)<\/h2>\s*<ul class="hosts"><li><span class="host">ws-02<\/span>/,
    );
    for (const m of MACS)
      expect(list.body).toContain(`<span class="host">${m}</span>: macOS is not supported for run tidy`);
    expect(list.body).toContain('<span class="host">old-04</span>: agent 1.0.0 &lt; required 1.5.0');

    expect(
      (await http.inject({ method: 'GET', url: '/stepup/not-a-real-token-at-all/endpoints' })).statusCode,
    ).toBe(404);
    await tp.stepUp(`http://ar.test${path}`, ian);
    expect((await http.inject({ method: 'GET', url: `${path}/endpoints` })).statusCode).toBe(410);
  });
});
