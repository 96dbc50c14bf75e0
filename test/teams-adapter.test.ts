// The Teams adapter at its front door: the real SDK App mounted on the platform's Fastify server, with
// activities genuinely signed (RS256) and posted to /api/messages, tokens from the local identity stand-in,
// and every outbound call recorded by the stand-in connector. Authentication refusals, what the SDK's own
// environment variables may not change, commands by @mention in each kind of conversation, and the token
// endpoint asked once for many sends.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { registerTeams } from '../adapters/teams/teams-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import { auditLog, processedEvents } from '../db/schema.ts';
import { openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  type Conversation,
  cardAction,
  messageActivity,
  signedActivity,
  testKey,
  textOf,
} from './helpers/fake-teams.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';
import {
  CHANNEL,
  CLIENT_ID,
  CLIENT_SECRET,
  GROUP_CHAT,
  HOME_TENANT,
  join,
  notesIn,
  openNoteAs,
  people,
  silent,
  startTeamsHarness,
  type TeamsHarness,
} from './helpers/teams-setup.ts';

describe('Teams adapter: the messaging endpoint', { timeout: 60_000 }, () => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let h: TeamsHarness;

  beforeEach(async () => {
    tdb = await openTestDatabase('pglite');
    tp = await buildTestPlatform(tdb);
    h = await startTeamsHarness(tp);
    await tp.platform.users.mapTenant({ platform: 'teams', tenantId: HOME_TENANT, orgName: 'home' });
    const ana = await tp.person('ana', ['active_response']);
    await tp.platform.users.linkChatIdentity({
      userId: ana.id,
      platform: 'teams',
      tenantId: HOME_TENANT,
      chatUserId: people.ana.aadObjectId,
    });
    join(h.teams, CHANNEL, people.ana);
    join(h.teams, GROUP_CHAT, people.ana);
  });

  afterEach(async () => {
    await h.adapter.close();
    await h.http.close();
    await h.teams.close();
    await tdb.destroy();
  });

  const say = (
    text: string,
    conversation: Conversation = CHANNEL,
    extra: Partial<Parameters<typeof messageActivity>[0]> = {},
  ) =>
    messageActivity({
      clientId: CLIENT_ID,
      serviceUrl: h.teams.serviceUrl,
      from: people.ana,
      conversation,
      text,
      ...extra,
    });

  it('refuses with 401, before any handler runs: no token, a wrong key, audience or issuer, an expired token, a service URL mismatch', async () => {
    const activity = say('help');
    const stranger = testKey('stranger');
    const attempts = {
      'no token': signedActivity(h.teams.key, CLIENT_ID, activity, { token: null }),
      'not a JWT': signedActivity(h.teams.key, CLIENT_ID, activity, { token: 'abc.def.ghi' }),
      'wrong key': signedActivity(stranger, CLIENT_ID, activity),
      'wrong audience': signedActivity(h.teams.key, CLIENT_ID, activity, { aud: 'someone-elses-bot' }),
      'wrong issuer': signedActivity(h.teams.key, CLIENT_ID, activity, { iss: 'https://evil.example' }),
      // Beyond the SDK's 300 s clock tolerance.
      expired: signedActivity(h.teams.key, CLIENT_ID, activity, { expiresInS: -600 }),
      'service URL mismatch': signedActivity(h.teams.key, CLIENT_ID, activity, {
        serviceUrl: 'https://smba.trafficmanager.net/emea/',
      }),
      'no service URL claim': signedActivity(h.teams.key, CLIENT_ID, activity, { serviceUrl: null }),
      'activity without a service URL': signedActivity(h.teams.key, CLIENT_ID, {
        ...activity,
        serviceUrl: undefined,
      }),
      'service URL host not allowed': signedActivity(h.teams.key, CLIENT_ID, {
        ...activity,
        serviceUrl: 'https://evil.example/teams',
      }),
    };
    for (const [why, req] of Object.entries(attempts)) {
      const res = await h.http.inject(req);
      expect(res.statusCode, why).toBe(401);
    }
    await h.adapter.idle();
    expect(h.teams.calls).toEqual([]);
    expect(await tdb.db.select().from(processedEvents)).toEqual([]);
    const commands = (await tdb.db.select().from(auditLog)).filter((r) => r.action.startsWith('command'));
    expect(commands).toEqual([]);
  });

  it('takes a burst of genuine activities signed with a key it has not seen yet (after a restart)', async () => {
    const burst = Array.from({ length: 30 }, (_, i) =>
      h.http.inject(
        signedActivity(
          h.teams.key,
          CLIENT_ID,
          say('help', CHANNEL, { id: `17000000005${String(i).padStart(2, '0')}` }),
        ),
      ),
    );
    expect((await Promise.all(burst)).map((r) => r.statusCode)).toEqual(Array(30).fill(200));
    await h.adapter.idle();
  });

  it('does not let tokens with made-up key ids turn into a stream of key fetches', async () => {
    // A genuine activity first: its key id is known good from then on.
    expect((await h.send(say('help', CHANNEL, { id: '1700000000900' }))).statusCode).toBe(200);
    const fetches = h.teams.keyFetches();
    for (let i = 0; i < 30; i++) {
      const forged = signedActivity(testKey(`made-up-${i}`), CLIENT_ID, say('help'));
      expect((await h.http.inject(forged)).statusCode).toBe(401);
    }
    expect(h.teams.keyFetches() - fetches).toBeLessThanOrEqual(10);
    // Genuine activities still get through.
    expect((await h.send(say('help', CHANNEL, { id: '1700000000901' }))).statusCode).toBe(200);
  });

  it('answers a signed @mention in a channel at once and replies in the same thread', async () => {
    const activity = say('help', CHANNEL, { id: '1700000000001' });
    const res = await h.send(activity);
    expect(res.statusCode).toBe(200);
    const reply = h.teams.callsOf('create').find((c) => /isolate/.test(textOf(c)));
    expect(reply?.conversationId).toBe(`${CHANNEL.id};messageid=1700000000001`);
    expect(reply?.body?.textFormat).toBe('plain');
  });

  it('takes commands in a reply inside a thread, in a group chat, and in a personal chat without a mention', async () => {
    await h.send(say('help', CHANNEL, { id: '1700000000010', threadId: '1700000000002' }));
    expect(h.teams.callsOf('create').at(-1)?.conversationId).toBe(`${CHANNEL.id};messageid=1700000000002`);

    await h.send(say('help', GROUP_CHAT));
    expect(h.teams.callsOf('create').at(-1)?.conversationId).toBe(GROUP_CHAT.id);

    const personal: Conversation = {
      id: 'a:1personal-chat-with-ana',
      type: 'personal',
      tenantId: HOME_TENANT,
    };
    join(h.teams, personal, people.ana);
    await h.send(say('help', personal, { mention: false }));
    const last = h.teams.callsOf('create').at(-1);
    expect(last?.conversationId).toBe(personal.id);
    expect(textOf(last!)).toMatch(/isolate/);
  });

  it('ignores channel messages that do not mention the bot, and its own messages', async () => {
    await h.send(say('help', CHANNEL, { mention: false }));
    await h.send({ ...say('help'), from: { id: `28:${CLIENT_ID}`, name: 'Active Response' } });
    expect(h.teams.callsOf('create')).toEqual([]);
  });

  it('strips the mention and reads what was typed: quotes, entities and a phone’s em dash', async () => {
    await h.send(say('isolate web-99 —reason &quot;C2 beacon&quot;'));
    // The grammar understood the option and the quoted reason; web-99 is simply unknown here, which the
    // core tells Ana privately.
    const [note] = notesIn(h.teams);
    expect(await openNoteAs(h, note!, people.ana, CHANNEL)).toMatch(/web-99/);
    const refused = (await tdb.db.select().from(auditLog)).filter((r) => r.action === 'command.rejected');
    expect(refused).toEqual([]);
  });

  it('answers a click on a card whose request does not exist with a notice, not an error', async () => {
    const res = await h.send(
      cardAction({
        clientId: CLIENT_ID,
        serviceUrl: h.teams.serviceUrl,
        from: people.ana,
        conversation: CHANNEL,
        verb: 'ar.refresh',
        data: { requestId: 'R-NOSUCH' },
      }),
    );
    expect(res.statusCode).toBe(200);
    const answer = res.json() as { statusCode: number; value: unknown };
    expect(answer.statusCode).toBe(200);
    expect(JSON.stringify(answer.value)).toContain('R-NOSUCH');
  });

  it('asks the token endpoint once for many sends', async () => {
    expect(h.teams.tokenRequests()).toBe(1); // at start, to check the credentials
    for (let i = 0; i < 12; i++)
      await h.send(say('help', CHANNEL, { id: `17000000001${String(i).padStart(2, '0')}` }));
    expect(h.teams.callsOf('create').length).toBeGreaterThanOrEqual(12);
    expect(h.teams.tokenRequests()).toBe(1);
    expect(h.teams.refusedAuth()).toBe(0);
  });
});

