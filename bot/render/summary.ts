// Plain-words descriptions of a request, shared by every chat renderer, `status` and the step-up page, so
// an approver sees the same facts wherever they look: the action with every parameter (from the catalogue),
// targets with each exclusion and its reason, why, for which case, how long it waits for offline endpoints,
// and the full digest the approval binds to.
import { describeParams } from '../../protocol/actions.ts';
import {
  EXCLUSION_KINDS,
  type ExclusionKind,
  type ExclusionView,
  type RequestView,
  type TargetView,
} from '../ports.ts';

const MAX_NAMES = 5;

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The name to show: what the agent reported (`WS-02`), else the stored lower-case name. */
export const shownName = (t: Pick<TargetView, 'hostname' | 'reported'>) => t.reported ?? t.hostname;

/** "web-01" or "12 endpoints: web-01, web-02, …" */
export function describeTargets(view: Pick<RequestView, 'targets'>, maxNames = MAX_NAMES): string {
  const names = view.targets.map(shownName);
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

/** The action with its one or two most telling parameters: "kill pid 4242", "fetch /var/log/auth.log". */
export function actionPhrase(view: Pick<RequestView, 'action' | 'params'>): string {
  const p = view.params as Record<string, unknown>;
  switch (view.action) {
    case 'kill':
      return p.pid !== undefined ? `kill pid ${p.pid}` : `kill "${String(p.processName)}"`;
    case 'fetch':
      return `fetch ${String(p.path)}`;
    case 'put': {
      const f = p.file as { name?: string } | undefined;
      return `put ${f?.name ?? '?'} to ${String(p.destPath)}`;
    }
    case 'run': {
      const s = p.script as { name?: string; version?: number } | undefined;
      return `run ${s?.name ?? '?'}${s?.version ? ` v${s.version}` : ''}`;
    }
    case 'processes':
      return p.match ? `processes matching "${String(p.match)}"` : 'processes';
    default:
      return view.action;
  }
}

/** "kill pid 4242 on web-01" / "run collect-logs v2 on 3 endpoints: …" */
export function describeAction(view: Pick<RequestView, 'action' | 'params' | 'targets'>): string {
  return `${actionPhrase(view)} on ${describeTargets(view)}`;
}

function duration(seconds: number): string {
  if (seconds % 86400 === 0) return plural(seconds / 86400, 'day');
  if (seconds % 3600 === 0) return plural(seconds / 3600, 'hour');
  if (seconds % 60 === 0) return plural(seconds / 60, 'minute');
  return plural(seconds, 'second');
}

/** Where the whole list is, for a card that shows only the first names of each group. */
export const FULL_LIST_HINT =
  'Every endpoint and exclusion is listed on the approval page (Approve sends you its link).';

/** "3 run it now (online) · 2 offline, queued until they connect · 4 excluded" */
export function previewLine(
  view: Pick<RequestView, 'exclusions'>,
  presence: { online: number; offline: number },
): string {
  const parts = [
    `${presence.online} run it now (online)`,
    `${presence.offline} offline, queued until they connect`,
  ];
  if (view.exclusions.length) parts.push(`${view.exclusions.length} excluded`);
  return parts.join(' · ');
}

const GROUP_LABELS: Record<ExclusionKind | 'other', string> = {
  os: 'OS not supported',
  agent_version: 'Agent older than the minimum version',
  segment: 'Segment not enabled for Active Response',
  unknown: 'Unknown host',
  unmatched: 'Selector matched nothing',
  revoked: 'Revoked',
  other: 'Other reasons',
};

export interface ExclusionGroup {
  kind: ExclusionKind | 'other';
  label: string;
  /** A word on the whole group, e.g. that macOS takes no actions, scripts or action groups. */
  note?: string;
  names: string[];
  exclusions: ExclusionView[];
}

/** Exclusions grouped by reason, in a fixed order, each group's names in the order they were listed. */
export function exclusionGroups(exclusions: readonly ExclusionView[]): ExclusionGroup[] {
  const byKind = new Map<ExclusionKind | 'other', ExclusionView[]>();
  for (const x of exclusions) {
    const k = x.kind ?? 'other';
    const list = byKind.get(k);
    if (list) list.push(x);
    else byKind.set(k, [x]);
  }
  const order = [...EXCLUSION_KINDS, 'other'] as const;
  return order.flatMap((kind) => {
    const list = byKind.get(kind);
    if (!list) return [];
    const note =
      kind === 'os' && list.some((x) => x.os === 'macos')
        ? 'macOS is not supported for actions, scripts or action groups'
        : kind === 'agent_version'
          ? 'upgrade the sensor, then ask again'
          : undefined;
    // Without a kind (older requests) the group says nothing of its own, so each name keeps its reason.
    const names = list.map((x) => (kind === 'other' ? `${x.hostname}: ${x.reason}` : x.hostname));
    return [{ kind, label: GROUP_LABELS[kind], note, names, exclusions: list }];
  });
}

export interface Fact {
  label: string;
  value: string;
}

/**
 * How an action group goes out, in words: `canary of 5 first, the rest only once all 5 succeeded, 100 a minute;
 * halts at 10% failed`.
 */
export function wavesLine(w: NonNullable<RequestView['waves']>): string {
  const parts: string[] = [];
  if (w.canary) {
    const all = w.canary === 1 ? 'it' : `all ${w.canary}`;
    parts.push(`canary of ${w.canary} first, the rest only once ${all} succeeded`);
  }
  parts.push(w.ratePerMinute ? `${w.ratePerMinute} a minute` : w.canary ? 'then all at once' : 'all at once');
  return `${parts.join(', ')}; halts at ${w.haltAtPercent}% failed`;
}

/**
 * Every fact of a request an approver needs, in order. `maxNames` caps the listed targets and exclusions
 * (chat cards); the step-up page passes Infinity.
 */
export function requestFacts(view: RequestView, maxNames = 10): Fact[] {
  const facts: Fact[] = [{ label: 'Action', value: view.action }];
  for (const [label, value] of describeParams(view.action, view.params)) facts.push({ label, value });
  const names = view.targets.map(shownName);
  const more = names.length > maxNames ? `, … and ${names.length - maxNames} more` : '';
  facts.push({
    label: 'Targets',
    value: `${plural(names.length, 'endpoint')}: ${names.slice(0, maxNames).join(', ')}${more}`,
  });
  if (view.presence) facts.push({ label: 'Preview', value: previewLine(view, view.presence) });
  if (view.waves) facts.push({ label: 'Waves', value: wavesLine(view.waves) });
  if (view.exclusions.length) {
    const groups = exclusionGroups(view.exclusions);
    const lines = groups.map((g) => {
      const shown = g.names.slice(0, maxNames).join(', ');
      const more = g.names.length > maxNames ? `, … and ${g.names.length - maxNames} more` : '';
      return `${g.label} (${g.names.length}): ${shown}${more}${g.note ? ` (${g.note})` : ''}`;
    });
    if (groups.some((g) => g.names.length > maxNames)) lines.push(FULL_LIST_HINT);
    facts.push({ label: `Excluded (${view.exclusions.length})`, value: lines.join('\n') });
  }
  facts.push({ label: 'Reason', value: view.reason || '—' });
  if (view.caseId) facts.push({ label: 'Case', value: view.caseId });
  if (view.note) facts.push({ label: 'Note', value: view.note });
  if (view.deliveryTtlSeconds) {
    facts.push({
      label: 'Offline endpoints',
      value: `queued for up to ${duration(view.deliveryTtlSeconds)}, then expire`,
    });
  }
  facts.push({
    label: 'Requested by',
    value: `${view.requester.displayName}${view.requester.external ? ' (external)' : ''}`,
  });
  const approved = view.approvals.filter((a) => a.decision === 'approve').length;
  facts.push({
    label: 'Approvals',
    value:
      view.approvalsRequired === 0
        ? 'none needed (read-only)'
        : `${approved} of ${view.approvalsRequired}${view.inHouseApprovalRequired ? ', an in-house approver required' : ''}`,
  });
  facts.push({ label: 'Digest (SHA-256)', value: view.digest });
  return facts;
}
