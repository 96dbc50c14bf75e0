// GET /groups/:ref — an action group's results page: every endpoint's state, exit code, duration and first
// lines of output, filterable by state (?state=failed); /groups/:ref/results.csv the same table as CSV;
// /groups/:ref/output/:deliveryId one endpoint's full output as text. Like the history page: Active Response
// users with a live step-up window opened for the history, and a member of an external organisation sees
// only their own organisation's groups. Uploaded files link to the per-file download route, which decides
// each file on its own. Every view is audited.
import { asc, eq } from 'drizzle-orm';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { REF_PATTERN } from '../bot/commands/command-types.ts';
import { Forbidden } from '../bot/errors.ts';
import { firstLines } from '../bot/render/results.ts';
import { requireVisibleRequest } from '../bot/requests/request-access.ts';
import { findRequest } from '../bot/requests/request-dal.ts';
import { deliveries, endpoints } from '../db/schema.ts';
import { requireResponder } from './file-routes.ts';
import { RESULT_STATES, type ResultRow, resultsCsv, resultsPage } from './group-results-view.ts';
import { sendPage } from './page-reply.ts';
import { attemptSource } from './stepup-routes.ts';
import { noticePage } from './views.ts';
import type { StepUpPagesDeps } from './web-types.ts';

const HELP =
  'Ask the bot for the history (type "history"); it sends a step-up link, and after your password and code this page opens.';
const PREVIEW_LINES = 5;

const params = z.object({
  ref: z
    .string()
    .transform((s) => s.toUpperCase())
    .refine((s) => REF_PATTERN.test(s)),
});
const outputParams = params.extend({ deliveryId: z.uuid() });
const query = z.object({ state: z.enum(RESULT_STATES as [string, ...string[]]).optional() });

interface RunResult {
  exitCode?: number | null;
  durationMs?: number;
  stdout?: string;
  stderr?: string;
  fileId?: string;
}

function rowOf(d: typeof deliveries.$inferSelect, hostname: string): ResultRow {
  const r = (d.result ?? {}) as RunResult;
  const out = typeof r.stdout === 'string' ? r.stdout : '';
  const err = typeof r.stderr === 'string' ? r.stderr : '';
  const text = out.trim() ? out : err.trim() ? err : (d.error ?? '');
  const timed =
    typeof r.durationMs === 'number'
      ? r.durationMs
      : d.sentAt && d.finishedAt
        ? d.finishedAt.getTime() - d.sentAt.getTime()
        : null;
  return {
    deliveryId: d.id,
    hostname,
    state: d.state,
    exitCode: typeof r.exitCode === 'number' ? r.exitCode : null,
    durationMs: timed,
    firstLines: text ? firstLines(text, PREVIEW_LINES, 600) : '',
    hasOutput: Boolean(out || err || d.result),
    fileIds: typeof r.fileId === 'string' ? [r.fileId] : [],
  };
}

