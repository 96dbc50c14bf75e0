// The session history page: a filter form (plain GET, so it works without script and can be bookmarked
// while the window lasts), the live sessions, and the audit records, one row each in words (when, who,
// what, which endpoint, which request, outcome, why) with the details collapsed under the row in a
// <details> element (no script: the CSP forbids it). 50 records a page, newest first, keyset paged.
import type { AuditRecord } from '../bot/audit/audit-service.ts';
import { ACTION_CHOICES, type HistoryFilters, historyHref } from './history-filters.ts';
import { actionWords, actorWords, detailsList, type HistoryNames, reasonWords } from './history-words.ts';
import { formatUtc, html, type SafeHtml } from './html.ts';
import { layout } from './views.ts';

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

export interface HistoryPage {
  records: AuditRecord[];
  /** Links to the next page either way, or undefined when there is none. */
  newer?: string;
  older?: string;
  /** True when this is not the first (newest) page. */
  paged: boolean;
}

export interface HistoryPageInput {
  viewer: { displayName: string; username: string };
  windowExpiresAt: Date;
  filters: HistoryFilters;
  error?: string;
  /** Undefined when the sessions are not shown (a later page, or a request or action filter). */
  sessions?: SessionRow[];
  sessionLimit: number;
  page: HistoryPage;
  names: HistoryNames;
}

const OUTCOME_WORDS: Record<string, string> = {
  ok: 'OK',
  refused: 'Refused',
  failed: 'Failed',
  error: 'Error',
};

/** `2026-11-28 09:00:05 UTC`: records happen seconds apart, so the seconds matter here. */
function formatUtcSeconds(d: Date): string {
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

function filterForm(f: HistoryFilters): SafeHtml {
  const choices = ACTION_CHOICES.some((c) => c.value === (f.action ?? ''))
    ? ACTION_CHOICES
    : [...ACTION_CHOICES, { value: f.action ?? '', label: f.action ?? '' }];
  return html`<form class="filters" method="get" action="/history">
<div><label for="f-user">User</label><input id="f-user" name="user" type="text" value="${f.user ?? ''}" placeholder="username" autocapitalize="none" spellcheck="false"></div>
<div><label for="f-endpoint">Endpoint</label><input id="f-endpoint" name="endpoint" type="text" value="${f.endpoint ?? ''}" placeholder="hostname" autocapitalize="none" spellcheck="false"></div>
<div><label for="f-request">Request</label><input id="f-request" name="request" type="text" value="${f.request ?? ''}" placeholder="R-7K3QXM" autocapitalize="characters" spellcheck="false"></div>
<div><label for="f-action">Kind of event</label><select id="f-action" name="action">${choices.map(
    (c) =>
      html`<option value="${c.value}"${c.value === (f.action ?? '') ? html` selected` : ''}>${c.label}</option>`,
  )}</select></div>
<div><label for="f-from">From (UTC)</label><input id="f-from" name="from" type="text" value="${f.from ?? ''}" placeholder="2026-11-28 09:00" spellcheck="false"></div>
<div><label for="f-to">To (UTC)</label><input id="f-to" name="to" type="text" value="${f.to ?? ''}" placeholder="2026-11-28 18:00" spellcheck="false"></div>
<div class="filter-actions"><button type="submit">Filter</button>${
    Object.keys(f).length ? html`<a class="clear" href="/history">Clear filters</a>` : ''
  }</div>
</form>`;
}

function sessionsSection(rows: SessionRow[], limit: number): SafeHtml {
  return html`<h2>Sessions (${rows.length}${rows.length >= limit ? ', newest shown' : ''})</h2>
${
  rows.length === 0
    ? html`<p class="empty">No sessions match.</p>`
    : html`<ul class="sessions">${rows.map(
        (s) => html`<li>
<p><strong class="host">${s.hostname}</strong> by ${s.displayName} (${s.username})</p>
<p class="ev-when">${formatUtc(s.startedAt)} → ${s.endedAt ? formatUtc(s.endedAt) : 'still open'}</p>
<p>${s.reason ? html`<span class="k">Why</span> ${s.reason}` : html`<span class="muted">No reason given</span>`}${s.caseId ? html` · case ${s.caseId}` : ''}</p>
</li>`,
      )}</ul>`
}`;
}

function eventRow(r: AuditRecord, names: HistoryNames, filters: HistoryFilters): SafeHtml {
  const host = r.endpointId ? names.hosts.get(r.endpointId) : undefined;
  const request = r.requestId ? names.requests.get(r.requestId) : undefined;
  const why = reasonWords(r, names);
  const outcome = OUTCOME_WORDS[r.outcome] ?? r.outcome;
  return html`<li class="event">
<div class="ev">
<span class="ev-when"><time datetime="${r.at.toISOString()}">${formatUtcSeconds(r.at)}</time></span>
<span class="ev-act"><strong class="ev-who">${actorWords(r, names)}</strong> <span class="ev-what">${actionWords(r)}</span></span>
<span class="ev-where"><span class="ev-endpoint${host ? '' : ' none'}">${
    host
      ? html`<span class="k">Endpoint</span> <a class="host" href="${historyHref(filters, { endpoint: host })}">${host}</a>`
      : ''
  }</span><span class="ev-request${request ? '' : ' none'}">${
    request
      ? html`<span class="k">Request</span> <a class="host" href="${historyHref(filters, { request: request.ref })}">${request.ref}</a>`
      : ''
  }</span></span>
<span class="ev-outcome"><span class="badge b-${r.outcome}">${outcome}</span></span>
</div>
${why ? html`<p class="ev-why"><span class="k">Why</span> ${why}</p>` : ''}
<details><summary>Details</summary>${detailsList(r)}</details>
</li>`;
}

function pager(p: HistoryPage, filters: HistoryFilters): SafeHtml {
  if (!p.newer && !p.older && !p.paged) return html``;
  return html`<nav class="pager" aria-label="More records">
${p.newer ? html`<a rel="prev" href="${p.newer}">← Newer</a>` : html`<span></span>`}
${p.paged ? html`<a href="${historyHref(filters)}">Newest</a>` : ''}
${p.older ? html`<a rel="next" href="${p.older}">Older →</a>` : html`<span></span>`}
</nav>`;
}

export function historyPage(p: HistoryPageInput): string {
  const records = p.page.records;
  const range =
    records.length > 0
      ? `records #${records[records.length - 1]!.seq} to #${records[0]!.seq}, newest first`
      : '';
  const body = html`<h1>Session history</h1>
<p class="who">Signed in as <strong>${p.viewer.displayName}</strong> (${p.viewer.username}) until ${formatUtc(p.windowExpiresAt)}.</p>
${filterForm(p.filters)}
${p.error ? html`<p class="notice error" role="alert">${p.error}</p>` : ''}
${p.sessions ? sessionsSection(p.sessions, p.sessionLimit) : ''}
<h2>Activity</h2>
${records.length ? html`<p class="muted">${range}. Open “Details” under a row for everything recorded.</p>` : ''}
${pager(p.page, p.filters)}
${
  records.length === 0
    ? html`<p class="empty">${p.page.paged ? 'No more records this way.' : 'No audit records match.'}</p>`
    : html`<div class="events-head" aria-hidden="true"><span>When</span><span>Who</span><span>What</span><span>Endpoint</span><span>Request</span><span>Outcome</span></div>
<ol class="events">${records.map((r) => eventRow(r, p.names, p.filters))}</ol>`
}
${records.length > 10 ? pager(p.page, p.filters) : ''}`;
  return layout('Session history', body, { wide: true });
}
