// `npm run bench:broker`: simulated agents (N connections from one child process) against the real broker on
// PGlite, and on PostgreSQL when DATABASE_URL is set, next to the bare mTLS WebSocket floor from
// ../shared/floor/run.sh. Prints one JSON document. N defaults to 10000 (env N). Not a timed test.
import { execFileSync, fork } from 'node:child_process';
import { randomBytes, randomUUID, webcrypto } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { fileURLToPath } from 'node:url';
import 'reflect-metadata';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as x509 from '@peculiar/x509';
import { and, count, inArray } from 'drizzle-orm';
import WebSocket from 'ws';
import { auditChainKey } from '../bot/audit/audit-keys.ts';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { type DeliveryEvent, systemClock } from '../bot/ports.ts';
import { createBroker } from '../broker/broker.ts';
import { createLocalFileStore } from '../broker/files/local-file-store.ts';
import { certFingerprint } from '../broker/pki/pki.ts';
import { type Database, openDatabase } from '../db/client.ts';
import { actionRequests, deliveries, endpoints, organizations, segments, users } from '../db/schema.ts';
import { PROTOCOL_VERSION } from '../protocol/frames.ts';

const N = Number(process.env.N ?? 10_000);
const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '..');
const quiet = { info() {}, warn() {}, error() {}, debug() {} };

// ---------------------------------------------------------------------------------------------------------
// Client mode: a child process holding N agent connections that ack every delivery.
if (process.argv[2] === 'client') {
  const { port, certsFile } = JSON.parse(process.argv[3]!) as { port: number; certsFile: string };
  const { key, ca, certs } = JSON.parse(readFileSync(certsFile, 'utf8')) as {
    key: string;
    ca: string;
    certs: string[];
  };
  const socks: WebSocket[] = [];
  const seen = new Map<string, number>();
  let connectStart = 0;
  function connectAll() {
    connectStart = performance.now();
    let next = 0;
    let ready = 0;
    return new Promise<number>((done) => {
      const one = () => {
        if (next >= certs.length) return;
        const i = next++;
        // One secure context per identity (each agent has its own certificate), built right before use.
        const secureContext = createSecureContext({ key, cert: certs[i], ca });
        // `ws` passes TLS options through to tls.connect; its types just do not list secureContext.
        const ws = new WebSocket(`wss://localhost:${port}/agent`, {
          secureContext,
          perMessageDeflate: false,
        } as WebSocket.ClientOptions);
        socks[i] = ws;
        ws.on('open', () =>
          ws.send(
            JSON.stringify({
              type: 'hello',
              v: PROTOCOL_VERSION,
              hostname: `sim-${i}`,
              os: 'linux',
              osVersion: 'bench',
              agentVersion: '1.0.0',
              capabilities: ['isolate'],
              isolated: false,
            }),
          ),
        );
        ws.on('message', (m) => {
          const f = JSON.parse(m.toString());
          if (f.type === 'welcome') {
            ready++;
            if (ready === certs.length) done(performance.now() - connectStart);
            else one();
          } else if (f.type === 'delivery') {
            seen.set(f.id, (seen.get(f.id) ?? 0) + 1);
            ws.send(JSON.stringify({ type: 'ack', id: f.id, nonce: randomBytes(16).toString('base64url') }));
          } else if (f.type === 'proceed' && f.go) {
            ws.send(JSON.stringify({ type: 'result', id: f.id, ok: true, result: {} }));
          }
        });
        ws.on('error', (e) => console.error('client error', e.message));
      };
      for (let i = 0; i < 200; i++) one();
    });
  }
  process.on('message', async (msg: { cmd: string }) => {
    if (msg.cmd === 'connect') {
      const ms = await connectAll();
      process.send!({ connected: certs.length, ms });
    } else if (msg.cmd === 'disconnect') {
      for (const ws of socks) ws.terminate();
      process.send!({ disconnected: true });
    } else if (msg.cmd === 'seen') {
      const counts = [...seen.values()];
      process.send!({ deliveries: counts.length, doubled: counts.filter((c) => c > 1).length });
    }
  });
  process.send!({ ready: true });
} else {
  await main();
}

