// Network isolation. Linux: an nftables table of our own (`inet ar_isolation`) whose output chain drops
// everything except loopback, established/related return traffic (so inbound connections keep working) and
// the broker's address and port. Windows: Windows Firewall through netsh (block outbound, allow the broker),
// after exporting the current policy so unisolate restores it. macOS (pf) is refused by policy.
import { spawnSync } from 'node:child_process';
import { isIPv6 } from 'node:net';
import { join } from 'node:path';

export const NFT_TABLE = 'ar_isolation';
export interface Allow {
  address: string;
  port: number;
}

export class IsolationUnsupported extends Error {}

export function nftIsolateRuleset(allow: Allow[]): string {
  const rules = allow.map(
    (a) => `    ${isIPv6(a.address) ? 'ip6' : 'ip'} daddr ${a.address} tcp dport ${a.port} accept`,
  );
  // Declaring then deleting the table first makes the whole file idempotent and atomic: nft applies it as
  // one transaction, so there is never a moment with a half-built ruleset.
  return [
    `table inet ${NFT_TABLE}`,
    `delete table inet ${NFT_TABLE}`,
    `table inet ${NFT_TABLE} {`,
    '  chain output {',
    '    type filter hook output priority 0; policy drop;',
    '    oifname "lo" accept',
    '    ct state established,related accept',
    ...rules,
    '  }',
    '}',
    '',
  ].join('\n');
}

export function nftUnisolateRuleset(): string {
  return [`table inet ${NFT_TABLE}`, `delete table inet ${NFT_TABLE}`, ''].join('\n');
}

const RULE = 'ActiveResponse-Isolation-Broker';

/** The netsh commands that isolate a Windows endpoint, in order (argv arrays, no shell). */
export function netshIsolateCommands(allow: Allow[], backupFile: string): string[][] {
  return [
    ['netsh', 'advfirewall', 'export', backupFile],
    ['netsh', 'advfirewall', 'firewall', 'delete', 'rule', `name=${RULE}`],
    ...allow.map((a) => [
      'netsh',
      'advfirewall',
      'firewall',
      'add',
      'rule',
      `name=${RULE}`,
      'dir=out',
      'action=allow',
      'protocol=TCP',
      `remoteip=${a.address}`,
      `remoteport=${a.port}`,
    ]),
    ['netsh', 'advfirewall', 'set', 'allprofiles', 'state', 'on'],
    ['netsh', 'advfirewall', 'set', 'allprofiles', 'firewallpolicy', 'blockinbound,blockoutbound'],
  ];
}

export function netshUnisolateCommands(backupFile: string): string[][] {
  return [
    ['netsh', 'advfirewall', 'import', backupFile],
    ['netsh', 'advfirewall', 'firewall', 'delete', 'rule', `name=${RULE}`],
  ];
}

export interface IsolationOptions {
  os: 'windows' | 'linux' | 'macos';
  dryRun: boolean;
  stateDir: string;
  log: (msg: string, extra?: object) => void;
}

function run(argv: string[], input?: string) {
  const r = spawnSync(argv[0]!, argv.slice(1), { input, encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw new Error(`${argv[0]} could not run: ${r.error.message}`);
  if (r.status !== 0)
    throw new Error(`${argv.join(' ')} failed (${r.status}): ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  return r.stdout;
}

/** Applies (isolate=true) or lifts isolation. Returns what was (or in dry-run, would be) done. */
export function setIsolation(isolate: boolean, allow: Allow[], o: IsolationOptions): Record<string, unknown> {
  if (o.os === 'macos') {
    throw new IsolationUnsupported('isolation on macOS (pf) is not supported by policy; nothing was changed');
  }
  if (o.os === 'linux') {
    const ruleset = isolate ? nftIsolateRuleset(allow) : nftUnisolateRuleset();
    if (o.dryRun) {
      o.log('dry-run: would apply nftables ruleset', { ruleset });
      return { dryRun: true, mechanism: 'nftables', ruleset };
    }
    run(['nft', '-f', '-'], ruleset);
    return { dryRun: false, mechanism: 'nftables', table: `inet ${NFT_TABLE}`, allow };
  }
  const backup = join(o.stateDir, 'firewall-before-isolation.wfw');
  const commands = isolate ? netshIsolateCommands(allow, backup) : netshUnisolateCommands(backup);
  if (o.dryRun || process.platform !== 'win32') {
    if (!o.dryRun)
      throw new IsolationUnsupported('Windows isolation needs a Windows host; run with --dry-run');
    o.log('dry-run: would run netsh commands', { commands });
    return { dryRun: true, mechanism: 'netsh', commands };
  }
  for (const c of commands) run(c);
  return { dryRun: false, mechanism: 'netsh', allow };
}