export function registerGroupResultRoutes(app: FastifyInstance, deps: StepUpPagesDeps): void {
  const { db } = deps;

  /** The window, the request and the visibility check; a page saying what is wrong otherwise. */
  async function open(req: FastifyRequest, reply: FastifyReply, action: string) {
    const p = params.safeParse(req.params);
    if (!p.success) {
      return {
        done: sendPage(
          reply,
          404,
          noticePage('No such group', 'That is not a request ref such as R-7K3QXM.'),
        ),
      };
    }
    const session = await requireResponder(req, reply, deps, { action, help: HELP, purpose: 'history' });
    if (!('user' in session)) return { done: session };
    const row = await findRequest(db, p.data.ref);
    if (!row)
      return {
        done: sendPage(reply, 404, noticePage('No such group', `There is no request ${p.data.ref}.`)),
      };
    try {
      await requireVisibleRequest(db, session.user, row);
    } catch (err) {
      if (!(err instanceof Forbidden)) throw err;
      await deps.audit.append({
        actorType: 'user',
        actorId: session.user.id,
        action,
        outcome: 'refused',
        requestId: row.id,
        details: { reason: err.code, ...attemptSource(req) },
      });
      return { done: sendPage(reply, 403, noticePage('Not allowed', err.message)) };
    }
    return { session, row };
  }

  async function rowsFor(requestId: string, state?: string) {
    const list = await db
      .select({ d: deliveries, hostname: endpoints.hostname })
      .from(deliveries)
      .innerJoin(endpoints, eq(endpoints.id, deliveries.endpointId))
      .where(eq(deliveries.requestId, requestId))
      .orderBy(asc(endpoints.hostname));
    const counts: Record<string, number> = {};
    for (const x of list) counts[x.d.state] = (counts[x.d.state] ?? 0) + 1;
    const rows = list.filter((x) => !state || x.d.state === state).map((x) => rowOf(x.d, x.hostname));
    return { rows, counts };
  }

  app.get('/groups/:ref', async (req, reply) => {
    const o = await open(req, reply, 'group.results_viewed');
    if ('done' in o) return o.done;
    const q = query.safeParse(req.query);
    const state = q.success ? q.data.state : undefined;
    const { rows, counts } = await rowsFor(o.row.id, state);
    await deps.audit.append({
      actorType: 'user',
      actorId: o.session.user.id,
      action: 'group.results_viewed',
      outcome: 'ok',
      requestId: o.row.id,
      details: { state: state ?? null, rows: rows.length, stepUpWindowId: o.session.windowId },
    });
    return sendPage(
      reply,
      200,
      resultsPage({
        ref: o.row.ref,
        action: o.row.scriptName ? `run ${o.row.scriptName}` : o.row.action,
        state: o.row.state,
        counts,
        rows,
        filter: state,
        generatedAt: deps.clock.now(),
      }),
    );
  });

  app.get('/groups/:ref/results.csv', async (req, reply) => {
    const o = await open(req, reply, 'group.results_exported');
    if ('done' in o) return o.done;
    const q = query.safeParse(req.query);
    const state = q.success ? q.data.state : undefined;
    const { rows } = await rowsFor(o.row.id, state);
    await deps.audit.append({
      actorType: 'user',
      actorId: o.session.user.id,
      action: 'group.results_exported',
      outcome: 'ok',
      requestId: o.row.id,
      details: { state: state ?? null, rows: rows.length, stepUpWindowId: o.session.windowId },
    });
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="${o.row.ref}-results.csv"`)
      .send(resultsCsv(rows));
  });

  app.get('/groups/:ref/output/:deliveryId', async (req, reply) => {
    const o = await open(req, reply, 'group.output_viewed');
    if ('done' in o) return o.done;
    const p = outputParams.safeParse(req.params);
    const [d] = p.success
      ? await db.select().from(deliveries).where(eq(deliveries.id, p.data.deliveryId))
      : [];
    if (!d || d.requestId !== o.row.id) {
      return sendPage(
        reply,
        404,
        noticePage('No such output', `No endpoint of ${o.row.ref} has that delivery id.`),
      );
    }
    await deps.audit.append({
      actorType: 'user',
      actorId: o.session.user.id,
      action: 'group.output_viewed',
      outcome: 'ok',
      requestId: o.row.id,
      endpointId: d.endpointId,
      details: { deliveryId: d.id, stepUpWindowId: o.session.windowId },
    });
    const r = (d.result ?? {}) as RunResult;
    const text =
      typeof r.stdout === 'string' || typeof r.stderr === 'string'
        ? `--- stdout ---\n${r.stdout ?? ''}\n--- stderr ---\n${r.stderr ?? ''}\n`
        : `${JSON.stringify(d.result ?? { error: d.error }, null, 2)}\n`;
    return reply
      .type('text/plain; charset=utf-8')
      .header('content-disposition', `attachment; filename="${o.row.ref}-${d.id}.txt"`)
      .send(text);
  });
}
