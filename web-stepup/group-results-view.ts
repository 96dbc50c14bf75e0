// The results page of an action group and its CSV: one row per endpoint with its state, exit code, duration
// and the first lines of its output, a state filter, and links to each endpoint's full output and files.
import { DELIVERY_STATES } from '../db/schema.ts';
import { formatUtc, html } from './html.ts';
import { layout } from './views.ts';

export interface ResultRow {
  deliveryId: string;
  hostname: string;
  state: string;
  exitCode: number | null;
  durationMs: number | null;
  /** The first lines of the output (or the error), already cut. */
  firstLines: string;
  hasOutput: boolean;
  /** Evidence the endpoint uploaded (fetch), downloadable through the per-file route. */
  fileIds: string[];
}

export interface ResultsPage {
  ref: string;
  action: string;
  state: string;
  counts: Record<string, number>;
  rows: ResultRow[];
  filter?: string;
  generatedAt: Date;
}

export const RESULT_STATES: readonly string[] = DELIVERY_STATES;

const seconds = (ms: number | null) => (ms === null ? '' : `${(ms / 1000).toFixed(1)} s`);

export function resultsPage(p: ResultsPage): string {
  const base = `/groups/${encodeURIComponent(p.ref)}`;
  const filters = ['all', ...RESULT_STATES].map((s) => {
    const n = s === 'all' ? Object.values(p.counts).reduce((a, b) => a + b, 0) : (p.counts[s] ?? 0);
    const href = s === 'all' ? base : `${base}?state=${s}`;
    const current = (p.filter ?? 'all') === s;
    return html`<li><a href="${href}"${current ? html` aria-current="page"` : ''}>${s} (${n})</a></li>`;
  });
  const rows = p.rows.map(
    (r) => html`<tr class="state-${r.state}">
<td>${r.hostname}</td><td>${r.state}</td><td>${r.exitCode ?? ''}</td><td>${seconds(r.durationMs)}</td>
<td><pre>${r.firstLines}</pre></td>
<td>${r.hasOutput ? html`<a href="${base}/output/${r.deliveryId}">full output</a>` : ''}
${r.fileIds.map((id) => html` <a href="/files/${id}">file ${id.slice(0, 8)}</a>`)}</td>
</tr>`,
  );
  const csv = p.filter ? `${base}/results.csv?state=${p.filter}` : `${base}/results.csv`;
  const body = html`<h1>Results of ${p.ref}</h1>
<p>${p.action} · request ${p.state.replace('_', ' ')} · ${p.rows.length} endpoints shown · as of ${formatUtc(p.generatedAt)}</p>
<nav aria-label="Filter by state"><ul class="filters">${filters}</ul></nav>
<p><a href="${csv}" download>Download this table as CSV</a></p>
<div class="table-scroll"><table class="results per-endpoint">
<thead><tr><th>Endpoint</th><th>State</th><th>Exit code</th><th>Duration</th><th>Output (first lines)</th><th>Download</th></tr></thead>
<tbody>${rows}</tbody>
</table></div>`;
  return layout(`Results of ${p.ref}`, body, { wide: true });
}

/** RFC 4180 field: quoted when it holds a comma, quote or line break; a leading =+-@ is defused for sheets. */
function csvField(v: string | number | null): string {
  let s = v === null ? '' : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function resultsCsv(rows: ResultRow[]): string {
  const head = 'endpoint,state,exit_code,duration_ms,first_lines';
  const lines = rows.map((r) =>
    [r.hostname, r.state, r.exitCode, r.durationMs, r.firstLines].map(csvField).join(','),
  );
  return `${[head, ...lines].join('\r\n')}\r\n`;
}
