// The core of `npm run bench:groups`, shared with its test (test/bench-groups.test.ts) so the bench cannot
// rot: N simulated agents in a child process (bench/groups-bench-client.ts) connected to the real broker, the
// real platform with the console chat behind a ChatPort that counts every call, and two action groups
// (`processes all`) asked for by an analyst and approved by a commander through the step-up, as a person
// does. The first runs on a connected fleet; the second is approved while every agent is away, so all its
// deliveries queue, and then the whole fleet reconnects at once and drains them. Returns the figures; the
// caller owns the database.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { and, count, eq, inArray, isNotNull } from 'drizzle-orm';
import type { ConsoleMessage } from '../adapters/console/console-chat.ts';
import { createAuditService } from '../bot/audit/audit-service.ts';
import type { ChatPort, RequestView } from '../bot/ports.ts';
import { systemClock } from '../bot/ports.ts';
import { createBroker } from '../broker/broker.ts';
import { createLocalFileStore } from '../broker/files/local-file-store.ts';
import { certFingerprint } from '../broker/pki/pki.ts';
import type { Database } from '../db/client.ts';
import { deliveries, endpoints } from '../db/schema.ts';
import { seedSegment } from '../test/helpers/agents.ts';
import { testChainKey } from '../test/helpers/keys.ts';
import { buildTestPlatform, type TestPlatform } from '../test/helpers/platform.ts';
import { keyAndCsr } from '../test/helpers/raw-agent.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const quiet = { info() {}, warn() {}, error() {}, debug() {} };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One ChatPort call: which method, when (performance.now()), and the message it edited, if any. */
interface ChatCall {
  method: keyof ChatPort;
  at: number;
  messageId?: string;
}

/** Wraps a ChatPort so every call (post, update, reply) is recorded before it is passed on. */
export function countingChat(inner: ChatPort) {
  const calls: ChatCall[] = [];
  const wrapped = {} as ChatPort;
  for (const method of Object.keys(inner) as (keyof ChatPort)[]) {
    (wrapped as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
      const ref = args[0] as { messageId?: string } | undefined;
      calls.push({
        method,
        at: performance.now(),
        messageId: method.startsWith('update') ? ref?.messageId : undefined,
      });
      return (inner[method] as (...a: unknown[]) => unknown)(...args);
    };
  }
  return { chat: wrapped, calls };
}

