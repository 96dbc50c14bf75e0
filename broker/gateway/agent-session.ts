// One agent connection: validates every frame, turns acks and results into outbox changes, and carries file
// streams. A bad frame gets an `error` frame and an audit record and changes nothing stored; a flood of them
// closes the connection instead of filling the audit log.
import { randomUUID } from 'node:crypto';
import type { RawData, WebSocket } from 'ws';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { describeZodIssues } from '../../bot/errors.ts';
import type { Clock, DeliveryEvent, Logger } from '../../bot/ports.ts';
import type { DbOrTx } from '../../db/client.ts';
import {
  type AgentFrame,
  agentFrame,
  ERROR_CODES,
  MAX_CHUNK_BYTES,
  MAX_JSON_FRAME_BYTES,
  PROTOCOL_VERSION,
  signedDeliveryFields,
  splitChunk,
  TRANSFER_ID_BYTES,
} from '../../protocol/frames.ts';
import type { DeliveryRow, OutboxRepo } from '../outbox/outbox-repo.ts';
import type { Pki } from '../pki/pki.ts';
import type { EndpointPresence } from './endpoint-presence.ts';
import { createTransfers, type TransferDeps } from './file-transfers.ts';

const MALFORMED_AUDITS_PER_CONNECTION = 20;

export interface SessionHost extends TransferDeps {
  brokerId: string;
  heartbeatSeconds: number;
  clock: Clock;
  logger: Logger;
  audit: AuditService;
  pki: Pki;
  presence: EndpointPresence;
  repo: OutboxRepo;
  acknowledge(endpointId: string, id: string): Promise<{ go: boolean; reason?: string }>;
  /** Records the hello (presence) together with other connections' hellos. */
  online(endpointId: string, hello: Extract<AgentFrame, { type: 'hello' }>, now: Date): Promise<void>;
  recordResult: OutboxRepo['recordResult'];
  emit(events: DeliveryEvent[]): void;
  register(session: AgentSession): Promise<void>;
  unregister(session: AgentSession): void;
}

