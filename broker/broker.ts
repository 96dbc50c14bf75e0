// The broker: the mTLS WebSocket gateway, presence, and the sender that moves outbox rows to connected
// agents. Several broker processes can share one PostgreSQL; LISTEN/NOTIFY on `ar_outbox` wakes whichever
// one holds an endpoint, `ar_presence` makes an older connection elsewhere step aside, and `ar_revoke` drops
// a revoked agent at once.
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import type { AuditService } from '../bot/audit/audit-service.ts';
import type { Clock, DeliveryEvent, DeliveryObserver, FileStore, Logger } from '../bot/ports.ts';
import type { Database } from '../db/client.ts';
import { CLOSE_CODES } from '../protocol/frames.ts';
import { createBrokerMetrics } from './broker-metrics.ts';
import { REVOKE_CHANNEL } from './enrolment/endpoint-revocation.ts';
import { redeemEnrolment, reenrolWithCertificate } from './enrolment/enrolment-service.ts';
import { type AgentSession, createAgentSession, type SessionHost } from './gateway/agent-session.ts';
import { createEndpointPresence } from './gateway/endpoint-presence.ts';
import { createRefusalAudit } from './gateway/refusal-audit.ts';
import { createTlsGateway } from './gateway/tls-gateway.ts';
import { createBatcher } from './outbox/batcher.ts';
import {
  createEchoFilter,
  createOutboxDispatcher,
  DELIVERY_CHANNEL,
  endpointsOfWake,
  OUTBOX_CHANNEL,
} from './outbox/dispatcher.ts';
import { createOutboxRepo } from './outbox/outbox-repo.ts';
import { endpointsWithQueued } from './outbox/outbox-sweep.ts';
import { brokerUrl, recordBrokerUrl } from './pki/broker-url.ts';
import { loadOrCreatePki } from './pki/pki.ts';

export const PRESENCE_CHANNEL = 'ar_presence';

export interface BrokerConfig {
  host: string;
  port: number;
  brokerId: string;
  publicHost: string;
  dataDir: string;
  maxFileBytes: number;
  /** PKI directory (default DATA_DIR/pki). */
  pkiDir?: string;
  heartbeatSeconds?: number;
  /** How often deliveries for offline agents are checked for TTL expiry (default 60 s). */
  expirySweepMs?: number;
  /**
   * How often the broker looks for queued deliveries of its agents that no wake-up reached (default 5 s):
   * the backstop for a NOTIFY lost while its LISTEN session was down.
   */
  outboxSweepMs?: number;
  clientCertDays?: number;
}

