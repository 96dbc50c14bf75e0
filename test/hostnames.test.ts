// Host names are case-insensitive everywhere: an endpoint enrolled as `WS-02` (Windows' default casing) is
// reached by `isolate ws-02` and `isolate WS-02` alike, is shown as the agent reported it, and enrolling
// `Ws-02` again never makes a second endpoint.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoints } from '../db/schema.ts';
import {
  type AgentProcess,
  endpointByHost,
  newToken,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';

describe.each(drivers)('case-insensitive host names on %s', { timeout: 120_000 }, (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  let t: TestPlatform;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
    t = await buildTestPlatform(tdb, {}, { startAt: new Date() });
    await t.person('analyst', ['active_response']);
  });
  afterAll(async () => {
    for (const a of agents) await a.kill();
    await tb.stop();
    await tdb.destroy();
  });

  async function enrol(hostname: string) {
    const agent = spawnAgent({
      stateDir: tempDir('ar-agent-').dir,
      broker: tb.url,
      token: await newToken(tdb, tb.clock, tb.broker.pki.caPem),
      hostname,
      args: ['--dry-run', '--os', 'windows'],
    });
    agents.push(agent);
    return agent;
  }

  it('reaches WS-02 as ws-02 and WS-02, shows its own casing, and never makes a twin', async () => {
    const agent = await enrol('WS-02');
    await agent.waitForLog((l) => l.msg === 'connected', 'WS-02 to connect');
    const ep = await endpointByHost(tdb, 'ws-02');
    expect(ep).toMatchObject({ hostname: 'ws-02', reportedHostname: 'WS-02', os: 'windows' });

    for (const typed of ['ws-02', 'WS-02']) {
      await t.say('analyst', `isolate ${typed} --reason "case ${typed}"`);
      const reply = t.chat.transcript.findLast((m) => m.kind === 'reply');
      expect(reply?.text, typed).toMatch(/isolate on WS-02 is waiting for analyst to confirm/);
    }
    const requests = await t.platform.requests.listForUser((await t.platform.users.getUser('analyst')).id);
    expect(requests).toHaveLength(2);
    for (const r of requests)
      expect(r.targets).toEqual([{ endpointId: ep!.id, hostname: 'ws-02', reported: 'WS-02' }]);

    // Enrolling the name again in another casing is one endpoint, whatever enrolment decides about it.
    const again = await enrol('Ws-02');
    await Promise.race([
      again.waitForLog((l) => l.msg === 'connected' || l.fatal === true, 'the second enrolment to finish'),
      again.exited,
    ]);
    const twins = await tdb.db.select().from(endpoints).where(sql`lower(${endpoints.hostname}) = 'ws-02'`);
    expect(twins).toHaveLength(1);
  });
});
