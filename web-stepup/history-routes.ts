// GET /history — Active Response sessions and audit records, filterable by user, endpoint, request, kind of
// event and time, 50 records a page by keyset (`before`/`after` a record's seq, so a page stays put while
// new records arrive). Only for Active Response users with a live step-up window cookie opened for the
// history (the bot's history link is a step-up link with purpose 'history'). A member of an external
// organisation sees their own organisation's requests, sessions and users only (audit-scope.ts). Every view
// is audited with its filters.
import { and, desc, eq, gte, inArray, lte, type SQL } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AuditQuery, AuditRecord } from '../bot/audit/audit-service.ts';
import { describeZodIssues } from '../bot/errors.ts';
import { visibleOrgOf } from '../bot/requests/request-access.ts';
import { actionRequests, endpoints, sessions, users } from '../db/schema.ts';
import { requireResponder } from './file-routes.ts';
import {
  echoFilters,
  type HistoryFilters,
  type HistoryQuery,
  historyHref,
  historyQuery,
} from './history-filters.ts';
import { type HistoryPage, historyPage, type SessionRow } from './history-view.ts';
import type { HistoryNames } from './history-words.ts';
import { sendPage } from './page-reply.ts';
import { attemptSource } from './stepup-routes.ts';
import type { StepUpPagesDeps } from './web-types.ts';

const HISTORY_HELP =
  'Ask the bot for the session history; it sends a step-up link that opens this page after your password and code.';

const PAGE_SIZE = 50;
const SESSION_LIMIT = 20;

const noNames = (): HistoryNames => ({ users: new Map(), hosts: new Map(), requests: new Map() });
const uuid = z.uuid();

