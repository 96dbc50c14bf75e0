// Ack latency of the Slack adapter: 1,000 genuinely signed slash commands, 50 in flight at a time, against
// the real Bolt app on the shared Fastify server, with the real core doing its work (identity, policy,
// request rows, step-up links, replies to the local Slack stand-in) after each ack. The load generator runs
// on its own thread and the Slack stand-in in its own process, as both are remote in production. Runs on PGlite, and on
// PostgreSQL when DATABASE_URL is set. The floor is a bare Fastify route on the same machine taking the same
// body, so the figures can be read against what the stack costs with no adapter at all.
//
//   npm run bench:slack            (PGlite)
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:slack
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { Worker } from 'node:worker_threads';
import Fastify from 'fastify';
import { registerSlack } from '../adapters/slack/slack-plugin.ts';
import { buildHttpApp } from '../app/http-app.ts';
import { actionRequests } from '../db/schema.ts';
import { type Driver, drivers, openTestDatabase } from '../test/helpers/db.ts';
import { signedRequest, slashCommand } from '../test/helpers/fake-slack.ts';
import { buildTestPlatform } from '../test/helpers/platform.ts';

const TOTAL = Number(process.env.BENCH_TOTAL ?? 1000);
/**
 * Post-ack work running at once (the adapter's maxConcurrentWork). Unset: 1 on PGlite, whose one connection
 * overlapping work would only queue for, the adapter's default (2) on PostgreSQL: the settings
 * adapters/slack/README.md recommends.
 */
const WORK = process.env.BENCH_WORK_CONCURRENCY ? Number(process.env.BENCH_WORK_CONCURRENCY) : undefined;
const workFor = (driver: Driver) => WORK ?? (driver === 'pglite' ? 1 : 2);
const IN_FLIGHT = 50;
/** Untimed requests first, so JIT compilation and connection set-up are not counted as ack latency. */
const WARMUP = 100;
const SECRET = 'bench-signing-secret';
const TOKEN = 'xoxb-bench';
const silent = { info() {}, warn() {}, error() {}, debug() {} };

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * The load generator runs on its own thread, as Slack is not inside our process: it sends the prepared
 * requests with IN_FLIGHT concurrent senders and measures each one's time to response headers.
 */
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
      latencies.push(performance.now() - t0);
      if (res.status !== 200) failures++;
      await res.arrayBuffer();
    }
  }
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, sender));
  parentPort.postMessage({ latencies, failures, wallMs: performance.now() - t0 });
})();
`;

async function drive(baseUrl: string, make: (i: number) => ReturnType<typeof signedRequest>, total = TOTAL) {
  const reqs = Array.from({ length: total }, (_, i) => make(i));
  const worker = new Worker(CLIENT, { eval: true, workerData: { baseUrl, reqs, inFlight: IN_FLIGHT } });
  const r = await new Promise<{ latencies: number[]; failures: number; wallMs: number }>(
    (resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    },
  );
  await worker.terminate();
  return { ...r, latencies: r.latencies.sort((a, b) => a - b) };
}

function report(label: string, r: { latencies: number[]; failures: number; wallMs: number }, extra = '') {
  const l = r.latencies;
  console.log(
    `${label.padEnd(38)} p50 ${percentile(l, 50).toFixed(1).padStart(7)} ms   p99 ${percentile(l, 99).toFixed(1).padStart(7)} ms   max ${l.at(-1)!.toFixed(1).padStart(7)} ms   ${(TOTAL / (r.wallMs / 1000)).toFixed(0).padStart(5)} req/s   non-200: ${r.failures}${extra}`,
  );
}

/** The i-th slash command: a request the core has to store and answer with a step-up link. */
function command(i: number) {
  return signedRequest(
    SECRET,
    slashCommand({
      text: `isolate web-01 --reason bench-${i}`,
      user: 'UANA',
      team: 'T0HOME',
      channel: 'CBENCH',
    }),
  );
}

async function floor() {
  const app = Fastify({ logger: false });
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.post('/slack/events', async () => '');
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  await drive(url, command, WARMUP);
  const r = await drive(url, command);
  report('floor (bare Fastify route)', r);
  await app.close();
}

/** The Slack stand-in in a child process; resolves with its Web API base URL and a stop function. */
async function startRemoteSlack() {
  const code = `import { startFakeSlack } from './test/helpers/fake-slack.ts';
const s = await startFakeSlack({ botToken: '${TOKEN}', teamId: 'T0HOME' });
console.log(s.apiUrl);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [apiUrl] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  return {
    apiUrl,
    async stop() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

async function run(driver: Driver) {
  const tdb = await openTestDatabase(driver);
  const tp = await buildTestPlatform(tdb);
  const slack = await startRemoteSlack();
  const http = buildHttpApp();
  const adapter = await registerSlack(http, {
    bot: tp.platform.bot,
    // As npm start runs it: each interaction is recorded in the durable inbox before its answer.
    inbox: tp.platform.inbox,
    logger: silent,
    config: { signingSecret: SECRET, botToken: TOKEN, apiUrl: slack.apiUrl, command: '/ar' },
    maxConcurrentWork: workFor(driver),
  });
  tp.platform.router.register('slack', adapter.chat);
  await tp.platform.users.mapTenant({ platform: 'slack', tenantId: 'T0HOME', orgName: 'home' });
  const ana = await tp.person('ana', ['active_response']);
  await tp.platform.users.linkChatIdentity({
    userId: ana.id,
    platform: 'slack',
    tenantId: 'T0HOME',
    chatUserId: 'UANA',
  });
  await tp.endpoint('web-01');
  const url = await http.listen({ host: '127.0.0.1', port: 0 });

  await drive(url, (i) => command(TOTAL + i), WARMUP);
  await adapter.idle();
  const r = await drive(url, command);
  // The acks are back; the core is still working through the commands. Wait for the tail to show the cost.
  const t0 = performance.now();
  await adapter.idle();
  const tailMs = performance.now() - t0;
  const stored = (await tdb.db.select({ id: actionRequests.id }).from(actionRequests)).length;
  report(
    `adapter + core on ${driver} (work ${workFor(driver)})`,
    r,
    `   work tail ${(tailMs / 1000).toFixed(1)} s, ${stored} requests stored`,
  );

  await adapter.close();
  await http.close();
  await slack.stop();
  await tdb.destroy();
}

console.log(
  `Slack ack latency: ${TOTAL} signed slash commands, ${IN_FLIGHT} in flight (target p99 < 100 ms; Slack allows 3,000 ms)`,
);
if (!process.env.DATABASE_URL) console.log('DATABASE_URL is not set: PostgreSQL run skipped.');
await floor();
for (const d of drivers) await run(d);
