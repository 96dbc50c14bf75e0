// Posts signed audit checkpoints to the Slack audit channel (SLACK_AUDIT_CHANNEL), so a copy of each one
// lives in Slack's history, beyond the reach of anyone who controls only this host and its database. The
// message carries the checkpoint's exact JSON line: an auditor compares it with the file, or checks its
// signature with the key `npm run cli -- audit public-key` prints.
import type { App } from '@slack/bolt';
import type { AuditAnchorSink, AuditCheckpoint } from '../../bot/audit/audit-checkpoint.ts';

type WebClient = App['client'];

export function checkpointMessage(cp: AuditCheckpoint): string {
  const line = JSON.stringify({ seq: cp.seq, hash: cp.hash, at: cp.at, sig: cp.sig });
  return `Audit checkpoint: record ${cp.seq}, hash ${cp.hash.slice(0, 16)}…, signed ${cp.at}\n\`\`\`${line}\`\`\``;
}

export function createSlackAuditSink(deps: { client: WebClient; channel: string }): AuditAnchorSink {
  return {
    name: 'slack',
    async postCheckpoint(cp) {
      await deps.client.chat.postMessage({
        channel: deps.channel,
        text: checkpointMessage(cp),
        unfurl_links: false,
      });
    },
  };
}
