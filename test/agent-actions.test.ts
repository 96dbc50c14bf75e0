import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { copyFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  enrolAgent,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';

describe.each(drivers)('agent built-in actions on %s', (driver) => {
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

  const finish = (id: string) =>
    waitFor(async () => {
      const r = await deliveryState(tdb, id);
      return ['succeeded', 'failed'].includes(r.state) ? r : undefined;
    }, 'the delivery to finish');

  it('lists processes, kills by pid and by exact name, and reports what it killed', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'act-01');
    agents.push(agent);
    // A uniquely named copy of sleep, so killing by name cannot touch anything else on the machine.
    const name = `arsl${randomBytes(3).toString('hex')}`;
    const bin = join(tempDir().dir, name);
    copyFileSync('/bin/sleep', bin);
    const byPid = spawn('/bin/sleep', ['300']);
    const byName = [spawn(bin, ['300']), spawn(bin, ['300'])];
    const exited = (c: ReturnType<typeof spawn>) =>
      new Promise((r) => (c.exitCode !== null || c.signalCode ? r(0) : c.on('exit', r)));

    const [list, k1, k2] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'processes' },
      { endpointId, action: 'kill', params: { pid: byPid.pid } },
      { endpointId, action: 'kill', params: { processName: name } },
    ]);
    const procs = (await finish(list!.id)).result as { processes: { pid: number; name: string }[] };
    expect(procs.processes.some((p) => p.pid === byPid.pid)).toBe(true);
    const pidRes = await finish(k1!.id);
    expect(pidRes.state).toBe('succeeded');
    expect(pidRes.result).toMatchObject({ killed: [{ pid: byPid.pid, name: 'sleep' }] });
    const nameRes = await finish(k2!.id);
    expect(nameRes.state).toBe('succeeded');
    const killed = (nameRes.result as { killed: { pid: number }[] }).killed.map((k) => k.pid).sort();
    expect(killed).toEqual(byName.map((c) => c.pid).sort());
    await Promise.all([byPid, ...byName].map(exited));
  });

  it('reports an unknown process and an unsupported action as failed results', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'act-02');
    agents.push(agent);
    const [k, u] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'kill', params: { processName: `nope${randomBytes(4).toString('hex')}` } },
      { endpointId, action: 'reformat_disk' },
    ]);
    expect(await finish(k!.id)).toMatchObject({
      state: 'failed',
      error: expect.stringMatching(/no process matches/),
    });
    expect(await finish(u!.id)).toMatchObject({
      state: 'failed',
      error: expect.stringMatching(/does not support/),
    });
  });

  it('refuses macOS isolation as unsupported by policy, reported as a failed result', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'mac-01', ['--dry-run', '--os', 'macos']);
    agents.push(agent);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action: 'isolate' }]);
    const row = await finish(d!.id);
    expect(row).toMatchObject({ state: 'failed', result: { unsupported: true } });
    expect(row.error).toMatch(/not supported by policy/);
  });

  it('does not run a delivery whose platform signature does not verify', async () => {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, 'sig-02');
    await agent.stop();
    const { publicKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(stateDir, 'signing-pub.pem'), publicKey.export({ format: 'pem', type: 'spki' }));
    const again = spawnAgent({ stateDir });
    agents.push(again);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action: 'processes' }]);
    const row = await finish(d!.id);
    expect(row).toMatchObject({ state: 'failed', ackedAt: null, result: { refused: 'bad_signature' } });
    expect(row.error).toMatch(/signature does not verify/);
    expect(readdirSync(join(stateDir, 'journal'))).toEqual([]);
    expect(await tb.audit.list({ actionPrefix: 'delivery.refused_by_agent' })).toMatchObject([
      { endpointId, outcome: 'refused', details: { deliveryId: d!.id, reason: 'bad_signature' } },
    ]);
  });
});
