// Plain-text rendering of a request card, for the console chat and for logs.
import type { RequestView } from '../../bot/ports.ts';
import { describeTargets, formatProgress } from '../../bot/render/summary.ts';

export { describeTargets };

const MAX_NAMES = 5;

export function renderRequestText(view: RequestView): string {
  const lines = [
    `▌ ${view.ref} · ${view.action}${view.scriptName ? ` ${view.scriptName}` : ''} on ${describeTargets(view)}`,
    `  state: ${view.state}${view.progress ? `  ${formatProgress(view.progress)}` : ''}`,
    `  requested by ${view.requester.displayName}${view.requester.external ? ' (external)' : ''}`,
    `  reason: ${view.reason}${view.caseId ? `   case: ${view.caseId}` : ''}`,
  ];
  if (view.note) lines.push(`  note: ${view.note}`);
  if (view.scriptSha256) lines.push(`  script sha256: ${view.scriptSha256.slice(0, 16)}…`);
  for (const x of view.exclusions.slice(0, MAX_NAMES)) lines.push(`  excluded ${x.hostname}: ${x.reason}`);
  if (view.exclusions.length > MAX_NAMES)
    lines.push(`  … and ${view.exclusions.length - MAX_NAMES} more excluded`);
  lines.push(
    `  digest ${view.digest.slice(0, 12)}  approvals ${approvedCount(view)}/${view.approvalsRequired}`,
  );
  for (const a of view.approvals) {
    lines.push(
      `  ${a.decision === 'approve' ? '✔ approved' : '✖ denied'} by ${a.approverName}${a.reason ? `: ${a.reason}` : ''}`,
    );
  }
  if (view.state === 'pending_approval') {
    lines.push(`  [Approve] [Deny]   type: /approve ${view.ref}   or   /deny ${view.ref} <reason>`);
  }
  return lines.join('\n');
}

function approvedCount(view: RequestView): number {
  return view.approvals.filter((a) => a.decision === 'approve').length;
}
