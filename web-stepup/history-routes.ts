// GET /history — Active Response sessions and audit records, filterable by user, endpoint and time. Only
// for Active Response users with a live step-up window cookie (the bot's history link is a step-up link
// with purpose 'history'). Every view is audited with its filters.
import { and, desc, eq, gte, inArray, lte, type SQL } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { describeZodIssues } from '../bot/errors.ts';
import { endpoints, sessions, users } from '../db/schema.ts';
import { requireResponder } from './file-routes.ts';
import { type HistoryFilters, historyPage, type SessionRow } from './history-view.ts';
import { sendPage } from './page-reply.ts';
import { attemptSource } from './stepup-routes.ts';
import type { StepUpPagesDeps } from './web-types.ts';

const blankToUndefined = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);

/** `2026-11-28`, `2026-11-28T09:00` (read as UTC, what the form's placeholder shows) or full ISO 8601. */
const timeInput = z.preprocess(
  blankToUndefined,
  z
    .string()
    .trim()
    .max(40)
    .transform((v, ctx) => {
      const iso = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?)?$/.test(v)
        ? `${v}${v.length > 10 ? '' : 'T00:00'}Z`
        : v;
      const d = new Date(iso);
      if (!/^\d{4}-\d{2}-\d{2}/.test(v) || Number.isNaN(d.getTime())) {
        ctx.addIssue({
          code: 'custom',
          message: `"${v}" is not a time; use a UTC time such as 2026-11-28T09:00`,
        });
        return z.NEVER;
      }
      return d;
    })
    .optional(),
);

const historyQuery = z.object({
  user: z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .max(64)
      .regex(/^[a-z0-9._-]+$/, 'a username has only a-z, 0-9, dot, underscore and dash')
      .optional(),
  ),
  endpoint: z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .max(253)
      .regex(/^[A-Za-z0-9._-]+$/, 'a hostname has only letters, digits, dot, underscore and dash')
      .optional(),
  ),
  from: timeInput,
  to: timeInput,
});

function echoFilters(query: unknown): HistoryFilters {
  const q = (query ?? {}) as Record<string, unknown>;
  const pick = (k: string) => (typeof q[k] === 'string' ? (q[k] as string).slice(0, 253) : undefined);
  return { user: pick('user'), endpoint: pick('endpoint'), from: pick('from'), to: pick('to') };
}

const HISTORY_HELP =
  'Ask the bot for the session history; it sends a step-up link that opens this page after your password and code.';

export function registerHistoryRoutes(app: FastifyInstance, deps: StepUpPagesDeps): void {
  const limit = deps.config.historyLimit ?? 200;

  app.get('/history', async (req, reply) => {
    const session = await requireResponder(req, reply, deps, { action: 'history.view', help: HISTORY_HELP });
    if (!('user' in session)) return session;
    const filters = echoFilters(req.query);
    const base = {
      viewer: session.user,
      windowExpiresAt: session.expiresAt,
      filters,
      limit,
      sessions: [] as SessionRow[],
      audit: [],
      names: new Map<string, string>(),
      endpoints: new Map<string, string>(),
    };

    const parsed = historyQuery.safeParse(req.query ?? {});
    if (!parsed.success) {
      return sendPage(
        reply,
        400,
        historyPage({ ...base, error: `Filter not understood: ${describeZodIssues(parsed.error.issues)}.` }),
      );
    }
    const q = parsed.data;
    let userId: string | undefined;
    let endpointId: string | undefined;
    if (q.user) {
      const [u] = await deps.db
        .select({ id: users.id })
        .from(users)
        .where(eq(users.username, q.user))
        .limit(1);
      if (!u) return sendPage(reply, 404, historyPage({ ...base, error: `No user is named "${q.user}".` }));
      userId = u.id;
    }
    if (q.endpoint) {
      const [e] = await deps.db
        .select({ id: endpoints.id })
        .from(endpoints)
        .where(eq(endpoints.hostname, q.endpoint))
        .limit(1);
      if (!e)
        return sendPage(reply, 404, historyPage({ ...base, error: `No endpoint is named "${q.endpoint}".` }));
      endpointId = e.id;
    }

    const where: SQL[] = [];
    if (userId) where.push(eq(sessions.userId, userId));
    if (endpointId) where.push(eq(sessions.endpointId, endpointId));
    if (q.from) where.push(gte(sessions.startedAt, q.from));
    if (q.to) where.push(lte(sessions.startedAt, q.to));
    const sessionRows = await deps.db
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
      .limit(limit);
    const records = await deps.audit.list({ actorId: userId, endpointId, from: q.from, to: q.to, limit });

    // Show names rather than ids where the ids are ours.
    const uuid = z.uuid();
    const actorIds = [
      ...new Set(records.map((r) => r.actorId).filter((id): id is string => uuid.safeParse(id).success)),
    ];
    const endpointIds = [
      ...new Set(records.map((r) => r.endpointId).filter((id): id is string => Boolean(id))),
    ];
    const names = new Map(
      actorIds.length
        ? (
            await deps.db
              .select({ id: users.id, n: users.username })
              .from(users)
              .where(inArray(users.id, actorIds))
          ).map((r) => [r.id, r.n] as const)
        : [],
    );
    const hosts = new Map(
      endpointIds.length
        ? (
            await deps.db
              .select({ id: endpoints.id, n: endpoints.hostname })
              .from(endpoints)
              .where(inArray(endpoints.id, endpointIds))
          ).map((r) => [r.id, r.n] as const)
        : [],
    );

    await deps.audit.append({
      actorType: 'user',
      actorId: session.user.id,
      action: 'history.viewed',
      outcome: 'ok',
      details: {
        filters: {
          user: q.user ?? null,
          endpoint: q.endpoint ?? null,
          from: q.from ?? null,
          to: q.to ?? null,
        },
        ...attemptSource(req),
      },
    });
    return sendPage(
      reply,
      200,
      historyPage({ ...base, sessions: sessionRows, audit: records, names, endpoints: hosts }),
    );
  });
}
