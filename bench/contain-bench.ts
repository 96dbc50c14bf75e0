// `npm run bench:contain`: time to contain. Through the console adapter, the real platform, the broker and a
// real agent process in dry-run (the machine is never isolated), from the moment the approver submits the
// step-up page (password + TOTP) to "isolated" confirmed in the request's thread. Two cases:
//   online     the endpoint's agent is connected throughout;
//   reconnect  the agent's link is down when the approver submits and comes back right after (a TCP relay
//              between agent and broker drops and refuses connections, then lets them through again; the
//              agent reconnects on its own backoff, capped here at 1 s with --backoff-max-ms).
// Each isolate is followed by an untimed release, so every timed request starts from an open endpoint.
// PGlite, and PostgreSQL when DATABASE_URL is set. Prints one JSON document.
//
//   npm run bench:contain [-- --quick]      (200 requests per case, 20 with --quick)
import { createServer, connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { ConsoleMessage } from '../adapters/console/console-chat.ts';
import { endpointByHost, newToken, spawnAgent, tempDir, waitFor } from '../test/helpers/agents.ts';
import { type Driver, drivers } from '../test/helpers/db.ts';
import { startE2E } from '../test/helpers/e2e.ts';

const QUICK = process.argv.includes('--quick');
const REQUESTS = Number(process.env.REQUESTS ?? (QUICK ? 20 : 200));
const PAST_WINDOW_MS = 11 * 60 * 1000;

/** A TCP relay to the broker that can drop every connection and refuse new ones, like a network outage. */
async function relay(targetPort: number) {
  let down = false;
  const open = new Set<Socket>();
  const server = createServer((inbound) => {
    if (down) return inbound.destroy();
    const outbound = netConnect(targetPort, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      open.add(s);
      s.on('close', () => open.delete(s));
      s.on('error', () => {});
    }
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    down() {
      down = true;
      for (const s of open) s.destroy();
    },
    up() {
      down = false;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

function pct(sorted: number[], p: number) {
  return +sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!.toFixed(1);
}

async function benchDriver(driver: Driver) {
  const e = await startE2E(driver);
  const { t, tb, tdb, analyst, commander } = e;
  const link = await relay(tb.port);
  try {
    const online = await e.agent('contain-online', ['--dry-run']);
    // The second agent talks to the broker only through the relay.
    const stateDir = tempDir('ar-contain-agent-').dir;
    const sandbox = join(stateDir, 'sandbox');
    const viaRelay = spawnAgent({
      stateDir,
      broker: `wss://localhost:${link.port}`,
      token: await newToken(tdb, tb.clock, tb.broker.pki.caPem),
      hostname: 'contain-reconnect',
      args: ['--dry-run', '--sandbox', sandbox, '--backoff-max-ms', '1000'],
    });
    await viaRelay.waitForLog((l) => l.msg === 'connected', 'the relayed agent to connect');
    const relayedId = (await endpointByHost(tdb, 'contain-reconnect'))!.id;

    const nextCode = () => t.clock.advance(30_000);
    /** One timed isolate: returns ms from the approver's step-up submit to "isolated" in the thread. */
    async function timedIsolate(hostname: string, reconnect: boolean): Promise<number> {
      t.clock.advance(PAST_WINDOW_MS);
      const before = t.chat.transcript.length;
      await t.platform.bot.handleCommand(t.ctx('analyst'), `isolate ${hostname} --reason bench --case IR-1`);
      const fresh = () => t.chat.transcript.slice(before);
      if (fresh().some((m) => m.kind === 'private' && m.to === 'analyst' && /\/stepup\//.test(m.text))) {
        nextCode();
        await t.stepUp(t.lastLinkFor('analyst'), analyst);
      }
      const card = await t.chat.waitFor(
        (m) => m.kind === 'card' && t.chat.transcript.indexOf(m) >= before,
        30_000,
      );
      if (card.view!.state !== 'pending_approval') throw new Error(`unexpected state ${card.view!.state}`);
      if (reconnect) {
        link.down();
        await waitFor(() => !tb.broker.connected().includes(relayedId), 'the relayed agent to drop');
      }
      await t.platform.bot.handleDecision(t.ctx('commander'), {
        requestId: card.view!.ref,
        decision: 'approve',
      });
      const stepUpLink = t.lastLinkFor('commander');
      nextCode();
      const isolated = (m: ConsoleMessage) =>
        m.kind === 'thread' && m.threadId === card.messageId && /isolated from the network/.test(m.text);
      const t0 = performance.now();
      await t.stepUp(stepUpLink, commander);
      if (reconnect) link.up();
      await t.chat.waitFor(isolated, 60_000);
      const ms = performance.now() - t0;
      await e.act(`unisolate ${hostname} --reason bench --case IR-1`);
      return ms;
    }

    const out: Record<string, unknown> = { driver, requests_per_case: REQUESTS };
    for (const [name, host, reconnect] of [
      ['online', online.hostname, false],
      ['reconnect', 'contain-reconnect', true],
    ] as const) {
      const ms: number[] = [];
      for (let i = 0; i < REQUESTS; i++) ms.push(await timedIsolate(host, reconnect));
      ms.sort((a, b) => a - b);
      out[name] = { p50_ms: pct(ms, 0.5), p99_ms: pct(ms, 0.99), max_ms: +ms.at(-1)!.toFixed(1) };
      process.stderr.write(`[bench:contain ${driver}] ${name}: ${JSON.stringify(out[name])}\n`);
    }
    await viaRelay.kill();
    return out;
  } finally {
    await link.close();
    await e.stop();
  }
}

const results = [];
for (const d of drivers) results.push(await benchDriver(d));
console.log(
  JSON.stringify(
    {
      targets: { online_p99_ms: 1000, reconnect_p99_ms: 2000 },
      note: 'from the approver’s step-up submit (password + TOTP checked) to “isolated” in the request thread',
      results,
    },
    null,
    2,
  ),
);
process.exit(0);
