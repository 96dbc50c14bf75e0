// Cutting the flows that were open before isolation. The drop policy already stops their packets; deleting
// their conntrack entries as well means nothing that trusts connection state (another table's `ct state
// established accept`, NAT) keeps treating them as live. Flows the isolation rules allow — loopback, the
// broker, DNS to the resolvers, DHCP — keep their entries.
import { isIP } from 'node:net';
import { type Allowed, canonicalIp, isLoopback } from './isolation-addresses.ts';

export interface Flow {
  family: 'ipv4' | 'ipv6';
  proto: string;
  protoNumber: number;
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
}

/**
 * Parses `conntrack -L -o extended`: one flow per line, `ipv4 2 tcp 6 431999 ESTABLISHED src=… dst=…
 * sport=… dport=… src=… …`. The first src/dst/sport/dport are the original direction, the ones the
 * delete command is keyed on. Lines that do not look like a flow are skipped.
 */
export function parseConntrackList(text: string): Flow[] {
  const flows: Flow[] = [];
  for (const line of text.split('\n')) {
    const m = /^(ipv4|ipv6)\s+\d+\s+(\S+)\s+(\d+)\s/.exec(line);
    if (!m) continue;
    const field = (k: string) => new RegExp(`\\b${k}=(\\S+)`).exec(line)?.[1];
    const src = field('src');
    const dst = field('dst');
    if (!src || !dst || !isIP(src) || !isIP(dst)) continue;
    const port = (k: string) => {
      const v = field(k);
      return v && /^\d+$/.test(v) ? Number(v) : undefined;
    };
    flows.push({
      family: m[1] as Flow['family'],
      proto: m[2]!,
      protoNumber: Number(m[3]),
      src: canonicalIp(src),
      dst: canonicalIp(dst),
      sport: port('sport'),
      dport: port('dport'),
    });
  }
  return flows;
}

/** Whether the isolation rules let this flow through (so its conntrack entry stays). */
export function flowAllowed(f: Flow, allowed: Pick<Allowed, 'broker' | 'dns'>): boolean {
  if (isLoopback(f.src) || isLoopback(f.dst)) return true;
  if (f.proto === 'tcp') {
    for (const b of allowed.broker) {
      const a = canonicalIp(b.address);
      if ((f.dst === a && f.dport === b.port) || (f.src === a && f.sport === b.port)) return true;
    }
  }
  if ((f.proto === 'udp' || f.proto === 'tcp') && f.dport === 53 && allowed.dns.includes(f.dst)) return true;
  if (f.proto === 'udp') {
    if (f.family === 'ipv4' && f.sport === 68 && f.dport === 67) return true;
    if (f.family === 'ipv6' && f.sport === 546 && f.dport === 547) return true;
  }
  return false;
}

/** The `conntrack -D` arguments that delete exactly this flow (by its original-direction tuple). */
export function conntrackDeleteArgs(f: Flow): string[] {
  const known = ['tcp', 'udp', 'udplite', 'sctp', 'dccp', 'icmp', 'icmpv6', 'gre'];
  const args = ['-D', '-f', f.family, '-p', known.includes(f.proto) ? f.proto : String(f.protoNumber)];
  args.push('--orig-src', f.src, '--orig-dst', f.dst);
  if (f.sport !== undefined && f.dport !== undefined && f.proto !== 'icmp' && f.proto !== 'icmpv6')
    args.push('--orig-port-src', String(f.sport), '--orig-port-dst', String(f.dport));
  return args;
}

export type Runner = (argv: string[]) => {
  status: number | null;
  stdout: string;
  stderr: string;
  missing?: boolean;
};

/**
 * Deletes the conntrack entries of every flow the rules do not allow. Returns how many entries went, or
 * why it could not run (the tool is missing, or the kernel has no connection tracking to list).
 */
export function cutDisallowedFlows(
  allowed: Pick<Allowed, 'broker' | 'dns'>,
  run: Runner,
): { flushed: number } | { flushed: false; reason: string } {
  const listed = run(['conntrack', '-L', '-o', 'extended']);
  if (listed.missing) return { flushed: false, reason: 'the conntrack tool is not installed' };
  if (listed.status !== 0)
    return { flushed: false, reason: `conntrack -L failed: ${listed.stderr.trim().slice(0, 300)}` };
  let flushed = 0;
  const seen = new Set<string>();
  for (const f of parseConntrackList(listed.stdout)) {
    if (flowAllowed(f, allowed)) continue;
    const args = conntrackDeleteArgs(f);
    const key = args.join(' ');
    if (seen.has(key)) continue;
    seen.add(key);
    // Exit status 1 only means "0 flow entries deleted": the flow ended between listing and deleting.
    const r = run(['conntrack', ...args]);
    flushed += Number(/(\d+) flow entries have been deleted/.exec(r.stderr)?.[1] ?? 0);
  }
  return { flushed };
}
