import { describe, expect, it } from 'vitest';
import {
  IsolationUnsupported,
  netshIsolateCommands,
  netshUnisolateCommands,
  nftIsolateRuleset,
  setIsolation,
} from '../agent/actions/isolation.ts';

const allow = [
  { address: '10.0.0.5', port: 8443 },
  { address: 'fd00::5', port: 8443 },
];

describe('isolation rules', () => {
  it('builds an nftables table that drops output except loopback, return traffic and the broker', () => {
    const rules = nftIsolateRuleset(allow);
    expect(rules).toContain('table inet ar_isolation {');
    expect(rules).toContain('type filter hook output priority 0; policy drop;');
    expect(rules).toContain('oifname "lo" accept');
    expect(rules).toContain('ct state established,related accept');
    expect(rules).toContain('ip daddr 10.0.0.5 tcp dport 8443 accept');
    expect(rules).toContain('ip6 daddr fd00::5 tcp dport 8443 accept');
    // Only an output chain: inbound is untouched.
    expect(rules).not.toMatch(/hook input/);
  });

  it('builds the netsh commands that block outbound but allow the broker, and restore the saved policy', () => {
    const backup = 'C:\\ProgramData\\ar\\fw.wfw';
    expect(netshIsolateCommands(allow.slice(0, 1), backup)).toEqual([
      ['netsh', 'advfirewall', 'export', backup],
      ['netsh', 'advfirewall', 'firewall', 'delete', 'rule', 'name=ActiveResponse-Isolation-Broker'],
      [
        'netsh',
        'advfirewall',
        'firewall',
        'add',
        'rule',
        'name=ActiveResponse-Isolation-Broker',
        'dir=out',
        'action=allow',
        'protocol=TCP',
        'remoteip=10.0.0.5',
        'remoteport=8443',
      ],
      ['netsh', 'advfirewall', 'set', 'allprofiles', 'state', 'on'],
      ['netsh', 'advfirewall', 'set', 'allprofiles', 'firewallpolicy', 'blockinbound,blockoutbound'],
    ]);
    expect(netshUnisolateCommands(backup)).toEqual([
      ['netsh', 'advfirewall', 'import', backup],
      ['netsh', 'advfirewall', 'firewall', 'delete', 'rule', 'name=ActiveResponse-Isolation-Broker'],
    ]);
  });

  it('refuses macOS isolation as unsupported by policy without touching anything', () => {
    expect(() =>
      setIsolation(true, allow, { os: 'macos', dryRun: true, stateDir: '/tmp', log: () => {} }),
    ).toThrow(IsolationUnsupported);
  });

  it('in dry-run only logs what it would change', () => {
    const logged: unknown[] = [];
    const res = setIsolation(true, allow, {
      os: 'windows',
      dryRun: true,
      stateDir: '/tmp',
      log: (m, x) => logged.push([m, x]),
    });
    expect(res).toMatchObject({ dryRun: true, mechanism: 'netsh' });
    expect(logged).toHaveLength(1);
  });
});
