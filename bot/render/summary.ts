// Plain-words summaries shared by every chat renderer and the step-up page.
import type { RequestView } from '../ports.ts';

const MAX_NAMES = 5;

/** "web-01" or "12 endpoints: web-01, web-02, …" */
export function describeTargets(view: Pick<RequestView, 'targets'>, maxNames = MAX_NAMES): string {
  const names = view.targets.map((t) => t.hostname);
  const shown = names.slice(0, maxNames).join(', ');
  return names.length > maxNames ? `${names.length} endpoints: ${shown}, …` : shown || 'no endpoints';
}

/** "queued 2 · succeeded 5" */
export function formatProgress(progress: Record<string, number>): string {
  return Object.entries(progress)
    .filter(([, n]) => n > 0)
    .map(([state, n]) => `${state} ${n}`)
    .join(' · ');
}

/** "isolate on web-01" / "run collect-logs on 3 endpoints: …" */
export function describeAction(view: Pick<RequestView, 'action' | 'scriptName' | 'targets'>): string {
  return `${view.action}${view.scriptName ? ` ${view.scriptName}` : ''} on ${describeTargets(view)}`;
}
