// The broker's answers frame by frame, as docs/agent-protocol.md states them: what an agent written from the
// document alone sees for every edge it can reach.
import { createHash, verify } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { files } from '../db/schema.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { makeChunk, signedProceedFields } from '../protocol/frames.ts';
import {
  deliveryState,
  dispatch,
  endpointByHost,
  enrolAgent,
  startTestBroker,
  type TestBroker,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { type Frame, nonce, type RawClient, rawClient } from './helpers/raw-agent.ts';

const UNKNOWN_ID = '00000000-0000-4000-8000-0000000000aa';

describe.each(drivers)('agent frames on %s', (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
  });
  afterEach(async () => {
    await tb.stop();
    await tdb.destroy();
  });

  /** An enrolled endpoint whose agent process is stopped, so the test speaks for it. */
  async function enrolled(hostname: string) {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, hostname);
    await agent.stop();
    await waitFor(() => !tb.broker.connected().includes(endpointId), 'the agent to be offline');
    return { endpointId, stateDir };
  }

  const refusedFrames = () => tb.audit.list({ actionPrefix: 'broker.frame_refused' });
  const errorsFor = (raw: RawClient, ref: string) =>
    raw.frames.filter((f) => f.type === 'error' && f.ref === ref);

  /** Dispatches one delivery to the raw client and runs it as far as the go-ahead. */
  async function running(
    raw: RawClient,
    endpointId: string,
    action: string,
    params: Record<string, unknown> = {},
  ) {
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action, params }]);
    await raw.next((f) => f.type === 'delivery' && f.id === d!.id, 'the delivery');
    const n = nonce();
    raw.send({ type: 'ack', id: d!.id, nonce: n });
    const proceed = await raw.next((f) => f.type === 'proceed' && f.nonce === n, 'the go-ahead');
    expect(proceed.go).toBe(true);
    return d!.id;
  }

  it('names the delivery or transfer id in every refusal that has one (ref)', async () => {
    const { stateDir } = await enrolled('ref-01');
    const raw = await rawClient(tb, stateDir);
    raw.send({ type: 'result', id: UNKNOWN_ID, ok: true });
    raw.send({ type: 'progress', id: UNKNOWN_ID.replace('aa', 'ab'), message: 'half way' });
    raw.send({ type: 'ack', id: UNKNOWN_ID.replace('aa', 'ac') }); // no nonce: malformed
    raw.send({ type: 'file_end', transferId: UNKNOWN_ID.replace('aa', 'ad'), size: -1, sha256: 'x' });
    raw.send({ type: 'hello', v: 2 });
    await raw.settle();
    expect(errorsFor(raw, UNKNOWN_ID)).toMatchObject([{ code: 'delivery.unknown' }]);
    expect(errorsFor(raw, UNKNOWN_ID.replace('aa', 'ab'))).toMatchObject([{ code: 'delivery.unknown' }]);
    expect(errorsFor(raw, UNKNOWN_ID.replace('aa', 'ac'))).toMatchObject([{ code: 'frame.malformed' }]);
    expect(errorsFor(raw, UNKNOWN_ID.replace('aa', 'ad'))).toMatchObject([{ code: 'frame.malformed' }]);
    // A frame that names no id gets an error without one.
    expect(raw.frames.filter((f) => f.type === 'error' && f.ref === undefined)).toHaveLength(1);
    const audited = await refusedFrames();
    expect(audited.map((a) => (a.details as { ref: string | null }).ref).sort()).toEqual(
      [null, UNKNOWN_ID, ...['ab', 'ac', 'ad'].map((x) => UNKNOWN_ID.replace('aa', x))].sort(),
    );
    raw.ws.terminate();
  });

  it('answers a second ack with a fresh signed go-ahead, and a repeated result with nothing', async () => {
    const { endpointId, stateDir } = await enrolled('ack-01');
    const raw = await rawClient(tb, stateDir);
    const id = await running(raw, endpointId, 'processes');
    const again = nonce();
    raw.send({ type: 'ack', id, nonce: again });
    const second = await raw.next((f) => f.type === 'proceed' && f.nonce === again, 'the second go-ahead');
    expect(second).toMatchObject({ id, go: true });
    const signed = (p: Frame) =>
      verify(
        null,
        Buffer.from(canonicalJson(signedProceedFields({ endpointId, id, go: true, nonce: String(p.nonce) }))),
        raw.signingKey,
        Buffer.from(String(p.signature), 'base64'),
      );
    const proceeds = raw.frames.filter((f) => f.type === 'proceed');
    expect(proceeds).toHaveLength(2);
    expect(proceeds.every(signed)).toBe(true);
    // A go-ahead is bound to its nonce: the first one does not verify for the second ack.
    expect(signed({ ...proceeds[0], nonce: again })).toBe(false);
    expect((await deliveryState(tdb, id)).state).toBe('acknowledged');

    raw.send({ type: 'result', id, ok: true, result: { processes: [], total: 0 } });
    await waitFor(async () => (await deliveryState(tdb, id)).state === 'succeeded', 'the result');
    const before = raw.frames.length;
    raw.send({ type: 'result', id, ok: false, error: 'changed my mind' });
    await raw.settle();
    expect(raw.frames.slice(before).map((f) => f.type)).toEqual(['pong']);
    expect(await deliveryState(tdb, id)).toMatchObject({ state: 'succeeded', error: null });
    expect(await refusedFrames()).toEqual([]);
    raw.ws.terminate();
  });

  it('refuses progress for a delivery the agent is not running', async () => {
    const { endpointId, stateDir } = await enrolled('prog-01');
    const raw = await rawClient(tb, stateDir);
    const id = await running(raw, endpointId, 'processes');
    raw.send({ type: 'progress', id, message: 'counting' });
    raw.send({ type: 'result', id, ok: true, result: { processes: [], total: 0 } });
    raw.send({ type: 'progress', id, message: 'after the end' });
    await raw.settle();
    expect(errorsFor(raw, id)).toMatchObject([{ code: 'delivery.unknown' }]);
    raw.ws.terminate();
  });

  it('refuses a transfer id already used for a finished upload, and stores nothing for it', async () => {
    const { endpointId, stateDir } = await enrolled('xfer-01');
    const raw = await rawClient(tb, stateDir);
    const id = await running(raw, endpointId, 'fetch', { path: '/tmp/evidence.txt' });
    const transferId = '11111111-1111-4111-8111-111111111111';
    const data = Buffer.from('evidence');
    const sha256 = createHash('sha256').update(data).digest('hex');
    const start = { type: 'file_start', transferId, deliveryId: id, name: 'evidence.txt', size: data.length };
    raw.send(start);
    raw.ws.send(makeChunk(transferId, data));
    raw.send({ type: 'file_end', transferId, size: data.length, sha256 });
    await raw.next((f) => f.type === 'file_stored' && f.transferId === transferId, 'the stored file');
    raw.send(start);
    raw.ws.send(makeChunk(transferId, data));
    raw.send({ type: 'file_end', transferId, size: data.length, sha256 });
    await raw.settle();
    expect(errorsFor(raw, transferId).map((f) => f.code)).toEqual([
      'frame.unexpected',
      'file.transfer_unknown',
      'file.transfer_unknown',
    ]);
    expect(raw.frames.filter((f) => f.type === 'file_stored')).toHaveLength(1);
    expect(await tdb.db.select().from(files)).toHaveLength(1);
    raw.ws.terminate();
  });

  it('closes the connection at the 21st refused frame of any kind (1008), after auditing 20', async () => {
    const { stateDir } = await enrolled('flood-01');
    const raw = await rawClient(tb, stateDir);
    for (let i = 0; i < 21; i++) {
      raw.send({ type: 'result', id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, ok: true });
    }
    await waitFor(() => raw.closed(), 'the connection to close');
    expect(raw.closed()!.code).toBe(1008);
    expect(raw.frames.filter((f) => f.code === 'delivery.unknown')).toHaveLength(21);
    expect(await refusedFrames()).toHaveLength(20);
  });

  it("records many agents going away at once, and an older connection's end never clears a newer one", async () => {
    const hosts = Array.from({ length: 4 }, (_, i) => `bye-0${i + 1}`);
    const agents = [];
    for (const h of hosts) agents.push(await enrolled(h));
    const presence = () => Promise.all(hosts.map(async (h) => (await endpointByHost(tdb, h))!));
    const clients = await Promise.all(agents.map((a) => rawClient(tb, a.stateDir)));
    await waitFor(async () => (await presence()).every((e) => e.brokerId), 'every agent recorded online');
    const before = await presence();

    // The first agent reconnects a second later: its older connection is closed (4000).
    tb.clock.advance(1000);
    const again = await rawClient(tb, agents[0]!.stateDir);
    await waitFor(() => clients[0]!.closed(), 'the older connection to close');
    for (const c of clients.slice(1)) c.ws.terminate();
    await waitFor(
      async () => (await presence()).slice(1).every((e) => e.brokerId === null),
      'the agents that went away to be recorded offline',
    );
    const after = await presence();
    for (const [i, e] of after.entries()) {
      if (i === 0) continue;
      expect(e.lastSeenAt!.getTime()).toBeGreaterThanOrEqual(before[i]!.lastSeenAt!.getTime());
    }
    await again.settle();
    expect(after[0]!.brokerId).toBe(before[0]!.brokerId);
    expect(after[0]!.connectedAt!.getTime()).toBeGreaterThan(before[0]!.connectedAt!.getTime());
    again.ws.terminate();
    await waitFor(async () => (await presence())[0]!.brokerId === null, 'the newer connection to end');
  });

  it('closes an older connection as soon as a newer one is accepted, before its hello', async () => {
    const { endpointId, stateDir } = await enrolled('dup-02');
    const first = await rawClient(tb, stateDir);
    const second = await rawClient(tb, stateDir, { hello: false });
    await waitFor(() => first.closed(), 'the older connection to close');
    expect(first.closed()!.code).toBe(4000);
    expect(tb.broker.connected()).toEqual([]);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action: 'processes' }]);
    expect((await deliveryState(tdb, d!.id)).state).toBe('queued');
    second.send({
      type: 'hello',
      v: 2,
      hostname: second.hostname,
      os: 'linux',
      osVersion: 'x',
      agentVersion: '1.4.0',
      capabilities: [],
      isolated: false,
    });
    await second.next((f) => f.type === 'delivery' && f.id === d!.id, 'the delivery on the newer connection');
    expect(first.frames.some((f) => f.type === 'delivery')).toBe(false);
    second.ws.terminate();
  });

  it('refuses a hello with a host name other than the enrolled one, audited, and closes with 4001', async () => {
    const { stateDir } = await enrolled('name-01');
    const raw = await rawClient(tb, stateDir, { hello: { hostname: 'dc-01' } });
    await waitFor(() => raw.closed(), 'the connection to close');
    expect(raw.closed()!.code).toBe(4001);
    expect(raw.frames).toMatchObject([{ type: 'error', code: 'frame.hostname_mismatch' }]);
    expect(String(raw.frames[0]!.message)).toMatch(/enrolled as "name-01", but hello says "dc-01"/);
    const [audit] = await refusedFrames();
    expect(audit!.details).toMatchObject({ code: 'frame.hostname_mismatch', got: 'dc-01' });
    expect((await endpointByHost(tdb, 'name-01'))!.brokerId).toBeNull();
  });

  it('accepts the enrolled host name in another case', async () => {
    const { stateDir } = await enrolled('case-01');
    const raw = await rawClient(tb, stateDir, { hello: { hostname: 'CASE-01' } });
    await raw.next((f) => f.type === 'welcome', 'welcome');
    raw.ws.terminate();
  });

  it('refuses a version 1 hello with a clear error and closes with 4002', async () => {
    const { stateDir } = await enrolled('v1-01');
    const raw = await rawClient(tb, stateDir, { hello: { v: 1 } });
    await waitFor(() => raw.closed(), 'the connection to close');
    expect(raw.closed()!.code).toBe(4002);
    expect(raw.frames).toMatchObject([{ type: 'error', code: 'frame.unsupported_version' }]);
    expect(String(raw.frames[0]!.message)).toMatch(/version 2 only.*upgrade the agent/);
    expect(await refusedFrames()).toHaveLength(1);
  });

  it('accepts an agent version with both a pre-release and build metadata', async () => {
    const { stateDir } = await enrolled('semver-01');
    const raw = await rawClient(tb, stateDir, { hello: { agentVersion: '1.4.0-rc.1+build.5' } });
    await raw.next((f) => f.type === 'welcome', 'welcome');
    await waitFor(
      async () => (await endpointByHost(tdb, 'semver-01'))!.agentVersion === '1.4.0-rc.1+build.5',
      'the version to be stored',
    );
    raw.ws.terminate();
  });
});
