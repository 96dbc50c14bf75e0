import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  enrolAgent,
  scriptDelivery,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';

describe.each(drivers)('durable outbox on %s', (driver) => {
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

  /** An enrolled agent that is offline (its process stopped). */
  async function offlineAgent(hostname: string) {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, hostname, ['--dry-run']);
    await agent.stop();
    await waitFor(() => !tb.broker.connected().includes(endpointId), 'the agent to be offline');
    return { endpointId, stateDir };
  }
  const journal = (stateDir: string) =>
    readdirSync(join(stateDir, 'journal')).filter((n) => n.endsWith('.json'));

  it('keeps deliveries for an offline agent and sends them in order when it connects', async () => {
    const { endpointId, stateDir } = await offlineAgent('off-01');
    const rows = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'isolate' },
      { endpointId, action: 'processes' },
      { endpointId, action: 'unisolate' },
    ]);
    for (const r of rows) expect((await deliveryState(tdb, r.id)).state).toBe('queued');
    const agent = spawnAgent({ stateDir, args: ['--dry-run'] });
    agents.push(agent);
    await waitFor(async () => {
      const states = await Promise.all(rows.map((r) => deliveryState(tdb, r.id)));
      return states.every((s) => s.state === 'succeeded');
    }, 'all three deliveries to succeed');
    const order = agent.lines.filter((l) => l.msg === 'running delivery').map((l) => l.id);
    expect(order).toEqual(rows.map((r) => r.id));
    expect(journal(stateDir)).toHaveLength(3);
  });

  it('expires a delivery whose time-to-live ran out while the agent was offline, and never runs it', async () => {
    const { endpointId, stateDir } = await offlineAgent('off-02');
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'isolate', ttlMs: 60_000 },
    ]);
    tb.clock.advance(61_000);
    await tb.broker.expireDue();
    const row = await deliveryState(tdb, d!.id);
    expect(row.state).toBe('expired');
    expect(tb.events.filter((e) => e.deliveryId === d!.id).map((e) => e.state)).toEqual(['expired']);
    const agent = spawnAgent({ stateDir, args: ['--dry-run'] });
    agents.push(agent);
    await agent.waitForLog((l) => l.msg === 'connected', 'the agent to connect');
    // A later delivery goes through, so the expired one had its chance to be (wrongly) sent first.
    const [later] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'processes' },
    ]);
    await waitFor(
      async () => (await deliveryState(tdb, later!.id)).state === 'succeeded',
      'the later delivery',
    );
    expect(journal(stateDir)).toEqual([`${later!.id}.json`]);
    expect(await tb.audit.list({ actionPrefix: 'delivery.expired' })).toHaveLength(1);
  });

  it('cancels a queued delivery so the agent never sees it', async () => {
    const { endpointId, stateDir } = await offlineAgent('off-03');
    const rows = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'isolate' },
      { endpointId, action: 'processes' },
    ]);
    const n = await tdb.db.transaction((tx) => tb.broker.dispatcher.cancel(tx, { deliveryId: rows[0]!.id }));
    expect(n).toBe(1);
    const agent = spawnAgent({ stateDir, args: ['--dry-run'] });
    agents.push(agent);
    await waitFor(
      async () => (await deliveryState(tdb, rows[1]!.id)).state === 'succeeded',
      'the second delivery',
    );
    expect((await deliveryState(tdb, rows[0]!.id)).state).toBe('cancelled');
    expect(journal(stateDir)).toEqual([`${rows[1]!.id}.json`]);
    // Cancelling again finds nothing left to cancel.
    expect(
      await tdb.db.transaction((tx) => tb.broker.dispatcher.cancel(tx, { requestId: rows[0]!.id })),
    ).toBe(0);
  });

  it('reports the real end of a script that kept running through an agent crash, and does not run it again', async () => {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, 'crash-01');
    agents.push(agent);
    const work = tempDir('ar-crash-');
    const release = join(work.dir, 'release');
    const runs = join(work.dir, 'runs.log');
    // Waits for the test's word, so the agent is down and back up while it runs; then calls the helper,
    // which works again only if the restarted agent serves it.
    const script = [
      'import os, sys, time',
      'import active_response as ar',
      'p = ar.params()',
      'open(p["runs"], "a").write("ran\\n")',
      'print("started", flush=True)',
      'while not os.path.exists(p["release"]):',
      '    time.sleep(0.05)',
      'ar.progress("still here")',
      'print("finished after the restart")',
      'sys.exit(3)',
    ].join('\n');
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, ...scriptDelivery('patient', script, { release, runs }) },
    ]);
    await waitFor(() => existsSync(runs), 'the script to start');
    await agent.kill();
    expect((await deliveryState(tdb, d!.id)).state).toBe('acknowledged');
    const again = spawnAgent({ stateDir });
    agents.push(again);
    await again.waitForLog(
      (l) => l.msg === 'adopting a script that kept running while the agent was down',
      'the adoption',
    );
    writeFileSync(release, '');
    const row = await waitFor(async () => {
      const r = await deliveryState(tdb, d!.id);
      return r.state === 'failed' ? r : undefined;
    }, "the script's real end to be reported");
    // Exit code 3, not a traceback's 1: the helper call after the restart was answered.
    expect(row.error).toBe('the script exited with 3');
    expect(row.result).toMatchObject({
      exitCode: 3,
      signal: null,
      timedOut: false,
      adopted: true,
      stdout: 'started\nfinished after the restart\n',
    });
    expect(readFileSync(runs, 'utf8')).toBe('ran\n');
    expect(again.count((l) => l.msg === 'running delivery')).toBe(0);
    // The run's files and its temporary directory are gone once the journal holds the result.
    await waitFor(() => readdirSync(join(stateDir, 'runs')).length === 0, 'the run files to be removed');
    const entry = JSON.parse(readFileSync(join(stateDir, 'journal', `${d!.id}.json`), 'utf8'));
    expect(entry.result).toMatchObject({ ok: false, result: { exitCode: 3, adopted: true } });
    expect(existsSync(entry.script.tempDir)).toBe(false);
    work.remove();
  });
});
