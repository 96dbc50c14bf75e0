// Real processes for broker tests: an in-process broker on a test database, agent processes (agent/main.ts
// under tsx) with parsed JSON log lines, standalone broker processes (broker/main.ts), and direct-insert
// helpers for the rows the request side would normally write.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eq } from 'drizzle-orm';
import type { Registry } from 'prom-client';
import { createAuditService } from '../../bot/audit/audit-service.ts';
import type { Clock, DeliveryEvent, Logger } from '../../bot/ports.ts';
import { createBroker } from '../../broker/broker.ts';
import { createLocalFileStore } from '../../broker/files/local-file-store.ts';
import { enrollToken } from '../../cli/commands/endpoint-commands.ts';
import type { Database, DbOrTx } from '../../db/client.ts';
import { actionRequests, deliveries, endpoints, organizations, segments, users } from '../../db/schema.ts';
import type { DeliveryPayload } from '../../protocol/actions.ts';
import { createTestClock } from './clock.ts';
import { TEST_SECRET_KEY, testChainKey } from './keys.ts';

export { freePort } from './ports.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs');

export const silentLogger: Logger = { info() {}, warn() {}, error() {}, debug() {} };

export function tempDir(prefix = 'ar-broker-test-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Polls `fn` until it returns a truthy value. Real processes need real waiting; nothing asserts on time. */
export async function waitFor<T>(
  fn: () => Promise<T> | T,
  what: string,
  timeoutMs = 20_000,
): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A test clock that starts at wall time: TLS checks certificates against the real clock. */
export const wallClock = () => createTestClock(new Date());

export async function startTestBroker(
  database: Database,
  opts: {
    clock?: ReturnType<typeof createTestClock>;
    dataDir?: string;
    maxFileBytes?: number;
    host?: string;
    publicHost?: string;
    metrics?: Registry;
    heartbeatSeconds?: number;
    /** How often the broker looks for queued work no wake-up reached (default: the broker's 5 s). */
    outboxSweepMs?: number;
  } = {},
) {
  const clock = opts.clock ?? wallClock();
  const tmp = opts.dataDir ? undefined : tempDir();
  const dataDir = opts.dataDir ?? tmp!.dir;
  const audit = createAuditService({ db: database.db, clock, chainKey: testChainKey });
  const events: DeliveryEvent[] = [];
  const fileStore = createLocalFileStore(join(dataDir, 'files'));
  const broker = createBroker({
    db: database,
    audit,
    clock,
    logger: silentLogger,
    fileStore,
    observer: { deliveryChanged: async (e) => void events.push(e) },
    metrics: opts.metrics,
    config: {
      host: opts.host ?? '127.0.0.1',
      port: 0,
      brokerId: `test-${randomBytes(3).toString('hex')}`,
      publicHost: opts.publicHost ?? 'localhost',
      dataDir,
      maxFileBytes: opts.maxFileBytes ?? 64 * 1024 * 1024,
      heartbeatSeconds: opts.heartbeatSeconds ?? 5,
      outboxSweepMs: opts.outboxSweepMs,
    },
  });
  const { port } = await broker.start();
  return {
    broker,
    port,
    url: `wss://${opts.publicHost ?? 'localhost'}:${port}`,
    audit,
    clock,
    events,
    fileStore,
    dataDir,
    async stop() {
      await broker.stop();
      tmp?.remove();
    },
  };
}
export type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;

export async function seedSegment(database: Database, name = 'servers') {
  const [row] = await database.db
    .insert(segments)
    .values({ name, activeResponseEnabled: true })
    .onConflictDoNothing()
    .returning();
  return row ?? (await database.db.select().from(segments).where(eq(segments.name, name)))[0]!;
}

export async function newToken(database: Database, clock: Clock, caCertPem?: string, segment = 'servers') {
  await seedSegment(database, segment);
  const audit = createAuditService({ db: database.db, clock, chainKey: testChainKey });
  const { token } = await enrollToken({ db: database.db, audit, clock, segment, ttl: '1h', caCertPem });
  return token;
}

/** A request row to hang deliveries on (the request side owns the real thing). */
export async function insertRequest(db: DbOrTx, action = 'isolate') {
  const [org] = await db
    .insert(organizations)
    .values({ name: `org-${randomBytes(4).toString('hex')}` })
    .returning();
  const [user] = await db
    .insert(users)
    .values({
      username: `u-${randomBytes(4).toString('hex')}`,
      displayName: 'Tester',
      orgId: org!.id,
      passwordHash: 'x',
    })
    .returning();
  const [req] = await db
    .insert(actionRequests)
    .values({
      ref: `R-${randomBytes(3).toString('hex').toUpperCase()}`,
      action,
      targets: [],
      digest: 'd',
      reason: 'test',
      requesterId: user!.id,
      state: 'dispatched',
      deliveryTtlSeconds: 3600,
    })
    .returning();
  return req!;
}

/** A delivery as a test describes it: the action's catalogue parameters, and a script's bytes for `run`. */
export interface TestDelivery {
  endpointId: string;
  action: string;
  params?: Record<string, unknown>;
  scriptBody?: string;
  /** Replaces the whole payload (for deliberately malformed ones). */
  rawPayload?: Record<string, unknown>;
  ttlMs?: number;
}

/**
 * Writes deliveries through the real Dispatcher in one transaction and wakes the brokers after commit. The
 * payload has the catalogue's shape (protocol/actions.ts), as the request side builds it.
 */
export async function dispatch(
  database: Database,
  dispatcher: ReturnType<typeof createBroker>['dispatcher'],
  clock: Clock,
  items: TestDelivery[],
) {
  let requestId = '';
  const rows = await database.db.transaction(async (tx) => {
    const req = await insertRequest(tx, items[0]?.action);
    requestId = req.id;
    return dispatcher.enqueue(
      tx,
      items.map((i) => {
        const payload: DeliveryPayload = {
          requestId: req.id,
          ref: req.ref,
          digest: 'd'.repeat(64),
          hostname: 'test-host',
          params: i.params ?? {},
          ...(i.scriptBody !== undefined ? { scriptBody: i.scriptBody } : {}),
        };
        return {
          requestId: req.id,
          endpointId: i.endpointId,
          action: i.action,
          payload: i.rawPayload ?? payload,
          expiresAt: new Date(clock.now().getTime() + (i.ttlMs ?? 3600_000)),
        };
      }),
    );
  });
  // Scoped as the request service does: a large fan-out wakes the brokers once per batch of the request.
  await dispatcher.wake(
    items.map((i) => i.endpointId),
    { requestId, deliveries: items.length },
  );
  return rows;
}

/** The parameters and bytes of a `run` delivery for a script body, as the request side builds them. */
export function scriptDelivery(
  name: string,
  body: string,
  args: Record<string, string | number | boolean> = {},
) {
  const sha256 = createHash('sha256').update(body).digest('hex');
  return {
    action: 'run',
    params: { script: { name, version: 1, sha256 }, args, timeoutSeconds: 600 },
    scriptBody: body,
  };
}

export async function deliveryState(database: Database, id: string) {
  const [row] = await database.db.select().from(deliveries).where(eq(deliveries.id, id));
  return row!;
}

export async function endpointByHost(database: Database, hostname: string) {
  const [row] = await database.db
    .select()
    .from(endpoints)
    .where(eq(endpoints.hostname, hostname.toLowerCase()));
  return row;
}

export interface AgentProcess {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stateDir: string;
  waitForLog(
    pred: (l: Record<string, unknown>) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  count(pred: (l: Record<string, unknown>) => boolean): number;
  exited: Promise<number | null>;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

/** Starts `agent/main.ts` as a real process. `netns` runs it inside a network namespace. */
export function spawnAgent(o: {
  stateDir: string;
  broker?: string;
  token?: string;
  hostname?: string;
  args?: string[];
  netns?: string;
  env?: Record<string, string>;
}): AgentProcess {
  const args = [
    '--import',
    TSX,
    join(ROOT, 'agent/main.ts'),
    '--state-dir',
    o.stateDir,
    '--backoff-max-ms',
    '500',
  ];
  if (o.token) args.push('--enroll', o.token);
  if (o.broker) args.push('--broker', o.broker);
  if (o.hostname) args.push('--hostname', o.hostname);
  args.push(...(o.args ?? []));
  const [cmd, argv] = o.netns
    ? ['ip', ['netns', 'exec', o.netns, process.execPath, ...args]]
    : [process.execPath, args];
  const child = spawn(cmd as string, argv as string[], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...o.env },
  });
  const lines: Record<string, unknown>[] = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      nl = buf.indexOf('\n');
      try {
        lines.push(JSON.parse(line));
      } catch {
        lines.push({ raw: line });
      }
    }
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    child,
    lines,
    stateDir: o.stateDir,
    count: (pred) => lines.filter(pred).length,
    async waitForLog(pred, what, timeoutMs = 45_000) {
      return waitFor(
        () => lines.find(pred),
        `${what} (agent log: ${JSON.stringify(lines.slice(-5))} ${stderr.slice(-500)})`,
        timeoutMs,
      );
    },
    exited,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
    async kill() {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Enrols an agent process and waits until it is connected. */
export async function enrolAgent(
  tb: TestBroker,
  database: Database,
  hostname: string,
  args: string[] = [],
  segment = 'servers',
) {
  const stateDir = tempDir('ar-agent-').dir;
  const token = await newToken(database, tb.clock, tb.broker.pki.caPem, segment);
  const agent = spawnAgent({ stateDir, broker: tb.url, token, hostname, args });
  await agent.waitForLog((l) => l.msg === 'connected', `${hostname} to connect`);
  const ep = await endpointByHost(database, hostname);
  return { agent, endpointId: ep!.id, stateDir };
}

export interface BrokerProcess {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  port: number;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

/** Runs `broker/main.ts` as its own process and waits until it listens. */
export async function spawnBroker(o: {
  dataDir: string;
  port: number;
  brokerId: string;
  databaseUrl?: string;
}) {
  const child = spawn(process.execPath, ['--import', TSX, join(ROOT, 'broker/main.ts')], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      DATABASE_URL: o.databaseUrl ?? '',
      DATA_DIR: o.dataDir,
      BROKER_HOST: '127.0.0.1',
      BROKER_PORT: String(o.port),
      BROKER_ID: o.brokerId,
      BROKER_PUBLIC_HOST: 'localhost',
      LOG_LEVEL: 'info',
      // The key this test process audits with: the broker's records must verify under the same chain key.
      SECRET_KEY: TEST_SECRET_KEY.toString('hex'),
    },
  });
  const lines: Record<string, unknown>[] = [];
  let buf = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      try {
        lines.push(JSON.parse(buf.slice(0, nl)));
      } catch {
        // not JSON
      }
      buf = buf.slice(nl + 1);
      nl = buf.indexOf('\n');
    }
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  await waitFor(
    () =>
      lines.find((l) => l.event === 'broker.listening') ??
      (child.exitCode !== null ? Promise.reject(new Error(stderr.slice(-2000))) : undefined),
    `broker ${o.brokerId} to listen`,
    60_000,
  );
  const p: BrokerProcess = {
    child,
    lines,
    port: o.port,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
  return p;
}
