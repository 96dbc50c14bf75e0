// Plain-text rendering of a request card, for the console chat and for logs: every fact an approver needs,
// from the same list the Slack card and the step-up page show.
import type { RequestView } from '../../bot/ports.ts';
import { actionPhrase, describeTargets, formatProgress, requestFacts } from '../../bot/render/summary.ts';

export { describeTargets };

export function renderRequestText(view: RequestView): string {
  const lines = [
    `▌ ${view.ref} · ${actionPhrase(view)} on ${describeTargets(view)}`,
    `  state: ${view.state}${view.progress ? `  ${formatProgress(view.progress)}` : ''}`,
  ];
  for (const f of requestFacts(view)) {
    if (f.label === 'Action') continue;
    const [first, ...rest] = f.value.split('\n');
    lines.push(`  ${f.label}: ${first}`);
    for (const r of rest) lines.push(`    ${r}`);
  }
  for (const a of view.approvals) {
    lines.push(
      `  ${a.decision === 'approve' ? '✔ approved' : '✖ denied'} by ${a.approverName}${a.reason ? `: ${a.reason}` : ''}`,
    );
  }
  if (view.state === 'pending_approval') {
    lines.push(`  [Approve] [Deny]   type: /approve ${view.ref}   or   /deny ${view.ref} --reason "<why>"`);
  }
  return lines.join('\n');
}
