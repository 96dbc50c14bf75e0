// Replays against a real agent process. A fake broker holds the broker's TLS certificate and key (so the
// agent connects to it) but not the platform's signing key: it can replay deliveries the platform really
// signed, and forge everything else. The agent must run nothing it gives it.
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { signedDeliveryFields, signedProceedFields } from '../protocol/frames.ts';
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
import type { Frame } from './helpers/raw-agent.ts';

/** A broker impostor on the real broker's certificate: agents connect to it; it has no signing key. */
async function fakeBroker(tb: TestBroker, endpointId: string) {
  const pki = tb.broker.pki;
  const server = createServer({
    key: pki.serverKeyPem,
    cert: pki.serverCertChainPem,
    ca: pki.caPem,
    requestCert: true,
    rejectUnauthorized: true,
  });
  const wss = new WebSocketServer({ server, path: '/agent', perMessageDeflate: false });
  const frames: Frame[] = [];
  let agent: WebSocket | undefined;
  wss.on('connection', (ws) => {
    agent = ws;
    ws.on('message', (d) => {
      const f = JSON.parse(d.toString()) as Frame;
      frames.push(f);
      if (f.type === 'hello') {
        ws.send(
          JSON.stringify({ type: 'welcome', v: 2, endpointId, brokerId: 'impostor', heartbeatSeconds: 30 }),
        );
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `wss://localhost:${port}`,
    frames,
    send: (f: object) => agent!.send(JSON.stringify(f)),
    next: (pred: (f: Frame) => boolean, what: string) => waitFor(() => frames.find(pred), what),
    async close() {
      for (const c of wss.clients) c.terminate();
      wss.close();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Points an enrolled agent's state at another broker URL (what DNS or a routing change could do). */
function pointAt(stateDir: string, url: string) {
  const file = join(stateDir, 'identity.json');
  writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), broker: url }));
}

/** A `run` delivery the platform really signed: its script appends a line to `marker` when it runs. */
function signedScriptDelivery(tb: TestBroker, endpointId: string, marker: string, expiresAt: string) {
  const body = `with open(${JSON.stringify(marker)}, 'a') as f:\n    f.write('ran\\n')\n`;
  const { action, params, scriptBody } = scriptDelivery('append-marker', body);
  const id = randomUUID();
  const payload = {
    requestId: randomUUID(),
    ref: 'R-REPLAY',
    digest: 'd'.repeat(64),
    hostname: 'replay',
    params,
    scriptBody,
  };
  const signature = tb.broker.pki.signDelivery(
    signedDeliveryFields({ id, endpointId, action, payload, expiresAt }),
  );
  return { type: 'delivery', id, seq: 1, action, payload, expiresAt, signature };
}

const runs = (marker: string) =>
  existsSync(marker) ? readFileSync(marker, 'utf8').split('\n').length - 1 : 0;
const journal = (stateDir: string) =>
  readdirSync(join(stateDir, 'journal')).filter((n) => n.endsWith('.json'));
const inAnHour = () => new Date(Date.now() + 3600_000).toISOString();

describe.each(drivers)('replayed and forged deliveries on %s', (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  const agents: AgentProcess[] = [];
  const closers: (() => Promise<void>)[] = [];
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.kill();
    for (const c of closers.splice(0)) await c();
    await tb.stop();
    await tdb.destroy();
  });

  /** An enrolled agent now connected to a fake broker. */
  async function agentOnFakeBroker(hostname: string) {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, hostname);
    await agent.stop();
    const fake = await fakeBroker(tb, endpointId);
    closers.push(() => fake.close());
    pointAt(stateDir, fake.url);
    const again = spawnAgent({ stateDir });
    agents.push(again);
    await fake.next((f) => f.type === 'hello', 'the agent to say hello to the fake broker');
    return { fake, endpointId, stateDir, agent: again, marker: join(tempDir().dir, 'marker') };
  }

  it('refuses a genuinely signed delivery that expired in 2020, and reports it', async () => {
    const { fake, endpointId, stateDir, marker } = await agentOnFakeBroker('replay-01');
    const d = signedScriptDelivery(tb, endpointId, marker, '2020-01-01T00:00:00.000Z');
    fake.send(d);
    const result = await fake.next((f) => f.type === 'result' && f.id === d.id, 'the refusal');
    expect(result).toMatchObject({ ok: false, result: { refused: 'expired' } });
    expect(String(result.error)).toMatch(/expired at 2020-01-01T00:00:00.000Z.*tolerance 5 minutes/);
    expect(fake.frames.some((f) => f.type === 'ack')).toBe(false);
    expect(journal(stateDir)).toEqual([]);
    expect(runs(marker)).toBe(0);
  });

  it('runs only on a go-ahead the platform signed for this very ack', async () => {
    const { fake, endpointId, stateDir, marker } = await agentOnFakeBroker('replay-02');
    const ackOf = (id: string) => fake.next((f) => f.type === 'ack' && f.id === id, 'the ack');
    const resultOf = (id: string) => fake.next((f) => f.type === 'result' && f.id === id, 'the result');
    const impostorKey = generateKeyPairSync('ed25519').privateKey;

    // 1. A go-ahead signed with the impostor's own key.
    const d1 = signedScriptDelivery(tb, endpointId, marker, inAnHour());
    fake.send(d1);
    const a1 = await ackOf(d1.id);
    const forged = signedProceedFields({ endpointId, id: d1.id, go: true, nonce: String(a1.nonce) });
    fake.send({
      type: 'proceed',
      id: d1.id,
      go: true,
      nonce: a1.nonce,
      signature: sign(null, Buffer.from(canonicalJson(forged)), impostorKey).toString('base64'),
    });
    expect(await resultOf(d1.id)).toMatchObject({ ok: false, result: { refused: 'bad_proceed' } });

    // 2. A go-ahead the platform really signed, captured from another ack (another nonce).
    const d2 = signedScriptDelivery(tb, endpointId, marker, inAnHour());
    fake.send(d2);
    await ackOf(d2.id);
    const captured = 'c'.repeat(22);
    fake.send({
      type: 'proceed',
      id: d2.id,
      go: true,
      nonce: captured,
      signature: tb.broker.pki.signProceed(
        signedProceedFields({ endpointId, id: d2.id, go: true, nonce: captured }),
      ),
    });
    expect(await resultOf(d2.id)).toMatchObject({ ok: false, result: { refused: 'bad_proceed' } });
    expect(journal(stateDir)).toEqual([]);
    expect(runs(marker)).toBe(0);

    // The control: signed by the platform for this ack, it runs.
    const d3 = signedScriptDelivery(tb, endpointId, marker, inAnHour());
    fake.send(d3);
    const a3 = await ackOf(d3.id);
    const nonce = String(a3.nonce);
    fake.send({
      type: 'proceed',
      id: d3.id,
      go: true,
      nonce,
      signature: tb.broker.pki.signProceed(signedProceedFields({ endpointId, id: d3.id, go: true, nonce })),
    });
    expect(await resultOf(d3.id)).toMatchObject({ ok: true });
    expect(runs(marker)).toBe(1);
  });

  it('never runs again a delivery it already ran, nor one whose journal entry is damaged', async () => {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, 'replay-03');
    agents.push(agent);
    const marker = join(tempDir().dir, 'marker');
    const body = `with open(${JSON.stringify(marker)}, 'a') as f:\n    f.write('ran\\n')\n`;
    const [row] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, ...scriptDelivery('append-marker', body) },
    ]);
    await waitFor(async () => (await deliveryState(tdb, row!.id)).state === 'succeeded', 'the first run');
    expect(runs(marker)).toBe(1);
    await agent.stop();

    // The same delivery, byte for byte as the broker signed it, replayed by an impostor.
    const stored = await deliveryState(tdb, row!.id);
    const expiresAt = stored.expiresAt.toISOString();
    const payload = stored.payload as Record<string, unknown>;
    const replay = {
      type: 'delivery',
      id: stored.id,
      seq: stored.seq,
      action: stored.action,
      payload,
      expiresAt,
      signature: tb.broker.pki.signDelivery(
        signedDeliveryFields({ id: stored.id, endpointId, action: stored.action, payload, expiresAt }),
      ),
    };
    const fake = await fakeBroker(tb, endpointId);
    closers.push(() => fake.close());
    pointAt(stateDir, fake.url);
    const again = spawnAgent({ stateDir });
    agents.push(again);
    await fake.next((f) => f.type === 'hello', 'hello');
    fake.send(replay);
    expect(await fake.next((f) => f.type === 'result', 'the stored result')).toMatchObject({
      id: stored.id,
      ok: true,
    });

    // A damaged entry counts as started: the agent reports it interrupted rather than run it.
    writeFileSync(join(stateDir, 'journal', `${stored.id}.json`), '{"id": "trunc');
    fake.send(replay);
    await waitFor(() => fake.frames.filter((f) => f.type === 'result').length === 2, 'the second answer');
    expect(fake.frames.filter((f) => f.type === 'result')[1]).toMatchObject({
      ok: false,
      error: expect.stringMatching(/^interrupted/),
    });
    expect(fake.frames.some((f) => f.type === 'ack')).toBe(false);
    expect(runs(marker)).toBe(1);
  });

  it('refuses a delivery past its expiry beyond the clock tolerance, and the broker audits the refusal', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'skew-01', ['--dry-run']);
    agents.push(agent);
    // The broker's clock runs an hour slow: to it, both deliveries are live.
    tb.clock.advance(-3600_000);
    const [late, withinSkew] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'processes', ttlMs: 3600_000 - 10 * 60_000 },
      { endpointId, action: 'processes', ttlMs: 3600_000 - 2 * 60_000 },
    ]);
    const failed = await waitFor(async () => {
      const r = await deliveryState(tdb, late!.id);
      return r.state === 'failed' ? r : undefined;
    }, 'the refusal to be recorded');
    expect(failed).toMatchObject({ ackedAt: null, result: { refused: 'expired' } });
    expect(failed.error).toMatch(/expired at/);
    expect(await tb.audit.list({ actionPrefix: 'delivery.refused_by_agent' })).toMatchObject([
      { endpointId, outcome: 'refused', details: { deliveryId: late!.id, reason: 'expired' } },
    ]);
    // Two minutes past its expiry on the agent's clock is within the five-minute tolerance.
    await waitFor(
      async () => (await deliveryState(tdb, withinSkew!.id)).state === 'succeeded',
      'the delivery within the tolerance to run',
    );
  });
});
