// `npm run bench:broker`: simulated agents (N connections from one child process, bench/broker-bench-client.ts)
// against the real broker on PGlite and, when DATABASE_URL is set, on a fresh PostgreSQL database, in one run,
// next to the bare mTLS WebSocket floor from ../shared/floor/run.sh run in the same process tree. Every figure
// is the median of three runs with their min and max. Prints one JSON document. Not a timed test.
//
//   npm run bench:broker                 N=10,000 (env N, up to 50,000)
//   npm run bench:broker -- --quick      N=1,000, for development
//   PGLITE_THREAD=both                   PGlite on its own thread (the default, as the platform runs it) and
//                                        in the broker's thread, one after the other (`main`: only the latter)
//   CPU_PROF_DIR=dir                     writes CPU profiles of the broker's thread there: each handshake burst
//                                        (connect-*), fan-out (fanout-*) and reconnect storm (storm-*)
//
// It raises its own open-file limit to the hard limit (re-running itself under bash when needed) and reports
// what it got. Memory per connection is the broker process's resident size with N connections open less its
// size before the first connection, both read after forced collections have settled (settledRss).
import { fork } from 'node:child_process';
import { randomBytes, randomUUID, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { and, count, inArray } from 'drizzle-orm';
import { auditChainKey } from '../bot/audit/audit-keys.ts';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { type DeliveryEvent, systemClock } from '../bot/ports.ts';
import { createBroker } from '../broker/broker.ts';
import { createLocalFileStore } from '../broker/files/local-file-store.ts';
import { certFingerprint } from '../broker/pki/pki.ts';
import { type Database, openDatabase } from '../db/client.ts';
import { actionRequests, deliveries, endpoints, organizations, segments, users } from '../db/schema.ts';
import { createPostgresDatabase } from '../test/helpers/db.ts';
import { ensureLimitsOrReexec, fdLimit, floorRun, settledRss, spreadEach } from './bench-support.ts';

const QUICK = process.argv.includes('--quick');
const N = Math.min(50_000, QUICK ? 1000 : Number(process.env.N ?? 10_000));
const RUNS = Number(process.env.RUNS ?? 3);
/** Single deliveries timed per run for the latency figures. */
const SAMPLES = Math.min(N, Number(process.env.SAMPLES ?? 1000));
const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '..');
const quiet = { info() {}, warn() {}, error() {}, debug() {} };
// Server and client ends of every connection, the database pool, files and some slack.
const FDS_NEEDED = 2 * N + 1024;
ensureLimitsOrReexec(fileURLToPath(import.meta.url), FDS_NEEDED);

async function seed(database: Database, issue: (csr: string, id: string) => Promise<string>) {
  const db = database.db;
  const [seg] = await db.insert(segments).values({ name: 'bench', activeResponseEnabled: true }).returning();
  const [org] = await db.insert(organizations).values({ name: 'bench' }).returning();
  const [user] = await db
    .insert(users)
    .values({ username: 'bench', displayName: 'Bench', orgId: org!.id, passwordHash: 'x' })
    .returning();
  // One key pair for every simulated agent, each with its own certificate: distinct identities, cheap setup.
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=sim',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  } as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]);
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const key = `-----BEGIN PRIVATE KEY-----\n${der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .trim()}\n-----END PRIVATE KEY-----\n`;
  const ids: string[] = [];
  const certs: string[] = [];
  const rows: (typeof endpoints.$inferInsert)[] = [];
  for (let i = 0; i < N; i++) {
    const id = randomUUID();
    const cert = await issue(csr.toString('pem'), id);
    ids.push(id);
    certs.push(cert);
    rows.push({
      id,
      hostname: `sim-${i}`,
      os: 'linux',
      segmentId: seg!.id,
      certFingerprint: certFingerprint(cert),
      certNotAfter: new Date(Date.now() + 86400_000),
    });
  }
  for (let i = 0; i < rows.length; i += 1000) await db.insert(endpoints).values(rows.slice(i, i + 1000));
  return { ids, certs, key, userId: user!.id };
}

function pct(sorted: number[], p: number) {
  return +sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!.toFixed(3);
}

type Variant = 'pglite' | 'pglite-in-broker-thread' | 'postgres';
const PGLITE_VARIANTS: Variant[] = (
  { both: ['pglite', 'pglite-in-broker-thread'], main: ['pglite-in-broker-thread'] } as Record<
    string,
    Variant[]
  >
)[process.env.PGLITE_THREAD ?? ''] ?? ['pglite'];

/** With CPU_PROF_DIR set, a CPU profile of this process (the broker's thread) until `stop`. */
async function startProfile() {
  const dir = process.env.CPU_PROF_DIR;
  if (!dir) return undefined;
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(name: string) {
      const { profile } = await session.post('Profiler.stop');
      writeFileSync(join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
      session.disconnect();
    },
  };
}

