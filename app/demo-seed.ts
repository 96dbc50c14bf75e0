// Seeds the demo through the same services an admin uses: people with passwords and enrolled TOTP, the
// console tenant, a segment with Active Response on, enrolment tokens for the agents, two scripts and a
// library file for `put`.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { generate } from 'otplib';
import type { Clock } from '../bot/ports.ts';
import { createSegmentService } from '../bot/segments/segment-service.ts';
import { readCaCertificatePem } from '../broker/pki/pki.ts';
import { enrollToken } from '../cli/commands/endpoint-commands.ts';
import type { Database } from '../db/client.ts';
import type { Role } from '../db/schema.ts';
import type { Platform } from './platform.ts';

const PEOPLE: { name: string; displayName: string; roles: Role[] }[] = [
  { name: 'analyst', displayName: 'Ana Analyst', roles: ['active_response'] },
  { name: 'commander', displayName: 'Cole Commander', roles: ['active_response', 'approver'] },
  { name: 'admin', displayName: 'Ada Admin', roles: ['admin'] },
];

const LIST_PROCESSES = `# Lists the processes the agent can see (read-only investigation).
import active_response as ar
procs = ar.processes()
print(f"{len(procs)} processes")
for p in procs:
    print(p["pid"], p["name"], p["cmdline"])
`;

const SINKHOLE_DOMAIN = `# Sinkholes a domain: adds a hosts-file line sending it to 0.0.0.0 (changes the endpoint).
# It writes ./hosts in its working directory, which for the demo's agents is their sandbox.
import active_response as ar
domain = ar.params()["domain"]
with open("hosts", "a") as f:
    f.write(f"0.0.0.0 {domain}\\n")
print(f"sinkholed {domain}")
`;

const REMEDIATE = `#!/bin/sh
# Demo remediation file: pushed by \`put\`, never run by the demo.
echo "remediated"
`;

export async function seedDemo(deps: {
  platform: Platform;
  database: Database;
  clock: Clock;
  dataDir: string;
}) {
  const { platform, database, clock } = deps;
  const { users, stepup, audit } = platform;
  await users.ensureHomeOrganization();
  await users.mapTenant({ platform: 'console', tenantId: 'local', orgName: 'home' });

  const people: { name: string; roles: string; password: string; totpSecret: string }[] = [];
  for (const p of PEOPLE) {
    const password = randomBytes(12).toString('base64url');
    const user = await users.createUser({ username: p.name, displayName: p.displayName, password });
    for (const role of p.roles) await users.grantRole({ userId: user.id, role });
    const { secret } = await stepup.startTotpEnrolment(user.id);
    // Enrol with the previous step's code so the person's first real code is not refused as a replay.
    const code = await generate({ secret, epoch: Math.floor(clock.now().getTime() / 1000) - 30 });
    await stepup.confirmTotpEnrolment(user.id, code);
    await users.linkChatIdentity({
      userId: user.id,
      platform: 'console',
      tenantId: 'local',
      chatUserId: p.name,
    });
    people.push({ name: p.name, roles: p.roles.join(', '), password, totpSecret: secret });
  }

  const segments = createSegmentService({ db: database.db, audit, clock });
  await segments.create({ name: 'servers', enabled: true });

  const scripts = platform.scripts;
  await scripts.upsert({
    name: 'list-processes',
    body: LIST_PROCESSES,
    readOnly: true,
    description: 'List running processes',
  });
  await scripts.upsert({
    name: 'sinkhole-domain',
    body: SINKHOLE_DOMAIN,
    paramsSchema: {
      domain: {
        type: 'string',
        required: true,
        pattern: '[a-z0-9.-]{1,253}',
        description: 'the domain to send nowhere',
      },
    },
    description: 'Sinkhole a domain in the hosts file',
  });
  await platform.library.add({
    name: 'remediate.sh',
    source: Readable.from([Buffer.from(REMEDIATE)]),
    actor: { type: 'system', id: 'demo' },
  });

  const tokens: Record<string, string> = {};
  for (const host of ['web-01', 'ws-02', 'mac-03']) {
    const t = await enrollToken({
      db: database.db,
      audit,
      clock,
      segment: 'servers',
      ttl: 3600,
      caCertPem: readCaCertificatePem(join(deps.dataDir, 'pki')),
    });
    tokens[host] = t.token;
  }
  return { people, tokens };
}
