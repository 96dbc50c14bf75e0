// What the Teams suites share: the real adapter (adapters/teams) on a Fastify app with the real core, wired
// to the local stand-in of Microsoft's services, plus the people and conversations the tests talk in.
import type { FastifyInstance } from 'fastify';
import { registerTeams, type TeamsAdapter, type TeamsDeps } from '../../adapters/teams/teams-plugin.ts';
import { buildHttpApp } from '../../app/http-app.ts';
import { createInteractionInbox } from '../../bot/inbox/interaction-inbox.ts';
import {
  type Conversation,
  cardAction,
  cardOf,
  type FakeTeams,
  type Person,
  signedActivity,
  startFakeTeams,
} from './fake-teams.ts';
import type { TestPlatform } from './platform.ts';

export const CLIENT_ID = '5c1f0a4e-7b7e-4d7c-9a43-0e2f5d3b8a11';
export const CLIENT_SECRET = 'teams-test-client-secret';
export const HOME_TENANT = '9f3b2c1d-0a4e-4b5f-8c6d-7e8f9a0b1c2d';
export const MDR_TENANT = '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d';

export const CHANNEL: Conversation = {
  id: '19:incident0a1b2c3d@thread.tacv2',
  type: 'channel',
  tenantId: HOME_TENANT,
};
export const GROUP_CHAT: Conversation = {
  id: '19:war-room0a1b2c3d@thread.v2',
  type: 'groupChat',
  tenantId: HOME_TENANT,
};

export const people = {
  ana: { id: '29:1ana', aadObjectId: 'a1a1a1a1-0000-4000-8000-00000000000a', name: 'Ana Analyst' },
  ian: { id: '29:1ian', aadObjectId: 'b2b2b2b2-0000-4000-8000-00000000000b', name: 'Ian Commander' },
  // An MDR analyst from their own tenant, in a shared channel.
  max: { id: '29:1max', aadObjectId: 'c3c3c3c3-0000-4000-8000-00000000000c', name: 'Max MDR' },
  // A B2B guest from the MDR provider, living in the host's directory.
  gus: { id: '29:1gus', aadObjectId: 'd4d4d4d4-0000-4000-8000-00000000000d', name: 'Gus Guest' },
} satisfies Record<string, Person>;

export const silent = { info() {}, warn() {}, error() {}, debug() {} };

export interface TeamsHarness {
  teams: FakeTeams;
  http: FastifyInstance;
  adapter: TeamsAdapter;
  /** POSTs `activity`, genuinely signed, to /api/messages; waits for the adapter's background work. */
  send(activity: Record<string, unknown>): Promise<{ statusCode: number; body: string; json(): unknown }>;
}

export async function startTeamsHarness(
  tp: TestPlatform,
  overrides: Partial<TeamsDeps> = {},
  /** Mounts more on the same server before it is ready (the step-up pages). */
  mountAlso?: (http: FastifyInstance) => Promise<void>,
): Promise<TeamsHarness> {
  const teams = await startFakeTeams({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    tenantId: HOME_TENANT,
  });
  const http = buildHttpApp();
  const bot = overrides.bot ?? tp.platform.bot;
  const adapter = await registerTeams(http, {
    bot,
    // As in production, commands and clicks go through the durable inbox, which hands them to the same core.
    inbox: createInteractionInbox({ db: tp.platform.db, bot, clock: tp.clock, logger: silent }),
    logger: silent,
    config: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, tenantId: HOME_TENANT, cloud: teams.cloud },
    views: (id) => tp.platform.requests.getView(id),
    approvers: () => tp.platform.users.chatIdentitiesWithRole('teams', 'approver'),
    secretKey: tp.platform.secretKey,
    maxConcurrentWork: 1,
    ...overrides,
  });
  tp.platform.router.register('teams', adapter.chat);
  await mountAlso?.(http);
  await http.ready();
  return {
    teams,
    http,
    adapter,
    async send(activity) {
      const res = await http.inject(signedActivity(teams.key, CLIENT_ID, activity));
      await adapter.idle();
      return res;
    },
  };
}

/** Adds `person` to `conversation` at the stand-in, with their own tenant and role. */
export function join(
  teams: FakeTeams,
  conversation: Conversation,
  person: Person,
  opts: { tenantId?: string; userRole?: 'user' | 'guest'; userPrincipalName?: string } = {},
) {
  teams.addMember(conversation.id, {
    ...person,
    tenantId: opts.tenantId ?? conversation.tenantId,
    userRole: opts.userRole ?? 'user',
    userPrincipalName:
      opts.userPrincipalName ?? `${person.name.split(' ')[0]!.toLowerCase()}@contoso.example`,
  });
}

/**
 * Ana (active_response) and Ian (approver) in the home tenant, each linked to their Teams user and a member
 * of CHANNEL at the stand-in.
 */
export async function seatAnaAndIan(tp: TestPlatform, teams: FakeTeams) {
  const users = tp.platform.users;
  await users.mapTenant({ platform: 'teams', tenantId: HOME_TENANT, orgName: 'home' });
  const ana = await tp.person('ana', ['active_response']);
  const ian = await tp.person('ian', ['approver']);
  for (const [p, who] of [
    [ana, people.ana],
    [ian, people.ian],
  ] as const) {
    await users.linkChatIdentity({
      userId: p.id,
      platform: 'teams',
      tenantId: HOME_TENANT,
      chatUserId: who.aadObjectId,
    });
    join(teams, CHANNEL, who);
  }
  return { ana, ian };
}

/**
 * What `viewer` sees of a private note card: their client asks the bot (a signed `ar.note` refresh) and
 * shows the card it answers with. Returns the card's text.
 */
export async function openNoteAs(
  h: TeamsHarness,
  call: { body?: Record<string, unknown>; conversationId: string; activityId?: string },
  viewer: Person,
  conversation: Conversation,
): Promise<string> {
  const card = cardOf(call);
  const refresh = (
    card?.refresh as { action?: { verb?: string; data?: Record<string, unknown> } } | undefined
  )?.action;
  if (refresh?.verb !== 'ar.note') throw new Error('not a private note card');
  const thread = /;messageid=(.+)$/.exec(call.conversationId)?.[1];
  const res = await h.send(
    cardAction({
      clientId: CLIENT_ID,
      serviceUrl: h.teams.serviceUrl,
      from: viewer,
      conversation,
      verb: 'ar.note',
      data: refresh.data ?? {},
      replyToId: call.activityId,
      threadId: thread,
      trigger: 'automatic',
    }),
  );
  if (res.statusCode !== 200) throw new Error(`the note refresh was answered with ${res.statusCode}`);
  return JSON.stringify((res.json() as { value?: unknown }).value ?? {});
}

/** Private notes (sealed cards) posted so far, newest last. */
export const notesIn = (teams: FakeTeams) =>
  teams
    .callsOf('create')
    .filter((c) => (cardOf(c)?.refresh as { action?: { verb?: string } })?.action?.verb === 'ar.note');