async function runOn(driver: Variant) {
  const dir = mkdtempSync(join(tmpdir(), 'ar-bench-'));
  const pg = driver === 'postgres' ? await createPostgresDatabase() : undefined;
  const database = await openDatabase(
    pg
      ? { url: pg.url, maxConnections: 10 }
      : { dataDir: dir, pgliteThread: driver === 'pglite' ? 'worker' : 'main' },
  );
  const acked = new Map<string, number>();
  const finished = new Set<string>();
  let onAck: ((e: DeliveryEvent) => void) | undefined;
  const broker = createBroker({
    db: database,
    audit: createAuditService({
      db: database.db,
      clock: systemClock,
      chainKey: auditChainKey(randomBytes(32)),
    }),
    clock: systemClock,
    logger: quiet,
    fileStore: createLocalFileStore(join(dir, 'files')),
    observer: {
      async deliveryChanged(e) {
        if (e.state === 'succeeded') finished.add(e.deliveryId);
        if (e.state === 'acknowledged') {
          acked.set(e.deliveryId, performance.now());
          onAck?.(e);
        }
      },
    },
    config: {
      host: '127.0.0.1',
      port: 0,
      brokerId: `bench-${driver}`,
      publicHost: 'localhost',
      dataDir: dir,
      maxFileBytes: 1 << 30,
    },
  });
  const { port } = await broker.start();
  const phase = (name: string) =>
    process.stderr.write(`[bench ${driver}] ${name} ${new Date().toISOString()}\n`);
  phase('broker started');
  const pki = broker.pki;
  const seeded = await seed(
    database,
    async (csr, id) => (await pki.issueClientCert(csr, id, new Date())).pem,
  );
  phase('seeded');
  const certsFile = join(dir, 'certs.json');
  writeFileSync(certsFile, JSON.stringify({ key: seeded.key, ca: pki.caPem, certs: seeded.certs }));

  const child = fork(join(here, 'broker-bench-client.ts'), [JSON.stringify({ port, certsFile })], {
    execArgv: ['--import', 'tsx'],
  });
  const ask = <T>(msg: object) =>
    new Promise<T>((r) => {
      child.once('message', (m) => r(m as T));
      child.send(msg);
    });
  await new Promise((r) => child.once('message', r));

  async function request(dbOrTx: Database['db']) {
    const [req] = await dbOrTx
      .insert(actionRequests)
      .values({
        ref: `B-${randomUUID().slice(0, 8)}`,
        action: 'isolate',
        targets: [],
        digest: 'd',
        reason: 'bench',
        requesterId: seeded.userId,
        state: 'dispatched',
        deliveryTtlSeconds: 3600,
      })
      .returning();
    return req!.id;
  }
  const spec = (requestId: string, endpointId: string) => ({
    requestId,
    endpointId,
    action: 'isolate',
    payload: { action: 'isolate', params: {} },
    expiresAt: new Date(Date.now() + 3600_000),
  });
  /** When the broker recorded the last of these acks (a loop: up to 50,000 ids are too many to spread). */
  function lastAck(ids: string[]) {
    let last = 0;
    for (const id of ids) last = Math.max(last, acked.get(id)!);
    return last;
  }
  function waitAll(ids: string[]) {
    const want = new Set(ids);
    for (const id of [...want]) if (acked.has(id)) want.delete(id);
    return new Promise<void>((r) => {
      if (!want.size) r();
      onAck = (e) => {
        want.delete(e.deliveryId);
        if (!want.size) r();
      };
    });
  }
  async function enqueueForAll() {
    return database.db.transaction(async (tx) => {
      const rid = await request(tx as never);
      return (
        await broker.dispatcher.enqueue(
          tx,
          seeded.ids.map((id) => spec(rid, id)),
        )
      ).map((r) => r.id);
    });
  }

  /** One run: handshake burst, single-delivery latency, fan-out, then every agent off and a reconnect storm. */
  // Memory per connection: resident size with N connections open, less the settled size before the first
  // connection of this process. Every run is read against that one baseline: after run 1 the allocator keeps
  // the pages the closed connections freed, so a fresh baseline per run would hide their cost (that is how
  // the figure came out negative). Later runs may count some retained garbage: the figure errs high, never low.
  const rss0 = await settledRss();
  async function once(run: number) {
    const connecting = await startProfile();
    const conn = await ask<{ connected: number; ms: number }>({ cmd: 'connect' });
    await connecting?.stop(`connect-${driver}-${run}`);
    const rss1 = await settledRss();
    phase(`run ${run}: connected`);
    // Single-delivery latency: approval commit to the agent's ack being recorded.
    const rtts: number[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      const endpointId = seeded.ids[(i * 7919 + run) % N]!;
      const [d] = await database.db.transaction(async (tx) =>
        broker.dispatcher.enqueue(tx, [spec(await request(tx as never), endpointId)]),
      );
      const t0 = performance.now();
      const done = new Promise<void>((r) => {
        onAck = (e) => {
          if (e.deliveryId === d!.id) r();
        };
      });
      await broker.dispatcher.wake([endpointId]);
      await done;
      rtts.push(acked.get(d!.id)! - t0);
    }
    rtts.sort((a, b) => a - b);
    phase(`run ${run}: latency done`);
    // Fan-out: one action to every connected agent.
    const fanIds = await enqueueForAll();
    const profiling = await startProfile();
    const tFan = performance.now();
    const fanDone = waitAll(fanIds);
    // Timed to the last ack as the broker recorded it, not to this code's next turn: wake() resolves only when
    // its NOTIFYs for other brokers are through, which on a busy PGlite can be long after the acks.
    const woke = broker.dispatcher.wake(seeded.ids);
    await fanDone;
    const fanMs = lastAck(fanIds) - tFan;
    await profiling?.stop(`fanout-${driver}-${run}`);
    await woke;
    phase(`run ${run}: fan-out done`);
    // Reconnect storm: every agent offline with one queued delivery, then all reconnect at once. Let the
    // agents' results land before they go away, so the storm carries only the new deliveries.
    while (fanIds.some((id) => !finished.has(id))) await new Promise((r) => setTimeout(r, 50));
    await ask({ cmd: 'disconnect' });
    while (broker.connected().length) await new Promise((r) => setTimeout(r, 50));
    const stormIds = await enqueueForAll();
    const storming = await startProfile();
    const tStorm = performance.now();
    const stormDone = waitAll(stormIds);
    await ask({ cmd: 'connect' });
    await stormDone;
    const stormMs = lastAck(stormIds) - tStorm;
    await storming?.stop(`storm-${driver}-${run}`);
    const seen = await ask<{ deliveries: number; doubled: number }>({ cmd: 'seen' });
    const [states] = await database.db
      .select({ acked: count() })
      .from(deliveries)
      .where(and(inArray(deliveries.id, stormIds), inArray(deliveries.state, ['acknowledged', 'succeeded'])));
    phase(`run ${run}: storm done`);
    while (stormIds.some((id) => !finished.has(id))) await new Promise((r) => setTimeout(r, 50));
    await ask({ cmd: 'disconnect' });
    while (broker.connected().length) await new Promise((r) => setTimeout(r, 50));
    const kib = (rss1 - rss0) / 1024 / conn.connected;
    return {
      connections: conn.connected,
      handshakes_per_s: Math.round(conn.connected / (conn.ms / 1000)),
      server_kib_per_conn: Math.round(kib),
      delivery_p50_ms: pct(rtts, 0.5),
      delivery_p99_ms: pct(rtts, 0.99),
      fanout_ms: Math.round(fanMs),
      storm_ms: Math.round(stormMs),
      storm_lost: stormIds.length - stormIds.filter((id) => acked.has(id)).length,
      storm_doubled: seen.doubled,
      storm_acknowledged_in_db: states?.acked ?? 0,
    };
  }

  const runs = [];
  for (let i = 1; i <= RUNS; i++) {
    runs.push(await once(i));
    // Each run's figures as soon as it ends, so a long run that is cut short still leaves them.
    process.stderr.write(`[bench ${driver}] run ${i} ${JSON.stringify(runs.at(-1))}\n`);
  }
  child.kill();
  await broker.stop();
  await database.close();
  await pg?.drop();
  rmSync(dir, { recursive: true, force: true });
  return { driver, runs };
}

