// Answer latency of the Teams adapter: genuinely signed activities (RS256, as Bot Framework sends them) at
// POST /api/messages on the shared Fastify server, with the real SDK validating each token and the real core
// doing its work (identity lookups, request rows, step-up links, replies and cards to the stand-in). The
// stand-in for Microsoft (identity and connector) runs in its own process and the load generator on its own
// thread, as both are remote in production. The floor is a bare Fastify route on the same machine taking the
// same bodies, so the figures read against what the stack costs with no adapter at all.
//
// Prints, per database: p50/p99 of the HTTP answer for @mention commands and for card clicks (Action.Execute
// approvals, whose answer carries the clicker's card), card edits sent for N progress events, and how many
// client-credentials grants were made.
//
//   npm run bench:teams            (PGlite; BENCH_TOTAL=500 by default)
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:teams
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { Worker } from 'node:worker_threads';
import Fastify from 'fastify';
import { encodeAddress } from '../adapters/teams/teams-context.ts';
import { registerTeams } from '../adapters/teams/teams-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import type { RequestView } from '../bot/ports.ts';
import { actionRequests } from '../db/schema.ts';
import { type Driver, drivers, openTestDatabase } from '../test/helpers/db.ts';
import { cardAction, keyFromPem, messageActivity, signedActivity } from '../test/helpers/fake-teams.ts';
import { buildTestPlatform } from '../test/helpers/platform.ts';
import { CHANNEL, CLIENT_ID, CLIENT_SECRET, HOME_TENANT, people } from '../test/helpers/teams-setup.ts';

const TOTAL = Number(process.env.BENCH_TOTAL ?? 500);
const CLICKS = Math.min(TOTAL, Number(process.env.BENCH_CLICKS ?? 200));
const PROGRESS_EVENTS = 100;
/**
 * Commands are spread over this many channels (incidents in parallel): Teams paces each conversation at
 * 60 sends in 30 s, which the adapter obeys, so one channel alone would measure Teams' limit, not ours.
 */
const CHANNELS = 10;
const channel = (i: number) => ({ ...CHANNEL, id: CHANNEL.id.replace('@', `-${i % CHANNELS}@`) });
const IN_FLIGHT = 50;
const WARMUP = 50;
const silent = { info() {}, warn() {}, error() {}, debug() {} };

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const key = keyFromPem('fake-teams-key', PEM);

type Req = ReturnType<typeof signedActivity>;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** The load generator, on its own thread: IN_FLIGHT concurrent senders, time to the whole answer. */
const CLIENT = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const { baseUrl, reqs, inFlight } = workerData;
  const latencies = [];
  let next = 0;
  let failures = 0;
  async function sender() {
    while (next < reqs.length) {
      const req = reqs[next++];
      const t0 = performance.now();
      const res = await fetch(baseUrl + req.url, { method: 'POST', headers: req.headers, body: req.payload });
      await res.arrayBuffer();
      latencies.push(performance.now() - t0);
      if (res.status !== 200) failures++;
    }
  }
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, sender));
  parentPort.postMessage({ latencies, failures, wallMs: performance.now() - t0 });
})();
`;

interface Run {
  latencies: number[];
  failures: number;
  wallMs: number;
}

async function drive(baseUrl: string, reqs: Req[]): Promise<Run> {
  const worker = new Worker(CLIENT, { eval: true, workerData: { baseUrl, reqs, inFlight: IN_FLIGHT } });
  const r = await new Promise<Run>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await worker.terminate();
  return { ...r, latencies: r.latencies.sort((a, b) => a - b) };
}

function report(label: string, r: Run, extra = '') {
  const l = r.latencies;
  console.log(
    `${label.padEnd(40)} p50 ${percentile(l, 50).toFixed(1).padStart(7)} ms   p99 ${percentile(l, 99).toFixed(1).padStart(7)} ms   max ${l.at(-1)!.toFixed(1).padStart(7)} ms   ${(l.length / (r.wallMs / 1000)).toFixed(0).padStart(5)} req/s   non-200: ${r.failures}${extra}`,
  );
  return percentile(l, 99);
}

/** Microsoft's side in a child process; resolves with its URLs and a stop function. */
async function startRemoteTeams() {
  const code = `import { startFakeTeams } from './test/helpers/fake-teams.ts';
