// The isolation rules as data: the nftables ruleset, its read-back check (against a table listing captured
// from nft 1.0.6), resolv.conf parsing, which conntrack entries are cut, and the netsh commands with the
// parser that checks Windows Firewall afterwards. The namespace test (isolation.test.ts) runs them for real.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IsolationUnsupported, setIsolation } from '../agent/actions/isolation.ts';
import {
  canonicalIp,
  linuxResolvers,
  parseResolvConf,
  serversToResolvers,
} from '../agent/actions/isolation-addresses.ts';
import {
  conntrackDeleteArgs,
  cutDisallowedFlows,
  flowAllowed,
  parseConntrackList,
} from '../agent/actions/isolation-conntrack.ts';
import {
  netshIsolateCommands,
  netshMayFail,
  netshUnisolateCommands,
  parseNetshProfiles,
  verifyNetshIsolation,
} from '../agent/actions/isolation-netsh.ts';
import {
  nftIsolateRuleset,
  nftTableAbsent,
  verifyNftIsolation,
} from '../agent/actions/isolation-nftables.ts';

const fixture = (name: string) =>
  readFileSync(new URL(`./fixtures/isolation/${name}`, import.meta.url), 'utf8');
const broker = [
  { address: '10.0.0.5', port: 8443 },
  { address: 'fd00::5', port: 8443 },
];
const dns = ['10.0.0.53', 'fd00::53'];
const chain = (rules: string, name: string) =>
  new RegExp(`chain ${name} \\{\\n([\\s\\S]*?)\\n  \\}`).exec(rules)?.[1] ?? '';
const lines = (text: string) =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);

describe('the nftables isolation ruleset', () => {
  const rules = nftIsolateRuleset(broker, dns);

  it('replaces the table atomically: declare, delete and define in one file', () => {
    expect(
      rules.startsWith('table inet ar_isolation\ndelete table inet ar_isolation\ntable inet ar_isolation {'),
    ).toBe(true);
  });

  it('drops by default on input, output and forward', () => {
    expect(chain(rules, 'input')).toContain('type filter hook input priority 0; policy drop;');
    expect(chain(rules, 'output')).toContain('type filter hook output priority 0; policy drop;');
    expect(lines(chain(rules, 'forward'))).toEqual(['type filter hook forward priority 0; policy drop;']);
  });

  it('has no accept by connection state alone, so established flows are not let through', () => {
    expect(rules).not.toContain('ct state established,related accept');
    for (const l of lines(rules).filter((x) => x.includes('ct state'))) {
      expect(l).toMatch(/^ip6? saddr \S+ (udp|tcp) sport 53 ct state established accept$/);
    }
  });

  it('allows loopback and the broker in both directions, IPv4 and IPv6', () => {
    const input = lines(chain(rules, 'input'));
    const output = lines(chain(rules, 'output'));
    expect(input).toContain('iifname "lo" accept');
    expect(output).toContain('oifname "lo" accept');
    expect(output).toContain('ip daddr 10.0.0.5 tcp dport 8443 accept');
    expect(output).toContain('ip6 daddr fd00::5 tcp dport 8443 accept');
    // Replies and the live session, but never a new connection opened from the broker's port.
    expect(input).toContain('ip saddr 10.0.0.5 tcp sport 8443 tcp flags & (syn | ack) != syn accept');
    expect(input).toContain('ip6 saddr fd00::5 tcp sport 8443 tcp flags & (syn | ack) != syn accept');
  });

  it('allows DNS only to the configured resolvers, and their answers only as replies', () => {
    const dnsRules = lines(rules).filter((l) => /port 53\b/.test(l));
    expect(dnsRules.sort()).toEqual(
      [
        'ip daddr 10.0.0.53 udp dport 53 accept',
        'ip daddr 10.0.0.53 tcp dport 53 accept',
        'ip6 daddr fd00::53 udp dport 53 accept',
        'ip6 daddr fd00::53 tcp dport 53 accept',
        'ip saddr 10.0.0.53 udp sport 53 ct state established accept',
        'ip saddr 10.0.0.53 tcp sport 53 ct state established accept',
        'ip6 saddr fd00::53 udp sport 53 ct state established accept',
        'ip6 saddr fd00::53 tcp sport 53 ct state established accept',
      ].sort(),
    );
    expect(nftIsolateRuleset(broker, [])).not.toMatch(/port 53\b/);
  });

  it('allows DHCP for v4 and v6 and the ICMPv6 neighbour discovery the link needs, and nothing else', () => {
    const input = lines(chain(rules, 'input')).slice(2);
    const output = lines(chain(rules, 'output')).slice(2);
    const other = (l: string) => !/(ip6?) [sd]addr (10\.0\.0\.5|fd00::5|10\.0\.0\.53|fd00::53) /.test(l);
    expect(input.filter(other)).toEqual([
      'meta nfproto ipv4 udp sport 67 udp dport 68 accept',
      'meta nfproto ipv6 udp sport 547 udp dport 546 accept',
      'ip6 hoplimit 255 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept',
    ]);
    expect(output.filter(other)).toEqual([
      'meta nfproto ipv4 udp sport 68 udp dport 67 accept',
      'meta nfproto ipv6 udp sport 546 udp dport 547 accept',
      'ip6 hoplimit 255 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept',
    ]);
  });

  it('refuses an address that is not an IP literal instead of writing it into the ruleset', () => {
    expect(() => nftIsolateRuleset([{ address: '10.0.0.5 accept; flush ruleset', port: 1 }], [])).toThrow(
      /is not an IP address/,
    );
    expect(() => nftIsolateRuleset(broker, ['dns.example'])).toThrow(/is not an IP address/);
  });
});

