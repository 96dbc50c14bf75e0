// Network isolation: default deny in both directions, IPv4 and IPv6, for new and established flows; only
// loopback, the broker, DNS to the configured resolvers and DHCP stay open. Linux uses an nftables table of
// our own (isolation-nftables.ts) and then cuts the conntrack entries of flows that are no longer allowed;
// Windows uses Windows Firewall through netsh (isolation-netsh.ts). Either way the agent reads the firewall
// back after changing it and reports success only when what it finds is what it meant to apply. macOS (pf)
// is refused by policy.
import { spawnSync } from 'node:child_process';
import { getServers } from 'node:dns';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  type Allow,
  type Allowed,
  checkAllow,
  linuxResolvers,
  serversToResolvers,
} from './isolation-addresses.ts';
import { cutDisallowedFlows } from './isolation-conntrack.ts';
import {
  NETSH_SHOW_BROKER_RULES,
  NETSH_SHOW_PROFILES,
  netshIsolateCommands,
  netshMayFail,
  netshUnisolateCommands,
  verifyNetshIsolation,
} from './isolation-netsh.ts';
import {
  NFT_TABLE,
  nftIsolateRuleset,
  nftTableAbsent,
  nftUnisolateRuleset,
  verifyNftIsolation,
} from './isolation-nftables.ts';

export type { Allow, Allowed } from './isolation-addresses.ts';

export class IsolationUnsupported extends Error {}

/** The firewall was changed but does not read back as intended; the platform must not count it as done. */
export class IsolationNotVerified extends Error {
  constructor(
    what: string,
    readonly problems: string[],
  ) {
    super(`${what} could not be verified: ${problems.join('; ')}`);
  }
}

export interface IsolationOptions {
  os: 'windows' | 'linux' | 'macos';
  dryRun: boolean;
  stateDir: string;
  log: (msg: string, extra?: object) => void;
}

function exec(argv: string[], input?: string) {
  const r = spawnSync(argv[0]!, argv.slice(1), { input, encoding: 'utf8', timeout: 30_000 });
  const missing = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
  if (r.error && !missing) throw new Error(`${argv[0]} could not run: ${r.error.message}`);
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', missing };
}

/** nft's JSON, or undefined when it printed something else (the verifier then says so). */
function json(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function run(argv: string[], input?: string) {
  const r = exec(argv, input);
  if (r.missing) throw new Error(`${argv[0]} is not installed`);
  if (r.status !== 0)
    throw new Error(`${argv.join(' ')} failed (${r.status}): ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  return r.stdout;
}

/**
 * Applies (isolate=true) or lifts isolation and returns what was done — or, in dry-run, what would be,
 * with nothing changed on the host. Throws IsolationUnsupported on macOS, and IsolationNotVerified when
 * the firewall does not read back as intended (an isolation that fails this way leaves the rules it
 * managed to load in place: failing closed beats reopening a compromised host).
 */
export function setIsolation(isolate: boolean, allow: Allow[], o: IsolationOptions): Record<string, unknown> {
  if (o.os === 'macos') {
    throw new IsolationUnsupported('isolation on macOS (pf) is not supported by policy; nothing was changed');
  }
  const broker = allow.map(checkAllow);
  return o.os === 'linux' ? linux(isolate, broker, o) : windows(isolate, broker, o);
}

function linux(isolate: boolean, broker: Allow[], o: IsolationOptions): Record<string, unknown> {
  const allowed: Allowed = { broker, dns: isolate ? linuxResolvers() : [], dhcp: isolate };
  const ruleset = isolate ? nftIsolateRuleset(broker, allowed.dns) : nftUnisolateRuleset();
  const base = { mechanism: 'nftables', table: `inet ${NFT_TABLE}` };
  if (o.dryRun) {
    o.log('dry-run: would apply nftables ruleset', { ruleset });
    return isolate
      ? { ...base, dryRun: true, verified: false, ruleset, allowed, conntrackFlushed: false }
      : { ...base, dryRun: true, verified: false, ruleset };
  }
  run(['nft', '-f', '-'], ruleset);
  if (!isolate) {
    if (!nftTableAbsent(json(run(['nft', '-j', 'list', 'tables']))))
      throw new IsolationNotVerified('lifting isolation', [`table inet ${NFT_TABLE} is still loaded`]);
    return { ...base, dryRun: false, verified: true };
  }
  const listing = exec(['nft', '-j', 'list', 'table', 'inet', NFT_TABLE]);
  const problems =
    listing.status === 0
      ? verifyNftIsolation(json(listing.stdout), broker)
      : [`nft list table failed: ${listing.stderr.trim().slice(0, 300)}`];
  if (problems.length) throw new IsolationNotVerified('isolation', problems);
  const cut = cutDisallowedFlows(allowed, exec);
  if (cut.flushed === false) o.log('open connections were not cut with conntrack', { reason: cut.reason });
  return {
    ...base,
    dryRun: false,
    verified: true,
    allowed,
    conntrackFlushed: cut.flushed,
    ...(cut.flushed === false ? { conntrackSkipped: cut.reason } : {}),
  };
}

function windows(isolate: boolean, broker: Allow[], o: IsolationOptions): Record<string, unknown> {
  const backup = join(o.stateDir, 'firewall-before-isolation.wfw');
  const hasBackup = existsSync(backup);
  const allowed: Allowed = { broker, dns: isolate ? serversToResolvers(getServers()) : [], dhcp: isolate };
  const commands = isolate
    ? netshIsolateCommands(broker, allowed.dns, backup, !hasBackup)
    : netshUnisolateCommands(backup, hasBackup);
  if (o.dryRun || process.platform !== 'win32') {
    if (!o.dryRun)
      throw new IsolationUnsupported('Windows isolation needs a Windows host; run with --dry-run');
    o.log('dry-run: would run netsh commands', { commands });
    return isolate
      ? { mechanism: 'netsh', dryRun: true, verified: false, commands, allowed }
      : { mechanism: 'netsh', dryRun: true, verified: false, commands };
  }
  for (const c of commands) {
    if (netshMayFail(c)) exec(c);
    else run(c);
  }
  if (!isolate) {
    const left = exec(NETSH_SHOW_BROKER_RULES);
    if (left.status === 0 && /Rule Name:/.test(left.stdout))
      throw new IsolationNotVerified('lifting isolation', ['the broker allow rule is still present']);
    // The next isolation exports the policy as it will be then.
    if (hasBackup) rmSync(backup, { force: true });
    return {
      mechanism: 'netsh',
      dryRun: false,
      verified: true,
      restored: hasBackup ? 'exported policy' : 'windows default policy',
    };
  }
  const problems = verifyNetshIsolation(
    run(NETSH_SHOW_PROFILES),
    exec(NETSH_SHOW_BROKER_RULES).stdout,
    broker,
  );
  if (problems.length) throw new IsolationNotVerified('isolation', problems);
  return { mechanism: 'netsh', dryRun: false, verified: true, allowed };
}
