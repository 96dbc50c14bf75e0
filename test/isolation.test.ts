// Isolation for real: an agent inside a network namespace isolates it with nftables, through the broker's
// delivery path. Connections opened before isolation (outbound to a server outside, inbound to a server
// inside) stop carrying data, new connections either way fail, DNS reaches only the configured resolver,
// and the agent's own broker connection keeps working. After a restart the agent puts the rules back;
// unisolate opens everything again. IPv6 too, when the veth can carry it.
import { spawn } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
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
import { openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  connectForGreeting,
  createNamespace,
  echoes,
  type Namespace,
  namespacesUnavailable,
  reachableFromInside,
  udpAnsweredFromInside,
} from './helpers/netns.ts';

const cannot = namespacesUnavailable();
if (cannot) console.warn(`isolation tests skipped: ${cannot}`);

const GREETING = 'hello from inside';
const INSIDE_PORT = 9999;

describe.skipIf(cannot !== undefined)('network isolation with nftables in a namespace', () => {
  let ns: Namespace;
  let tdb: TestDatabase;
  let tb: TestBroker;
  const servers: Server[] = [];
  const udp: UdpSocket[] = [];
  const held: Socket[] = [];
  let inside: ReturnType<typeof spawn> | undefined;
  const agents: AgentProcess[] = [];
  // Outside, not the broker: a server the namespace reaches out to (`other`), and one that keeps the
  // sockets of the connections opened to it from inside, so the test can write into them later.
  const otherPorts: Record<string, number> = {};
  const capturePorts: Record<string, number> = {};
  const captured: Record<string, Socket[]> = {};
  const families = () => (ns.nsIp6 ? ['v4', 'v6'] : ['v4']);
  const hostAddr = (f: string) => (f === 'v4' ? ns.hostIp : ns.hostIp6!);
  const nsAddr = (f: string) => (f === 'v4' ? ns.nsIp : ns.nsIp6!);

  const listen = async (s: Server, host: string) => {
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, host, r));
    return (s.address() as { port: number }).port;
  };
  const udpEcho = async (host: string, port: number) => {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    s.on('message', (m, from) => s.send(m, from.port, from.address));
    udp.push(s);
    await new Promise<void>((r) => s.bind(port, host, r));
  };

  beforeAll(async () => {
    ns = createNamespace();
    // The endpoint already runs a stateful firewall, as most do (ufw, firewalld): connection tracking is on
    // and established traffic is accepted. Isolation has to win over that.
    const hostFw = ns.exec(
      ['nft', '-f', '-'],
      'table inet host_fw {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ct state established,related accept\n }\n}\n',
    );
    if (hostFw.status !== 0) throw new Error(`host firewall: ${hostFw.stderr}`);
    ns.setResolvConf(`nameserver ${ns.hostIp}\n${ns.hostIp6 ? `nameserver ${ns.hostIp6}\n` : ''}`);

    tdb = await openTestDatabase('pglite');
    tb = await startTestBroker(tdb, { host: ns.hostIp, publicHost: ns.hostIp });
    for (const f of families()) {
      otherPorts[f] = await listen(
        createServer((s) => s.on('error', () => {}).end('other')),
        hostAddr(f),
      );
      captured[f] = [];
      capturePorts[f] = await listen(
        createServer((s) => {
          s.on('error', () => {});
          captured[f]!.push(s);
        }),
        hostAddr(f),
      );
      // A resolver that answers (the one in the namespace's resolv.conf), and a UDP service that is not one.
      await udpEcho(hostAddr(f), 53);
      await udpEcho(hostAddr(f), 5353);
    }

    // Inside: a server that greets then echoes, and an echo client connected to each capture server.
    const dial = families()
      .map(
        (f) =>
          `require('net').connect(${capturePorts[f]},'${hostAddr(f)}',function(){this.pipe(this)}).on('error',()=>{});`,
      )
      .join('');
    inside = spawn('ip', [
      'netns',
      'exec',
      ns.name,
      process.execPath,
      '-e',
      `require('net').createServer(s=>{s.on('error',()=>{});s.write('${GREETING}');s.pipe(s)}).listen(${INSIDE_PORT},'::',()=>{${dial}})`,
    ]);
    for (const f of families()) await waitFor(() => captured[f]!.length === 1, `the ${f} echo client inside`);
  });

  afterAll(async () => {
    for (const a of agents.splice(0)) await a.kill();
    for (const s of held) s.destroy();
    for (const s of Object.values(captured).flat()) s.destroy();
    inside?.kill('SIGKILL');
    for (const s of servers) s.close();
    for (const s of udp) s.close();
    await tb?.stop();
    await tdb?.destroy();
    ns?.destroy();
  });

  it('cuts established and new flows both ways, keeps the broker, re-applies after a restart, and lifts it', async () => {
    const stateDir = tempDir('ar-agent-').dir;
    const token = await newToken(tdb, tb.clock, tb.broker.pki.caPem);
    let agent = spawnAgent({ stateDir, broker: tb.url, token, hostname: 'iso-01', netns: ns.name });
    agents.push(agent);
    await agent.waitForLog((l) => l.msg === 'connected', 'the agent in the namespace to connect');
    const endpointId = (await endpointByHost(tdb, 'iso-01'))!.id;
    const run = async (action: string) => {
      const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action }]);
      return waitFor(async () => {
        const r = await deliveryState(tdb, d!.id);
        return ['succeeded', 'failed'].includes(r.state) ? r : undefined;
      }, `${action} to finish`);
    };

    // Before isolation: both pre-established flows carry data, in each family.
    const inbound: Record<string, Socket> = {};
    for (const f of families()) {
      inbound[f] = (await connectForGreeting(nsAddr(f), INSIDE_PORT, GREETING))!;
      expect(inbound[f], `inbound ${f} connection`).toBeDefined();
      held.push(inbound[f]!);
      expect(await echoes(inbound[f]!, `in-${f}-before`)).toBe(true);
      expect(await echoes(captured[f]![0]!, `out-${f}-before`)).toBe(true);
      expect(await reachableFromInside(ns, hostAddr(f), otherPorts[f]!)).toBe(true);
    }

    const isolated = await run('isolate');
    expect(isolated.state, String(isolated.error)).toBe('succeeded');
    expect(isolated.result).toMatchObject({
      isolated: true,
      dryRun: false,
      mechanism: 'nftables',
      verified: true,
      allowed: {
        broker: [{ address: ns.hostIp, port: tb.port }],
        dns: ns.hostIp6 ? [ns.hostIp, ns.hostIp6] : [ns.hostIp],
        dhcp: true,
      },
    });
    // Conntrack ran and removed at least the two pre-established flows of each family.
    const flushed = (isolated.result as { conntrackFlushed: unknown }).conntrackFlushed;
    expect(flushed).toBeGreaterThanOrEqual(2 * families().length);
    const tracked = ns.exec(['conntrack', '-L', '-o', 'extended']).stdout;
    expect(tracked).toMatch(new RegExp(`dport=${tb.port} `));
    expect(tracked).not.toMatch(
      new RegExp(`dport=(${INSIDE_PORT}|${Object.values(capturePorts).join('|')}) `),
    );
    expect(ns.exec(['nft', 'list', 'table', 'inet', 'ar_isolation']).stdout).toMatch(/policy drop/);

    // Each check waits a bounded time for traffic that must not come; they run side by side.
    const checks = await Promise.all(
      families().map(async (f) => {
        const [inboundFlowEchoes, outboundFlowEchoes, newInbound, newOutbound, dns, otherUdp] =
          await Promise.all([
            // The flows opened before isolation no longer carry anything.
            echoes(inbound[f]!, `in-${f}-after`),
            echoes(captured[f]![0]!, `out-${f}-after`),
            // New connections fail both ways.
            connectForGreeting(nsAddr(f), INSIDE_PORT, GREETING).then((s) => s !== undefined),
            reachableFromInside(ns, hostAddr(f), otherPorts[f]!),
            // DNS gets through to the configured resolver, and UDP elsewhere does not.
            udpAnsweredFromInside(ns, hostAddr(f), 53),
            udpAnsweredFromInside(ns, hostAddr(f), 5353),
          ]);
        return { family: f, inboundFlowEchoes, outboundFlowEchoes, newInbound, newOutbound, dns, otherUdp };
      }),
    );
    expect(checks).toEqual(
      families().map((family) => ({
        family,
        inboundFlowEchoes: false,
        outboundFlowEchoes: false,
        newInbound: false,
        newOutbound: false,
        dns: true,
        otherUdp: false,
      })),
    );
    // The broker stays reachable, and the agent's connection survives: a second delivery goes through it.
    expect(await reachableFromInside(ns, ns.hostIp, tb.port)).toBe(true);
    const after = await run('processes');
    expect(after.state).toBe('succeeded');
    expect(agent.count((l) => l.msg === 'connected')).toBe(1);
    expect((await endpointByHost(tdb, 'iso-01'))!.isolated).toBe(true);

    // A reboot loses the ruleset; the agent puts it back when it starts.
    await agent.kill();
    ns.exec(['nft', 'delete', 'table', 'inet', 'ar_isolation']);
    expect(await reachableFromInside(ns, ns.hostIp, otherPorts.v4!)).toBe(true);
    agent = spawnAgent({ stateDir, netns: ns.name });
    agents.push(agent);
    await agent.waitForLog((l) => l.msg === 'connected', 'the restarted agent to connect');
    expect(agent.count((l) => l.msg === 'isolation re-applied after start')).toBe(1);
    expect(await reachableFromInside(ns, ns.hostIp, otherPorts.v4!)).toBe(false);
    expect(await connectForGreeting(ns.nsIp, INSIDE_PORT, GREETING)).toBeUndefined();

    const lifted = await run('unisolate');
    expect(lifted.state).toBe('succeeded');
    expect(lifted.result).toMatchObject({
      isolated: false,
      dryRun: false,
      mechanism: 'nftables',
      verified: true,
    });
    for (const f of families()) {
      expect(
        await reachableFromInside(ns, hostAddr(f), otherPorts[f]!),
        `outbound ${f} after unisolate`,
      ).toBe(true);
      const again = await connectForGreeting(nsAddr(f), INSIDE_PORT, GREETING);
      expect(again, `inbound ${f} after unisolate`).toBeDefined();
      again?.destroy();
    }
    expect(ns.exec(['nft', 'list', 'tables']).stdout).not.toMatch(/ar_isolation/);
    expect((await endpointByHost(tdb, 'iso-01'))!.isolated).toBe(false);
  });
});
