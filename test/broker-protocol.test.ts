import { verify } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { deliveries, endpoints } from '../db/schema.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { signedDeliveryFields } from '../protocol/frames.ts';
import {
  deliveryState,
  dispatch,
  enrolAgent,
  startTestBroker,
  type TestBroker,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { nonce, rawClient } from './helpers/raw-agent.ts';

describe.each(drivers)('agent protocol on %s', (driver) => {
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

  async function enrolledRaw(hostname: string) {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, hostname);
    await agent.stop();
    return { endpointId, raw: await rawClient(tb, stateDir) };
  }

  it('answers malformed and oversize frames with an error frame and an audit record, and stores nothing', async () => {
    const { raw } = await enrolledRaw('bad-01');
    const before = {
      deliveries: await tdb.db.select().from(deliveries),
      endpoints: await tdb.db.select().from(endpoints),
    };
    raw.send('{not json');
    await raw.next((f) => f.type === 'error' && f.code === 'frame.malformed', 'an error for bad JSON');
    raw.send({ type: 'ack', id: 'not-a-uuid' });
    raw.send({ type: 'result', id: '00000000-0000-4000-8000-000000000000', ok: 'yes' });
    raw.send({ type: 'launch_missiles' });
    await waitFor(
      () => raw.frames.filter((f) => f.code === 'frame.malformed').length === 4,
      'four malformed errors',
    );
    raw.send({
      type: 'progress',
      id: '00000000-0000-4000-8000-000000000000',
      message: 'x'.repeat(3 * 1024 * 1024),
    });
    await raw.next(
      (f) => f.type === 'error' && f.code === 'frame.too_large',
      'an error for an oversize frame',
    );
    raw.ws.send(Buffer.alloc(100_000));
    await waitFor(
      () => raw.frames.filter((f) => f.code === 'frame.too_large').length === 2,
      'an error for an oversize chunk',
    );
    // Still connected and served.
    raw.send({ type: 'ping', t: 1 });
    await raw.next((f) => f.type === 'pong', 'a pong');
    const audited = await tb.audit.list({ actionPrefix: 'broker.frame_refused' });
    expect(audited).toHaveLength(6);
    expect(await tdb.db.select().from(deliveries)).toEqual(before.deliveries);
    expect(await tdb.db.select().from(endpoints)).toEqual(before.endpoints);
    raw.ws.terminate();
  });

  it('closes a connection that sends a frame above the WebSocket limit, audits it and keeps serving others', async () => {
    const { raw } = await enrolledRaw('bad-02');
    raw.ws.send(Buffer.alloc(9 * 1024 * 1024));
    await waitFor(() => raw.closed(), 'the connection to close');
    expect(raw.closed()!.code).toBe(1009);
    await waitFor(
      async () => (await tb.audit.list({ actionPrefix: 'broker.frame_refused' })).length === 1,
      'the audit',
    );
    const { raw: other } = await enrolledRaw('good-01');
    other.send({ type: 'ping' });
    await other.next((f) => f.type === 'pong', 'the broker still answers');
    other.ws.terminate();
  });

  it('signs deliveries, and tells an agent not to run one cancelled after it was sent', async () => {
    const { raw, endpointId } = await enrolledRaw('sig-01');
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action: 'isolate' }]);
    const frame = (await raw.next((f) => f.type === 'delivery', 'the delivery')) as {
      id: string;
      action: string;
      payload: Record<string, unknown>;
      expiresAt: string;
      signature: string;
    };
    const fields = signedDeliveryFields({ ...frame, endpointId });
    expect(
      verify(
        null,
        Buffer.from(canonicalJson(fields)),
        raw.signingKey,
        Buffer.from(frame.signature, 'base64'),
      ),
    ).toBe(true);
    const tampered = signedDeliveryFields({ ...frame, action: 'unisolate', endpointId });
    expect(
      verify(
        null,
        Buffer.from(canonicalJson(tampered)),
        raw.signingKey,
        Buffer.from(frame.signature, 'base64'),
      ),
    ).toBe(false);

    expect((await deliveryState(tdb, d!.id)).state).toBe('sent');
    expect(await tdb.db.transaction((tx) => tb.broker.dispatcher.cancel(tx, { deliveryId: d!.id }))).toBe(1);
    raw.send({ type: 'ack', id: d!.id, nonce: nonce() });
    const proceed = await raw.next((f) => f.type === 'proceed', 'the answer to the ack');
    expect(proceed).toMatchObject({ go: false, reason: 'cancelled' });
    // A result for it anyway changes nothing.
    raw.send({ type: 'result', id: d!.id, ok: true, result: {} });
    raw.send({ type: 'ping' });
    await raw.next((f) => f.type === 'pong', 'pong');
    expect((await deliveryState(tdb, d!.id)).state).toBe('cancelled');
    raw.ws.terminate();
  });

  it('replaces an older connection of the same agent with a newer one, audited', async () => {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, 'dup-01');
    await agent.stop();
    const first = await rawClient(tb, stateDir);
    const second = await rawClient(tb, stateDir);
    await waitFor(() => first.closed(), 'the first connection to close');
    expect(first.closed()!.code).toBe(4000);
    expect(tb.broker.connected()).toEqual([endpointId]);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [{ endpointId, action: 'processes' }]);
    await second.next((f) => f.type === 'delivery' && f.id === d!.id, 'the delivery on the newer connection');
    expect(await tb.audit.list({ actionPrefix: 'broker.connection_replaced' })).toHaveLength(1);
    second.ws.terminate();
  });
});