function floor(): Record<string, number | string> | undefined {
  const script = join(root, '..', 'shared', 'floor', 'run.sh');
  if (!existsSync(script)) return undefined;
  const out = execFileSync('bash', [script], {
    cwd: root,
    env: { ...process.env, N: String(N) },
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

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

async function runOn(driver: 'pglite' | 'postgres') {
  const dir = mkdtempSync(join(tmpdir(), 'ar-bench-'));
  const database = await openDatabase(
    driver === 'postgres' ? { url: process.env.DATABASE_URL, maxConnections: 10 } : { dataDir: dir },
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

  const child = fork(fileURLToPath(import.meta.url), ['client', JSON.stringify({ port, certsFile })], {
    execArgv: ['--import', 'tsx'],
  });
  const ask = <T>(msg: object) =>
    new Promise<T>((r) => {
      child.once('message', (m) => r(m as T));
      child.send(msg);
    });
  await new Promise((r) => child.once('message', r));
  global.gc?.();
  const rss0 = process.memoryUsage().rss;
  const conn = await ask<{ connected: number; ms: number }>({ cmd: 'connect' });
  await new Promise((r) => setTimeout(r, 500));
  global.gc?.();
  const rss1 = process.memoryUsage().rss;

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

  phase('connected');
  // Single-delivery latency: approval commit to the agent's ack being recorded.
  const rtts: number[] = [];
  const samples = Math.min(1000, N);
  for (let i = 0; i < samples; i++) {
    const endpointId = seeded.ids[(i * 7919) % N]!;
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

  phase('latency done');
  // Fan-out: one action to every connected agent.
  const fanIds = await database.db.transaction(async (tx) => {
    const rid = await request(tx as never);
    return (
      await broker.dispatcher.enqueue(
        tx,
        seeded.ids.map((id) => spec(rid, id)),
      )
    ).map((r) => r.id);
  });
  const tFan = performance.now();
  const fanDone = waitAll(fanIds);
  await broker.dispatcher.wake(seeded.ids);
  await fanDone;
  const fanMs = performance.now() - tFan;

  phase('fan-out done');
  // Reconnect storm: every agent offline with one queued delivery, then all reconnect at once.
  // Let the agents' results land before they go away, so the storm carries only the new deliveries.
  while (fanIds.some((id) => !finished.has(id))) await new Promise((r) => setTimeout(r, 50));
  await ask({ cmd: 'disconnect' });
  while (broker.connected().length) await new Promise((r) => setTimeout(r, 50));
  const stormIds = await database.db.transaction(async (tx) => {
    const rid = await request(tx as never);
    return (
      await broker.dispatcher.enqueue(
        tx,
        seeded.ids.map((id) => spec(rid, id)),
      )
    ).map((r) => r.id);
  });
  const tStorm = performance.now();
  const stormDone = waitAll(stormIds);
  await ask({ cmd: 'connect' });
  await stormDone;
  const stormMs = performance.now() - tStorm;
  const seen = await ask<{ deliveries: number; doubled: number }>({ cmd: 'seen' });
  const [states] = await database.db
    .select({ acked: count() })
    .from(deliveries)
    .where(and(inArray(deliveries.id, stormIds), inArray(deliveries.state, ['acknowledged', 'succeeded'])));

  function waitAll(ids: string[]) {
    const want = new Set(ids);
    for (const id of [...want]) if (acked.has(id)) want.delete(id);
    return new Promise<void>((r) => {
      onAck = (e) => {
        want.delete(e.deliveryId);
        if (!want.size) r();
      };
    });
  }

  child.kill();
  await broker.stop();
  await database.close();
  rmSync(dir, { recursive: true, force: true });
  return {
    driver,
    connections: conn.connected,
    handshakes_per_s: Math.round(conn.connected / (conn.ms / 1000)),
    server_kib_per_conn: Math.round((rss1 - rss0) / 1024 / conn.connected),
    delivery_p50_ms: pct(rtts, 0.5),
    delivery_p99_ms: pct(rtts, 0.99),
    fanout_ms: Math.round(fanMs),
    storm_ms: Math.round(stormMs),
    storm_lost: stormIds.length - stormIds.filter((id) => acked.has(id)).length,
    storm_doubled: seen.doubled,
    storm_acknowledged_in_db: states?.acked,
  };
}

async function main() {
  const f = floor();
  const results = [await runOn('pglite')];
  if (process.env.DATABASE_URL) results.push(await runOn('postgres'));
  const ratio = (a: number, b: unknown) => (typeof b === 'number' && b > 0 ? +(a / b).toFixed(2) : null);
  console.log(
    JSON.stringify(
      {
        n: N,
        note: 'delivery latency runs from the approval commit to the ack being recorded; the floor measures a bare echo round trip',
        floor: f ?? 'floor script not found at ../shared/floor/run.sh',
        broker: results.map((r) => ({
          ...r,
          vs_floor: {
            kib_per_conn: ratio(r.server_kib_per_conn, f?.server_kib_per_conn),
            handshakes_per_s: ratio(r.handshakes_per_s, f?.handshakes_per_s),
            p99: ratio(r.delivery_p99_ms, f?.rtt_p99_ms),
            fanout: ratio(r.fanout_ms, f?.fanout_ms),
          },
        })),
      },
      null,
      2,
    ),
  );
  process.exit(0);
}
