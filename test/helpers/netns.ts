// A network namespace joined to the host by a veth pair, for tests that run real firewall rules: IPv4
// always, IPv6 (ULA, no duplicate address detection) when the kernel lets the veth carry it, plus probes
// that connect across it. Probes from inside run a short node script under `ip netns exec` and never block
// the test's event loop (the broker under test runs in it).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';

export const sh = (cmd: string[], input?: string) =>
  spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', input });

/** Why namespace tests cannot run here (a missing capability), or undefined when they can. */
export function namespacesUnavailable(): string | undefined {
  const name = `ar-probe-${randomBytes(3).toString('hex')}`;
  const r = sh(['ip', 'netns', 'add', name]);
  if (r.status !== 0) return `ip netns add failed: ${(r.stderr || r.error?.message || '').trim()}`;
  sh(['ip', 'netns', 'del', name]);
  if (sh(['nft', '--version']).status !== 0) return 'nft (Debian package nftables) is not installed';
  return undefined;
}

export interface Namespace {
  name: string;
  hostIp: string;
  nsIp: string;
  /** Undefined when the veth could not carry IPv6. */
  hostIp6?: string;
  nsIp6?: string;
  /** Runs a command inside the namespace. */
  exec(cmd: string[], input?: string): ReturnType<typeof sh>;
  /** Gives processes started with `ip netns exec` this resolv.conf (ip mounts /etc/netns/<name>/ over /etc). */
  setResolvConf(text: string): void;
  destroy(): void;
}

export function createNamespace(): Namespace {
  const id = randomBytes(2).toString('hex');
  const name = `ar-iso-${id}`;
  const octet = 100 + (Number.parseInt(id, 16) % 100);
  const [host, peer] = [`arh${id}`, `arn${id}`];
  const v6net = `fd00:${Number.parseInt(id, 16).toString(16)}`; // written as nft and the agent print it
  const n = {
    hostIp: `10.231.${octet}.1`,
    nsIp: `10.231.${octet}.2`,
    hostIp6: `${v6net}::1`,
    nsIp6: `${v6net}::2`,
  };
  const must = (c: string[]) => {
    const r = sh(c);
    if (r.status !== 0) throw new Error(`${c.join(' ')}: ${r.stderr}`);
  };
  const inNs = (c: string[]) => ['ip', 'netns', 'exec', name, ...c];
  for (const c of [
    ['ip', 'netns', 'add', name],
    ['ip', 'link', 'add', host, 'type', 'veth', 'peer', 'name', peer],
    ['ip', 'link', 'set', peer, 'netns', name],
    ['ip', 'addr', 'add', `${n.hostIp}/24`, 'dev', host],
    ['ip', 'link', 'set', host, 'up'],
    inNs(['ip', 'addr', 'add', `${n.nsIp}/24`, 'dev', peer]),
    inNs(['ip', 'link', 'set', peer, 'up']),
    inNs(['ip', 'link', 'set', 'lo', 'up']),
  ])
    must(c);
  const v6 =
    sh(['ip', '-6', 'addr', 'add', `${n.hostIp6}/64`, 'dev', host, 'nodad']).status === 0 &&
    sh(inNs(['ip', '-6', 'addr', 'add', `${n.nsIp6}/64`, 'dev', peer, 'nodad'])).status === 0;
  if (!v6) console.warn('the veth pair cannot carry IPv6 here; the namespace test covers IPv4 only');
  const etc = `/etc/netns/${name}`;
  return {
    name,
    hostIp: n.hostIp,
    nsIp: n.nsIp,
    hostIp6: v6 ? n.hostIp6 : undefined,
    nsIp6: v6 ? n.nsIp6 : undefined,
    exec: (cmd, input) => sh(inNs(cmd), input),
    setResolvConf(text) {
      mkdirSync(etc, { recursive: true });
      writeFileSync(`${etc}/resolv.conf`, text);
    },
    destroy() {
      sh(['ip', 'netns', 'del', name]);
      sh(['ip', 'link', 'del', host]);
      rmSync(etc, { recursive: true, force: true });
      sh(['rmdir', '/etc/netns']); // only if no other namespace uses it
    },
  };
}

/** Runs a node script inside the namespace; resolves with its exit code. */
export function nodeInside(ns: Namespace, script: string): Promise<number | null> {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script], { stdio: 'ignore' });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

/** True if a TCP connection from inside the namespace opens within 1.5 s. */
export async function reachableFromInside(ns: Namespace, host: string, port: number): Promise<boolean> {
  const probe = `const s=require('net').connect(${port},'${host}');s.setTimeout(1500);s.on('connect',()=>process.exit(0));s.on('timeout',()=>process.exit(1));s.on('error',()=>process.exit(1));`;
  return (await nodeInside(ns, probe)) === 0;
}

/** True if a UDP datagram sent from inside the namespace gets an answer within 1.5 s. */
export async function udpAnsweredFromInside(ns: Namespace, host: string, port: number): Promise<boolean> {
  const probe = `const s=require('dgram').createSocket('${host.includes(':') ? 'udp6' : 'udp4'}');s.on('message',()=>process.exit(0));s.send('q',${port},'${host}');setTimeout(()=>process.exit(1),1500);`;
  return (await nodeInside(ns, probe)) === 0;
}

/** Opens a TCP connection and resolves with the socket once `greeting` arrives, or undefined within 1.5 s. */
export function connectForGreeting(
  host: string,
  port: number,
  greeting: string,
): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const s = connect(port, host);
    let got = '';
    const fail = () => {
      s.destroy();
      resolve(undefined);
    };
    const timer = setTimeout(fail, 1500);
    s.on('error', fail);
    s.on('data', function onData(d) {
      got += d.toString();
      if (got.startsWith(greeting)) {
        clearTimeout(timer);
        s.off('data', onData);
        s.off('error', fail);
        s.on('error', () => {});
        resolve(s);
      }
    });
  });
}

/**
 * Writes `payload` to a socket whose far end echoes, and resolves true if the echo comes back within
 * 1.5 s. After isolation the assertion is that no data comes back at all; the wait only bounds the test.
 */
export function echoes(s: Socket, payload: string): Promise<boolean> {
  return new Promise((resolve) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.includes(payload)) done(true);
    };
    const timer = setTimeout(() => done(false), 1500);
    function done(v: boolean) {
      clearTimeout(timer);
      s.off('data', onData);
      resolve(v);
    }
    s.on('data', onData);
    s.write(payload);
  });
}