const t = await startFakeTeams({ clientId: '${CLIENT_ID}', clientSecret: '${CLIENT_SECRET}', tenantId: '${HOME_TENANT}', privateKeyPem: process.env.BENCH_KEY });
for (const [conv, who] of JSON.parse(process.env.BENCH_MEMBERS)) t.addMember(conv, who);
process.stdin.on('data', (b) => { if (String(b).trim() === 'tokens') console.log(JSON.stringify({ tokens: t.tokenRequests(), updates: t.callsOf('update').length })); });
console.log(JSON.stringify(t.cloud));`;
  const members = Array.from({ length: CHANNELS }, (_, i) => [
    [channel(i).id, { ...people.ana, tenantId: HOME_TENANT, userRole: 'user' }],
    [channel(i).id, { ...people.ian, tenantId: HOME_TENANT, userRole: 'user' }],
  ]).flat();
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, BENCH_KEY: PEM, BENCH_MEMBERS: JSON.stringify(members) },
  });
  const lines = createInterface({ input: child.stdout! });
  const [first] = (await once(lines, 'line')) as [string];
  return {
    cloud: JSON.parse(first) as {
      name: 'Public';
      loginEndpoint: string;
      openIdMetadataUrl: string;
      serviceUrl: string;
    },
    async counters(): Promise<{ tokens: number; updates: number }> {
      child.stdin!.write('tokens\n');
      const [line] = (await once(lines, 'line')) as [string];
      return JSON.parse(line);
    },
    async stop() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

const mention = (serviceUrl: string, i: number) =>
  signedActivity(
    key,
    CLIENT_ID,
    messageActivity({
      clientId: CLIENT_ID,
      serviceUrl,
      from: people.ana,
      conversation: channel(i),
      text: `isolate web-01 --reason bench-${i}`,
      id: String(1_800_000_000_000 + i),
    }),
  );

async function floor(serviceUrl: string) {
  const app = Fastify({ logger: false });
  app.post('/api/messages', async () => ({}));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  await drive(
    url,
    Array.from({ length: WARMUP }, (_, i) => mention(serviceUrl, i)),
  );
  const p99 = report(
    'floor (bare Fastify route)',
    await drive(
      url,
      Array.from({ length: TOTAL }, (_, i) => mention(serviceUrl, i)),
    ),
  );
  await app.close();
  return p99;
}

async function run(driver: Driver, remote: Awaited<ReturnType<typeof startRemoteTeams>>, floorP99: number) {
  const tdb = await openTestDatabase(driver);
  const tp = await buildTestPlatform(tdb);
  const http = buildHttpApp();
  const adapter = await registerTeams(http, {
    bot: tp.platform.bot,
    // As npm start runs it: each interaction is recorded in the durable inbox before its answer.
    inbox: tp.platform.inbox,
    logger: silent,
    config: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, tenantId: HOME_TENANT, cloud: remote.cloud },
    views: (id) => tp.platform.requests.getView(id),
    approvers: () => tp.platform.users.chatIdentitiesWithRole('teams', 'approver'),
    secretKey: tp.platform.secretKey,
    maxConcurrentWork: driver === 'pglite' ? 1 : 2,
  });
  tp.platform.router.register('teams', adapter.chat);
  const users = tp.platform.users;
  await users.mapTenant({ platform: 'teams', tenantId: HOME_TENANT, orgName: 'home' });
  const ana = await tp.person('ana', ['active_response']);
  const ian = await tp.person('ian', ['approver']);
  await users.linkChatIdentity({
    userId: ana.id,
    platform: 'teams',
    tenantId: HOME_TENANT,
    chatUserId: people.ana.aadObjectId,
  });
  await users.linkChatIdentity({
    userId: ian.id,
    platform: 'teams',
    tenantId: HOME_TENANT,
    chatUserId: people.ian.aadObjectId,
  });
  // Ana's step-up window is open, so each command posts its card (the core's full path).
  const challenge = await tp.platform.stepup.createChallenge({
    userId: ana.id,
    purpose: 'history',
    subject: 'bench',
  });
  await tp.stepUp(challenge.url, ana);
  await tp.endpoint('web-01');
  const url = await http.listen({ host: '127.0.0.1', port: 0 });
  const serviceUrl = remote.cloud.serviceUrl;

  await drive(
    url,
    Array.from({ length: WARMUP }, (_, i) => mention(serviceUrl, 100_000 + i)),
  );
  await adapter.idle();
  const messages = await drive(
    url,
    Array.from({ length: TOTAL }, (_, i) => mention(serviceUrl, i)),
  );
  const t0 = performance.now();
  await adapter.idle();
  const tailMs = performance.now() - t0;
  const stored = await tdb.db
    .select({ id: actionRequests.id, msg: actionRequests.chatMessageId, thread: actionRequests.chatThreadId })
    .from(actionRequests);
  const p99m = report(
    `@mention commands on ${driver}`,
    messages,
    `   (${(ratioToFloor(messages, floorP99)).toFixed(2)}× floor p99; work tail ${(tailMs / 1000).toFixed(1)} s, ${stored.length} requests)`,
  );

  // Ian clicks Approve on one card each; without a window, each answer carries his step-up link.
  const cards = stored.filter((r) => r.msg).slice(0, CLICKS);
  const clicks = cards.map((r, i) =>
    signedActivity(
      key,
      CLIENT_ID,
      cardAction({
        clientId: CLIENT_ID,
        serviceUrl,
        from: people.ian,
        conversation: channel(Number(r.thread) - 1_800_000_000_000),
        verb: 'ar.approve',
        data: { requestId: r.id },
        replyToId: r.msg!,
        threadId: r.thread!,
        id: `f:bench-${i}`,
      }),
    ),
  );
  const clicked = await drive(url, clicks);
  await adapter.idle();
  const p99c = report(
    `card clicks on ${driver}`,
    clicked,
    `   (${ratioToFloor(clicked, floorP99).toFixed(2)}× floor p99)`,
  );

  // N progress events for one card, 20 ms apart: the edits actually sent.
  const before = (await remote.counters()).updates;
  const view = await tp.platform.requests.getView(cards[0]!.id);
  const ref = {
    platform: 'teams' as const,
    channelId: encodeAddress({
      kind: 'channel',
      serviceUrl,
      conversationId: channel(Number(cards[0]!.thread) - 1_800_000_000_000).id,
    }),
    messageId: cards[0]!.msg!,
    threadId: cards[0]!.thread!,
  };
  const started = performance.now();
  for (let i = 1; i <= PROGRESS_EVENTS; i++) {
    const v: RequestView = {
      ...view,
      state: 'dispatched',
      progress: { queued: PROGRESS_EVENTS - i, succeeded: i },
    };
    await adapter.chat.updateRequestCard(ref, v);
    await new Promise((r) => setTimeout(r, 20));
  }
  await adapter.close();
  const spanS = (performance.now() - started) / 1000;
  const { tokens, updates } = await remote.counters();
  console.log(
    `card edits for ${PROGRESS_EVENTS} progress events over ${spanS.toFixed(1)} s: ${updates - before} (at most ${Math.ceil(spanS) + 1} at one a second)`,
  );
  console.log(`client-credentials grants so far: ${tokens}`);

  await http.close();
  await tdb.destroy();
  return { p99m, p99c };
}

function ratioToFloor(r: Run, floorP99: number) {
  return percentile(r.latencies, 99) / floorP99;
}

console.log(
  `Teams answer latency: ${TOTAL} signed @mentions and ${CLICKS} card clicks, ${IN_FLIGHT} in flight (target: p99 under 2× the bare route's)`,
);
if (!process.env.DATABASE_URL) console.log('DATABASE_URL is not set: PostgreSQL run skipped.');
const remote = await startRemoteTeams();
try {
  const floorP99 = await floor(remote.cloud.serviceUrl);
  for (const d of drivers) await run(d, remote, floorP99);
} finally {
  await remote.stop();
}