export function createBroker(deps: {
  db: Database;
  audit: AuditService;
  clock: Clock;
  logger: Logger;
  config: BrokerConfig;
  observer?: DeliveryObserver;
  fileStore: FileStore;
  /** When given, the broker reports connected agents and delivery latency into it. */
  metrics?: Registry;
}) {
  const { db: database, audit, clock, logger, config } = deps;
  const db = database.db;
  const brokerId = config.brokerId;
  const sessions = new Map<string, AgentSession>();
  const presence = createEndpointPresence({ db, brokerId });
  const repo = createOutboxRepo({ db, audit, clock, brokerId });
  // This broker's own wake-ups: it sends to its own agents at once (`onWake`), and the NOTIFY is for the other
  // brokers. When it comes back to this broker's LISTEN it would only repeat the claim's read, so it is
  // counted here and passed over once.
  const ownWakes = createEchoFilter();
  const dispatcher = createOutboxDispatcher({
    db,
    notify: (channel, payload) => {
      ownWakes.sent(payload);
      return database.notify(channel, payload).catch((err) => {
        ownWakes.lost(payload);
        throw err;
      });
    },
    clock,
    onWake: (ids) => pump(ids),
  });
  const refusals = createRefusalAudit({ audit, clock, logger });
  const unlisten: (() => Promise<void>)[] = [];
  const timers: NodeJS.Timeout[] = [];
  let pki: Awaited<ReturnType<typeof loadOrCreatePki>> | undefined;
  let gateway: ReturnType<typeof createTlsGateway> | undefined;
  let stopping = false;

  /** Observer first (in-process core), then NOTIFY for cores in other processes. Never throws. */
  function emit(events: DeliveryEvent[]) {
    if (!events.length) return;
    for (const e of events) {
      deps.observer
        ?.deliveryChanged(e)
        .catch((err) => logger.error({ err, event: e }, 'delivery observer failed'));
    }
    // One event is sent as its JSON object; a batch as JSON arrays small enough for NOTIFY's 8000 bytes.
    const payloads =
      events.length === 1
        ? [JSON.stringify(events[0])]
        : Array.from({ length: Math.ceil(events.length / 40) }, (_, i) =>
            JSON.stringify(events.slice(i * 40, i * 40 + 40)),
          );
    for (const p of payloads) {
      database.notify(DELIVERY_CHANNEL, p).catch((err) => logger.error({ err }, 'ar_delivery notify failed'));
    }
  }

  const sender = createBatcher<string, void>(async (endpointIds) => {
    const held = [...new Set(endpointIds)].filter((id) => sessions.get(id)?.ready);
    if (!held.length || stopping) return endpointIds.map(() => undefined);
    const { toSend, events } = await repo.claim(
      held,
      (row) => sessions.get(row.endpointId)?.sentIds.has(row.id) ?? true,
    );
    for (const row of toSend) sessions.get(row.endpointId)?.sendDelivery(row);
    emit(events);
    return endpointIds.map(() => undefined);
  }, 5000);

  const acker = createBatcher<{ endpointId: string; id: string }, { go: boolean; reason?: string }>(
    async (acks) => {
      const { decisions, events } = await repo.acknowledge(acks);
      emit(events);
      return decisions.map((d) => ({ go: d.go, reason: d.reason }));
    },
  );

  const meter =
    deps.metrics &&
    createBrokerMetrics(deps.metrics, () => [...sessions.values()].filter((s) => s.ready).length);
  const resulter = createBatcher(async (items: Parameters<typeof repo.recordResults>[0]) => {
    const out = await repo.recordResults(items);
    const events: DeliveryEvent[] = [];
    for (const r of out) {
      if (r.status !== 'recorded') continue;
      meter?.deliveryFinished(r.row);
      events.push(r.event);
    }
    // The batch's events together: one NOTIFY per 40 of them, not one per result.
    emit(events);
    return out;
  }, 500);
  const lookups = createBatcher((fps: string[]) => presence.byFingerprints(fps), 1000);
  const hellos = createBatcher<
    { endpointId: string; hello: Parameters<SessionHost['online']>[1]; at: Date },
    void
  >(async (items) => {
    await presence.onlineMany(items);
    return items.map(() => undefined);
  }, 1000);
  const goodbyes = createBatcher<{ endpointId: string; connectedAt: Date; at: Date }, void>(async (items) => {
    await presence.offlineMany(items);
    return items.map(() => undefined);
  }, 1000);
  // Other brokers holding an older connection of these agents close theirs. Batched: a reconnect storm
  // would otherwise send one NOTIFY per agent.
  const announcer = createBatcher<string, void>(async (pairs) => {
    for (let i = 0; i < pairs.length; i += 100) {
      await database.notify(PRESENCE_CHANNEL, pairs.slice(i, i + 100).join(','));
    }
    return pairs.map(() => undefined);
  }, 5000);

  /**
   * Sends what no wake-up announced: on the sweep, only to agents with queued work; after the LISTEN session
   * came back (`all`), to every connected agent, since any of them may have missed its wake-up.
   */
  async function catchUp(all: boolean) {
    if (stopping) return;
    const held = new Set([...sessions.values()].filter((s) => s.ready).map((s) => s.endpointId));
    if (!held.size) return;
    const ids = all ? [...held] : (await endpointsWithQueued(db)).filter((id) => held.has(id));
    pump(ids);
  }

  function pump(endpointIds: string[]) {
    for (const id of endpointIds) {
      if (sessions.has(id))
        sender.add(id).catch((err) => logger.error({ err, endpointId: id }, 'sending deliveries failed'));
    }
  }

  function host(): SessionHost {
    return {
      brokerId,
      heartbeatSeconds: config.heartbeatSeconds ?? 30,
      clock,
      logger,
      audit,
      pki: pki!,
      presence,
      repo,
      db,
      fileStore: deps.fileStore,
      maxFileBytes: config.maxFileBytes,
      acknowledge: (endpointId, id) => acker.add({ endpointId, id }),
      online: (endpointId, hello, at) => hellos.add({ endpointId, hello, at }),
      offline: (endpointId, connectedAt, at) => goodbyes.add({ endpointId, connectedAt, at }),
      recordResult: (endpointId, res, effects) => resulter.add({ endpointId, res, effects }),
      emit,
      ready(session) {
        if (sessions.get(session.endpointId) === session) pump([session.endpointId]);
      },
      unregister(session) {
        if (sessions.get(session.endpointId) === session) sessions.delete(session.endpointId);
      },
    };
  }

  /**
   * A new connection takes the endpoint's slot as soon as its certificate is accepted, before its hello:
   * the older connection (here, or on another broker through `ar_presence`) is closed at once, so nothing
   * more is sent to or taken from it.
   */
  function claim(session: AgentSession) {
    const old = sessions.get(session.endpointId);
    sessions.set(session.endpointId, session);
    if (old && old !== session) replaced(old, brokerId);
    announcer
      .add(`${session.endpointId}:${session.id}`)
      .catch((err) => logger.error({ err, endpointId: session.endpointId }, 'presence announce failed'));
  }

  function replaced(old: AgentSession, by: string) {
    old.close(CLOSE_CODES.replaced, 'replaced by a newer connection');
    void audit
      .append({
        actorType: 'agent',
        actorId: old.endpointId,
        action: 'broker.connection_replaced',
        outcome: 'ok',
        endpointId: old.endpointId,
        details: { hostname: old.hostname, oldBroker: brokerId, newBroker: by },
      })
      .catch((err) => logger.error({ err }, 'audit of a replaced connection failed'));
  }

  return {
    dispatcher,
    get pki() {
      if (!pki) throw new Error('broker not started');
      return pki;
    },
    /** Endpoint ids with a live session on this broker. */
    connected: () => [...sessions.values()].filter((s) => s.ready).map((s) => s.endpointId),
    /** Expires deliveries past their TTL now (also runs on a timer). */
    async expireDue() {
      emit(await repo.expireDue());
    },

    async start(): Promise<{ port: number }> {
      const pkiDir = config.pkiDir ?? join(config.dataDir, 'pki');
      pki = await loadOrCreatePki({
        dir: pkiDir,
        serverNames: [config.publicHost],
        clientCertDays: config.clientCertDays,
      });
      await presence.clearMine();
      gateway = createTlsGateway({
        pki,
        clock,
        logger,
        lookup: (fp) => lookups.add(fp),
        refusals,
        audit,
        enrol: (req, ip) => redeemEnrolment({ db, audit, clock, pki: pki! }, req, ip),
        reenrol: (req, caller, ip) =>
          reenrolWithCertificate({ db, audit, clock, pki: pki! }, req, caller, ip),
        onAgent: (ws, ident) => {
          const s = createAgentSession(host(), ws, ident);
          ws.on('pong', () => {
            s.alive = true;
          });
          claim(s);
        },
      });
      unlisten.push(
        await database.listen(
          OUTBOX_CHANNEL,
          (payload) => {
            // A broker holding no agent has nothing to send, whichever batch is announced.
            if (ownWakes.echo(payload) || !sessions.size) return;
            endpointsOfWake(db, payload).then(pump, (err) =>
              logger.error({ err, payload: payload.slice(0, 80) }, 'reading a batch wake-up failed'),
            );
          },
          () => {
            logger.info({ brokerId }, 'outbox wake-ups resubscribed; sending what they may have missed');
            ownWakes.clear();
            catchUp(true).catch((err) => logger.error({ err }, 'outbox catch-up failed'));
          },
        ),
        // `<endpoint id>` when it was revoked, `<endpoint id>:reenrolled:<new fingerprint>` when a re-enrolment
        // replaced its certificate: a connection still on an old certificate holds one that opens nothing.
        await database.listen(REVOKE_CHANNEL, (payload) => {
          const [endpointId = '', why, fingerprint] = payload.split(':');
          const s = sessions.get(endpointId);
          if (!s) return;
          const reenrolled = why === 'reenrolled';
          if (reenrolled && s.fingerprint === fingerprint) return;
          s.close(
            CLOSE_CODES.certificateInvalid,
            reenrolled ? 'certificate replaced by a re-enrolment' : 'certificate revoked',
          );
          void refusals.refused(reenrolled ? 'reenrolled' : 'revoked', s.remoteAddress, {
            endpointId,
            hostname: s.hostname,
            live: true,
          });
        }),
        await database.listen(PRESENCE_CHANNEL, (payload) => {
          for (const pair of payload.split(',')) {
            const [endpointId, sessionId] = pair.split(':');
            const s = endpointId ? sessions.get(endpointId) : undefined;
            if (s && s.id !== sessionId) {
              sessions.delete(s.endpointId);
              replaced(s, 'another broker');
            }
          }
        }),
      );
      const hb = (config.heartbeatSeconds ?? 30) * 1000;
      timers.push(
        setInterval(() => {
          // A peer that missed a whole heartbeat interval is dead: free its slot so it can reconnect.
          for (const s of sessions.values()) {
            if (!s.alive) {
              s.ws.terminate();
              continue;
            }
            s.alive = false;
            s.ws.ping();
          }
        }, hb),
        setInterval(() => {
          repo.expireDue().then(emit, (err) => logger.error({ err }, 'expiry sweep failed'));
        }, config.expirySweepMs ?? 60_000),
        setInterval(() => {
          catchUp(false).catch((err) => logger.error({ err }, 'outbox sweep failed'));
        }, config.outboxSweepMs ?? 5000),
      );
      for (const t of timers) t.unref();
      await new Promise<void>((resolve, reject) => {
        gateway!.server.once('error', reject);
        gateway!.server.listen(config.port, config.host, () => resolve());
      });
      const addr = gateway.server.address();
      const port = typeof addr === 'object' && addr ? addr.port : config.port;
      recordBrokerUrl(pkiDir, brokerUrl(config.publicHost, port));
      logger.info({ port, brokerId }, 'broker listening');
      return { port };
    },

    async stop() {
      stopping = true;
      for (const t of timers) clearInterval(t);
      for (const u of unlisten.splice(0)) await u().catch(() => {});
      for (const s of sessions.values()) s.ws.terminate();
      sessions.clear();
      if (gateway) {
        gateway.wss.close();
        await new Promise<void>((r) => {
          gateway!.server.close(() => r());
          gateway!.server.closeAllConnections?.();
        });
      }
      await presence.clearMine().catch(() => {});
    },
  };
}

export type Broker = ReturnType<typeof createBroker>;
