// GET /groups — the Action Groups page: every action group newest first, 50 a page (?page=N), filterable by
// state (?state=halted) and to the viewer's own (?mine=1): status, action or script and version, targets,
// who scheduled and approved it, case, note, when, and a link to each group's results. Same access as the
// history page (a live step-up window opened for the history); external viewers see their own
// organisation's groups only. Each view is audited.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { groupAction, listGroups } from '../bot/groups/group-list.ts';
import { visibleOrgOf } from '../bot/requests/request-access.ts';
import { GROUP_STATES } from '../db/schema.ts';
import { requireResponder } from './file-routes.ts';
import { formatUtc, html } from './html.ts';
import { sendPage } from './page-reply.ts';
import { layout } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';

const PAGE_SIZE = 50;
const HELP =
  'Ask the bot for the history (type "history"); it sends a step-up link, and after your password and code this page opens.';
const query = z.object({
  state: z.enum(GROUP_STATES).optional().catch(undefined),
  mine: z.literal('1').optional().catch(undefined),
  page: z.coerce.number().int().min(1).max(100_000).catch(1).default(1),
});

export function registerGroupsListRoutes(app: FastifyInstance, deps: StepUpPagesDeps): void {
  app.get('/groups', async (req, reply) => {
    const session = await requireResponder(req, reply, deps, {
      action: 'groups.viewed',
      help: HELP,
      purpose: 'history',
    });
    if (!('user' in session)) return session;
    const q = query.parse(req.query ?? {});
    const { items, total } = await listGroups(deps.db, {
      requesterId: q.mine ? session.user.id : undefined,
      state: q.state,
      visibleToOrg: visibleOrgOf(session.user),
      limit: PAGE_SIZE,
      offset: (q.page - 1) * PAGE_SIZE,
    });
    await deps.audit.append({
      actorType: 'user',
      actorId: session.user.id,
      action: 'groups.viewed',
      outcome: 'ok',
      details: {
        state: q.state ?? null,
        mine: Boolean(q.mine),
        page: q.page,
        stepUpWindowId: session.windowId,
      },
    });
    const href = (over: Partial<{ state: string; mine: string; page: number }>) => {
      const p = new URLSearchParams();
      const state = 'state' in over ? over.state : q.state;
      const mine = 'mine' in over ? over.mine : q.mine;
      if (state) p.set('state', state);
      if (mine) p.set('mine', mine);
      if (over.page && over.page > 1) p.set('page', String(over.page));
      const s = p.toString();
      return s ? `/groups?${s}` : '/groups';
    };
    const stateLinks = ['all', ...GROUP_STATES].map((s) => {
      const current = (q.state ?? 'all') === s;
      return html`<li><a href="${href({ state: s === 'all' ? undefined : s, page: 1 })}"${current ? html` aria-current="page"` : ''}>${s}</a></li>`;
    });
    const rows = items.map(
      (g) => html`<tr class="group">
<td class="ref"><a href="/groups/${g.ref}">${g.ref}</a></td><td data-label="Status">${g.state}</td><td data-label="Action">${groupAction(g)}</td>
<td data-label="Targets">${g.targets}${g.excluded ? ` (+${g.excluded} excluded)` : ''}</td><td data-label="Scheduled by">${g.requester}</td>
<td data-label="Approved by">${g.approvers.join(', ') || '—'}</td><td data-label="Case">${g.caseId ?? ''}</td><td data-label="Note">${g.note ?? ''}</td><td data-label="When">${formatUtc(g.createdAt)}</td>
</tr>`,
    );
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    const body = html`<h1>Action groups</h1>
<p>${total === 1 ? '1 group' : `${total} groups`}${q.state ? ` ${q.state}` : ''}${q.mine ? ', yours' : ''} · page ${q.page} of ${pages}</p>
<nav aria-label="Filter by state"><ul class="filters">${stateLinks}
<li><a href="${href({ mine: q.mine ? undefined : '1', page: 1 })}">${q.mine ? 'everyone’s' : 'only mine'}</a></li></ul></nav>
<div class="table-scroll"><table class="results group-list">
<thead><tr><th>Group</th><th>Status</th><th>Action</th><th>Targets</th><th>Scheduled by</th><th>Approved by</th><th>Case</th><th>Note</th><th>When</th></tr></thead>
<tbody>${rows}</tbody></table></div>
<p>${q.page > 1 ? html`<a rel="prev" href="${href({ page: q.page - 1 })}">Newer</a> ` : ''}${q.page < pages ? html`<a rel="next" href="${href({ page: q.page + 1 })}">Older</a>` : ''}</p>`;
    return sendPage(reply, 200, layout('Action groups', body, { wide: true }));
  });
}
