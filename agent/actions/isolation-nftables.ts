// Linux isolation as an nftables table of our own, `inet ar_isolation`, and the check that reads it back.
//
// Default deny in both directions, for IPv4 and IPv6, for new and established flows alike: input, output and
// forward chains with policy drop. A packet must be accepted by every base chain on its hook, so a drop
// here wins over any accept in other tables (a host firewall's own `ct state established accept` included).
// What stays open:
//  - loopback;
//  - the broker's addresses and port, both directions, matched on addresses and ports and not on conntrack
//    state, so the broker connection opened before isolation keeps working even on a host where nothing
//    was tracking connections yet. Inbound, a bare SYN from the broker's port is still refused: the broker
//    never opens connections to an agent, so that could only be someone else using its address;
//  - DNS to the configured resolvers only; their replies are accepted only as replies (`ct state
//    established`), so a resolver address cannot be used to reach a local service;
//  - DHCP (v4 67/68, v6 546/547), so the host keeps its lease and its address;
//  - ICMPv6 neighbour discovery (hop limit 255, i.e. from the link itself), without which IPv6 stops
//    working on the link once neighbour entries expire.
// There is deliberately no blanket `ct state established,related accept`: it is what kept an implant's
// command-and-control session alive through the previous isolation.
import { z } from 'zod';
import { type Allow, canonicalIp } from './isolation-addresses.ts';

export const NFT_TABLE = 'ar_isolation';

const family = (address: string) => (address.includes(':') ? 'ip6' : 'ip');

/**
 * The nft script that isolates the host. Addresses must be IP literals (they are checked again here,
 * because they are written into the script). Declaring then deleting the table first makes the file
 * idempotent, and nft applies the whole file as one transaction: there is never a half-built ruleset.
 */
export function nftIsolateRuleset(broker: Allow[], dns: string[]): string {
  const b = broker.map((a) => ({ ip: family(a.address), address: canonicalIp(a.address), port: a.port }));
  const r = dns.map((d) => ({ ip: family(d), address: canonicalIp(d) }));
  return [
    `table inet ${NFT_TABLE}`,
    `delete table inet ${NFT_TABLE}`,
    `table inet ${NFT_TABLE} {`,
    '  chain input {',
    '    type filter hook input priority 0; policy drop;',
    '    iifname "lo" accept',
    ...b.map(
      (a) => `    ${a.ip} saddr ${a.address} tcp sport ${a.port} tcp flags & (syn | ack) != syn accept`,
    ),
    ...r.flatMap((d) => [
      `    ${d.ip} saddr ${d.address} udp sport 53 ct state established accept`,
      `    ${d.ip} saddr ${d.address} tcp sport 53 ct state established accept`,
    ]),
    '    meta nfproto ipv4 udp sport 67 udp dport 68 accept',
    '    meta nfproto ipv6 udp sport 547 udp dport 546 accept',
    '    ip6 hoplimit 255 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept',
    '  }',
    '  chain forward {',
    '    type filter hook forward priority 0; policy drop;',
    '  }',
    '  chain output {',
    '    type filter hook output priority 0; policy drop;',
    '    oifname "lo" accept',
    ...b.map((a) => `    ${a.ip} daddr ${a.address} tcp dport ${a.port} accept`),
    ...r.flatMap((d) => [
      `    ${d.ip} daddr ${d.address} udp dport 53 accept`,
      `    ${d.ip} daddr ${d.address} tcp dport 53 accept`,
    ]),
    '    meta nfproto ipv4 udp sport 68 udp dport 67 accept',
    '    meta nfproto ipv6 udp sport 546 udp dport 547 accept',
    // Router solicitation is the host asking for the router advertisement it accepts above.
    '    ip6 hoplimit 255 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept',
    '  }',
    '}',
    '',
  ].join('\n');
}

export function nftUnisolateRuleset(): string {
  return [`table inet ${NFT_TABLE}`, `delete table inet ${NFT_TABLE}`, ''].join('\n');
}

// `nft -j` output: a list of one-key objects (metainfo, table, chain, rule, ...). Only the parts we check
// are described; the rest passes through untouched.
const nftJson = z.object({ nftables: z.array(z.record(z.string(), z.unknown())) });
const chainSchema = z.object({
  family: z.string(),
  table: z.string(),
  name: z.string(),
  hook: z.string().optional(),
  policy: z.string().optional(),
});
const ruleSchema = z.object({
  family: z.string(),
  table: z.string(),
  chain: z.string(),
  expr: z.array(z.record(z.string(), z.unknown())),
});
type Rule = z.infer<typeof ruleSchema>;

