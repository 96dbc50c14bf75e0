// Interactive Active Response sessions with one endpoint. A session is a chat thread; its start and stop
// are audited with the reason and case given, and starting one needs a live step-up window. Whether the
// endpoint may have one (Active Response on in its segment, certificate not revoked) is checked again in
// the transaction that opens it.
import { and, eq, isNull } from 'drizzle-orm';
import { z } from 'zod';
import type { Db, DbOrTx } from '../../db/client.ts';
import { endpoints, segments, sessions } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { caseIdSchema, reasonSchema } from '../commands/command-types.ts';
import { BadRequest, Conflict, describeZodIssues, Forbidden, NotFound } from '../errors.ts';
import type { Clock } from '../ports.ts';

export type SessionRow = typeof sessions.$inferSelect;

const whySchema = z.object({ reason: reasonSchema.optional(), caseId: caseIdSchema.optional() });

export function createSessionService(deps: { db: Db; audit: AuditService; clock: Clock }) {
  const { db, audit, clock } = deps;

  async function findEndpoint(tx: DbOrTx, hostname: string) {
    const [ep] = await tx.select().from(endpoints).where(eq(endpoints.hostname, hostname.toLowerCase()));
    if (!ep) throw new NotFound('session.unknown_endpoint', `No endpoint called "${hostname}" is enrolled.`);
    return ep;
  }

  /** The endpoint, if it may have a session: Active Response on in its segment, certificate not revoked. */
  async function sessionTarget(tx: DbOrTx, hostname: string) {
    const ep = await findEndpoint(tx, hostname);
    if (ep.revokedAt)
      throw new Forbidden(
        'session.endpoint_revoked',
        `${ep.hostname}'s certificate is revoked; re-enrol it first.`,
      );
    const [seg] = await tx.select().from(segments).where(eq(segments.id, ep.segmentId));
    if (!seg?.activeResponseEnabled) {
      throw new Forbidden(
        'policy.segment_disabled',
        `${ep.hostname} is in segment ${seg?.name ?? '?'}, which does not have Active Response enabled.`,
      );
    }
    return ep;
  }

  return {
    findEndpoint: (hostname: string) => findEndpoint(db, hostname),

    /** Throws NotFound / Forbidden unless `hostname` may have a session; checked again when one opens. */
    sessionTarget: (hostname: string) => sessionTarget(db, hostname),

    async open(
      input: {
        userId: string;
        hostname: string;
        stepUpWindowId: string;
        /** Why, and the case: shown in the history's sessions and recorded with `session.started`. */
        reason?: string;
        caseId?: string;
        chat?: { platform: SessionRow['chatPlatform']; channelId: string; threadId?: string };
      },
      tx?: DbOrTx,
    ): Promise<SessionRow & { hostname: string }> {
      const why = whySchema.safeParse({ reason: input.reason, caseId: input.caseId });
      if (!why.success)
        throw new BadRequest('session.invalid', `Invalid session: ${describeZodIssues(why.error.issues)}.`);
      const { reason, caseId } = why.data;
      const run = async (t: DbOrTx) => {
        const ep = await sessionTarget(t, input.hostname);
        const [open] = await t
          .select()
          .from(sessions)
          .where(
            and(eq(sessions.userId, input.userId), eq(sessions.endpointId, ep.id), isNull(sessions.endedAt)),
          );
        if (open) return { ...open, hostname: ep.hostname };
        const [row] = await t
          .insert(sessions)
          .values({
            userId: input.userId,
            endpointId: ep.id,
            stepUpWindowId: input.stepUpWindowId,
            reason: reason ?? null,
            caseId: caseId ?? null,
            chatPlatform: input.chat?.platform ?? null,
            chatChannelId: input.chat?.channelId ?? null,
            chatThreadId: input.chat?.threadId ?? null,
            startedAt: clock.now(),
          })
          .returning();
        await audit.append(
          {
            actorType: 'user',
            actorId: input.userId,
            action: 'session.started',
            outcome: 'ok',
            endpointId: ep.id,
            details: {
              sessionId: row!.id,
              hostname: ep.hostname,
              reason: reason ?? null,
              caseId: caseId ?? null,
            },
          },
          t,
        );
        return { ...row!, hostname: ep.hostname };
      };
      return tx ? run(tx) : db.transaction(run);
    },

    async close(input: { userId: string; hostname: string }): Promise<SessionRow> {
      return db.transaction(async (t) => {
        const ep = await findEndpoint(t, input.hostname);
        const [row] = await t
          .update(sessions)
          .set({ endedAt: clock.now() })
          .where(
            and(eq(sessions.userId, input.userId), eq(sessions.endpointId, ep.id), isNull(sessions.endedAt)),
          )
          .returning();
        if (!row) throw new Conflict('session.not_open', `You have no open session with ${ep.hostname}.`);
        await audit.append(
          {
            actorType: 'user',
            actorId: input.userId,
            action: 'session.stopped',
            outcome: 'ok',
            endpointId: ep.id,
            details: { sessionId: row.id, hostname: ep.hostname, startedAt: row.startedAt.toISOString() },
          },
          t,
        );
        return row;
      });
    },

    /** Records the chat thread a session lives in (set once the thread exists, after the session commits). */
    async attachThread(sessionId: string, threadId: string): Promise<void> {
      await db.update(sessions).set({ chatThreadId: threadId }).where(eq(sessions.id, sessionId));
    },

    /**
     * The endpoint of `userId`'s open session in this chat thread, if any: commands typed in a session's
     * thread act on its endpoint when they leave the host out.
     */
    async hostInThread(
      userId: string,
      chat: { platform: NonNullable<SessionRow['chatPlatform']>; channelId: string; threadId: string },
    ): Promise<string | undefined> {
      const [row] = await db
        .select({ hostname: endpoints.hostname })
        .from(sessions)
        .innerJoin(endpoints, eq(endpoints.id, sessions.endpointId))
        .where(
          and(
            eq(sessions.userId, userId),
            isNull(sessions.endedAt),
            eq(sessions.chatPlatform, chat.platform),
            eq(sessions.chatChannelId, chat.channelId),
            eq(sessions.chatThreadId, chat.threadId),
          ),
        )
        .limit(1);
      return row?.hostname;
    },

    async openFor(userId: string): Promise<SessionRow[]> {
      return db
        .select()
        .from(sessions)
        .where(and(eq(sessions.userId, userId), isNull(sessions.endedAt)));
    },
  };
}

export type SessionService = ReturnType<typeof createSessionService>;
