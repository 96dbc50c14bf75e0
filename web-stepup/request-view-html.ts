// The request as an approver reads it on the step-up page: every fact the chat card shows (from the same
// list, bot/render/summary.ts), every target and every exclusion with its reason, and the full digest with
// the canonical text it is the SHA-256 of, so what is approved can be checked, not just trusted.
import type { ExclusionView, RequestView } from '../bot/ports.ts';
import { exclusionGroups, requestFacts, shownName } from '../bot/render/summary.ts';
import { canonicalDigestForm } from '../bot/requests/digest.ts';
import { html, type SafeHtml } from './html.ts';

/** Long lists (a fleet of thousands) stay readable: the first names here, the rest on the list page. */
const SHOWN_NAMES = 20;

function hostList(list: string[]): SafeHtml {
  return html`${list.map((n, i) => html`${i ? ', ' : ''}<span class="host">${n}</span>`)}`;
}

function firstNames(list: string[], listHref?: string): SafeHtml {
  const rest = list.length - SHOWN_NAMES;
  if (rest <= 0) return hostList(list);
  const more = listHref ? html`<a href="${listHref}">and ${rest} more</a>` : html`and ${rest} more`;
  return html`${hostList(list.slice(0, SHOWN_NAMES))}, ${more}`;
}

/** Exclusions grouped by reason; each group shows its first names with their own reasons. */
export function exclusionGroupsHtml(exclusions: ExclusionView[], limit: number, listHref?: string): SafeHtml {
  return html`<ul class="exclusions">${exclusionGroups(exclusions).map((g) => {
    const rest = g.exclusions.length - limit;
    return html`<li><strong>${g.label} (${g.exclusions.length})</strong>${g.note ? html`: ${g.note}` : ''}
<ul>${g.exclusions
      .slice(0, limit)
      .map((x) => html`<li><span class="host">${x.hostname}</span>: ${x.reason}</li>`)}${
      rest > 0
        ? html`<li>${listHref ? html`<a href="${listHref}">and ${rest} more</a>` : html`and ${rest} more`}</li>`
        : ''
    }</ul></li>`;
  })}</ul>`;
}

/**
 * The request's facts as an approver reads them. `listHref` is the page listing every target and
 * exclusion (behind the same link), linked from lists too long to show whole.
 */
export function requestFactsHtml(r: RequestView, opts: { listHref?: string } = {}): SafeHtml {
  const rows = requestFacts(r, Number.POSITIVE_INFINITY).map((f) => {
    if (f.label === 'Targets') {
      const all = r.targets.map(shownName);
      return html`<dt>Targets</dt><dd>${all.length} endpoint${all.length === 1 ? '' : 's'}: ${firstNames(all, opts.listHref)}</dd>`;
    }
    if (f.label.startsWith('Excluded')) {
      return html`<dt>${f.label}</dt><dd>${exclusionGroupsHtml(r.exclusions, SHOWN_NAMES, opts.listHref)}</dd>`;
    }
    if (f.label.startsWith('Digest')) return html``;
    const code = /SHA-256|Path|Destination/.test(f.label);
    return html`<dt>${f.label}</dt><dd>${code ? html`<code>${f.value}</code>` : f.value}</dd>`;
  });
  const listLink = opts.listHref
    ? html`<dt>All endpoints</dt><dd><a href="${opts.listHref}">Every target (online or queued) and every exclusion</a></dd>`
    : '';
  const canonical = canonicalDigestForm({
    action: r.action,
    params: r.params,
    scriptSha256: r.scriptSha256 ?? null,
    targets: r.targets,
  });
  return html`<dl class="facts">
<dt>Request</dt><dd>${r.ref}</dd>
${rows}
${listLink}
<dt>Digest (SHA-256)</dt><dd><code class="digest">${r.digest}</code>
<details><summary>What the digest covers</summary>
<p>The SHA-256 of exactly this text (the action, its parameters, the script's SHA-256 and the targets). Your approval is bound to it: if anything changes, it is a new request.</p>
<pre class="canonical">${canonical}</pre></details></dd>
</dl>`;
}
