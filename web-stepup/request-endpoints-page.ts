// GET /stepup/:token/endpoints — every endpoint of the request a step-up link is for: the targets that are
// online now (they run it as soon as it is approved), those offline (their deliveries wait in the outbox
// until they connect), and every exclusion grouped by reason. The card and the approve page show only the
// first names of each group; this page is the whole list, behind the same link and the same rules.
import type { FastifyInstance } from 'fastify';
import { onlineIds } from '../bot/inventory/inventory-dal.ts';
import type { RequestView } from '../bot/ports.ts';
import { previewLine, shownName } from '../bot/render/summary.ts';
import { html } from './html.ts';
import { type LinkRateLimit, QUIET, sendPage } from './page-reply.ts';
import { exclusionGroupsHtml } from './request-view-html.ts';
import { linkErrorPage, tokenParams } from './stepup-routes.ts';
import { layout, noticePage } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';

export function endpointsPage(view: RequestView, online: Set<string>, backHref: string): string {
  const up = view.targets.filter((t) => online.has(t.endpointId));
  const down = view.targets.filter((t) => !online.has(t.endpointId));
  const hosts = (list: typeof view.targets) =>
    list.length
      ? html`<ul class="hosts">${list.map((t) => html`<li><span class="host">${shownName(t)}</span></li>`)}</ul>`
      : html`<p>None.</p>`;
  const body = html`<h1>Endpoints of ${view.ref}</h1>
<p>${previewLine(view, { online: up.length, offline: down.length })}.</p>
<h2>Run it now: online (${up.length})</h2>
${hosts(up)}
<h2>Offline: queued until they connect (${down.length})</h2>
${hosts(down)}
${
  view.exclusions.length
    ? html`<h2>Excluded (${view.exclusions.length})</h2>
${exclusionGroupsHtml(view.exclusions, Number.POSITIVE_INFINITY)}`
    : ''
}
<p><a href="${backHref}">Back to the request</a></p>`;
  return layout(`Endpoints of ${view.ref}`, body, { wide: true });
}

export function registerRequestEndpointsRoute(
  app: FastifyInstance,
  deps: StepUpPagesDeps,
  linkLimit: LinkRateLimit,
): void {
  app.get('/stepup/:token/endpoints', { logLevel: QUIET, preHandler: [linkLimit] }, async (req, reply) => {
    const params = tokenParams.safeParse(req.params);
    if (!params.success) {
      return sendPage(reply, 404, noticePage('This link is not valid', 'Ask the bot for a new one.'));
    }
    let view: Awaited<ReturnType<typeof deps.bot.describeStepUp>>;
    try {
      // Viewing the list does not use the link up: the same look-up as the approve page's form.
      view = await deps.bot.describeStepUp(params.data.token);
    } catch (err) {
      return linkErrorPage(reply, err);
    }
    if (!view.request) {
      return sendPage(reply, 404, noticePage('No request here', 'This link is not for a request.'));
    }
    const online = await onlineIds(
      deps.db,
      view.request.targets.map((t) => t.endpointId),
    );
    return sendPage(reply, 200, endpointsPage(view.request, online, `/stepup/${params.data.token}`));
  });
}