/** The most timestamps (ms) that fall in any one-second window [t, t + 1000). */
export function maxPerSecond(times: number[]): number {
  const s = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < s.length; i++) {
    while (s[i]! - s[j]! >= 1000) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

export interface GroupFigures {
  deliveries: number;
  /** Step-up submit (password + TOTP, argon2id) to the approval committed (its first chat call). */
  stepup_submit_to_commit_ms: number;
  /** Approval commit to every agent's ack recorded. */
  all_acked_ms: number;
  /** Approval commit to every result stored. */
  all_results_ms: number;
  /** Approval commit to the card saying completed. */
  card_completed_ms: number;
  chat_calls: number;
  chat_calls_by_method: Record<string, number>;
  progress_edits: number;
  /** The most edits of the group's progress message within any one second (sliding), as chat saw them. */
  max_progress_edits_per_s: number;
  /** The shortest time between two edits of it as chat saw them (the coalescing decides ≥ 1 s apart). */
  min_gap_between_progress_edits_ms: number | null;
  results_stored_in_db: number;
  lost: number;
  run_twice: number;
  redelivered: number;
}

export interface OfflineFigures extends GroupFigures {
  /** Every agent reconnecting at once to every delivery acked and its result stored. */
  drain_ms: number;
  /** Reconnect start to every agent welcomed again. */
  reconnect_ms: number;
  queued_before_reconnect: number;
}

export interface GroupsBenchResult {
  n: number;
  connect_ms: number;
  online: GroupFigures;
  offline: OfflineFigures;
}

/**
 * Runs both groups on `database` (migrated, empty) with `n` simulated agents. `phase` hears progress lines.
 */
export async function runGroupsBench(
  database: Database & { url?: string },
  opts: { n: number; phase?: (what: string) => void },
): Promise<GroupsBenchResult> {
  const { n } = opts;
  const phase = opts.phase ?? (() => {});
  const dir = mkdtempSync(join(tmpdir(), 'ar-groups-bench-'));
  const fileStore = createLocalFileStore(join(dir, 'files'));
  // Read-only work on more than 50 endpoints needs one approval (the default); a smaller fleet gets the same
  // flow by lowering the line under it.
  const t: TestPlatform = await buildTestPlatform(
    { ...database, destroy: async () => {} },
    { READ_ONLY_APPROVAL_ABOVE: String(Math.max(1, Math.min(50, n - 1))) },
    { startAt: new Date(), fileStore },
  );
  const counted = countingChat(t.chat.chat);
  t.platform.router.register('console', counted.chat);

  const acked = new Map<string, number>();
  const stored = new Map<string, number>();
  const broker = createBroker({
    db: database,
    audit: createAuditService({ db: database.db, clock: systemClock, chainKey: testChainKey }),
    clock: systemClock,
    logger: quiet,
    fileStore,
    observer: {
      async deliveryChanged(e) {
        if (e.state === 'acknowledged' && !acked.has(e.deliveryId))
          acked.set(e.deliveryId, performance.now());
        if (['succeeded', 'failed'].includes(e.state) && !stored.has(e.deliveryId))
          stored.set(e.deliveryId, performance.now());
      },
    },
    config: {
      host: '127.0.0.1',
      port: 0,
      brokerId: `bench-groups-${database.driver}`,
      publicHost: 'localhost',
      dataDir: dir,
      maxFileBytes: 1 << 20,
    },
  });
  const { port } = await broker.start();
  const unfollow = await t.platform.followDeliveries();
  // As main.ts: the backstop for delivery events the LISTEN session missed.
  const catchUp = setInterval(() => void t.platform.catchUpDeliveries().catch(() => {}), 5000);
  let child: ReturnType<typeof fork> | undefined;
  try {
    await t.person('analyst', ['active_response']);
    const commander = await t.person('commander', ['active_response', 'approver']);

    // N endpoints, one key pair and a certificate each, in an Active Response segment.
    const seg = await seedSegment(database, 'fleet');
    const { keyPem, csrPem } = await keyAndCsr('sim');
    const certs: string[] = [];
    const hostnames: string[] = [];
    const rows: (typeof endpoints.$inferInsert)[] = [];
    for (let i = 0; i < n; i++) {
      const id = crypto.randomUUID();
      const cert = (await broker.pki.issueClientCert(csrPem, id, new Date())).pem;
      const hostname = `g-${String(i).padStart(5, '0')}`;
      certs.push(cert);
      hostnames.push(hostname);
      rows.push({
        id,
        hostname,
        os: 'linux',
        agentVersion: '1.0.0',
        segmentId: seg.id,
        certFingerprint: certFingerprint(cert),
        certNotAfter: new Date(Date.now() + 86400_000),
      });
    }
    for (let i = 0; i < rows.length; i += 1000)
      await database.db.insert(endpoints).values(rows.slice(i, i + 1000));
    const certsFile = join(dir, 'certs.json');
    writeFileSync(certsFile, JSON.stringify({ key: keyPem, ca: broker.pki.caPem, certs, hostnames }));
    phase(`seeded ${n} endpoints`);

    child = fork(join(here, 'groups-bench-client.ts'), [JSON.stringify({ port, certsFile })], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const c = child;
    const ask = <T>(msg: object) =>
      new Promise<T>((r) => {
        c.once('message', (m) => r(m as T));
        c.send(msg);
      });
    await new Promise((r) => c.once('message', r));
    const conn = await ask<{ connected: number; ms: number }>({ cmd: 'connect' });
    phase(`connected ${conn.connected} agents in ${Math.round(conn.ms)} ms`);

    const cardOf = (ref: string) =>
      t.chat.transcript.find((m) => m.kind === 'card' && m.view?.ref === ref) as
        | (ConsoleMessage & { view: RequestView })
        | undefined;

    /** Asks for the group as the analyst and approves it as the commander; returns when it is committed. */
    async function askAndApprove(caseId: string) {
      const before = t.chat.transcript.length;
      await t.say('analyst', `processes all --case ${caseId}`);
      const card = await t.chat.waitFor(
        (m) => m.kind === 'card' && t.chat.transcript.indexOf(m) >= before,
        60_000,
      );
      const ref = card.view!.ref;
      if (card.view!.state !== 'pending_approval')
        throw new Error(`${ref} is ${card.view!.state}, expected it to wait for an approval`);
      await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: ref, decision: 'approve' });
      const link = t.lastLinkFor('commander');
      // Each TOTP code works once: the step-up uses the next 30-second step's code.
      t.clock.advance(30_000);
      const callsBefore = counted.calls.length;
      const submitAt = performance.now();
      await t.stepUp(link, commander);
      // Nothing reaches chat inside a transaction: the first chat call after the submit follows the commit.
      const commitAt = counted.calls[callsBefore]?.at ?? performance.now();
      const ids = (
        await database.db
          .select({ id: deliveries.id })
          .from(deliveries)
          .where(eq(deliveries.requestId, card.view!.id))
      ).map((d) => d.id);
      if (ids.length !== n) throw new Error(`${ref} has ${ids.length} deliveries, expected ${n}`);
      return { ref, requestId: card.view!.id, ids, submitAt, commitAt };
    }

    async function waitUntil(what: string, ok: () => boolean | Promise<boolean>, ms = 3_600_000) {
      const until = Date.now() + ms;
      while (!(await ok())) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
        await sleep(25);
      }
    }

    /** Waits for the group to finish in chat, then reads every figure of it. */
    async function finish(
      g: Awaited<ReturnType<typeof askAndApprove>>,
      chatFrom: number,
    ): Promise<GroupFigures> {
      await waitUntil('every ack', () => g.ids.every((id) => acked.has(id)));
      const lastAck = Math.max(...g.ids.map((id) => acked.get(id)!));
      phase(`${g.ref}: all acked`);
      await waitUntil('every result', () => g.ids.every((id) => stored.has(id)));
      const lastResult = Math.max(...g.ids.map((id) => stored.get(id)!));
      phase(`${g.ref}: all results stored`);
      let completedAt = 0;
      await waitUntil('the card to say completed', () => {
        if (cardOf(g.ref)?.view.state !== 'completed') return false;
        completedAt ||= performance.now();
        return t.chat.transcript.some((m) => m.kind === 'thread' && m.text.startsWith(`${g.ref} completed:`));
      });
      // The trailing progress edit comes at most a second after the last change.
      await sleep(2500);
      const calls = counted.calls.slice(chatFrom);
      const progressId = t.chat.transcript.find(
        (m) => m.kind === 'thread' && m.text.startsWith(`${g.ref} progress [`),
      )?.messageId;
      const edits = calls.filter((cl) => cl.method === 'updateThreadMessage' && cl.messageId === progressId);
      const byMethod: Record<string, number> = {};
      for (const cl of calls) byMethod[cl.method] = (byMethod[cl.method] ?? 0) + 1;
      const [db] = await database.db
        .select({ n: count() })
        .from(deliveries)
        .where(
          and(
            eq(deliveries.requestId, g.requestId),
            eq(deliveries.state, 'succeeded'),
            isNotNull(deliveries.result),
          ),
        );
      const journal = await ask<{ lost: number; runTwice: number; redelivered: number }>({
        cmd: 'journal',
        ids: g.ids,
      });
      return {
        deliveries: g.ids.length,
        stepup_submit_to_commit_ms: Math.round(g.commitAt - g.submitAt),
        all_acked_ms: Math.round(lastAck - g.commitAt),
        all_results_ms: Math.round(lastResult - g.commitAt),
        card_completed_ms: Math.round(completedAt - g.commitAt),
        chat_calls: calls.length,
        chat_calls_by_method: byMethod,
        progress_edits: edits.length,
        max_progress_edits_per_s: maxPerSecond(edits.map((e) => e.at)),
        min_gap_between_progress_edits_ms:
          edits.length > 1
            ? Math.round(Math.min(...edits.slice(1).map((e, i) => e.at - edits[i]!.at)))
            : null,
        results_stored_in_db: db?.n ?? 0,
        lost: journal.lost,
        run_twice: journal.runTwice,
        redelivered: journal.redelivered,
      };
    }

    // 1. A group on a connected fleet.
    const chatFrom1 = counted.calls.length;
    const g1 = await askAndApprove('BENCH-ONLINE');
    phase(`${g1.ref}: approved`);
    const online = await finish(g1, chatFrom1);
    phase(`${g1.ref}: ${JSON.stringify(online)}`);

    // 2. Every agent away; a group approved meanwhile queues; then they all come back at once.
    await ask({ cmd: 'disconnect' });
    await waitUntil('every agent to drop', () => broker.connected().length === 0, 300_000);
    await waitUntil(
      'every endpoint to show offline',
      async () =>
        (
          await database.db
            .select({ n: count() })
            .from(endpoints)
            .where(and(eq(endpoints.segmentId, seg.id), isNotNull(endpoints.brokerId)))
        )[0]!.n === 0,
      300_000,
    );
    phase('fleet offline');
    const chatFrom2 = counted.calls.length;
    const g2 = await askAndApprove('BENCH-OFFLINE');
    const [queued] = await database.db
      .select({ n: count() })
      .from(deliveries)
      .where(and(inArray(deliveries.id, g2.ids), eq(deliveries.state, 'queued')));
    phase(`${g2.ref}: approved, ${queued?.n} queued`);
    const reconnectAt = performance.now();
    const reconnected = ask<{ connected: number; ms: number }>({ cmd: 'connect' });
    await waitUntil('every queued delivery to drain', () => g2.ids.every((id) => stored.has(id)));
    const drainedAt = Math.max(...g2.ids.map((id) => stored.get(id)!));
    const back = await reconnected;
    const offline = await finish(g2, chatFrom2);
    const result: GroupsBenchResult = {
      n,
      connect_ms: Math.round(conn.ms),
      online,
      offline: {
        ...offline,
        drain_ms: Math.round(drainedAt - reconnectAt),
        reconnect_ms: Math.round(back.ms),
        queued_before_reconnect: queued?.n ?? 0,
      },
    };
    phase(`${g2.ref}: ${JSON.stringify(result.offline)}`);
    await ask({ cmd: 'disconnect' });
    return result;
  } finally {
    clearInterval(catchUp);
    child?.kill();
    await unfollow();
    await broker.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
