// The whole path a person takes, for end-to-end tests: the real platform with the console chat, a real
// broker, real agent processes, and both step-ups done through the core as the page does. `act` types a
// command as the analyst, confirms it, has the commander approve it with a fresh step-up, and waits for the
// request to finish; it returns the request's card and thread, and its audit trail.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ConsoleMessage } from '../../adapters/console/console-chat.ts';
import type { AuditRecord } from '../../bot/audit/audit-service.ts';
import type { RequestView } from '../../bot/ports.ts';
import type { Database } from '../../db/client.ts';
import {
  type AgentProcess,
  endpointByHost,
  newToken,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './agents.ts';
import { type Driver, openTestDatabase, type TestDatabase } from './db.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './platform.ts';

/** Step-up windows last 10 minutes: moving the clock past that makes every action need both step-ups again. */
const PAST_WINDOW_MS = 11 * 60 * 1000;

export interface E2EAgent {
  hostname: string;
  endpointId: string;
  process: AgentProcess;
  stateDir: string;
  /** The directory the agent acts inside (files, scripts, visible processes). */
  sandbox: string;
}

export interface ActResult {
  view: RequestView;
  /** Thread replies of the request's card, in order. */
  thread: string[];
  audit: AuditRecord[];
}

export async function startE2E(
  driver: Driver,
  opts: {
    brokerHost?: string;
    brokerPublicHost?: string;
    /**
     * Connections of their own for the broker and the platform to the fresh test database (for example
     * through a proxy a test cuts); default both use the test database's. They are closed on stop.
     */
    connect?: (tdb: TestDatabase) => Promise<{ broker?: Database; platform?: Database }>;
    outboxSweepMs?: number;
  } = {},
) {
  const tdb: TestDatabase = await openTestDatabase(driver);
  const own = (await opts.connect?.(tdb)) ?? {};
  const tb: TestBroker = await startTestBroker(own.broker ?? tdb, {
    host: opts.brokerHost,
    publicHost: opts.brokerPublicHost,
    outboxSweepMs: opts.outboxSweepMs,
  });
  const platformDb: TestDatabase = own.platform
    ? { ...own.platform, url: tdb.url, destroy: () => own.platform!.close() }
    : tdb;
  const t: TestPlatform = await buildTestPlatform(
    platformDb,
    {},
    { startAt: new Date(), fileStore: tb.fileStore },
  );
  // Delivery progress reaches chat as in production: the broker NOTIFYs, the platform listens.
  const unfollow = await t.platform.followDeliveries();
  const analyst: Person = await t.person('analyst', ['active_response']);
  const commander: Person = await t.person('commander', ['active_response', 'approver']);
  const agents: E2EAgent[] = [];
  const children: { kill(): void }[] = [];

  const cardOf = (ref: string) =>
    t.chat.transcript.find((m) => m.kind === 'card' && m.view?.ref === ref) as
      | (ConsoleMessage & { view: RequestView })
      | undefined;
  const threadOf = (card: ConsoleMessage) =>
    t.chat.transcript.filter((m) => m.kind === 'thread' && m.threadId === card.messageId).map((m) => m.text);
  const privateTo = (name: string) =>
    t.chat.transcript.filter((m) => m.kind === 'private' && m.to === name).map((m) => m.text);

  return {
    tdb,
    tb,
    t,
    analyst,
    commander,
    agents,

    /** Enrols and starts an agent acting inside its own sandbox directory. */
    async agent(hostname: string, args: string[] = [], o: { netns?: string } = {}): Promise<E2EAgent> {
      const stateDir = tempDir('ar-e2e-agent-').dir;
      const sandbox = join(stateDir, 'sandbox');
      mkdirSync(sandbox, { recursive: true });
      const token = await newToken(tdb, tb.clock, tb.broker.pki.caPem);
      const process = spawnAgent({
        stateDir,
        broker: tb.url,
        token,
        hostname,
        args: ['--sandbox', sandbox, ...args],
        netns: o.netns,
      });
      await process.waitForLog((l) => l.msg === 'connected', `${hostname} to connect`);
      const ep = await endpointByHost(tdb, hostname);
      const a = { hostname, endpointId: ep!.id, process, stateDir, sandbox };
      agents.push(a);
      return a;
    },

    /**
     * A harmless process whose working directory is the agent's sandbox, so the sandboxed agent may kill it:
     * a copy of `sleep` under `name` (long names are fine: kill matches beyond comm's 15 characters).
     */
    decoy(a: E2EAgent, name = 'sleep') {
      const dir = join(a.sandbox, 'bin');
      mkdirSync(dir, { recursive: true });
      const bin = join(dir, name);
      if (!existsSync(bin)) copyFileSync('/bin/sleep', bin);
      const child = spawn(bin, ['600'], { cwd: a.sandbox, stdio: 'ignore' });
      children.push(child);
      const exited = new Promise<number | null>((r) =>
        child.once('exit', (code, sig) => r(code ?? (sig ? -1 : 0))),
      );
      return { pid: child.pid!, child, exited };
    },

    /** Lets every step-up window lapse, so the next action needs both step-ups again. */
    lapseWindows() {
      t.clock.advance(PAST_WINDOW_MS);
    },

    privateTo,
    cardOf,

    /**
     * `text` typed by the analyst (in `threadId` when given), confirmed with the analyst's step-up when asked,
     * approved by the commander with a step-up when the request needs it, then followed until it completes.
     */
    async act(
      text: string,
      o: {
        threadId?: string;
        approve?: boolean;
        /** Runs just before the approver clicks, and once the approval (with its step-up) is done. */
        beforeApprove?: () => Promise<void>;
        afterApprove?: () => Promise<void>;
      } = {},
    ): Promise<ActResult> {
      const before = t.chat.transcript.length;
      const ctx = t.ctx('analyst');
      if (o.threadId) ctx.threadId = o.threadId;
      await t.platform.bot.handleCommand(ctx, text);
      const fresh = () => t.chat.transcript.slice(before);
      const refused = fresh().find(
        (m) => m.kind === 'private' && m.to === 'analyst' && !/\/stepup\//.test(m.text),
      );
      if (refused) throw new Error(`the command was refused: ${refused.text}`);
      const confirm = fresh().find(
        (m) => m.kind === 'private' && m.to === 'analyst' && /\/stepup\//.test(m.text),
      );
      // Each TOTP code works once: a step-up in the next 30-second step has a fresh one.
      const nextCode = () => t.clock.advance(30_000);
      if (confirm) {
        nextCode();
        await t.stepUp(t.lastLinkFor('analyst'), analyst);
      }
      const card = await t.chat.waitFor(
        (m) => m.kind === 'card' && t.chat.transcript.indexOf(m) >= before,
        10_000,
      );
      const ref = card.view!.ref;
      if (card.view!.state === 'pending_approval' && o.approve !== false) {
        await o.beforeApprove?.();
        const click = t.chat.transcript.length;
        await t.platform.bot.handleDecision(t.ctx('commander'), { requestId: ref, decision: 'approve' });
        // A live step-up window approves at once; otherwise the click sends a link to the step-up page.
        const linked = t.chat.transcript
          .slice(click)
          .some((m) => m.kind === 'private' && m.to === 'commander' && /\/stepup\//.test(m.text));
        if (linked) {
          nextCode();
          await t.stepUp(t.lastLinkFor('commander'), commander);
        }
        await o.afterApprove?.();
      }
      await waitFor(
        () => ['completed', 'denied', 'cancelled', 'expired'].includes(cardOf(ref)!.view.state),
        `${ref} to complete (thread: ${JSON.stringify(threadOf(card))})`,
        90_000,
      );
      // The completion notice follows the card edit: wait for it so the thread is whole.
      await waitFor(() => threadOf(card).some((l) => /completed/.test(l)), `${ref}'s completion notice`);
      const view = cardOf(ref)!.view;
      return {
        view,
        thread: threadOf(card),
        audit: await t.platform.audit.list({ requestId: view.id, limit: 200 }),
      };
    },

    async stop() {
      for (const c of children) c.kill();
      for (const a of agents.splice(0)) await a.process.kill();
      await unfollow();
      await tb.stop();
      await own.broker?.close();
      await own.platform?.close();
      await tdb.destroy();
    },
  };
}

export type E2E = Awaited<ReturnType<typeof startE2E>>;

/** The audit actions of a request, oldest first. */
export const auditActions = (records: AuditRecord[]) => [...records].reverse().map((r) => r.action);