describe('reading the nftables table back', () => {
  const listing = () => JSON.parse(fixture('nft-list-table.json'));

  it('verifies the table as nft lists it', () => {
    expect(verifyNftIsolation(listing(), broker)).toEqual([]);
    // Addresses compare by value, not by spelling.
    expect(verifyNftIsolation(listing(), [{ address: 'fd00:0:0::5', port: 8443 }])).toEqual([]);
  });

  it('reports a chain whose policy is not drop', () => {
    const l = listing();
    l.nftables.find((o: { chain?: { name: string } }) => o.chain?.name === 'output').chain.policy = 'accept';
    expect(verifyNftIsolation(l, broker)).toEqual(['chain output has policy accept, not drop']);
  });

  it('reports a missing chain and a missing broker rule', () => {
    const l = listing();
    l.nftables = l.nftables.filter((o: { chain?: { name: string } }) => o.chain?.name !== 'forward');
    expect(verifyNftIsolation(l, [{ address: '10.0.0.6', port: 8443 }])).toEqual([
      'chain forward is missing',
      'no output rule allows the broker 10.0.0.6 port 8443',
      'no input rule allows replies from the broker 10.0.0.6 port 8443',
    ]);
  });

  it('reports a rule that accepts established traffic wholesale', () => {
    const l = listing();
    l.nftables.push({
      rule: {
        family: 'inet',
        table: 'ar_isolation',
        chain: 'input',
        handle: 99,
        expr: [
          { match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } },
          { accept: null },
        ],
      },
    });
    expect(verifyNftIsolation(l, broker)).toEqual(['chain input accepts traffic by connection state alone']);
  });

  it('reports a missing table or output that is not a ruleset, and sees the table gone', () => {
    const metainfo = { metainfo: { version: '1.0.6' } };
    expect(verifyNftIsolation({ nftables: [metainfo] }, broker)).toEqual([
      'table inet ar_isolation is not loaded',
    ]);
    expect(verifyNftIsolation(undefined, broker)).toEqual(['nft did not return a JSON ruleset']);
    expect(nftTableAbsent({ nftables: [metainfo] })).toBe(true);
    expect(nftTableAbsent(listing())).toBe(false);
    expect(nftTableAbsent('garbage')).toBe(false);
  });
});

describe('the resolvers DNS stays open to', () => {
  it('reads nameserver lines of resolv.conf, IPv6 included, in order and once each', () => {
    const conf = [
      '# written by NetworkManager',
      'search corp.example',
      'nameserver 10.0.0.53',
      'nameserver fd00:0::53 # secondary',
      'nameserver fe80::1%eth0',
      '; nameserver 192.0.2.1',
      'nameserver not-an-address',
      'nameserver 10.0.0.53',
      'options edns0 trust-ad',
    ].join('\n');
    expect(parseResolvConf(conf)).toEqual(['10.0.0.53', 'fd00::53', 'fe80::1']);
    expect(parseResolvConf('')).toEqual([]);
  });

  it('follows systemd-resolved from its local stub to the upstream servers', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ar-resolv-'));
    const paths = { resolvConf: join(dir, 'resolv.conf'), upstream: join(dir, 'upstream.conf') };
    writeFileSync(paths.resolvConf, 'nameserver 127.0.0.53\noptions edns0\n');
    writeFileSync(paths.upstream, 'nameserver 192.0.2.53\nnameserver 2001:db8::53\n');
    expect(linuxResolvers(paths)).toEqual(['127.0.0.53', '192.0.2.53', '2001:db8::53']);
    writeFileSync(paths.resolvConf, 'nameserver 10.0.0.53\n');
    expect(linuxResolvers(paths)).toEqual(['10.0.0.53']);
  });

  it('reads the servers Node reports on Windows, with or without a port', () => {
    expect(serversToResolvers(['10.0.0.53', '10.0.0.54:5353', 'fd00::53', '[fd00::54]:5353'])).toEqual([
      '10.0.0.53',
      '10.0.0.54',
      'fd00::53',
      'fd00::54',
    ]);
    expect(canonicalIp('FD00:0000::0053')).toBe('fd00::53');
  });
});

