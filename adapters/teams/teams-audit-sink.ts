// Posts signed audit checkpoints to a Teams channel (TEAMS_AUDIT_CONVERSATION), so a copy of each one lives
// in Microsoft's history, beyond the reach of anyone who controls only this host and its database. The
// message carries the checkpoint's exact JSON line: an auditor compares it with the file, or checks its
// signature with the key `npm run cli -- audit public-key` prints.
import type { AuditAnchorSink, AuditCheckpoint } from '../../bot/audit/audit-checkpoint.ts';
import type { TeamsConnector } from './connector.ts';
import { textActivity } from './teams-chat.ts';

export function checkpointText(cp: AuditCheckpoint): string {
  const line = JSON.stringify({ seq: cp.seq, hash: cp.hash, at: cp.at, sig: cp.sig });
  return `Audit checkpoint: record ${cp.seq}, hash ${cp.hash.slice(0, 16)}…, signed ${cp.at}\n${line}`;
}

export function createTeamsAuditSink(deps: {
  connector: TeamsConnector;
  /** The channel's service URL (TEAMS_SERVICE_URL, or the cloud's). */
  serviceUrl: string;
  conversationId: string;
}): AuditAnchorSink {
  return {
    name: 'teams',
    async postCheckpoint(cp) {
      await deps.connector.create(
        { serviceUrl: deps.serviceUrl, conversationId: deps.conversationId },
        textActivity(checkpointText(cp)),
      );
    },
  };
}
