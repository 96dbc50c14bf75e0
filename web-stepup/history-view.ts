// The session history page: a filter form (plain GET, so it works without script and can be bookmarked
// while the window lasts), the Active Response sessions, and the audit records with their details
// (script payloads, file hashes) as the product's "Session History" view shows them.
import type { AuditRecord } from '../bot/audit/audit-service.ts';
import { formatUtc, html } from './html.ts';
import { layout } from './views.ts';

export interface HistoryFilters {
  user?: string;
  endpoint?: string;
  from?: string;
  to?: string;
}

export interface SessionRow {
  id: string;
  username: string;
  displayName: string;
  hostname: string;
  reason: string | null;
  caseId: string | null;
  startedAt: Date;
  endedAt: Date | null;
}

export interface HistoryPageInput {
  viewer: { displayName: string; username: string };
  windowExpiresAt: Date;
  filters: HistoryFilters;
  error?: string;
  sessions: SessionRow[];
  audit: AuditRecord[];
  /** User id → username, for actors that are platform users. */
  names: Map<string, string>;
  endpoints: Map<string, string>;
  limit: number;
}

const DETAILS_MAX = 2000;

/** Compact JSON, wrapped by the stylesheet: script payloads and file hashes stay readable on a phone. */
function detailsText(details: unknown): string {
  const text = JSON.stringify(details ?? {});
  return text.length > DETAILS_MAX ? `${text.slice(0, DETAILS_MAX)} … (truncated)` : text;
}

export function historyPage(p: HistoryPageInput): string {
  const f = p.filters;
  const body = html`<h1>Session history</h1>
<p class="who">Signed in as <strong>${p.viewer.displayName}</strong> (${p.viewer.username}) until ${formatUtc(p.windowExpiresAt)}.</p>
<form class="filters" method="get" action="/history">
<div><label for="f-user">User</label><input id="f-user" name="user" type="text" value="${f.user ?? ''}" placeholder="username"></div>
<div><label for="f-endpoint">Endpoint</label><input id="f-endpoint" name="endpoint" type="text" value="${f.endpoint ?? ''}" placeholder="hostname"></div>
<div><label for="f-from">From (UTC)</label><input id="f-from" name="from" type="text" value="${f.from ?? ''}" placeholder="2026-11-28T09:00"></div>
<div><label for="f-to">To (UTC)</label><input id="f-to" name="to" type="text" value="${f.to ?? ''}" placeholder="2026-11-28T18:00"></div>
<div><button type="submit">Filter</button></div>
</form>
${p.error ? html`<p class="notice error" role="alert">${p.error}</p>` : ''}
<h2>Sessions (${p.sessions.length}${p.sessions.length >= p.limit ? '+' : ''})</h2>
<div class="scroll"><table>
<thead><tr><th scope="col">Started</th><th scope="col">Ended</th><th scope="col">User</th><th scope="col">Endpoint</th><th scope="col">Reason</th><th scope="col">Case</th></tr></thead>
<tbody>
${p.sessions.length === 0 ? html`<tr><td colspan="6">No sessions match.</td></tr>` : ''}
${p.sessions.map(
  (s) =>
    html`<tr><td class="when">${formatUtc(s.startedAt)}</td><td class="when">${s.endedAt ? formatUtc(s.endedAt) : 'open'}</td><td>${s.displayName} (${s.username})</td><td>${s.hostname}</td><td>${s.reason ?? ''}</td><td>${s.caseId ?? ''}</td></tr>`,
)}
</tbody></table></div>
<h2>Audit records (${p.audit.length}${p.audit.length >= p.limit ? '+' : ''})</h2>
<div class="scroll"><table>
<thead><tr><th scope="col">#</th><th scope="col">When</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Outcome</th><th scope="col">Endpoint</th><th scope="col">Details</th></tr></thead>
<tbody>
${p.audit.length === 0 ? html`<tr><td colspan="7">No audit records match.</td></tr>` : ''}
${p.audit.map(
  (r) =>
    html`<tr><td>${r.seq}</td><td class="when">${formatUtc(r.at)}</td><td>${r.actorId ? (p.names.get(r.actorId) ?? r.actorId) : r.actorType}</td><td>${r.action}</td><td>${r.outcome}</td><td>${r.endpointId ? (p.endpoints.get(r.endpointId) ?? r.endpointId) : ''}</td><td><pre>${detailsText(r.details)}</pre></td></tr>`,
)}
</tbody></table></div>`;
  return layout('Session history', body, { wide: true });
}