export function createAgentSession(
  host: SessionHost,
  ws: WebSocket,
  ident: { endpointId: string; hostname: string; remoteAddress: string },
) {
  const { logger, audit, clock } = host;
  const { endpointId } = ident;
  const transfers = createTransfers(host, { ws, endpointId, hostname: ident.hostname });
  const sentIds = new Set<string>();
  let hello: Extract<AgentFrame, { type: 'hello' }> | undefined;
  let malformed = 0;
  let connectedAt: Date | undefined;

  const sendJson = (frame: object) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(frame));
  };

  async function refuseFrame(code: string, message: string, details: Record<string, unknown>) {
    sendJson({ type: 'error', code, message });
    malformed++;
    if (malformed <= MALFORMED_AUDITS_PER_CONNECTION) {
      await audit
        .append({
          actorType: 'agent',
          actorId: endpointId,
          action: 'broker.frame_refused',
          outcome: 'refused',
          endpointId,
          details: { code, message, hostname: ident.hostname, ...details },
        })
        .catch((e) => logger.error({ err: e }, 'audit of a refused frame failed'));
    } else if (malformed === MALFORMED_AUDITS_PER_CONNECTION + 1) {
      logger.warn({ endpointId }, 'too many bad frames; closing the connection');
      ws.close(1008, 'too many malformed frames');
    }
  }

  async function onResult(frame: Extract<AgentFrame, { type: 'result' }>) {
    const scriptAudit = async (row: DeliveryRow, tx: DbOrTx) => {
      if (row.action !== 'run') return;
      // The full payload (script bytes, parameters) and its output, so an investigator sees exactly what ran.
      await audit.append(
        {
          actorType: 'agent',
          actorId: endpointId,
          action: 'script.executed',
          outcome: frame.ok ? 'ok' : 'failed',
          requestId: row.requestId,
          endpointId,
          details: {
            deliveryId: row.id,
            payload: row.payload,
            result: frame.result ?? null,
            error: frame.error ?? null,
          },
        },
        tx,
      );
    };
    const res = await host.recordResult(endpointId, frame, scriptAudit);
    if (res.status === 'unknown') {
      return refuseFrame(ERROR_CODES.unknownDelivery, 'no delivery with this id was sent to this agent', {
        id: frame.id,
      });
    }
    if (res.status !== 'recorded') return;
    logger.info({ deliveryId: frame.id, endpointId, state: res.event.state }, 'delivery result recorded');
    if (frame.ok && (res.row.action === 'isolate' || res.row.action === 'unisolate')) {
      await host.presence.setIsolated(endpointId, res.row.action === 'isolate', clock.now());
    }
    host.emit([res.event]);
  }

  async function onFrame(frame: AgentFrame) {
    if (!hello) {
      if (frame.type !== 'hello')
        return refuseFrame(ERROR_CODES.unexpected, 'the first frame must be hello', { got: frame.type });
      hello = frame;
      connectedAt = clock.now();
      await host.online(endpointId, frame, connectedAt);
      sendJson({
        type: 'welcome',
        v: PROTOCOL_VERSION,
        endpointId,
        brokerId: host.brokerId,
        heartbeatSeconds: host.heartbeatSeconds,
      });
      await host.register(session);
      return;
    }
    switch (frame.type) {
      case 'hello':
        return refuseFrame(ERROR_CODES.unexpected, 'hello was already received on this connection', {});
      case 'ack': {
        const d = await host.acknowledge(endpointId, frame.id);
        sendJson({ type: 'proceed', id: frame.id, go: d.go, reason: d.reason });
        return;
      }
      case 'result':
        return onResult(frame);
      case 'progress':
        logger.debug({ endpointId, deliveryId: frame.id, message: frame.message }, 'agent progress');
        return;
      case 'file_start':
        return transfers.startUpload(frame);
      case 'file_end':
        return transfers.endUpload(frame);
      case 'file_abort':
        return transfers.abortUpload(frame.transferId, frame.reason);
      case 'file_get':
        return transfers.download(frame);
      case 'ping':
        return sendJson({ type: 'pong', t: frame.t });
    }
  }

  // Frames are handled one at a time per connection so an agent's ack, chunks and result keep their order.
  let chain: Promise<unknown> = Promise.resolve();
  ws.on('message', (data: RawData, isBinary: boolean) => {
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (isBinary) {
      // Chunks are handled synchronously (in arrival order) so they never wait behind a slow frame.
      if (buf.length > TRANSFER_ID_BYTES + MAX_CHUNK_BYTES) {
        chain = chain.then(() =>
          refuseFrame(ERROR_CODES.tooLarge, `binary frames carry at most ${MAX_CHUNK_BYTES} bytes of data`, {
            bytes: buf.length,
          }),
        );
        return;
      }
      const chunk = splitChunk(buf);
      if (!chunk || !hello) {
        chain = chain.then(() =>
          refuseFrame(ERROR_CODES.malformed, 'a binary frame must start with a transfer id', {}),
        );
        return;
      }
      chain = chain.then(() => transfers.chunk(chunk.transferId, chunk.data));
      return;
    }
    chain = chain
      .then(async () => {
        if (buf.length > MAX_JSON_FRAME_BYTES) {
          return refuseFrame(
            ERROR_CODES.tooLarge,
            `JSON frames are limited to ${MAX_JSON_FRAME_BYTES} bytes`,
            { bytes: buf.length },
          );
        }
        let json: unknown;
        try {
          json = JSON.parse(buf.toString('utf8'));
        } catch {
          return refuseFrame(ERROR_CODES.malformed, 'the frame is not valid JSON', { bytes: buf.length });
        }
        const parsed = agentFrame.safeParse(json);
        if (!parsed.success) {
          const type = (json as { type?: unknown })?.type;
          return refuseFrame(ERROR_CODES.malformed, describeZodIssues(parsed.error.issues).slice(0, 500), {
            type: typeof type === 'string' ? type.slice(0, 40) : null,
          });
        }
        return onFrame(parsed.data);
      })
      .catch((e) => {
        logger.error({ err: e, endpointId }, 'handling an agent frame failed');
        sendJson({
          type: 'error',
          code: ERROR_CODES.internal,
          message: 'the broker could not handle that frame',
        });
      });
  });

  ws.on('error', (e: Error & { code?: string }) => {
    logger.warn({ endpointId, err: e.message }, 'agent connection error');
    if (e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
      void audit
        .append({
          actorType: 'agent',
          actorId: endpointId,
          action: 'broker.frame_refused',
          outcome: 'refused',
          endpointId,
          details: {
            code: ERROR_CODES.tooLarge,
            message: 'frame above the WebSocket limit; connection closed',
            hostname: ident.hostname,
          },
        })
        .catch(() => {});
    }
  });

  ws.on('close', () => {
    transfers.close();
    host.unregister(session);
    if (connectedAt) {
      host.presence
        .offline(endpointId, connectedAt, clock.now())
        .catch((e) => logger.error({ err: e }, 'presence update failed'));
    }
  });

  const session = {
    id: randomUUID(),
    endpointId,
    hostname: ident.hostname,
    remoteAddress: ident.remoteAddress,
    ws,
    sentIds,
    alive: true,
    get ready() {
      return hello !== undefined;
    },
    sendDelivery(row: DeliveryRow) {
      const expiresAt = row.expiresAt.toISOString();
      const payload = row.payload as Record<string, unknown>;
      const signature = host.pki.signDelivery(
        signedDeliveryFields({ id: row.id, endpointId, action: row.action, payload, expiresAt }),
      );
      sentIds.add(row.id);
      sendJson({
        type: 'delivery',
        id: row.id,
        seq: row.seq,
        action: row.action,
        payload,
        expiresAt,
        signature,
      });
    },
    close(code: number, reason: string) {
      ws.close(code, reason);
      // A peer that never answers the close handshake is cut off.
      setTimeout(() => ws.terminate(), 2000).unref();
    },
  };
  return session;
}

export type AgentSession = ReturnType<typeof createAgentSession>;
