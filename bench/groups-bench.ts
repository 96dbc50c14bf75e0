// `npm run bench:groups`: an action group at fleet scale. N simulated agents in a child process (each with its
// own certificate, the real agent protocol, a journal as the reference agent keeps) against the real broker
// and the real platform, on PGlite and on a fresh PostgreSQL database in one run, beside the bare mTLS
// WebSocket floor of ../shared/floor/run.sh run in the same invocation (bench/groups-bench-core.ts does the
// work). Prints one JSON document: each figure with the floor figure it is held against, the ratio and the
// target. Not a timed test.
//
//   npm run bench:groups                 N=10,000
//   npm run bench:groups -- --quick      N=1,000
//   npm run bench:groups -- --n 500      any N (up to 50,000)
//
// PostgreSQL: DATABASE_URL names the server (default postgres://postgres@127.0.0.1:5432/postgres); a fresh
// database is created there and dropped afterwards. When it cannot be reached the PostgreSQL run is skipped
// and the JSON says why. The open-file limit is raised to the hard limit as bench:broker does.
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { openDatabase } from '../db/client.ts';
import { createPostgresDatabase } from '../test/helpers/db.ts';
import { ensureLimitsOrReexec, type FloorRun, fdLimit, floorRun } from './bench-support.ts';
import { type GroupsBenchResult, runGroupsBench } from './groups-bench-core.ts';

const argv = process.argv.slice(2);
const nAt = argv.indexOf('--n');
const N = Math.min(
  50_000,
  nAt >= 0 ? Number(argv[nAt + 1]) : argv.includes('--quick') ? 1000 : Number(process.env.N ?? 10_000),
);
if (!Number.isInteger(N) || N < 2) throw new Error(`--n must be a whole number of at least 2, got ${N}`);
const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
// Each process holds one end of every connection (the broker here, the agents in the child), plus the
// database pool, files and some slack.
const FDS_NEEDED = N + 2048;
ensureLimitsOrReexec(fileURLToPath(import.meta.url), FDS_NEEDED);
process.env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/postgres';

const log = (driver: string) => (what: string) =>
  process.stderr.write(`[bench:groups ${driver}] ${new Date().toISOString()} ${what}\n`);

async function onPglite(): Promise<GroupsBenchResult> {
  const database = await openDatabase({}); // in memory, migrated
  try {
    return await runGroupsBench(database, { n: N, phase: log('pglite') });
  } finally {
    await database.close();
  }
}

async function postgresReachable(): Promise<string | null> {
  const sql = postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    await sql`select 1`;
    return null;
  } catch (e) {
    return `PostgreSQL at ${process.env.DATABASE_URL} could not be reached: ${(e as Error).message}`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function onPostgres(): Promise<GroupsBenchResult> {
  const fresh = await createPostgresDatabase();
  try {
    const database = await openDatabase({ url: fresh.url, maxConnections: 10 });
    try {
      return await runGroupsBench({ ...database, url: fresh.url }, { n: N, phase: log('postgres') });
    } finally {
      await database.close();
    }
  } finally {
    await fresh.drop();
  }
}

const minGap = (...gaps: (number | null)[]) => {
  const known = gaps.filter((g): g is number => g !== null);
  return known.length ? Math.min(...known) : null;
};
const ratio = (a: number, b: number | undefined) => (b && b > 0 ? +(a / b).toFixed(2) : null);

/** Each figure beside the floor figure it is held against, the ratio and whether the target is met. */
function verdict(r: GroupsBenchResult, floor: FloorRun | undefined) {
  const fanout = floor ? Number(floor.fanout_ms) : undefined;
  const handshakeMs = floor ? (N / Number(floor.handshakes_per_s)) * 1000 : undefined;
  const online = ratio(r.online.all_acked_ms, fanout);
  const drain = ratio(r.offline.drain_ms, handshakeMs);
  const lost = r.online.lost + r.offline.lost;
  const twice = r.online.run_twice + r.offline.run_twice;
  const edits = Math.max(r.online.max_progress_edits_per_s, r.offline.max_progress_edits_per_s);
  return {
    all_acked: {
      ms: r.online.all_acked_ms,
      floor_fanout_ms: fanout ?? null,
      ratio: online,
      target: '≤ 3× the floor’s fan-out',
      met: online !== null && online <= 3,
    },
    all_results_stored: {
      ms: r.online.all_results_ms,
      floor_fanout_ms: fanout ?? null,
      ratio: ratio(r.online.all_results_ms, fanout),
    },
    drain: {
      ms: r.offline.drain_ms,
      floor_handshake_ms: handshakeMs === undefined ? null : Math.round(handshakeMs),
      ratio: drain,
      target: `≤ 2× the floor’s time to handshake ${N.toLocaleString('en-US')}`,
      met: drain !== null && drain <= 2,
    },
    reconnect: {
      ms: r.offline.reconnect_ms,
      floor_handshake_ms: handshakeMs === undefined ? null : Math.round(handshakeMs),
      ratio: ratio(r.offline.reconnect_ms, handshakeMs),
    },
    lost: { count: lost, target: 0, met: lost === 0 },
    run_twice: { count: twice, target: 0, met: twice === 0 },
    // As chat saw them: each edit's slot is taken ≥ 1 s after the last, but its database reads come between the
    // slot and the chat call, so under load two calls can land less than a second apart.
    max_progress_edits_per_s: {
      count: edits,
      min_gap_ms: minGap(
        r.online.min_gap_between_progress_edits_ms,
        r.offline.min_gap_between_progress_edits_ms,
      ),
      target: '≤ 1',
      met: edits <= 1,
    },
    chat_calls: { online: r.online.chat_calls, offline: r.offline.chat_calls },
  };
}

async function main() {
  const startedAt = new Date().toISOString();
  const loadBefore = loadavg().map((l) => +l.toFixed(2));
  log('floor')(`N=${N}`);
  let floor: FloorRun | undefined;
  let floorError: string | undefined;
  try {
    floor = floorRun(root, N);
  } catch (e) {
    floorError = (e as Error).message.split('\n')[0];
  }
  log('floor')(JSON.stringify(floor ?? floorError ?? 'not found'));
  const results: unknown[] = [];
  for (const [driver, run] of [
    ['pglite', onPglite],
    ['postgres', onPostgres],
  ] as const) {
    if (driver === 'postgres') {
      const why = await postgresReachable();
      if (why) {
        results.push({ driver, skipped: why });
        continue;
      }
    }
    const r = await run();
    results.push({ driver, vs_floor: verdict(r, floor), ...r });
  }
  console.log(
    JSON.stringify(
      {
        n: N,
        started_at: startedAt,
        load_average_1_5_15: { before: loadBefore, after: loadavg().map((l) => +l.toFixed(2)) },
        fd_limit: fdLimit(),
        fd_limit_enough: fdLimit() >= FDS_NEEDED,
        note: 'group = `processes all` asked in the console chat and approved with a step-up; times run from the approval commit (its first chat call); drain from the moment every agent reconnects at once to every queued delivery acked and its result stored; lost / run twice from the agents’ own journals; chat calls are every ChatPort call (post, update, reply) from the command to the summary',
        floor: floor ?? floorError ?? 'floor script not found at ../shared/floor/run.sh',
        results,
      },
      null,
      2,
    ),
  );
  process.exit(0);
}

await main();