export function registerHistoryRoutes(app: FastifyInstance, deps: StepUpPagesDeps): void {
  const pageSize = deps.config.historyLimit ?? PAGE_SIZE;
  const db = deps.db;

  /** One page of records and the links either way, by keyset on seq. */
  async function loadPage(filter: AuditQuery, q: HistoryQuery, filters: HistoryFilters) {
    const exists = async (more: AuditQuery) =>
      (await deps.audit.list({ ...filter, ...more, limit: 1 })).length > 0;
    let records: AuditRecord[];
    let hasNewer: boolean;
    let hasOlder: boolean;
    if (q.after !== undefined) {
      const rows = await deps.audit.list({ ...filter, afterSeq: q.after, limit: pageSize + 1 });
      hasNewer = rows.length > pageSize;
      records = rows.slice(0, pageSize).reverse();
      hasOlder = await exists({ beforeSeq: q.after + 1 });
    } else {
      const rows = await deps.audit.list({ ...filter, beforeSeq: q.before, limit: pageSize + 1 });
      hasOlder = rows.length > pageSize;
      records = rows.slice(0, pageSize);
      hasNewer = q.before !== undefined && (await exists({ afterSeq: q.before - 1 }));
    }
    // An empty page still links back the way it came.
    const newestSeq = records[0]?.seq ?? (q.before !== undefined ? q.before - 1 : q.after);
    const oldestSeq = records[records.length - 1]?.seq ?? (q.after !== undefined ? q.after + 1 : q.before);
    const page: HistoryPage = {
      records,
      newer: hasNewer && newestSeq !== undefined ? historyHref(filters, { after: newestSeq }) : undefined,
      older: hasOlder && oldestSeq !== undefined ? historyHref(filters, { before: oldestSeq }) : undefined,
      paged: q.before !== undefined || q.after !== undefined,
    };
    return page;
  }

  /** Usernames, hostnames and request refs for the ids on a page, in three queries. */
  async function namesFor(records: AuditRecord[]): Promise<HistoryNames> {
    const names = noNames();
    const isId = (id: string | null): id is string => Boolean(id) && uuid.safeParse(id).success;
    const userIds = [...new Set(records.filter((r) => r.actorType === 'user').map((r) => r.actorId))].filter(
      isId,
    );
    const hostIds = [
      ...new Set([
        ...records.map((r) => r.endpointId),
        ...records.filter((r) => r.actorType === 'agent').map((r) => r.actorId),
      ]),
    ].filter(isId);
    const requestIds = [...new Set(records.map((r) => r.requestId))].filter(isId);
    if (userIds.length) {
      const rows = await db
        .select({ id: users.id, n: users.username })
        .from(users)
        .where(inArray(users.id, userIds));
      for (const r of rows) names.users.set(r.id, r.n);
    }
    if (hostIds.length) {
      const rows = await db
        .select({ id: endpoints.id, n: endpoints.hostname })
        .from(endpoints)
        .where(inArray(endpoints.id, hostIds));
      for (const r of rows) names.hosts.set(r.id, r.n);
    }
    if (requestIds.length) {
      const rows = await db
        .select({
          id: actionRequests.id,
          ref: actionRequests.ref,
          action: actionRequests.action,
          reason: actionRequests.reason,
          caseId: actionRequests.caseId,
        })
        .from(actionRequests)
        .where(inArray(actionRequests.id, requestIds));
      for (const r of rows) names.requests.set(r.id, r);
    }
    return names;
  }

  app.get('/history', async (req, reply) => {
    const session = await requireResponder(req, reply, deps, {
      action: 'history.view',
      help: HISTORY_HELP,
      purpose: 'history',
    });
    if (!('user' in session)) return session;
    // Undefined for in-house people: they see every organisation's activity.
    const org = visibleOrgOf(session.user);
    const filters = echoFilters(req.query);
    const base = {
      viewer: session.user,
      windowExpiresAt: session.expiresAt,
      filters,
      sessionLimit: SESSION_LIMIT,
      page: { records: [], paged: false } as HistoryPage,
      names: noNames(),
    };
    const refuse = (status: number, error: string) =>
      sendPage(reply, status, historyPage({ ...base, error }));

    const parsed = historyQuery.safeParse(req.query ?? {});
    if (!parsed.success)
      return refuse(400, `Filter not understood: ${describeZodIssues(parsed.error.issues)}.`);
    const q = parsed.data;

    let userId: string | undefined;
    let endpointId: string | undefined;
    let requestId: string | undefined;
    if (q.user) {
      const [u] = await db
        .select({ id: users.id })
        .from(users)
        .where(and(eq(users.username, q.user), org ? eq(users.orgId, org) : undefined))
        .limit(1);
      if (!u) return refuse(404, `No user is named "${q.user}".`);
      userId = u.id;
    }
    if (q.endpoint) {
      const [e] = await db
        .select({ id: endpoints.id })
        .from(endpoints)
        .where(eq(endpoints.hostname, q.endpoint))
        .limit(1);
      if (!e) return refuse(404, `No endpoint is named "${q.endpoint}".`);
      endpointId = e.id;
    }
    if (q.request) {
      const [r] = await db
        .select({ id: actionRequests.id })
        .from(actionRequests)
        .innerJoin(users, eq(users.id, actionRequests.requesterId))
        .where(and(eq(actionRequests.ref, q.request), org ? eq(users.orgId, org) : undefined))
        .limit(1);
      if (!r) return refuse(404, `No request is named "${q.request}".`);
      requestId = r.id;
    }

    const filter: AuditQuery = {
      actorId: userId,
      endpointId,
      requestId,
      actionPrefix: q.action,
      from: q.from,
      to: q.to,
      visibleToOrg: org,
    };
    const page = await loadPage(filter, q, filters);
    const names = await namesFor(page.records);

    // Sessions are not audit records: they show on the first page, and only when no filter excludes them.
    let sessionRows: SessionRow[] | undefined;
    if (!page.paged && !q.request && !q.action) {
      const where: SQL[] = [];
      if (userId) where.push(eq(sessions.userId, userId));
      if (org) where.push(eq(users.orgId, org));
      if (endpointId) where.push(eq(sessions.endpointId, endpointId));
      if (q.from) where.push(gte(sessions.startedAt, q.from));
      if (q.to) where.push(lte(sessions.startedAt, q.to));
      sessionRows = await db
        .select({
          id: sessions.id,
          username: users.username,
          displayName: users.displayName,
          hostname: endpoints.hostname,
          reason: sessions.reason,
          caseId: sessions.caseId,
          startedAt: sessions.startedAt,
          endedAt: sessions.endedAt,
        })
        .from(sessions)
        .innerJoin(users, eq(sessions.userId, users.id))
        .innerJoin(endpoints, eq(sessions.endpointId, endpoints.id))
        .where(where.length ? and(...where) : undefined)
        .orderBy(desc(sessions.startedAt))
        .limit(SESSION_LIMIT);
    }

    await deps.audit.append({
      actorType: 'user',
      actorId: session.user.id,
      action: 'history.viewed',
      outcome: 'ok',
      details: {
        filters: {
          user: q.user ?? null,
          endpoint: q.endpoint ?? null,
          request: q.request ?? null,
          action: q.action ?? null,
          from: q.from ?? null,
          to: q.to ?? null,
        },
        page: { before: q.before ?? null, after: q.after ?? null, records: page.records.length },
        ...attemptSource(req),
      },
    });
    return sendPage(reply, 200, historyPage({ ...base, sessions: sessionRows, page, names }));
  });
}