describe('cutting flows that were open before isolation', () => {
  const flows = parseConntrackList(fixture('conntrack-list.txt'));
  const allowed = { broker, dns: ['10.0.0.53'] };

  it('parses the original direction of every flow conntrack lists', () => {
    expect(flows).toHaveLength(12);
    expect(flows[0]).toEqual({
      family: 'ipv4',
      proto: 'tcp',
      protoNumber: 6,
      src: '10.0.0.2',
      dst: '10.0.0.5',
      sport: 50412,
      dport: 8443,
    });
    expect(flows[11]).toMatchObject({ proto: 'unknown', protoNumber: 47, sport: undefined });
  });

  it('keeps the broker, loopback, DNS to the resolvers and DHCP, and cuts everything else', () => {
    const cut = flows
      .filter((f) => !flowAllowed(f, allowed))
      .map((f) => `${f.src}>${f.dst}:${f.dport ?? f.proto}`);
    expect(cut).toEqual([
      '10.0.0.2>203.0.113.9:443', // outbound to elsewhere (the implant's C2)
      '198.51.100.7>10.0.0.2:22', // inbound shell
      '10.0.0.2>10.0.0.5:22', // the broker's host, but not the broker's port
      '10.0.0.2>8.8.8.8:53', // DNS to a server that is not a configured resolver
      '10.0.0.2>203.0.113.9:icmp',
      '2001:db8::66>fd00::2:4444',
      '10.0.0.2>203.0.113.9:unknown',
    ]);
  });

  it('deletes each flow by its exact tuple', () => {
    expect(conntrackDeleteArgs(flows[1]!)).toEqual(
      '-D -f ipv4 -p tcp --orig-src 10.0.0.2 --orig-dst 203.0.113.9 --orig-port-src 41000 --orig-port-dst 443'.split(
        ' ',
      ),
    );
    expect(conntrackDeleteArgs(flows[7]!)).toEqual(
      '-D -f ipv4 -p icmp --orig-src 10.0.0.2 --orig-dst 203.0.113.9'.split(' '),
    );
    expect(conntrackDeleteArgs(flows[11]!)).toEqual(
      '-D -f ipv4 -p 47 --orig-src 10.0.0.2 --orig-dst 203.0.113.9'.split(' '),
    );
  });

  it('says so when the conntrack tool is missing instead of claiming a flush', () => {
    const missing = () => ({ status: null, stdout: '', stderr: '', missing: true });
    expect(cutDisallowedFlows(allowed, missing)).toEqual({
      flushed: false,
      reason: 'the conntrack tool is not installed',
    });
  });
});

