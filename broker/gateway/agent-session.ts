// One agent connection: validates every frame, turns acks and results into outbox changes, and carries file
// streams. A refused frame gets an `error` frame (with the delivery or transfer id it named, as `ref`) and an
// audit record, and changes nothing stored; a flood of them closes the connection instead of filling the
// audit log.
import { randomUUID } from 'node:crypto';
import type { RawData, WebSocket } from 'ws';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { describeZodIssues } from '../../bot/errors.ts';
import type { Clock, DeliveryEvent, Logger } from '../../bot/ports.ts';
import {
  type AgentFrame,
  agentFrame,
  CLOSE_CODES,
  ERROR_CODES,
  MAX_CHUNK_BYTES,
  MAX_JSON_FRAME_BYTES,
  PROTOCOL_VERSION,
  signedDeliveryFields,
  signedProceedFields,
  splitChunk,
  TRANSFER_ID_BYTES,
} from '../../protocol/frames.ts';
import type { DeliveryRow, OutboxRepo } from '../outbox/outbox-repo.ts';
import type { Pki } from '../pki/pki.ts';
import { createResultHandler } from './agent-results.ts';
import type { EndpointPresence } from './endpoint-presence.ts';
import { createTransfers, type TransferDeps } from './file-transfers.ts';

/** Refused frames audited per connection; the next one closes it (1008). */
const REFUSED_FRAMES_PER_CONNECTION = 20;

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
  /** Records the end of the connection that said hello at `connectedAt`, together with other connections'. */
  offline(endpointId: string, connectedAt: Date, now: Date): Promise<void>;
  recordResult: OutboxRepo['recordResult'];
  emit(events: DeliveryEvent[]): void;
  /** The connection said hello: send it the endpoint's open deliveries. */
  ready(session: AgentSession): void;
  unregister(session: AgentSession): void;
}

/** The delivery or transfer id a frame names, as sent (for `ref` in the error that refuses it). */
function refOf(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const o = json as { id?: unknown; transferId?: unknown };
  const ref = typeof o.transferId === 'string' ? o.transferId : o.id;
  return typeof ref === 'string' && ref.length > 0 ? ref.slice(0, 64) : undefined;
}