async function main() {
  const fds = fdLimit();
  const floors = [];
  for (let i = 0; i < RUNS; i++) {
    const f = floorRun(root, N);
    if (f) floors.push(f);
    process.stderr.write(`[bench floor] run ${i + 1} ${JSON.stringify(f)}\n`);
  }
  const floor = floors.length ? spreadEach(floors) : undefined;
  const results = [];
  for (const variant of PGLITE_VARIANTS) results.push(await runOn(variant));
  if (process.env.DATABASE_URL) results.push(await runOn('postgres'));
  const ratio = (a: number, b: number | undefined) => (b && b > 0 ? +(a / b).toFixed(2) : null);
  console.log(
    JSON.stringify(
      {
        n: N,
        runs: RUNS,
        latency_samples_per_run: SAMPLES,
        fd_limit: fds,
        fd_limit_enough: fds >= FDS_NEEDED,
        note: 'figures are median/min/max of the runs; delivery latency runs from the approval commit to the ack being recorded, the floor measures a bare echo round trip; storm_ms is to every delivery acknowledged',
        floor: floor ?? 'floor script not found at ../shared/floor/run.sh',
        broker: results.map((r) => {
          const s = spreadEach(r.runs);
          const m = (k: string) => s[k]?.median ?? 0;
          return {
            driver: r.driver,
            ...s,
            vs_floor_median: {
              handshakes_per_s: ratio(m('handshakes_per_s'), floor?.handshakes_per_s?.median),
              kib_per_conn: ratio(m('server_kib_per_conn'), floor?.server_kib_per_conn?.median),
              delivery_p99_vs_rtt_p99: ratio(m('delivery_p99_ms'), floor?.rtt_p99_ms?.median),
              fanout: ratio(m('fanout_ms'), floor?.fanout_ms?.median),
              storm_vs_floor_handshake_time: ratio(
                m('storm_ms'),
                floor ? (N / floor.handshakes_per_s!.median) * 1000 : undefined,
              ),
            },
          };
        }),
      },
      null,
      2,
    ),
  );
  process.exit(0);
}

await main();