describe('Teams adapter: configuration it will not take from elsewhere', { timeout: 60_000 }, () => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let h: TeamsHarness;
  const saved: Record<string, string | undefined> = {};
  const HOSTILE = {
    DANGEROUSLY_ALLOW_UNAUTHENTICATED_REQUESTS: 'true',
    CLIENT_ID: '00000000-0000-0000-0000-000000000000',
    CLIENT_SECRET: 'from-the-environment',
    TENANT_ID: '00000000-0000-0000-0000-000000000001',
    CLOUD: 'China',
    SERVICE_URL: 'https://evil.example',
    LOG_LEVEL: 'trace',
  };

  beforeEach(async () => {
    for (const [k, v] of Object.entries(HOSTILE)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
    tdb = await openTestDatabase('pglite');
    tp = await buildTestPlatform(tdb);
    h = await startTeamsHarness(tp);
  });

  afterEach(async () => {
    for (const k of Object.keys(HOSTILE)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    await h.adapter.close();
    await h.http.close();
    await h.teams.close();
    await tdb.destroy();
  });

  it("keeps the SDK's environment variables from turning authentication off or changing credentials", async () => {
    const activity = messageActivity({
      clientId: CLIENT_ID,
      serviceUrl: h.teams.serviceUrl,
      from: people.ana,
      conversation: CHANNEL,
      text: 'help',
    });
    const unsigned = signedActivity(h.teams.key, CLIENT_ID, activity, { token: null });
    expect((await h.http.inject(unsigned)).statusCode).toBe(401);
    // Our provider (client id and secret from our config) got the token; nothing went to SERVICE_URL.
    expect(h.teams.tokenRequests()).toBe(1);
    await h.send(activity);
    expect(h.teams.refusedAuth()).toBe(0);
  });

  it('refuses to start with a wrong client secret, with Entra’s own error and without the secret', async () => {
    const http = buildHttpApp();
    const wrong = 'definitely-not-the-secret';
    await expect(
      registerTeams(http, {
        bot: tp.platform.bot,
        logger: silent,
        config: { clientId: CLIENT_ID, clientSecret: wrong, tenantId: HOME_TENANT, cloud: h.teams.cloud },
        views: (id) => tp.platform.requests.getView(id),
        approvers: async () => [],
        secretKey: tp.platform.secretKey,
      }),
    ).rejects.toThrow(/invalid_client: AADSTS7000215.*TEAMS_CLIENT_SECRET/s);
    await expect(
      registerTeams(http, {
        bot: tp.platform.bot,
        logger: silent,
        config: { clientId: CLIENT_ID, clientSecret: wrong, tenantId: HOME_TENANT, cloud: h.teams.cloud },
        views: (id) => tp.platform.requests.getView(id),
        approvers: async () => [],
        secretKey: tp.platform.secretKey,
      }),
    ).rejects.not.toThrow(new RegExp(wrong));
    await http.close();
    expect(CLIENT_SECRET).not.toBe(wrong);
  });
});