interface Match {
  left: string;
  op: string;
  right: unknown;
}

/** A rule's matches as `protocol.field` (or `ct.state`, `meta.iifname`) against a value, and its verdict. */
function readRule(rule: Rule): { matches: Match[]; accepts: boolean } {
  const matches: Match[] = [];
  let accepts = false;
  for (const e of rule.expr) {
    if ('accept' in e) accepts = true;
    const m = e.match as { op?: string; left?: Record<string, Record<string, string>>; right?: unknown };
    if (!m?.left) continue;
    const [kind, body] = Object.entries(m.left)[0] ?? [];
    const left =
      kind === 'payload'
        ? `${body?.protocol}.${body?.field}`
        : `${kind}.${body?.key ?? Object.keys(body ?? {})}`;
    matches.push({ left, op: m.op ?? '==', right: m.right });
  }
  return { matches, accepts };
}

const sameIp = (v: unknown, address: string) => {
  try {
    return typeof v === 'string' && canonicalIp(v) === canonicalIp(address);
  } catch {
    return false;
  }
};

/**
 * Checks the table as the kernel holds it (`nft -j list table inet ar_isolation`) against what isolation
 * promises. Returns the problems found, in words; an empty list means verified.
 */
export function verifyNftIsolation(listing: unknown, broker: Allow[]): string[] {
  const parsed = nftJson.safeParse(listing);
  if (!parsed.success) return ['nft did not return a JSON ruleset'];
  const objects = parsed.data.nftables;
  const ours = <T extends { family: string; table: string }>(schema: z.ZodType<T>, key: string) =>
    objects
      .map((o) => schema.safeParse(o[key]))
      .flatMap((r) => (r.success ? [r.data] : []))
      .filter((x) => x.family === 'inet' && x.table === NFT_TABLE);
  const problems: string[] = [];
  const tables = objects.map((o) => o.table as { family?: string; name?: string } | undefined);
  if (!tables.some((t) => t?.family === 'inet' && t.name === NFT_TABLE))
    return [`table inet ${NFT_TABLE} is not loaded`];

  const chains = ours(chainSchema, 'chain');
  for (const hook of ['input', 'forward', 'output']) {
    const c = chains.find((x) => x.name === hook);
    if (!c) problems.push(`chain ${hook} is missing`);
    else if (c.hook !== hook) problems.push(`chain ${hook} is not attached to the ${hook} hook`);
    else if (c.policy !== 'drop') problems.push(`chain ${hook} has policy ${c.policy ?? 'accept'}, not drop`);
  }

  const rules = ours(ruleSchema, 'rule').map((r) => ({ chain: r.chain, ...readRule(r) }));
  const has = (chain: string, want: Array<[string, (v: unknown) => boolean]>) =>
    rules.some(
      (r) =>
        r.chain === chain &&
        r.accepts &&
        want.every(([left, ok]) => r.matches.some((m) => m.left === left && m.op === '==' && ok(m.right))),
    );
  for (const a of broker) {
    const ip = family(a.address);
    const port = (v: unknown) => v === a.port;
    if (
      !has('output', [
        [`${ip}.daddr`, (v) => sameIp(v, a.address)],
        ['tcp.dport', port],
      ])
    )
      problems.push(`no output rule allows the broker ${a.address} port ${a.port}`);
    if (
      !has('input', [
        [`${ip}.saddr`, (v) => sameIp(v, a.address)],
        ['tcp.sport', port],
      ])
    )
      problems.push(`no input rule allows replies from the broker ${a.address} port ${a.port}`);
  }
  // An accept that looks only at connection state (or at nothing) would reopen every established flow.
  for (const r of rules) {
    if (r.accepts && r.matches.every((m) => m.left === 'ct.state'))
      problems.push(`chain ${r.chain} accepts traffic by connection state alone`);
  }
  return problems;
}

/** True when `nft -j list tables` no longer shows our table. */
export function nftTableAbsent(listing: unknown): boolean {
  const parsed = nftJson.safeParse(listing);
  if (!parsed.success) return false;
  return !parsed.data.nftables.some((o) => {
    const t = o.table as { family?: string; name?: string } | undefined;
    return t?.family === 'inet' && t.name === NFT_TABLE;
  });
}
