// An agent's `result` frames: recorded once in the outbox (with the script's full record for `run`), and a
// refusal by the agent (bad signature, expired, a go-ahead not signed for its ack) audited on its own as a
// security event, also for a delivery that already ended another way.
import type { DbOrTx } from '../../db/client.ts';
import { AGENT_REFUSALS, type AgentFrame, type AgentRefusal, ERROR_CODES } from '../../protocol/frames.ts';
import type { DeliveryRow } from '../outbox/outbox-repo.ts';
import type { SessionHost } from './agent-session.ts';

function refusalOf(result: Record<string, unknown> | undefined): AgentRefusal | undefined {
  const r = result?.refused;
  return (AGENT_REFUSALS as readonly unknown[]).includes(r) ? (r as AgentRefusal) : undefined;
}

export function createResultHandler(
  host: SessionHost,
  ident: { endpointId: string; hostname: string },
  refuseFrame: (
    code: string,
    message: string,
    details: Record<string, unknown>,
    ref?: string,
  ) => Promise<void>,
) {
  const { audit, logger, clock } = host;
  const { endpointId } = ident;
  return async function onResult(frame: Extract<AgentFrame, { type: 'result' }>) {
    const refusal = frame.ok ? undefined : refusalOf(frame.result);
    // The agent refused to run it (bad signature, expired, forged go-ahead): a security event of its own.
    const refusalAudit = (row: DeliveryRow, tx?: DbOrTx) =>
      audit.append(
        {
          actorType: 'agent',
          actorId: endpointId,
          action: 'delivery.refused_by_agent',
          outcome: 'refused',
          requestId: row.requestId,
          endpointId,
          details: {
            deliveryId: row.id,
            action: row.action,
            reason: refusal,
            error: frame.error ?? null,
            hostname: ident.hostname,
          },
        },
        tx,
      );
    const extraAudit = async (row: DeliveryRow, tx: DbOrTx) => {
      if (refusal) await refusalAudit(row, tx);
      // The endpoint's isolation flag commits with the result that changed it, so nobody reads a succeeded
      // isolate of an endpoint still marked open.
      if (frame.ok && (row.action === 'isolate' || row.action === 'unisolate')) {
        await host.presence.setIsolated(endpointId, row.action === 'isolate', clock.now(), tx);
      }
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
    const res = await host.recordResult(endpointId, frame, extraAudit);
    if (res.status === 'unknown') {
      return refuseFrame(
        ERROR_CODES.unknownDelivery,
        'no delivery with this id was sent to this agent',
        { id: frame.id },
        frame.id,
      );
    }
    if (res.status === 'final') {
      // A repeat (the agent re-sends stored results after a reconnect) changes nothing and gets no answer;
      // a refusal of a delivery that already ended elsewhere is still worth a record.
      if (refusal) await refusalAudit(res.row);
      return;
    }
    logger.info({ deliveryId: frame.id, endpointId, state: res.event.state }, 'delivery result recorded');
    host.emit([res.event]);
  };
}
