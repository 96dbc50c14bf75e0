// Isolation for real: an agent inside a network namespace isolates it with nftables. From inside, a server
// outside that is not the broker becomes unreachable while the broker stays reachable, and an inbound
// connection into the namespace still works; after unisolate everything is reachable again.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';
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

const sh = (cmd: string[]) => spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });

function namespacesWork(): string | undefined {
  const name = `ar-probe-${randomBytes(3).toString('hex')}`;
  const r = sh(['ip', 'netns', 'add', name]);
  if (r.status !== 0) return `ip netns add failed: ${(r.stderr || r.error?.message || '').trim()}`;
  sh(['ip', 'netns', 'del', name]);
  if (sh(['nft', '--version']).status !== 0) return 'nft (Debian package nftables) is not installed';
  return undefined;
}
const cannot = namespacesWork();
if (cannot) console.warn(`isolation tests skipped: ${cannot}`);

/** Connects from inside the namespace; true if a TCP connection opens within 1.5 s. */
function reachableFromInside(ns: string, host: string, port: number): boolean {
  const probe = `const s=require('net').connect(${port},'${host}');s.setTimeout(1500);s.on('connect',()=>process.exit(0));s.on('timeout',()=>process.exit(1));s.on('error',()=>process.exit(1));`;
  return sh(['ip', 'netns', 'exec', ns, process.execPath, '-e', probe]).status === 0;
}

/** Connects from outside into the namespace and reads the greeting of the server running there. */
async function inboundWorks(host: string, port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect(port, host);
    s.setTimeout(1500);
    s.on('data', (d) => {
      resolve(d.toString() === 'hello from inside');
      s.destroy();
    });
    s.on('timeout', () => {
      resolve(false);
      s.destroy();
    });
    s.on('error', () => resolve(false));
  });
}

describe.skipIf(cannot !== undefined)('network isolation with nftables in a namespace', () => {
  const id = randomBytes(2).toString('hex');
  const ns = `ar-iso-${id}`;
  const octet = 100 + (Number.parseInt(id, 16) % 100);
  const hostIp = `10.231.${octet}.1`;
  const nsIp = `10.231.${octet}.2`;
  let tdb: TestDatabase;
  let tb: TestBroker;
  let other: Server;
  let otherPort: number;
  let inside: ReturnType<typeof import('node:child_process').spawn> | undefined;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    for (const c of [
      ['ip', 'netns', 'add', ns],
      ['ip', 'link', 'add', `arh${id}`, 'type', 'veth', 'peer', 'name', `arn${id}`],
      ['ip', 'link', 'set', `arn${id}`, 'netns', ns],
      ['ip', 'addr', 'add', `${hostIp}/24`, 'dev', `arh${id}`],
      ['ip', 'link', 'set', `arh${id}`, 'up'],
      ['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${nsIp}/24`, 'dev', `arn${id}`],
      ['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', `arn${id}`, 'up'],
      ['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'],
    ]) {
      const r = sh(c);
      if (r.status !== 0) throw new Error(`${c.join(' ')}: ${r.stderr}`);
    }
    tdb = await openTestDatabase('pglite');
    tb = await startTestBroker(tdb, { host: hostIp, publicHost: hostIp });
    other = createServer((s) => s.end('other'));
    await new Promise<void>((r) => other.listen(0, hostIp, r));
    otherPort = (other.address() as { port: number }).port;
    const { spawn } = await import('node:child_process');
    inside = spawn('ip', [
      'netns',
      'exec',
      ns,
      process.execPath,
      '-e',
      `require('net').createServer(s=>s.end('hello from inside')).listen(9999,'${nsIp}')`,
    ]);
    await waitFor(() => inboundWorks(nsIp, 9999), 'the server inside the namespace');
  });

  afterAll(async () => {
    for (const a of agents.splice(0)) await a.kill();
    inside?.kill('SIGKILL');
    other?.close();
    await tb?.stop();
    await tdb?.destroy();
    sh(['ip', 'netns', 'del', ns]);
    sh(['ip', 'link', 'del', `arh${id}`]);
  });

  it('isolates the namespace, keeps the broker and inbound traffic, re-applies after a restart, and lifts it', async () => {
    const stateDir = tempDir('ar-agent-').dir;
    const token = await newToken(tdb, tb.clock, tb.broker.pki.caPem);
    let agent = spawnAgent({ stateDir, broker: tb.url, token, hostname: 'iso-01', netns: ns });
    agents.push(agent);
    await agent.waitForLog((l) => l.msg === 'connected', 'the agent in the namespace to connect');
    const endpointId = (await endpointByHost(tdb, 'iso-01'))!.id;
    expect(reachableFromInside(ns, hostIp, otherPort)).toBe(true);

    const run = async (action: string) => {
      const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action }]);
      return waitFor(async () => {
        const r = await deliveryState(tdb, d!.id);
        return ['succeeded', 'failed'].includes(r.state) ? r : undefined;
      }, `${action} to finish`);
    };

    const isolated = await run('isolate');
    expect(isolated.state).toBe('succeeded');
    expect(isolated.result).toMatchObject({ isolated: true, dryRun: false, mechanism: 'nftables' });
    expect(sh(['ip', 'netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'ar_isolation']).stdout).toMatch(
      /policy drop/,
    );
    expect(reachableFromInside(ns, hostIp, otherPort)).toBe(false);
    expect(reachableFromInside(ns, hostIp, tb.port)).toBe(true);
    expect(await inboundWorks(nsIp, 9999)).toBe(true);
    expect((await endpointByHost(tdb, 'iso-01'))!.isolated).toBe(true);

    // A reboot loses the ruleset; the agent puts it back when it starts.
    await agent.kill();
    sh(['ip', 'netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', 'ar_isolation']);
    expect(reachableFromInside(ns, hostIp, otherPort)).toBe(true);
    agent = spawnAgent({ stateDir, netns: ns });
    agents.push(agent);
    await agent.waitForLog((l) => l.msg === 'connected', 'the restarted agent to connect');
    expect(agent.count((l) => l.msg === 'isolation re-applied after start')).toBe(1);
    expect(reachableFromInside(ns, hostIp, otherPort)).toBe(false);

    const lifted = await run('unisolate');
    expect(lifted.state).toBe('succeeded');
    expect(reachableFromInside(ns, hostIp, otherPort)).toBe(true);
    expect(sh(['ip', 'netns', 'exec', ns, 'nft', 'list', 'tables']).stdout).not.toMatch(/ar_isolation/);
    expect((await endpointByHost(tdb, 'iso-01'))!.isolated).toBe(false);
  });
});
