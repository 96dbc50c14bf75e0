// Windows isolation through Windows Firewall (netsh advfirewall), as argv lists run without a shell, and
// the parsers that read the firewall back.
//
// `blockinboundalways` refuses every inbound connection even where an allow rule exists (RDP, SMB, the
// rules other software added); plain `blockinbound` is the Windows default and would have changed nothing.
// `blockoutbound` stops new outbound connections except those our rules allow: the broker, DNS to the
// configured resolvers, and DHCP. Return traffic of allowed outbound connections is let in by the
// firewall's own state tracking. The policy as it was is exported first, and unisolate imports it back.
import { type Allow, canonicalIp } from './isolation-addresses.ts';

export const NETSH_RULES = {
  broker: 'ActiveResponse-Isolation-Broker',
  dns: 'ActiveResponse-Isolation-DNS',
  dhcp: 'ActiveResponse-Isolation-DHCP',
} as const;
export const NETSH_ISOLATED_POLICY = 'blockinboundalways,blockoutbound';
/** The policy Windows ships with, used on unisolate only when the exported policy has gone missing. */
export const NETSH_DEFAULT_POLICY = 'blockinbound,allowoutbound';

const fw = ['netsh', 'advfirewall', 'firewall'];
const addOut = (name: string, ...spec: string[]) => [
  ...fw,
  'add',
  'rule',
  `name=${name}`,
  'dir=out',
  'action=allow',
  ...spec,
];
const deleteOurs = () => Object.values(NETSH_RULES).map((name) => [...fw, 'delete', 'rule', `name=${name}`]);

/** A `delete rule` exits non-zero when no rule had that name, which is not a failure for us. */
export const netshMayFail = (argv: string[]) => argv[3] === 'delete' && argv[4] === 'rule';

/**
 * The netsh commands that isolate a Windows endpoint, in order. `exportBackup` is false when a backup
 * from an earlier isolation exists: exporting again would save the isolated policy over the original.
 */
export function netshIsolateCommands(
  broker: Allow[],
  dns: string[],
  backupFile: string,
  exportBackup = true,
): string[][] {
  const resolvers = dns.map(canonicalIp).join(',');
  return [
    ...(exportBackup ? [['netsh', 'advfirewall', 'export', backupFile]] : []),
    ...deleteOurs(),
    ...broker.map((a) =>
      addOut(
        NETSH_RULES.broker,
        'protocol=TCP',
        `remoteip=${canonicalIp(a.address)}`,
        `remoteport=${a.port}`,
      ),
    ),
    ...(resolvers
      ? [
          addOut(NETSH_RULES.dns, 'protocol=UDP', `remoteip=${resolvers}`, 'remoteport=53'),
          addOut(NETSH_RULES.dns, 'protocol=TCP', `remoteip=${resolvers}`, 'remoteport=53'),
        ]
      : []),
    addOut(NETSH_RULES.dhcp, 'protocol=UDP', 'localport=68', 'remoteport=67'),
    addOut(NETSH_RULES.dhcp, 'protocol=UDP', 'localport=546', 'remoteport=547'),
    ['netsh', 'advfirewall', 'set', 'allprofiles', 'state', 'on'],
    ['netsh', 'advfirewall', 'set', 'allprofiles', 'firewallpolicy', NETSH_ISOLATED_POLICY],
  ];
}

/**
 * Lifting isolation: import the exported policy (which predates our rules, so it also removes them), or,
 * if that backup is gone, go back to the Windows default policy; then remove our rules either way.
 */
export function netshUnisolateCommands(backupFile: string, hasBackup = true): string[][] {
  return [
    hasBackup
      ? ['netsh', 'advfirewall', 'import', backupFile]
      : ['netsh', 'advfirewall', 'set', 'allprofiles', 'firewallpolicy', NETSH_DEFAULT_POLICY],
    ...deleteOurs(),
  ];
}

export const NETSH_SHOW_PROFILES = ['netsh', 'advfirewall', 'show', 'allprofiles'];
export const NETSH_SHOW_BROKER_RULES = [...fw, 'show', 'rule', `name=${NETSH_RULES.broker}`];

/** `Label      value` lines of netsh output, grouped in blocks that start at a line ending with ':'. */
function blocks(text: string, header: RegExp): Array<{ title: string; fields: Map<string, string> }> {
  const out: Array<{ title: string; fields: Map<string, string> }> = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trimEnd();
    const h = header.exec(line);
    if (h) {
      out.push({ title: h[1]!.trim(), fields: new Map() });
      continue;
    }
    const kv = /^([A-Za-z][\w ]*?):?\s{2,}(\S.*)$/.exec(line);
    if (kv && out.length) out[out.length - 1]!.fields.set(kv[1]!.toLowerCase(), kv[2]!.trim());
  }
  return out;
}

/** The three profiles of `netsh advfirewall show allprofiles`: name, state and firewall policy. */
export function parseNetshProfiles(text: string) {
  return blocks(text, /^(\w+) Profile Settings:\s*$/).map((b) => ({
    profile: b.title,
    state: b.fields.get('state') ?? '',
    policy: b.fields.get('firewall policy') ?? '',
  }));
}

/** The rules of `netsh advfirewall firewall show rule name=…` (none when it prints "No rules match"). */
export function parseNetshRules(text: string) {
  return blocks(text, /^Rule Name:\s+(.+)$/).map((b) => ({
    name: b.title,
    enabled: b.fields.get('enabled') ?? '',
    direction: b.fields.get('direction') ?? '',
    remoteIp: b.fields.get('remoteip') ?? '',
    remotePort: b.fields.get('remoteport') ?? '',
    action: b.fields.get('action') ?? '',
  }));
}

const ipOf = (v: string) => {
  try {
    return canonicalIp(v.replace(/\/\d+$/, ''));
  } catch {
    return v;
  }
};

/**
 * Checks Windows Firewall after isolating: every profile on with BlockInboundAlways,BlockOutbound, and an
 * enabled outbound allow rule for each broker address and port. Returns the problems, in words.
 */
export function verifyNetshIsolation(profilesText: string, rulesText: string, broker: Allow[]): string[] {
  const problems: string[] = [];
  const profiles = parseNetshProfiles(profilesText);
  for (const name of ['Domain', 'Private', 'Public']) {
    const p = profiles.find((x) => x.profile === name);
    if (!p) problems.push(`the ${name} profile is missing from netsh advfirewall show allprofiles`);
    else {
      if (p.state.toUpperCase() !== 'ON') problems.push(`the ${name} profile is ${p.state || 'not on'}`);
      if (p.policy.replace(/\s/g, '').toLowerCase() !== NETSH_ISOLATED_POLICY)
        problems.push(
          `the ${name} profile's policy is ${p.policy || 'unknown'}, not BlockInboundAlways,BlockOutbound`,
        );
    }
  }
  const rules = parseNetshRules(rulesText).filter(
    (r) =>
      r.enabled.toLowerCase() === 'yes' &&
      r.direction.toLowerCase() === 'out' &&
      r.action.toLowerCase() === 'allow',
  );
  for (const a of broker) {
    const ip = canonicalIp(a.address);
    const ok = rules.some(
      (r) =>
        r.remoteIp.split(',').some((x) => ipOf(x.trim()) === ip) &&
        r.remotePort.split(',').includes(String(a.port)),
    );
    if (!ok) problems.push(`no enabled outbound allow rule for the broker ${a.address} port ${a.port}`);
  }
  return problems;
}
