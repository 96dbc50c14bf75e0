import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AGENT_VERSION } from '../agent/version.ts';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  endpointByHost,
  enrolAgent,
  newToken,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';

describe.each(drivers)('enrolment and delivery on %s', (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  const agents: AgentProcess[] = [];
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.kill();
    await tb.stop();
    await tdb.destroy();
  });

  it('enrols an agent with a single-use token, maps its certificate to an endpoint and takes its hello', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'web-01');
    agents.push(agent);
    const ep = await endpointByHost(tdb, 'web-01');
    expect(ep).toMatchObject({ id: endpointId, os: 'linux', agentVersion: AGENT_VERSION });
    expect(ep!.certFingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(ep!.brokerId).not.toBeNull();
    expect(ep!.capabilities).toContain('isolate');
    const enrolled = await tb.audit.list({ actionPrefix: 'endpoint.enrolled' });
    expect(enrolled).toHaveLength(1);
    expect(JSON.stringify(enrolled)).not.toMatch(/token"/);
    // Gone again: presence is cleared, so chat never calls a stopped agent online.
    await agent.stop();
    await waitFor(async () => (await endpointByHost(tdb, 'web-01'))!.brokerId === null, 'presence to clear');
  });

  it('refuses a token that was already used', async () => {
    const token = await newToken(tdb, tb.clock, tb.broker.pki.caPem);
    const first = spawnAgent({ stateDir: tempDir('ar-agent-').dir, broker: tb.url, token, hostname: 'a-1' });
    agents.push(first);
    await first.waitForLog((l) => l.msg === 'connected', 'first agent');
    const second = spawnAgent({ stateDir: tempDir('ar-agent-').dir, broker: tb.url, token, hostname: 'a-2' });
    agents.push(second);
    expect(await second.exited).toBe(2);
    expect(JSON.stringify(second.lines)).toMatch(/already used/);
    expect(await endpointByHost(tdb, 'a-2')).toBeUndefined();
  });

  it('refuses to enrol when the broker CA does not match the pin in the token', async () => {
    const token = await newToken(tdb, tb.clock, tb.broker.pki.caPem);
    const [secret] = token.split('.');
    const wrongPin = Buffer.alloc(32, 7).toString('base64url');
    const agent = spawnAgent({
      stateDir: tempDir('ar-agent-').dir,
      broker: tb.url,
      token: `${secret}.${wrongPin}`,
      hostname: 'pin-1',
    });
    agents.push(agent);
    expect(await agent.exited).toBe(2);
    expect(JSON.stringify(agent.lines)).toMatch(/does not match the pin/);
  });

  it('delivers an action to a connected agent: ack before execution, result after', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'web-02', ['--dry-run']);
    agents.push(agent);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action: 'isolate' }]);
    const row = await waitFor(async () => {
      const r = await deliveryState(tdb, d!.id);
      return r.state === 'succeeded' ? r : undefined;
    }, 'the delivery to succeed');
    expect(row.ackedAt).not.toBeNull();
    expect(row.result).toMatchObject({ isolated: true, dryRun: true, mechanism: 'nftables' });
    expect((await endpointByHost(tdb, 'web-02'))!.isolated).toBe(true);
    expect(tb.events.filter((e) => e.deliveryId === d!.id).map((e) => e.state)).toEqual([
      'sent',
      'acknowledged',
      'succeeded',
    ]);
    const actions = (await tb.audit.list({ requestId: row.requestId })).map((a) => a.action).reverse();
    expect(actions).toEqual(['delivery.sent', 'delivery.acknowledged', 'delivery.result']);
  });
});