export function createAgentSession(
  host: SessionHost,
  ws: WebSocket,
  ident: { endpointId: string; hostname: string; remoteAddress: string; fingerprint: string },
) {
  const { logger, audit, clock } = host;
  const { endpointId } = ident;
  const sentIds = new Set<string>();
  let hello: Extract<AgentFrame, { type: 'hello' }> | undefined;
  let refused = 0;
  /** A refused hello ends the conversation: frames that were already on their way are dropped. */
  let ending = false;
  let connectedAt: Date | undefined;

  const sendJson = (frame: object) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(frame));
  };

  /** Answers a frame with an error, audits it, and closes the connection at the 21st refusal. */
  async function refuseFrame(code: string, message: string, details: Record<string, unknown>, ref?: string) {
    sendJson({ type: 'error', code, message, ref });
    refused++;
    if (refused <= REFUSED_FRAMES_PER_CONNECTION) {
      await audit
        .append({
          actorType: 'agent',
          actorId: endpointId,
          action: 'broker.frame_refused',
          outcome: 'refused',
          endpointId,
          details: { code, message, hostname: ident.hostname, ref: ref ?? null, ...details },
        })
        .catch((e) => logger.error({ err: e }, 'audit of a refused frame failed'));
    } else if (refused === REFUSED_FRAMES_PER_CONNECTION + 1) {
      logger.warn({ endpointId }, 'too many refused frames; closing the connection');
      ws.close(1008, 'too many refused frames');
    }
  }

  const transfers = createTransfers(host, {
    ws,
    endpointId,
    hostname: ident.hostname,
    refuse: (code, message, ref) => refuseFrame(code, message, {}, ref),
  });

  const onResult = createResultHandler(host, ident, refuseFrame);

  async function onHello(frame: Extract<AgentFrame, { type: 'hello' }>) {
    // The certificate names the endpoint; a hello claiming another name is a misconfigured or copied agent.
    if (frame.hostname.toLowerCase() !== ident.hostname) {
      await refuseFrame(
        ERROR_CODES.hostnameMismatch,
        `this certificate was enrolled as "${ident.hostname}", but hello says "${frame.hostname}"; ` +
          'run the agent with the name it was enrolled under, or re-enrol it',
        { got: frame.hostname },
      );
      ending = true;
      session.close(CLOSE_CODES.hostnameMismatch, 'hello does not match the enrolment');
      return;
    }
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
    host.ready(session);
  }

  async function onFrame(frame: AgentFrame) {
    if (!hello) {
      if (frame.type !== 'hello')
        return refuseFrame(
          ERROR_CODES.unexpected,
          'the first frame must be hello',
          { got: frame.type },
          refOf(frame),
        );
      return onHello(frame);
    }
    switch (frame.type) {
      case 'hello':
        return refuseFrame(ERROR_CODES.unexpected, 'hello was already received on this connection', {});
      case 'ack': {
        // A repeated ack (the proceed was lost in a reconnect) is answered again, signed over its own nonce;
        // the agent's journal, not the broker, is what keeps a delivery from running twice.
        const d = await host.acknowledge(endpointId, frame.id);
        const fields = signedProceedFields({ endpointId, id: frame.id, go: d.go, nonce: frame.nonce });
        sendJson({
          type: 'proceed',
          id: frame.id,
          go: d.go,
          reason: d.reason,
          nonce: frame.nonce,
          signature: host.pki.signProceed(fields),
        });
        return;
      }
      case 'result':
        return onResult(frame);
      case 'progress':
        if (!(await host.repo.running(endpointId, frame.id))) {
          return refuseFrame(
            ERROR_CODES.unknownDelivery,
            'progress belongs to a delivery this agent is running',
            { id: frame.id },
            frame.id,
          );
        }
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

  async function onText(buf: Buffer) {
    if (ending) return;
    if (buf.length > MAX_JSON_FRAME_BYTES) {
      return refuseFrame(ERROR_CODES.tooLarge, `JSON frames are limited to ${MAX_JSON_FRAME_BYTES} bytes`, {
        bytes: buf.length,
      });
    }
    let json: unknown;
    try {
      json = JSON.parse(buf.toString('utf8'));
    } catch {
      return refuseFrame(ERROR_CODES.malformed, 'the frame is not valid JSON', { bytes: buf.length });
    }
    const claimed = json as { type?: unknown; v?: unknown };
    if (!hello && claimed?.type === 'hello' && claimed.v !== PROTOCOL_VERSION) {
      await refuseFrame(
        ERROR_CODES.unsupportedVersion,
        `this broker speaks agent protocol version ${PROTOCOL_VERSION} only, the agent sent ` +
          `${JSON.stringify(claimed.v ?? null).slice(0, 20)}; upgrade the agent`,
        { v: typeof claimed.v === 'number' ? claimed.v : null },
      );
      ending = true;
      session.close(CLOSE_CODES.unsupportedVersion, 'unsupported protocol version');
      return;
    }
    const parsed = agentFrame.safeParse(json);
    if (!parsed.success) {
      const type = claimed?.type;
      return refuseFrame(
        ERROR_CODES.malformed,
        describeZodIssues(parsed.error.issues).slice(0, 500),
        { type: typeof type === 'string' ? type.slice(0, 40) : null },
        refOf(json),
      );
    }
    return onFrame(parsed.data);
  }

  // Frames are handled one at a time per connection so an agent's ack, chunks and result keep their order.
  let chain: Promise<unknown> = Promise.resolve();
  ws.on('message', (data: RawData, isBinary: boolean) => {
    if (ending) return;
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (isBinary) {
      const chunk = splitChunk(buf);
      if (buf.length > TRANSFER_ID_BYTES + MAX_CHUNK_BYTES) {
        chain = chain.then(() =>
          refuseFrame(
            ERROR_CODES.tooLarge,
            `binary frames carry at most ${MAX_CHUNK_BYTES} bytes of data`,
            { bytes: buf.length },
            chunk?.transferId,
          ),
        );
        return;
      }
      if (!chunk || !hello) {
        chain = chain.then(() =>
          chunk
            ? refuseFrame(ERROR_CODES.unexpected, 'the first frame must be hello', {}, chunk.transferId)
            : refuseFrame(ERROR_CODES.malformed, 'a binary frame must start with a transfer id', {}),
        );
        return;
      }
      chain = chain.then(() => transfers.chunk(chunk.transferId, chunk.data));
      return;
    }
    chain = chain
      .then(() => onText(buf))
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
      host
        .offline(endpointId, connectedAt, clock.now())
        .catch((e) => logger.error({ err: e }, 'presence update failed'));
    }
  });

  const session = {
    id: randomUUID(),
    endpointId,
    hostname: ident.hostname,
    remoteAddress: ident.remoteAddress,
    fingerprint: ident.fingerprint,
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
