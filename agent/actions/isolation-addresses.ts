// The addresses an isolated host may still talk to: the broker's (resolved by the caller), and the DNS
// resolvers it needs to find the broker again. Every address here ends up inside an nftables ruleset or a
// netsh argument, so anything that is not a literal IP address is refused rather than passed on.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

export interface Allow {
  address: string;
  port: number;
}

/** What an isolated host may still reach, as reported to the platform. */
export interface Allowed {
  broker: Allow[];
  dns: string[];
  dhcp: boolean;
}

/**
 * One spelling per address, so that what we wrote and what nft or netsh print back compare equal
 * (`fd00:0::5` and `fd00::5` are the same host). Throws on anything that is not an IP literal.
 */
export function canonicalIp(address: string): string {
  const a = address.trim();
  const family = isIP(a);
  if (family === 4) return a;
  // The WHATWG URL parser serialises IPv6 in the RFC 5952 form, the same one nft prints.
  if (family === 6) return new URL(`http://[${a}]/`).hostname.slice(1, -1);
  throw new Error(`"${address}" is not an IP address`);
}

export function isLoopback(address: string): boolean {
  return address === '::1' || (isIP(address) === 4 && address.startsWith('127.'));
}

export function checkAllow(a: Allow): Allow {
  if (!Number.isInteger(a.port) || a.port < 1 || a.port > 65535)
    throw new Error(`broker port ${a.port} is not a TCP port`);
  // A link-local broker address may carry its zone (`fe80::1%eth0`); rules match the address alone.
  return { address: canonicalIp(a.address.replace(/%[\w.-]*$/, '')), port: a.port };
}

/**
 * The `nameserver` addresses of a resolv.conf, in order, without duplicates. A scoped IPv6 address
 * (`fe80::1%eth0`) loses its zone: firewall rules match the address alone. Lines that do not hold an IP
 * address are skipped, as the resolver itself skips them.
 */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const [key, value] = raw
      .replace(/[#;].*$/, '')
      .trim()
      .split(/\s+/);
    if (key !== 'nameserver' || !value) continue;
    const address = value.replace(/%.*$/, '');
    if (!isIP(address)) continue;
    const c = canonicalIp(address);
    if (!out.includes(c)) out.push(c);
  }
  return out;
}

const read = (path: string) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};

/**
 * The resolvers a Linux host uses. With systemd-resolved, /etc/resolv.conf names only the local stub
 * (127.0.0.53), and the queries that leave the host go to the upstream servers listed in
 * /run/systemd/resolve/resolv.conf: those are the ones the firewall has to let through.
 */
export function linuxResolvers(
  paths = { resolvConf: '/etc/resolv.conf', upstream: '/run/systemd/resolve/resolv.conf' },
): string[] {
  const local = parseResolvConf(read(paths.resolvConf));
  if (local.length && local.every(isLoopback))
    return [...new Set([...local, ...parseResolvConf(read(paths.upstream))])];
  return local;
}

/**
 * The resolvers as Node's resolver reports them (`dns.getServers()`): on Windows, what the network
 * adapters are configured with. Entries carry a port only when it is not 53 (`[fd00::53]:5353`).
 */
export function serversToResolvers(servers: string[]): string[] {
  const out: string[] = [];
  for (const s of servers) {
    const host = s.startsWith('[') ? s.slice(1, s.indexOf(']')) : isIP(s) ? s : s.replace(/:\d+$/, '');
    const address = host.replace(/%.*$/, '');
    if (!isIP(address)) continue;
    const c = canonicalIp(address);
    if (!out.includes(c)) out.push(c);
  }
  return out;
}
