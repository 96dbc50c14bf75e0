// An agent's `result` frames: recorded once in the outbox (with the script's full record for `run`), and a
// refusal by the agent (bad signature, expired, a go-ahead not signed for its ack) audited on its own as a
// security event, also for a delivery that already ended another way.
import type { AuditEntry } from '../../bot/audit/audit-service.ts';
import { AGENT_REFUSALS, type AgentFrame, type AgentRefusal, ERROR_CODES } from '../../protocol/frames.ts';
import type { DeliveryRow, ResultEffects } from '../outbox/outbox-repo.ts';
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
  const { audit, logger } = host;
  const { endpointId } = ident;
  return async function onResult(frame: Extract<AgentFrame, { type: 'result' }>) {
    const refusal = frame.ok ? undefined : refusalOf(frame.result);
    // The agent refused to run it (bad signature, expired, forged go-ahead): a security event of its own.
    const refusalRecord = (row: DeliveryRow): AuditEntry => ({
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
    });
    // Committed with the result, in the batch's statements (outbox-repo `recordResultsIn`).
    const effects = (row: DeliveryRow): ResultEffects => {
      const records: AuditEntry[] = [];
      if (refusal) records.push(refusalRecord(row));
      // The full payload (script bytes, parameters) and its output, so an investigator sees exactly what ran.
      if (row.action === 'run') {
        records.push({
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
        });
      }
      // The endpoint's isolation flag changes with the result that changed it.
      const isolated =
        frame.ok && (row.action === 'isolate' || row.action === 'unisolate')
          ? row.action === 'isolate'
          : undefined;
      return { records, isolated };
    };
    const res = await host.recordResult(endpointId, frame, effects);
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
      if (refusal) await audit.append(refusalRecord(res.row));
      return;
    }
    // Its event goes out with the rest of its batch (broker.ts `resulter`).
    logger.info({ deliveryId: frame.id, endpointId, state: res.event.state }, 'delivery result recorded');
  };
}
