// The request as an approver reads it on the step-up page: every fact the chat card shows (from the same
// list, bot/render/summary.ts), every target and every exclusion with its reason, and the full digest with
// the canonical text it is the SHA-256 of, so what is approved can be checked, not just trusted.
import type { RequestView } from '../bot/ports.ts';
import { requestFacts, shownName } from '../bot/render/summary.ts';
import { canonicalDigestForm } from '../bot/requests/digest.ts';
import { html, type SafeHtml } from './html.ts';

/** Long lists (a segment of hundreds) stay readable: the first names, then a collapsed list of the rest. */
const SHOWN_NAMES = 20;

function names(list: string[]): SafeHtml {
  const first = list.slice(0, SHOWN_NAMES);
  const rest = list.slice(SHOWN_NAMES);
  return html`${first.map((n, i) => html`${i ? ', ' : ''}<span class="host">${n}</span>`)}${
    rest.length
      ? html` <details><summary>and ${rest.length} more</summary>${rest.map(
          (n, i) => html`${i ? ', ' : ''}<span class="host">${n}</span>`,
        )}</details>`
      : ''
  }`;
}

export function requestFactsHtml(r: RequestView): SafeHtml {
  const rows = requestFacts(r, Number.POSITIVE_INFINITY).map((f) => {
    if (f.label === 'Targets') {
      const all = r.targets.map(shownName);
      return html`<dt>Targets</dt><dd>${all.length} endpoint${all.length === 1 ? '' : 's'}: ${names(all)}</dd>`;
    }
    if (f.label.startsWith('Excluded')) {
      return html`<dt>${f.label}</dt><dd><ul class="exclusions">${r.exclusions.map(
        (x) => html`<li><span class="host">${x.hostname}</span>: ${x.reason}</li>`,
      )}</ul></dd>`;
    }
    if (f.label.startsWith('Digest')) return html``;
    const code = /SHA-256|Path|Destination/.test(f.label);
    return html`<dt>${f.label}</dt><dd>${code ? html`<code>${f.value}</code>` : f.value}</dd>`;
  });
  const canonical = canonicalDigestForm({
    action: r.action,
    params: r.params,
    scriptSha256: r.scriptSha256 ?? null,
    targets: r.targets,
  });
  return html`<dl class="facts">
<dt>Request</dt><dd>${r.ref}</dd>
${rows}
<dt>Digest (SHA-256)</dt><dd><code class="digest">${r.digest}</code>
<details><summary>What the digest covers</summary>
<p>The SHA-256 of exactly this text (the action, its parameters, the script's SHA-256 and the targets). Your approval is bound to it: if anything changes, it is a new request.</p>
<pre class="canonical">${canonical}</pre></details></dd>
</dl>`;
}
