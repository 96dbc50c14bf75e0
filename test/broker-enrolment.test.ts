import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AGENT_VERSION } from '../agent/version.ts';
import { reenrollToken, revokeEndpoint, unrevokeEndpoint } from '../cli/commands/endpoint-commands.ts';
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
import { keyAndCsr, postToBroker } from './helpers/raw-agent.ts';

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

  const enrolmentRefusals = async () =>
    (await tb.audit.list({ actionPrefix: 'endpoint.enrolment' })).filter((r) => r.outcome === 'refused');
  const reenrolToken = (hostname: string) =>
    reenrollToken({ db: tdb.db, audit: tb.audit, clock: tb.clock, hostname, caCertPem: tb.broker.pki.caPem });

  it('refuses a token for a new endpoint that names an enrolled host: no takeover of its endpoint', async () => {
    const real = await enrolAgent(tb, tdb, 'dc-01', ['--dry-run'], 'domain-controllers');
    agents.push(real.agent);
    const before = (await endpointByHost(tdb, 'dc-01'))!;
    // A token made for a lab laptop, used with the domain controller's name.
    const labToken = await newToken(tdb, tb.clock, tb.broker.pki.caPem, 'lab');
    const attacker = spawnAgent({
      stateDir: tempDir('ar-agent-').dir,
      broker: tb.url,
      token: labToken,
      hostname: 'DC-01',
    });
    agents.push(attacker);
    expect(await attacker.exited).toBe(2);
    expect(JSON.stringify(attacker.lines)).toMatch(
      /enrol\.hostname_taken.*already enrolled, and this token enrols new endpoints only.*endpoint reenroll-token dc-01/,
    );
    expect(await endpointByHost(tdb, 'dc-01')).toMatchObject({
      id: before.id,
      segmentId: before.segmentId,
      certFingerprint: before.certFingerprint,
      reportedHostname: 'dc-01',
      revokedAt: null,
    });
    expect(await enrolmentRefusals()).toMatchObject([
      { endpointId: before.id, details: { reason: 'hostname_taken', hostname: 'DC-01' } },
    ]);
    // The real agent keeps its connection and runs the domain controller's isolation itself.
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId: before.id, action: 'isolate' },
    ]);
    await waitFor(async () => (await deliveryState(tdb, d!.id)).state === 'succeeded', 'the isolation');
    expect(real.agent.count((l) => l.msg === 'running delivery' && l.id === d!.id)).toBe(1);
    // The refused attempt did not use the token up: it still enrols a new lab laptop.
    const laptop = spawnAgent({
      stateDir: tempDir('ar-agent-').dir,
      broker: tb.url,
      token: labToken,
      hostname: 'lab-laptop-7',
    });
    agents.push(laptop);
    await laptop.waitForLog((l) => l.msg === 'connected', 'the laptop to connect');
  });

  it('re-enrols an endpoint only with a token made for it, keeping its segment and its revocation', async () => {
    const first = await enrolAgent(tb, tdb, 'web-07');
    agents.push(first.agent);
    const before = (await endpointByHost(tdb, 'web-07'))!;
    const { revokedAt } = await revokeEndpoint({
      db: tdb.db,
      audit: tb.audit,
      clock: tb.clock,
      hostname: 'web-07',
    });
    await first.agent.kill();
    const { token, revoked } = await reenrolToken('web-07');
    expect(revoked).toBe(true);

    const wrongName = spawnAgent({
      stateDir: tempDir('ar-agent-').dir,
      broker: tb.url,
      token,
      hostname: 'web-08',
    });
    agents.push(wrongName);
    expect(await wrongName.exited).toBe(2);
    expect(JSON.stringify(wrongName.lines)).toMatch(/enrol\.hostname_mismatch.*re-enrols \\"web-07\\" only/);
    expect(await endpointByHost(tdb, 'web-08')).toBeUndefined();

    const again = spawnAgent({
      stateDir: tempDir('ar-agent-').dir,
      broker: tb.url,
      token,
      hostname: 'web-07',
    });
    agents.push(again);
    await again.waitForLog((l) => l.msg === 'enrolled', 'the re-enrolment');
    const after = (await endpointByHost(tdb, 'web-07'))!;
    expect(after).toMatchObject({
      id: before.id,
      segmentId: before.segmentId,
      revokedAt,
    });
    expect(after.certFingerprint).not.toBe(before.certFingerprint);
    // Still revoked: the new certificate opens nothing until an admin lifts the revocation.
    await again.waitForLog((l) => l.msg === 'disconnected', 'the refused connection');
    expect(again.count((l) => l.msg === 'connected')).toBe(0);
    expect(
      await unrevokeEndpoint({ db: tdb.db, audit: tb.audit, clock: tb.clock, hostname: 'web-07' }),
    ).toMatchObject({
      wasRevoked: true,
      certificateReplaced: true,
    });
    await again.waitForLog((l) => l.msg === 'connected', 'the agent to connect once unrevoked');

    const enrolled = await tb.audit.list({ actionPrefix: 'endpoint.enrolled' });
    expect(enrolled[0]).toMatchObject({
      endpointId: before.id,
      details: { reEnrolled: true, via: '/enroll', stillRevoked: true },
    });
    expect(await enrolmentRefusals()).toMatchObject([
      { details: { reason: 'hostname_mismatch', hostname: 'web-08' } },
    ]);
    expect(await tb.audit.list({ actionPrefix: 'endpoint.unrevoked' })).toHaveLength(1);
  });

  it('drops the live connection of an endpoint whose certificate a re-enrolment replaced (4003)', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'ws-09');
    agents.push(agent);
    const { token } = await reenrolToken('ws-09');
    const { csrPem } = await keyAndCsr('ws-09');
    const res = await postToBroker(tb, '/enroll', { token, csr: csrPem, hostname: 'ws-09', os: 'linux' });
    expect(res).toMatchObject({ status: 200, json: { endpointId } });
    await agent.waitForLog(
      (l) => l.msg === 'disconnected' && l.code === 4003,
      'the old connection to be dropped',
    );
    // Its old certificate opens nothing any more.
    await waitFor(
      async () =>
        (await tb.audit.list({ actionPrefix: 'broker.connection_refused' })).some(
          (r) => (r.details as { reason: string }).reason === 'unknown_certificate',
        ),
      'the old certificate to be refused',
    );
    expect(tb.broker.connected()).toEqual([]);
  });

  it('re-enrols an agent that proves its current key, and refuses one without it, with a stale one or revoked', async () => {
    const { agent, stateDir } = await enrolAgent(tb, tdb, 'key-01');
    await agent.stop();
    const before = (await endpointByHost(tdb, 'key-01'))!;
    const old = {
      key: readFileSync(join(stateDir, 'key.pem'), 'utf8'),
      cert: readFileSync(join(stateDir, 'cert.pem'), 'utf8'),
    };
    const again = spawnAgent({ stateDir, args: ['--reenroll'] });
    agents.push(again);
    await again.waitForLog((l) => l.msg === 're-enrolled with a new key', 'the re-enrolment');
    await again.waitForLog((l) => l.msg === 'connected', 'the agent to connect with its new certificate');
    const after = (await endpointByHost(tdb, 'key-01'))!;
    expect(after).toMatchObject({ id: before.id, segmentId: before.segmentId, revokedAt: null });
    expect(after.certFingerprint).not.toBe(before.certFingerprint);
    expect((await tb.audit.list({ actionPrefix: 'endpoint.enrolled' }))[0]).toMatchObject({
      details: { reEnrolled: true, via: '/reenroll' },
    });

    const { csrPem } = await keyAndCsr('key-01');
    const body = { csr: csrPem, hostname: 'key-01', os: 'linux' };
    expect(await postToBroker(tb, '/reenroll', body)).toMatchObject({
      status: 403,
      json: { error: { code: 'enrol.certificate_unknown' } },
    });
    // The replaced certificate is still signed by the CA, but it is no longer the endpoint's.
    expect(await postToBroker(tb, '/reenroll', body, { client: old })).toMatchObject({
      status: 403,
      json: { error: { code: 'enrol.certificate_unknown' } },
    });

    await again.stop();
    await revokeEndpoint({ db: tdb.db, audit: tb.audit, clock: tb.clock, hostname: 'key-01' });
    const revoked = spawnAgent({ stateDir, args: ['--reenroll'] });
    agents.push(revoked);
    expect(await revoked.exited).toBe(2);
    expect(JSON.stringify(revoked.lines)).toMatch(/enrol\.revoked/);
    expect((await endpointByHost(tdb, 'key-01'))!.certFingerprint).toBe(after.certFingerprint);
    expect((await enrolmentRefusals()).map((r) => (r.details as { reason: string }).reason)).toEqual([
      'revoked',
      'certificate_unknown',
      'certificate_unknown',
    ]);
  });

  it('refuses an enrolment body that is not declared as application/json, audited, and keeps the token', async () => {
    const token = await newToken(tdb, tb.clock, tb.broker.pki.caPem);
    const { csrPem } = await keyAndCsr('plain-01');
    const body = { token, csr: csrPem, hostname: 'plain-01', os: 'linux' };
    expect(await postToBroker(tb, '/enroll', body, { contentType: 'text/plain' })).toMatchObject({
      status: 415,
      json: { error: { code: 'enrol.content_type' } },
    });
    expect(await endpointByHost(tdb, 'plain-01')).toBeUndefined();
    expect(await enrolmentRefusals()).toMatchObject([
      { details: { reason: 'content_type', contentType: 'text/plain' } },
    ]);
    expect(
      await postToBroker(tb, '/enroll', body, { contentType: 'application/json; charset=utf-8' }),
    ).toMatchObject({
      status: 200,
    });
  });
});