describe('Windows isolation through netsh', () => {
  const backup = 'C:\\ProgramData\\ar\\fw.wfw';
  const add = (name: string, ...spec: string[]) => [
    'netsh',
    'advfirewall',
    'firewall',
    'add',
    'rule',
    `name=ActiveResponse-Isolation-${name}`,
    'dir=out',
    'action=allow',
    ...spec,
  ];
  const del = (name: string) => [
    'netsh',
    'advfirewall',
    'firewall',
    'delete',
    'rule',
    `name=ActiveResponse-Isolation-${name}`,
  ];

  it('blocks inbound always and outbound, allowing the broker, DNS to the resolvers and DHCP', () => {
    expect(netshIsolateCommands(broker, dns, backup)).toEqual([
      ['netsh', 'advfirewall', 'export', backup],
      del('Broker'),
      del('DNS'),
      del('DHCP'),
      add('Broker', 'protocol=TCP', 'remoteip=10.0.0.5', 'remoteport=8443'),
      add('Broker', 'protocol=TCP', 'remoteip=fd00::5', 'remoteport=8443'),
      add('DNS', 'protocol=UDP', 'remoteip=10.0.0.53,fd00::53', 'remoteport=53'),
      add('DNS', 'protocol=TCP', 'remoteip=10.0.0.53,fd00::53', 'remoteport=53'),
      add('DHCP', 'protocol=UDP', 'localport=68', 'remoteport=67'),
      add('DHCP', 'protocol=UDP', 'localport=546', 'remoteport=547'),
      ['netsh', 'advfirewall', 'set', 'allprofiles', 'state', 'on'],
      ['netsh', 'advfirewall', 'set', 'allprofiles', 'firewallpolicy', 'blockinboundalways,blockoutbound'],
    ]);
  });

  it('keeps the first exported policy when isolating again, and adds no DNS rule without resolvers', () => {
    const again = netshIsolateCommands(broker.slice(0, 1), [], backup, false);
    expect(again.some((c) => c[2] === 'export')).toBe(false);
    expect(again.some((c) => c.includes('name=ActiveResponse-Isolation-DNS') && c.includes('add'))).toBe(
      false,
    );
  });

  it('restores the exported policy on unisolate, or the Windows default when the export is gone', () => {
    expect(netshUnisolateCommands(backup)).toEqual([
      ['netsh', 'advfirewall', 'import', backup],
      del('Broker'),
      del('DNS'),
      del('DHCP'),
    ]);
    expect(netshUnisolateCommands(backup, false)[0]).toEqual([
      'netsh',
      'advfirewall',
      'set',
      'allprofiles',
      'firewallpolicy',
      'blockinbound,allowoutbound',
    ]);
    // Deleting a rule that is not there is not a failure; nothing else may fail.
    expect(netshUnisolateCommands(backup).map(netshMayFail)).toEqual([false, true, true, true]);
  });

  it('verifies the firewall from netsh output: every profile on and blocking, the broker rule present', () => {
    const profiles = fixture('netsh-show-allprofiles.txt');
    const rules = fixture('netsh-show-rule-broker.txt');
    expect(parseNetshProfiles(profiles).map((p) => `${p.profile} ${p.state} ${p.policy}`)).toEqual([
      'Domain ON BlockInboundAlways,BlockOutbound',
      'Private ON BlockInboundAlways,BlockOutbound',
      'Public ON BlockInboundAlways,BlockOutbound',
    ]);
    expect(verifyNetshIsolation(profiles, rules, broker)).toEqual([]);
    expect(
      verifyNetshIsolation(profiles.replaceAll('\n', '\r\n'), rules.replaceAll('\n', '\r\n'), broker),
    ).toEqual([]);
  });

  it('reports a profile left at the default policy, a profile turned off and a missing broker rule', () => {
    const profiles = fixture('netsh-show-allprofiles.txt').split('Public Profile Settings:');
    const weakened = `${profiles[0]!.replace('State                                 ON', 'State                                 OFF')}Public Profile Settings:${profiles[1]!.replace('BlockInboundAlways,BlockOutbound', 'BlockInbound,AllowOutbound')}`;
    expect(
      verifyNetshIsolation(weakened, 'No rules match the specified criteria.\r\n', broker.slice(0, 1)),
    ).toEqual([
      'the Domain profile is OFF',
      "the Public profile's policy is BlockInbound,AllowOutbound, not BlockInboundAlways,BlockOutbound",
      'no enabled outbound allow rule for the broker 10.0.0.5 port 8443',
    ]);
  });
});

describe('setIsolation', () => {
  it('refuses macOS isolation as unsupported by policy without touching anything', () => {
    expect(() =>
      setIsolation(true, broker, { os: 'macos', dryRun: true, stateDir: '/tmp', log: () => {} }),
    ).toThrow(IsolationUnsupported);
  });

  it('in dry-run only logs what it would change and reports what it would allow', () => {
    const logged: unknown[] = [];
    const log = (m: string, x?: object) => logged.push([m, x]);
    const win = setIsolation(true, broker, { os: 'windows', dryRun: true, stateDir: '/tmp', log });
    expect(win).toMatchObject({
      dryRun: true,
      verified: false,
      mechanism: 'netsh',
      allowed: { broker, dhcp: true },
    });
    const linux = setIsolation(true, broker, { os: 'linux', dryRun: true, stateDir: '/tmp', log });
    expect(linux).toMatchObject({
      dryRun: true,
      verified: false,
      mechanism: 'nftables',
      conntrackFlushed: false,
      allowed: { broker, dns: linuxResolvers(), dhcp: true },
    });
    expect(linux.ruleset).toContain('policy drop');
    expect(logged).toHaveLength(2);
  });
});
