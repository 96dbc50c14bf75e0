// A silent network: a real agent in a network namespace, and nftables dropping every packet on its veth for
// 60 s, so neither side hears a close or a reset. With a 2 s heartbeat the agent must notice the silence
// during the cut, and be connected again within two heartbeat periods of the network coming back; work
// queued during the cut then runs. The measured times are printed, not asserted beyond those bounds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  endpointByHost,
  newToken,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { createNamespace, type Namespace, namespacesUnavailable } from './helpers/netns.ts';

const HEARTBEAT_SECONDS = 2;
const CUT_MS = 60_000;

const cannot = namespacesUnavailable();
if (cannot) console.warn(`silent network tests skipped: ${cannot}`);

describe.skipIf(cannot !== undefined).each(drivers)(
  'a silent network between agent and broker on %s',
  { timeout: 180_000 },
  (driver) => {
    let ns: Namespace;
    let tdb: TestDatabase;
    let tb: TestBroker;
    let agent: AgentProcess;
    const state = tempDir('ar-hb-agent-');

    beforeAll(async () => {
      ns = createNamespace();
      tdb = await openTestDatabase(driver);
      tb = await startTestBroker(tdb, {
        host: ns.hostIp,
        publicHost: ns.hostIp,
        heartbeatSeconds: HEARTBEAT_SECONDS,
      });
    }, 60_000);
    afterAll(async () => {
      await agent?.kill();
      await tb?.stop();
      await tdb?.destroy();
      ns?.destroy();
      state.remove();
    });

    /** The namespace's end of the veth: the one interface besides lo. */
    function veth(): string {
      const out = ns.exec(['ip', '-o', 'link', 'show', 'type', 'veth']).stdout;
      const name = /^\d+:\s+([^@:\s]+)/.exec(out)?.[1];
      if (!name) throw new Error(`no veth in the namespace: ${out}`);
      return name;
    }

    function nft(rules: string) {
      const r = ns.exec(['nft', '-f', '-'], rules);
      if (r.status !== 0) throw new Error(`nft: ${r.stderr}`);
    }

    it('notices the silence, reconnects within two heartbeat periods after the cut, and runs the work queued meanwhile', async () => {
      const token = await newToken(tdb, tb.clock, tb.broker.pki.caPem);
      agent = spawnAgent({
        stateDir: state.dir,
        broker: tb.url,
        token,
        hostname: 'quiet-01',
        args: ['--dry-run'],
        netns: ns.name,
      });
      const connected = (l: Record<string, unknown>) => l.msg === 'connected';
      const first = await agent.waitForLog(connected, 'the agent to connect');
      expect(first.heartbeatSeconds).toBe(HEARTBEAT_SECONDS);
      const endpointId = (await endpointByHost(tdb, 'quiet-01'))!.id;

      const dev = veth();
      nft(
        `table inet ar_cut {\n` +
          `  chain in { type filter hook input priority -100; iifname "${dev}" drop; }\n` +
          `  chain out { type filter hook output priority -100; oifname "${dev}" drop; }\n` +
          `}\n`,
      );
      const cutAt = Date.now();
      const silent = await agent.waitForLog(
        (l) => l.msg === 'the broker went silent; reconnecting',
        'the agent to notice the silence',
        CUT_MS,
      );
      const noticedMs = Date.now() - cutAt;
      expect(noticedMs).toBeLessThan(CUT_MS);

      // Approved while the endpoint cannot be reached: it waits in the outbox.
      const [queued] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
        { endpointId, action: 'processes' },
      ]);
      await new Promise((r) => setTimeout(r, Math.max(0, cutAt + CUT_MS - Date.now())));
      expect(agent.count(connected)).toBe(1);
      expect((await deliveryState(tdb, queued!.id)).state).not.toBe('succeeded');

      nft('delete table inet ar_cut\n');
      const backAt = Date.now();
      await waitFor(
        () => agent.count(connected) === 2,
        `the agent to reconnect within ${2 * HEARTBEAT_SECONDS} s (two heartbeat periods) of the network's return`,
        2 * HEARTBEAT_SECONDS * 1000,
      );
      const reconnectMs = Date.now() - backAt;
      await waitFor(
        async () => (await deliveryState(tdb, queued!.id)).state === 'succeeded',
        'the queued delivery to run',
      );
      const deliveredMs = Date.now() - backAt;
      console.log(
        `heartbeat ${HEARTBEAT_SECONDS} s: silence noticed ${noticedMs} ms into the cut ` +
          `(agent's own count: ${silent.silentMs} ms silent); reconnected ${reconnectMs} ms and the queued ` +
          `delivery done ${deliveredMs} ms after the network came back`,
      );
      expect(agent.child.exitCode).toBeNull();
    });
  },
);
